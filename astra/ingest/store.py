"""Content-addressed storage in the assets bucket, per tenant.

Blobs live at `<tenant>/blobs/sha256/<2 hex>/<sha256>`, written once with a conditional put
(`If-None-Match: *`), so concurrent writers of the same atom cannot overwrite each other and a
412 tells us the atom was already there. The tenant prefix keeps dedup inside a tenant (see
docs/architecture.md: it deviates from the shared `blobs/…` root on purpose).
"""

from __future__ import annotations

import hashlib
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from botocore.exceptions import ClientError

from astra.s3 import is_missing, is_precondition_failed

# Each put is one HTTP round trip; a handful in flight hides the latency without flooding S3.
PARALLEL_PUTS = 8


def blob_key(tenant: str, sha256: str) -> str:
    return f"{tenant}/blobs/sha256/{sha256[:2]}/{sha256}"


def blob_uri(bucket: str, tenant: str, sha256: str) -> str:
    return f"s3://{bucket}/{blob_key(tenant, sha256)}"


def atoms_manifest_key(tenant: str, template_sha256: str) -> str:
    return f"{tenant}/atoms/{template_sha256}.json"


@dataclass(frozen=True)
class PutStats:
    written: int
    already_stored: int
    bytes_written: int


class BlobStore:
    """One tenant's content-addressed blobs in one bucket (plain boto3)."""

    def __init__(self, s3, bucket: str, tenant: str):
        self.s3, self.bucket, self.tenant = s3, bucket, tenant

    def key(self, sha256: str) -> str:
        return blob_key(self.tenant, sha256)

    def put_once(self, sha256: str, data: bytes) -> bool:
        """Store a blob unless it is there; True when this call wrote it."""
        if hashlib.sha256(data).hexdigest() != sha256:
            raise ValueError(f"blob content does not hash to {sha256}")
        try:
            self.s3.put_object(Bucket=self.bucket, Key=self.key(sha256), Body=data, IfNoneMatch="*",
                               ChecksumAlgorithm="SHA256")
            return True
        except ClientError as exc:
            if is_precondition_failed(exc):
                return False
            raise

    def put_many(self, blobs: dict[str, bytes]) -> PutStats:
        with ThreadPoolExecutor(PARALLEL_PUTS) as pool:
            wrote = list(pool.map(lambda item: self.put_once(*item), blobs.items()))
        return PutStats(
            written=sum(wrote),
            already_stored=len(wrote) - sum(wrote),
            bytes_written=sum(len(b) for b, w in zip(blobs.values(), wrote, strict=True) if w),
        )

    def get(self, sha256: str) -> bytes:
        try:
            data = self.s3.get_object(Bucket=self.bucket, Key=self.key(sha256))["Body"].read()
        except ClientError as exc:
            if is_missing(exc):
                raise KeyError(sha256) from exc
            raise
        return data

    def get_many(self, shas: list[str]) -> dict[str, bytes]:
        unique = list(dict.fromkeys(shas))
        with ThreadPoolExecutor(PARALLEL_PUTS) as pool:
            return dict(zip(unique, pool.map(self.get, unique), strict=True))

    def put_json(self, key: str, document: dict) -> dict:
        body = json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
        resp = self.s3.put_object(Bucket=self.bucket, Key=key, Body=body, ContentType="application/json")
        return {"uri": f"s3://{self.bucket}/{key}", "version_id": resp.get("VersionId"),
                "sha256": hashlib.sha256(body).hexdigest(), "size": len(body)}

    def get_json(self, key: str) -> dict:
        return json.loads(self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read())
