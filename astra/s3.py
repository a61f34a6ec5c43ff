"""The one S3 module: the client, the buckets, and the few questions every engine asks of S3.

Plain boto3, the same calls against moto, AWS or any S3 with Object Lock. Every other module
asks "is it there?", "what does it hash to?" and "delete it if unchanged" through here, so a
throttle or an outage is never mistaken for a missing object (only the codes in `MISSING` are).
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from astra.settings import Settings

CHUNK = 1 << 20
# What S3 answers for an object (or version) that is not there. 405 is a delete marker asked for
# by version id. Anything else (503 SlowDown, 500, AccessDenied…) is a fault and is raised.
MISSING = frozenset({"404", "NoSuchKey", "NoSuchVersion", "NotFound", "405", "MethodNotAllowed"})
PRECONDITION_FAILED = frozenset({"PreconditionFailed", "412"})


def client(settings: Settings):
    return boto3.client(
        "s3",
        endpoint_url=settings.s3_endpoint_url,
        region_name=settings.aws_region,
        config=Config(retries={"max_attempts": 3, "mode": "standard"}, s3={"addressing_style": "path"}),
    )


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def is_missing(exc: ClientError) -> bool:
    """True only when S3 said the object (or version) does not exist."""
    code = error_code(exc)
    if code == "NoSuchBucket":  # a misconfiguration, not an object that is gone
        return False
    status = str(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
    return code in MISSING or status in ("404", "405")


def is_precondition_failed(exc: ClientError) -> bool:
    return error_code(exc) in PRECONDITION_FAILED


def head(s3, bucket: str, key: str, version_id: str | None = None, checksum: bool = True) -> dict | None:
    """HeadObject, or None when the object is missing; every other error is raised."""
    kwargs: dict[str, Any] = {"Bucket": bucket, "Key": key}
    if checksum:
        kwargs["ChecksumMode"] = "ENABLED"
    if version_id:
        kwargs["VersionId"] = version_id
    try:
        return s3.head_object(**kwargs)
    except ClientError as exc:
        if is_missing(exc):
            return None
        raise


def b64_sha256(sha256_hex: str) -> str:
    """S3's ChecksumSHA256: base64 of the raw digest."""
    return base64.b64encode(bytes.fromhex(sha256_hex)).decode()


def full_object_sha256(head_response: dict) -> str | None:
    """The object's whole-content SHA-256 as hex, if S3 has one (not a composite multipart one)."""
    value = head_response.get("ChecksumSHA256")
    if not value or "-" in value or head_response.get("ChecksumType", "FULL_OBJECT") != "FULL_OBJECT":
        return None
    return base64.b64decode(value).hex()


def stream_sha256(s3, bucket: str, key: str, version_id: str | None = None, **extra: Any) -> tuple[str, int, dict]:
    """(sha256 hex, size, GetObject response) of an object, read as a stream."""
    kwargs: dict[str, Any] = {"Bucket": bucket, "Key": key, **extra}
    if version_id:
        kwargs["VersionId"] = version_id
    resp = s3.get_object(**kwargs)
    digest, size = hashlib.sha256(), 0
    body = resp["Body"]
    try:
        for chunk in body.iter_chunks(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    finally:
        body.close()
    return digest.hexdigest(), size, resp


def object_sha256(s3, bucket: str, key: str, version_id: str | None = None) -> str | None:
    """The object's SHA-256 (hex): S3's full-object checksum when it has one, else hashed here.
    None when the object is missing; other errors raise."""
    response = head(s3, bucket, key, version_id)
    if response is None:
        return None
    known = full_object_sha256(response)
    if known is not None:
        return known
    try:
        return stream_sha256(s3, bucket, key, response.get("VersionId") or version_id)[0]
    except ClientError as exc:
        if is_missing(exc):  # deleted between the HEAD and the GET
            return None
        raise


def put_if_changed(s3, bucket: str, key: str, body: bytes, sha256: str, content_type: str) -> tuple[str | None, bool]:
    """Write `body` at `key` unless the current object already holds these bytes (S3's full-object SHA-256 says so),
    so writing the same bytes again adds no S3 version. S3 checks the body against `sha256` and keeps it for the
    next comparison. Returns (the S3 version holding the bytes, whether they were written now)."""
    found = head(s3, bucket, key)
    if found is not None and full_object_sha256(found) == sha256:
        return found.get("VersionId"), False
    response = s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType=content_type,
                             ChecksumAlgorithm="SHA256", ChecksumSHA256=b64_sha256(sha256))
    return response.get("VersionId"), True


def delete_if_unchanged(s3, bucket: str, key: str, etag: str) -> bool:
    """Delete `key` only while its ETag is `etag`. True when it is gone (deleted now or already:
    a concurrent clean-up that won the race is not an error); False when it changed."""
    try:
        s3.delete_object(Bucket=bucket, Key=key, IfMatch=etag)
    except ClientError as exc:
        if is_missing(exc):
            return True
        if is_precondition_failed(exc):
            return False
        raise
    return True


def _create(s3, bucket: str, **extra) -> bool:
    """Create a bucket if missing; True when this call created it."""
    try:
        s3.head_bucket(Bucket=bucket)
        return False
    except ClientError as exc:
        if error_code(exc) not in ("404", "NoSuchBucket", "NotFound"):
            raise
    try:
        s3.create_bucket(Bucket=bucket, **extra)
    except ClientError as exc:
        if error_code(exc) not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            raise
        return False
    return True


def ensure_buckets(s3, settings: Settings) -> dict[str, str]:
    """Create the three buckets of ARCHITECTURE §4 idempotently; returns what each one is."""
    _create(s3, settings.uploads_bucket)
    _create(s3, settings.assets_bucket)
    if s3.get_bucket_versioning(Bucket=settings.assets_bucket).get("Status") != "Enabled":
        s3.put_bucket_versioning(Bucket=settings.assets_bucket, VersioningConfiguration={"Status": "Enabled"})
    _create(s3, settings.guard_bucket, ObjectLockEnabledForBucket=True)
    wanted = {"Mode": "COMPLIANCE", "Days": settings.guard_retention_days}
    current = s3.get_object_lock_configuration(Bucket=settings.guard_bucket)["ObjectLockConfiguration"]
    rule = current.get("Rule", {}).get("DefaultRetention", {})
    # Only when it differs: S3 servers may refuse to change it on a bucket that holds objects.
    if (rule.get("Mode"), rule.get("Days")) != (wanted["Mode"], wanted["Days"]):
        s3.put_object_lock_configuration(
            Bucket=settings.guard_bucket,
            ObjectLockConfiguration={"ObjectLockEnabled": "Enabled", "Rule": {"DefaultRetention": wanted}},
        )
    return {
        settings.uploads_bucket: "uploads (temporary)",
        settings.assets_bucket: "assets (versioned)",
        settings.guard_bucket: f"guard (Object Lock COMPLIANCE, {settings.guard_retention_days} days)",
    }
