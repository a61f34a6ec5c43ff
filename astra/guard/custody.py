"""Custody copy: the session audio goes into the WORM guard bucket, verified, then into the ledger.

    <guard bucket>/<tenant>/audio/<session_id>/v<n>/<sha256>.<ext>

`place_in_custody` CopyObjects the audio under an explicit Object Lock COMPLIANCE retention
(now + settings.guard_retention_days) with a SHA-256 checksum and checks the copy's checksum,
size and lock against what was asked. `take_custody` does that and then appends the ledger entry,
in that order, both idempotent: a re-run after a crash anywhere neither copies twice (a locked
bucket keeps every version, so a second copy would be a second version) nor appends twice.

Only documented S3 calls are used, so the same code runs on AWS. Two moto quirks are handled:
CopyObject into a bucket with default retention wants `x-amz-sdk-checksum-algorithm` (added by a
`before-sign` hook, harmless elsewhere), and GetObjectRetention fails, so lock mode and date are
read from HeadObject, which S3 documents to return them too.
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from botocore.exceptions import ClientError
from sqlalchemy import Engine

from astra.guard.ledger import CustodyLedger, LedgerEntry
from astra.settings import Settings
from astra.tenancy import SessionKey, validate_slug

EVENT_AUDIO = "custody.audio"
LOCK_MODE = "COMPLIANCE"
CHUNK = 1 << 20
# S3 sets LastModified when the copy completes, after we computed now + days: allow for that and
# for clock skew when checking "retained until at least the configured date".
RETENTION_SLACK = timedelta(minutes=5)

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_EXT = re.compile(r"^[a-z0-9]{1,8}$")
_GUARD_KEY = re.compile(
    r"^(?P<tenant>[a-z0-9-]+)/audio/(?P<session>[a-z0-9-]+)/v(?P<version>[1-9][0-9]*)/"
    r"(?P<sha>[0-9a-f]{64})\.(?P<ext>[a-z0-9]{1,8})$"
)
_MISSING = {"404", "NoSuchKey", "NoSuchVersion", "NotFound", "405", "MethodNotAllowed"}
_HOOK_ID = "astra-guard-sdk-checksum-algorithm"


class CustodyError(RuntimeError):
    """The audio could not be put under custody as asked (source or copy does not match)."""


@dataclass(frozen=True)
class CustodyRecord:
    tenant: str
    session_id: str
    version: int
    sha256: str
    size: int
    bucket: str
    key: str
    version_id: str
    retention_mode: str
    retain_until: str  # ISO 8601 UTC, seconds, "Z"
    source_uri: str
    copied: bool = True  # False: the object was already in custody (an earlier run)

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    @property
    def entry_key(self) -> str:
        return audio_entry_key(self.session_id, self.version, self.sha256)

    def to_entry(self, recorded_at: datetime | None = None) -> dict[str, Any]:
        """The ledger entry (the ledger adds seq; tenant is already here)."""
        recorded = (recorded_at or datetime.now(timezone.utc)).astimezone(timezone.utc)
        return {
            "event": EVENT_AUDIO,
            "tenant": self.tenant,
            "session_id": self.session_id,
            "version": self.version,
            "sha256": self.sha256,
            "size": self.size,
            "bucket": self.bucket,
            "key": self.key,
            "version_id": self.version_id,
            "retention_mode": self.retention_mode,
            "retain_until": self.retain_until,
            "source_uri": self.source_uri,
            "recorded_at": recorded.isoformat().replace("+00:00", "Z"),
        }

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_entry(cls, entry: dict[str, Any]) -> "CustodyRecord":
        return cls(
            tenant=entry["tenant"],
            session_id=entry["session_id"],
            version=entry["version"],
            sha256=entry["sha256"],
            size=entry["size"],
            bucket=entry["bucket"],
            key=entry["key"],
            version_id=entry["version_id"],
            retention_mode=entry["retention_mode"],
            retain_until=entry["retain_until"],
            source_uri=entry["source_uri"],
            copied=False,
        )


# -- helpers ----------------------------------------------------------------------------------


def audio_entry_key(session_id: str, version: int, sha256_hex: str) -> str:
    return f"audio:{session_id}:v{version}:{sha256_hex}"


def guard_key(tenant: str, session_id: str, version: int, sha256_hex: str, ext: str) -> str:
    SessionKey(tenant, session_id, version)  # validates all three
    if not _SHA256.match(sha256_hex or ""):
        raise ValueError(f"sha256 must be 64 lowercase hex characters, got {sha256_hex!r}")
    ext = ext.lstrip(".").lower()
    if not _EXT.match(ext):
        raise ValueError(f"invalid audio extension {ext!r}")
    return f"{tenant}/audio/{session_id}/v{version}/{sha256_hex}.{ext}"


def parse_guard_key(key: str) -> dict[str, Any]:
    m = _GUARD_KEY.match(key)
    if not m:
        raise ValueError(f"not a custody audio key: {key!r} (expected <tenant>/audio/<session>/v<n>/<sha256>.<ext>)")
    validate_slug(m["tenant"])
    return {"tenant": m["tenant"], "session_id": m["session"], "version": int(m["version"]), "sha256": m["sha"], "ext": m["ext"]}


def b64_sha256(sha256_hex: str) -> str:
    """S3's ChecksumSHA256: base64 of the raw digest."""
    return base64.b64encode(bytes.fromhex(sha256_hex)).decode()


def iso_z(value: datetime) -> str:
    return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def is_missing(exc: ClientError) -> bool:
    err = exc.response.get("Error", {})
    status = str(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
    return err.get("Code") in _MISSING or status in ("404", "405")


def _add_sdk_checksum_header(request, **_: Any) -> None:
    algorithm = request.headers.get("x-amz-checksum-algorithm")
    if algorithm and not request.headers.get("x-amz-sdk-checksum-algorithm"):
        request.headers["x-amz-sdk-checksum-algorithm"] = algorithm


def prepare_client(s3):
    """Register the CopyObject header hook on a boto3 S3 client (idempotent; returns it).

    moto refuses a CopyObject into a bucket with default retention unless the request carries
    `x-amz-sdk-checksum-algorithm`; boto3 sends only `x-amz-checksum-algorithm`. AWS ignores it."""
    s3.meta.events.register("before-sign.s3.CopyObject", _add_sdk_checksum_header, unique_id=_HOOK_ID)
    return s3


def stream_sha256(s3, bucket: str, key: str, version_id: str | None = None, **extra: Any) -> tuple[str, int, dict]:
    """(sha256 hex, size, response headers) of an object, read as a stream."""
    kwargs: dict[str, Any] = {"Bucket": bucket, "Key": key, **extra}
    if version_id:
        kwargs["VersionId"] = version_id
    resp = s3.get_object(**kwargs)
    h, size = hashlib.sha256(), 0
    body = resp["Body"]
    try:
        for chunk in body.iter_chunks(CHUNK):
            h.update(chunk)
            size += len(chunk)
    finally:
        body.close()
    return h.hexdigest(), size, resp


def _head(s3, bucket: str, key: str, version_id: str | None = None) -> dict | None:
    kwargs: dict[str, Any] = {"Bucket": bucket, "Key": key, "ChecksumMode": "ENABLED"}
    if version_id:
        kwargs["VersionId"] = version_id
    try:
        return s3.head_object(**kwargs)
    except ClientError as exc:
        if is_missing(exc):
            return None
        raise


def _full_object_sha256(head: dict) -> str | None:
    """The object's whole-content SHA-256 (base64) if S3 has one (not a composite multipart one)."""
    value = head.get("ChecksumSHA256")
    if not value or "-" in value or head.get("ChecksumType", "FULL_OBJECT") != "FULL_OBJECT":
        return None
    return value


def _content_matches(s3, bucket: str, key: str, head: dict, sha256_hex: str) -> bool:
    known = _full_object_sha256(head)
    if known is not None:
        return known == b64_sha256(sha256_hex)
    digest, _, _ = stream_sha256(s3, bucket, key, head.get("VersionId"))
    return digest == sha256_hex


def _locked_until(head: dict) -> datetime | None:
    if head.get("ObjectLockMode") != LOCK_MODE:
        return None
    until = head.get("ObjectLockRetainUntilDate")
    return until.astimezone(timezone.utc) if until else None


# -- custody ----------------------------------------------------------------------------------


def place_in_custody(
    s3,
    settings: Settings,
    tenant: str,
    session_id: str,
    version: int,
    src_bucket: str,
    src_key: str,
    sha256_hex: str,
    ext: str,
    *,
    verify_source: bool = True,
) -> CustodyRecord:
    """Copy the audio into the guard bucket under COMPLIANCE retention and verify the copy.

    Idempotent: when the key already holds a locked object with this SHA-256, nothing is copied
    and that version is returned (copied=False). With `verify_source` (default) the source is
    checked against `sha256_hex` *before* the copy (its S3 checksum if it has one, else a stream
    read), because whatever lands under a locked key stays there for the retention period.
    Raises CustodyError on any mismatch."""
    prepare_client(s3)
    key = guard_key(tenant, session_id, version, sha256_hex, ext)
    bucket = settings.guard_bucket
    source_uri = f"s3://{src_bucket}/{src_key}"
    expected_b64 = b64_sha256(sha256_hex)

    existing = _head(s3, bucket, key)
    if existing is not None:
        if not _content_matches(s3, bucket, key, existing, sha256_hex):
            raise CustodyError(
                f"s3://{bucket}/{key} (version {existing.get('VersionId')}) already holds content whose "
                f"SHA-256 is not {sha256_hex}: refusing to copy over it; run `astra guard verify`"
            )
        until = _locked_until(existing)
        if until is not None and until > datetime.now(timezone.utc):
            return _record(tenant, session_id, version, sha256_hex, bucket, key, existing, source_uri, copied=False)
        # Present but not (or no longer) under COMPLIANCE retention: copy again, locked.

    src = _head(s3, src_bucket, src_key)
    if src is None:
        raise CustodyError(f"source {source_uri} not found")
    if verify_source and not _content_matches(s3, src_bucket, src_key, src, sha256_hex):
        raise CustodyError(f"source {source_uri} does not have SHA-256 {sha256_hex}: nothing copied")

    retain_until = (datetime.now(timezone.utc) + timedelta(days=settings.guard_retention_days)).replace(
        microsecond=0
    ) + timedelta(seconds=1)  # whole seconds, rounded up: never shorter than configured
    resp = s3.copy_object(
        Bucket=bucket,
        Key=key,
        CopySource={"Bucket": src_bucket, "Key": src_key},
        CopySourceIfMatch=src["ETag"],  # the content checked above, not a later overwrite
        ObjectLockMode=LOCK_MODE,
        ObjectLockRetainUntilDate=retain_until,
        ChecksumAlgorithm="SHA256",
    )
    version_id = resp.get("VersionId")
    copied_b64 = resp.get("CopyObjectResult", {}).get("ChecksumSHA256")
    head = _head(s3, bucket, key, version_id) if version_id else None
    left_behind = f"s3://{bucket}/{key} version {version_id} stays locked, with no ledger entry"
    if head is None:
        raise CustodyError(f"copy to s3://{bucket}/{key} returned version {version_id!r} that HeadObject cannot find")
    if copied_b64 != expected_b64 or head.get("ChecksumSHA256") != expected_b64:
        raise CustodyError(
            f"copy verification failed: checksum {copied_b64 or head.get('ChecksumSHA256')} != {expected_b64} "
            f"(sha256 {sha256_hex}); {left_behind}"
        )
    if head.get("ContentLength") != src.get("ContentLength"):
        raise CustodyError(f"copy verification failed: size {head.get('ContentLength')} != {src.get('ContentLength')}; {left_behind}")
    until = _locked_until(head)
    if until is None or until < retain_until:
        raise CustodyError(
            f"copy verification failed: lock {head.get('ObjectLockMode')} until "
            f"{head.get('ObjectLockRetainUntilDate')}, asked {LOCK_MODE} until {iso_z(retain_until)}; {left_behind}"
        )
    return _record(tenant, session_id, version, sha256_hex, bucket, key, head, source_uri, copied=True)


def _record(tenant, session_id, version, sha256_hex, bucket, key, head, source_uri, copied) -> CustodyRecord:
    return CustodyRecord(
        tenant=tenant,
        session_id=session_id,
        version=version,
        sha256=sha256_hex,
        size=int(head["ContentLength"]),
        bucket=bucket,
        key=key,
        version_id=head["VersionId"],
        retention_mode=head["ObjectLockMode"],
        retain_until=iso_z(head["ObjectLockRetainUntilDate"]),
        source_uri=source_uri,
        copied=copied,
    )


def take_custody(
    engine: Engine,
    s3,
    settings: Settings,
    tenant: str,
    session_id: str,
    version: int,
    src_bucket: str,
    src_key: str,
    sha256_hex: str,
    ext: str,
    *,
    verify_source: bool = True,
) -> tuple[CustodyRecord, LedgerEntry]:
    """Copy + verify, then append the ledger entry (key `audio:<session>:v<n>:<sha256>`).

    Only after this returns may the caller delete the temporary upload. Re-running it after a
    crash at any point completes the work without a second copy or a second entry; the entry
    returned is the first one written (entry.appended tells which)."""
    record = place_in_custody(
        s3, settings, tenant, session_id, version, src_bucket, src_key, sha256_hex, ext, verify_source=verify_source
    )
    entry = CustodyLedger(engine).append(tenant, record.to_entry(), record.entry_key)
    return record, entry


def check_custody(s3, settings: Settings, engine: Engine, target: CustodyRecord | LedgerEntry | str) -> list[str]:
    """Everything wrong with one custody copy, as sentences (empty: custody holds).

    `target` is the CustodyRecord from `place_in_custody`/`take_custody`, its LedgerEntry, or the
    guard key `<tenant>/audio/<session>/v<n>/<sha256>.<ext>`. Checks: ledger entry present; the
    recorded object version present, SHA-256 re-read and matching, under COMPLIANCE retention
    until at least the configured date (its LastModified + guard_retention_days) and the date in
    the ledger; no other content shown at the key; the tenant's chain and checkpoint intact."""
    from astra.guard.verify import check_object, verify_chain  # verify imports this module

    if isinstance(target, LedgerEntry):
        tenant, ident = target.tenant, target.entry
        if ident.get("event") != EVENT_AUDIO:
            raise ValueError(f"ledger entry seq {target.seq} of {tenant} is a {ident.get('event')!r}, not {EVENT_AUDIO!r}")
        entry_key = audio_entry_key(ident["session_id"], ident["version"], ident["sha256"])
    elif isinstance(target, CustodyRecord):
        tenant, entry_key = target.tenant, target.entry_key
    else:
        parts = parse_guard_key(target)
        tenant, entry_key = parts["tenant"], audio_entry_key(parts["session_id"], parts["version"], parts["sha256"])

    problems: list[str] = []
    ledger_entry = CustodyLedger(engine).get_by_key(tenant, entry_key)
    if ledger_entry is None:
        problems.append(f"ledger: tenant {tenant} has no custody entry {entry_key}")
        if not isinstance(target, CustodyRecord):
            return problems + [f"chain: {p.kind} at seq {p.seq}: {p.detail}" for p in verify_chain(engine, tenant)]
        entry = target.to_entry()
    else:
        # The ledger's record is the custody copy (a re-run may have re-copied the same bytes
        # as a newer version after a delete marker; the recorded version is what is checked).
        entry = ledger_entry.entry

    for kind, detail in check_object(s3, entry):
        problems.append(f"{kind}: {detail}")
    head = _head(s3, entry["bucket"], entry["key"], entry["version_id"])
    if head is not None:
        until = _locked_until(head)
        configured = head["LastModified"].astimezone(timezone.utc) + timedelta(days=settings.guard_retention_days)
        if until is not None and until < configured - RETENTION_SLACK:
            problems.append(
                f"retention: s3://{entry['bucket']}/{entry['key']} version {entry['version_id']} is retained "
                f"until {iso_z(until)}, before the configured {iso_z(configured)} "
                f"({settings.guard_retention_days} days after {iso_z(head['LastModified'])})"
            )
    problems += [f"chain: {p.kind} at seq {p.seq}: {p.detail}" for p in verify_chain(engine, tenant)]
    return problems
