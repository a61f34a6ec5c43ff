"""Checkpoints outside the database: every custody checkpoint is also a locked object in the guard bucket.

    <guard bucket>/<tenant>/checkpoints/<size, zero-padded to 20 digits>.json

A checkpoint (the RFC 6962 Merkle root of a tenant's first `size` ledger entries) is a row of
`custody_checkpoints`, which a database superuser can rewrite along with the ledger. So
`record_checkpoint` also writes it as an object under an Object Lock COMPLIANCE retention
(settings.guard_retention_days, never below MIN_RETENTION_DAYS, like the custody copies): nobody,
the account's root user included, can delete or shorten that version before its date. The body is
the canonical JSON (astra.canonical) of

    {"created_at": "<the row's created_at, UTC, microseconds>Z", "format": 1,
     "merkle_root": "<64 lowercase hex>", "size": <n>, "tenant": "<slug>"}

The key starts with the tenant, like every guard key (so a tenant's listing and the bucket scan
see it), and carries the size padded to 20 digits (a bigint's range): one key per size, listed in
size order. The object says again which tenant and size it is for; a body that disagrees with
its key is not a checkpoint.

Order and concurrency: the object is put, and its lock and checksum checked, while the transaction
inserting the row is still open; the row commits only after that. So a committed row always has
its object, and a crash in between leaves at worst an object without a row (reported as
`checkpoint_row_missing` once older than the audit's grace period). Two audits writing the same
size serialize on the row's primary key: the second insert waits for the first commit and then
inserts nothing (`record_checkpoint` returns None, no error). The object write itself is
idempotent: a valid, locked version with the same root already at the key is reused; a valid
version with another root is a CheckpointConflict (same size, another root: one of the two
ledgers was not this one) and nothing is written. When the key holds nothing the PutObject
carries `If-None-Match: *`, so two writers racing past the database still leave one version.

A lock runs out: while a tenant's ledger does not grow no newer checkpoint is written, so the
audit extends the newest checkpoint's retention (`renew_locks`, PutObjectRetention, which may
lengthen a COMPLIANCE lock, never shorten it) once less than half the configured days remain.

What the audit checks of these objects is in `astra.guard.verify` (`verify_tenant_checkpoints`).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from botocore.exceptions import ClientError
from sqlalchemy import Engine

from astra import s3 as s3_lib
from astra.canonical import canonical_json
from astra.guard.custody import LOCK_MODE, RETENTION_SLACK, CustodyError, iso_z, parse_iso
from astra.guard.ledger import Checkpoint, ledger_time, write_checkpoint
from astra.settings import MIN_RETENTION_DAYS, InvalidSetting, Settings, check_retention_days
from astra.tenancy import validate_slug

CHECKPOINT_FORMAT = 1
CHECKPOINT_DIR = "checkpoints"
SIZE_DIGITS = 20  # a bigint (custody_checkpoints.size) has at most 19
MAX_BODY = 4096  # a checkpoint body is ~200 bytes; anything far larger is not one
BODY_FIELDS = frozenset({"tenant", "size", "merkle_root", "created_at", "format"})
_KEY = re.compile(rf"(?P<tenant>[^/]+)/{CHECKPOINT_DIR}/(?P<size>[0-9]{{{SIZE_DIGITS}}})\.json")
_ROOT = re.compile(r"[0-9a-f]{64}")


class CheckpointConflict(CustodyError):
    """The key of this size already holds a checkpoint with another root: nothing was written."""


@dataclass(frozen=True)
class CheckpointVersion:
    """One object version (or delete marker) under a tenant's checkpoints prefix, as read back."""

    bucket: str
    key: str
    version_id: str
    modified: datetime
    delete_marker: bool = False
    checkpoint: Checkpoint | None = None  # the body, when it is a valid checkpoint for its key
    invalid: str | None = None  # else why not (None for a delete marker)
    lock_mode: str | None = None
    retain_until: datetime | None = None

    @property
    def where(self) -> str:
        return f"s3://{self.bucket}/{self.key} version {self.version_id}"

    def lock_problem(self) -> str | None:
        """Why this version's lock is weaker than a checkpoint's must be (as custody copies: COMPLIANCE,
        until at least MIN_RETENTION_DAYS after S3 wrote it), or None."""
        floor = self.modified.astimezone(UTC) + timedelta(days=MIN_RETENTION_DAYS)
        if self.lock_mode == LOCK_MODE and self.retain_until is not None and (
            self.retain_until >= floor - RETENTION_SLACK
        ):
            return None
        lock = f"locked {self.lock_mode or 'not at all'}" + (
            f" until {iso_z(self.retain_until)}" if self.retain_until else ""
        )
        return (f"{lock}; required: {LOCK_MODE} until at least {iso_z(floor)} "
                f"({MIN_RETENTION_DAYS} days after it was written, {iso_z(self.modified)})")


# -- keys and bodies --------------------------------------------------------------------------


def checkpoint_prefix(tenant: str) -> str:
    validate_slug(tenant)
    return f"{tenant}/{CHECKPOINT_DIR}/"


def checkpoint_key(tenant: str, size: int) -> str:
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size < 10**SIZE_DIGITS:
        raise ValueError(f"a checkpoint size is a whole number from 1, got {size!r}")
    return f"{checkpoint_prefix(tenant)}{size:0{SIZE_DIGITS}d}.json"


def parse_checkpoint_key(key: str) -> tuple[str, int]:
    """(tenant, size) of a checkpoint key; ValueError for anything else."""
    m = _KEY.fullmatch(key)
    if not m or int(m["size"]) < 1:
        raise ValueError(f"not a checkpoint key (expected <tenant>/{CHECKPOINT_DIR}/<size, {SIZE_DIGITS} digits>.json)")
    validate_slug(m["tenant"])
    return m["tenant"], int(m["size"])


def checkpoint_body(cp: Checkpoint) -> bytes:
    if cp.created_at is None:
        raise ValueError("a checkpoint is written with its row's created_at")
    return canonical_json({
        "tenant": cp.tenant, "size": cp.size, "merkle_root": cp.merkle_root,
        "created_at": ledger_time(cp.created_at), "format": CHECKPOINT_FORMAT,
    })


def parse_checkpoint_body(key: str, body: bytes) -> Checkpoint:
    """The checkpoint an object at `key` holds; ValueError saying why it is not a valid one."""
    tenant, size = parse_checkpoint_key(key)
    if len(body) > MAX_BODY:
        raise ValueError(f"the body is larger than {MAX_BODY} bytes")
    try:
        value = json.loads(body)
        if canonical_json(value) != body:
            raise ValueError
    except ValueError:
        raise ValueError("the body is not canonical JSON") from None
    if not isinstance(value, dict) or set(value) != BODY_FIELDS:
        fields = sorted(value) if isinstance(value, dict) else type(value).__name__
        raise ValueError(f"the body's fields are {fields}, not {sorted(BODY_FIELDS)}")
    if value["format"] != CHECKPOINT_FORMAT:
        raise ValueError(f"format {value['format']!r}, not {CHECKPOINT_FORMAT}")
    if value["tenant"] != tenant or value["size"] != size or isinstance(value["size"], bool):
        raise ValueError(f"the body is for tenant {value['tenant']!r} size {value['size']!r}, its key for "
                         f"{tenant!r} size {size}")
    if not isinstance(value["merkle_root"], str) or not _ROOT.fullmatch(value["merkle_root"]):
        raise ValueError(f"merkle_root {value['merkle_root']!r} is not 64 lowercase hex characters")
    try:
        created = parse_iso(value["created_at"])
    except (TypeError, ValueError, AttributeError):
        raise ValueError(f"created_at {value['created_at']!r} is not a time") from None
    return Checkpoint(tenant, size, value["merkle_root"], created)


# -- reading ----------------------------------------------------------------------------------


def list_checkpoint_versions(s3, bucket: str, tenant: str, workers: int = 8) -> list[CheckpointVersion]:
    """Every object version and delete marker under the tenant's checkpoints prefix, each version
    read back (body and lock). Versions, not current objects: a version under a newer one or under a
    delete marker is still a checkpoint. S3 faults raise; they are not findings."""
    return _read_versions(s3, bucket, checkpoint_prefix(tenant), None, workers)


def _read_versions(s3, bucket: str, prefix: str, exact: str | None, workers: int) -> list[CheckpointVersion]:
    listed: list[CheckpointVersion] = []
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=prefix):
        for marker, items in ((False, page.get("Versions", [])), (True, page.get("DeleteMarkers", []))):
            for item in items:
                if exact is None or item["Key"] == exact:
                    listed.append(CheckpointVersion(bucket, item["Key"], item["VersionId"], item["LastModified"],
                                                    delete_marker=marker))
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        read = list(pool.map(lambda v: v if v.delete_marker else _read_version(s3, v), listed))
    return sorted((v for v in read if v is not None), key=lambda v: (v.key, v.modified, v.version_id))


def _read_version(s3, listed: CheckpointVersion) -> CheckpointVersion | None:
    """The listed version with its body parsed and its lock; None when it is gone since the listing."""
    try:
        resp = s3.get_object(Bucket=listed.bucket, Key=listed.key, VersionId=listed.version_id)
    except ClientError as exc:
        if s3_lib.is_missing(exc):
            return None
        raise
    try:
        body = resp["Body"].read(MAX_BODY + 1)
    finally:
        resp["Body"].close()
    if "ObjectLockMode" not in resp:  # GetObject should carry the lock; HeadObject is documented to
        resp = s3_lib.head(s3, listed.bucket, listed.key, listed.version_id, checksum=False) or resp
    until = resp.get("ObjectLockRetainUntilDate")
    try:
        cp, invalid = parse_checkpoint_body(listed.key, body), None
    except ValueError as exc:
        cp, invalid = None, str(exc)
    return CheckpointVersion(
        listed.bucket, listed.key, listed.version_id, listed.modified, False, cp, invalid,
        resp.get("ObjectLockMode"), until.astimezone(UTC) if until else None,
    )


# -- writing ----------------------------------------------------------------------------------


def _retention_days(settings: Settings) -> int:
    try:
        check_retention_days(settings.guard_retention_days)
    except InvalidSetting as exc:
        raise CustodyError(f"{exc}: no checkpoint object written") from None
    return settings.guard_retention_days


def _reusable(versions: Iterable[CheckpointVersion], cp: Checkpoint) -> CheckpointVersion | None:
    for v in versions:
        if v.checkpoint is not None and v.checkpoint.merkle_root == cp.merkle_root and v.lock_problem() is None:
            return v
    return None


def _conflict(versions: Iterable[CheckpointVersion], cp: Checkpoint) -> CheckpointConflict | None:
    for v in versions:
        if v.checkpoint is not None and v.checkpoint.merkle_root != cp.merkle_root:
            return CheckpointConflict(
                f"{v.where} is the WORM checkpoint of size {cp.size} with root {v.checkpoint.merkle_root}, "
                f"not {cp.merkle_root}: the ledger it pinned is not the one being checkpointed; nothing written"
            )
    return None


def anchor_checkpoint(s3, settings: Settings, cp: Checkpoint) -> tuple[CheckpointVersion, bool]:
    """Make sure the checkpoint is an object under a COMPLIANCE lock; (that version, written now?).

    Reuses a valid locked version with the same root; raises CheckpointConflict when a valid version
    holds another root, CustodyError when the written version is not locked or checksummed as asked."""
    days = _retention_days(settings)
    bucket, key = settings.guard_bucket, checkpoint_key(cp.tenant, cp.size)
    existing = _read_versions(s3, bucket, key, key, 4)
    found, conflict = _reusable(existing, cp), _conflict(existing, cp)
    if conflict is not None:
        raise conflict
    if found is not None:
        return found, False
    body = checkpoint_body(cp)
    sha = hashlib.sha256(body).hexdigest()
    retain_until = (datetime.now(UTC) + timedelta(days=days)).replace(microsecond=0) + timedelta(seconds=1)
    extra = {} if existing else {"IfNoneMatch": "*"}
    try:
        resp = s3.put_object(
            Bucket=bucket, Key=key, Body=body, ContentType="application/json",
            ChecksumAlgorithm="SHA256", ChecksumSHA256=s3_lib.b64_sha256(sha),
            ObjectLockMode=LOCK_MODE, ObjectLockRetainUntilDate=retain_until, **extra,
        )
    except ClientError as exc:
        if not s3_lib.is_precondition_failed(exc):
            raise
        existing = _read_versions(s3, bucket, key, key, 4)  # another writer got there first
        found, conflict = _reusable(existing, cp), _conflict(existing, cp)
        if found is not None:
            return found, False
        raise conflict or CustodyError(
            f"s3://{bucket}/{key} appeared while writing it and is not this checkpoint, locked"
        ) from None
    head = s3_lib.head(s3, bucket, key, resp.get("VersionId"))
    left = f"s3://{bucket}/{key} version {resp.get('VersionId')}"
    if head is None:
        raise CustodyError(f"{left}, just written, cannot be found")
    until = head.get("ObjectLockRetainUntilDate")
    if head.get("ObjectLockMode") != LOCK_MODE or until is None or until < retain_until:
        raise CustodyError(f"{left} is locked {head.get('ObjectLockMode')} until {until}, asked {LOCK_MODE} until "
                           f"{iso_z(retain_until)}; the checkpoint row is not committed")
    if head.get("ChecksumSHA256") not in (None, s3_lib.b64_sha256(sha)):
        raise CustodyError(f"{left} has checksum {head.get('ChecksumSHA256')}, not the body's")
    written = CheckpointVersion(bucket, key, head["VersionId"], head["LastModified"], False, cp, None,
                                head["ObjectLockMode"], until.astimezone(UTC))
    return written, True


def record_checkpoint(engine: Engine, s3, settings: Settings, tenant: str, size: int,
                      merkle_root: str) -> Checkpoint | None:
    """Insert the checkpoint row and write its locked object before the row commits.

    None when a row of that size exists already (a concurrent audit wrote it, and its object before
    committing). Any failure to write the object rolls the row back; CheckpointConflict when the
    WORM object of that size holds another root."""
    with engine.begin() as conn:
        written = write_checkpoint(conn, tenant, size, merkle_root)
        if written is None:
            return None
        anchor_checkpoint(s3, settings, written)
    return written


def renew_locks(s3, settings: Settings, versions: Sequence[CheckpointVersion]) -> list[CheckpointVersion]:
    """Extend the COMPLIANCE lock of the newest checkpoint's valid versions whose lock ends within half
    the configured retention, to now + the configured days. Returns the versions extended."""
    days = _retention_days(settings)
    valid = [v for v in versions if v.checkpoint is not None and v.lock_mode == LOCK_MODE and v.retain_until]
    if not valid:
        return []
    newest = max(v.checkpoint.size for v in valid)
    now = datetime.now(UTC)
    renewed = []
    for v in valid:
        if v.checkpoint.size == newest and v.retain_until < now + timedelta(days=days / 2):
            until = (now + timedelta(days=days)).replace(microsecond=0) + timedelta(seconds=1)
            s3.put_object_retention(Bucket=v.bucket, Key=v.key, VersionId=v.version_id,
                                    Retention={"Mode": LOCK_MODE, "RetainUntilDate": until})
            renewed.append(v)
    return renewed
