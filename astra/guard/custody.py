"""Custody copy: the session audio goes into the WORM guard bucket, verified, then into the ledger.

    <guard bucket>/<tenant>/audio/<session_id>/v<n>/<sha256>.<ext>

`place_in_custody` CopyObjects the audio under an explicit Object Lock COMPLIANCE retention
(now + settings.guard_retention_days, never below MIN_RETENTION_DAYS) with a SHA-256 checksum and
checks the copy's checksum, size and lock against what was asked. `take_custody` does that and
then appends the ledger entry, in that order, both idempotent: a re-run after a crash anywhere
neither copies twice (a locked bucket keeps every version, so a second copy would be a second
version) nor appends twice.

`verify_custody` is the gate every path calls before deleting an upload (the handover, also on
its resume path, and the clean-up schedule); `check_custody` lists the same problems as sentences.

The lock a custody copy must still have (`retention_problem`, shared with `astra guard verify`):
COMPLIANCE mode, retained until at least the date in its ledger entry and at least
MIN_RETENTION_DAYS after S3 made the copy (its LastModified). The floor, not the configured days:
raising the configured retention later must not turn every older copy into a finding, and
lowering it (to no less than the floor) is allowed.

Only documented S3 calls are used, so the same code runs on AWS. Two moto quirks are handled:
CopyObject into a bucket with default retention wants `x-amz-sdk-checksum-algorithm` (added by a
`before-sign` hook, harmless elsewhere), and GetObjectRetention fails, so lock mode and date are
read from HeadObject, which S3 documents to return them too.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from botocore.exceptions import ClientError
from sqlalchemy import Engine

from astra import s3 as s3_lib
from astra.guard.ledger import CustodyLedger, LedgerEntry
from astra.settings import MIN_RETENTION_DAYS, InvalidSetting, Settings, check_retention_days
from astra.tenancy import SessionKey, validate_slug

EVENT_AUDIO = "custody.audio"
LOCK_MODE = "COMPLIANCE"
# S3 sets LastModified when the copy completes, after we computed now + days: allow for that and
# for clock skew when checking "retained until at least <LastModified> + the floor".
RETENTION_SLACK = timedelta(minutes=5)

_SHA256 = re.compile(r"[0-9a-f]{64}")
_EXT = re.compile(r"[a-z0-9]{1,8}")
_GUARD_KEY = re.compile(
    r"(?P<tenant>[a-z0-9-]+)/audio/(?P<session>[a-z0-9-]+)/v(?P<version>[1-9][0-9]*)/"
    r"(?P<sha>[0-9a-f]{64})\.(?P<ext>[a-z0-9]{1,8})"
)
_HOOK_ID = "astra-guard-sdk-checksum-algorithm"
# The fields of a custody.audio entry that the object checks read.
AUDIO_FIELDS = ("bucket", "key", "version_id", "sha256", "size", "retain_until", "retention_mode")


class CustodyError(RuntimeError):
    """The audio is not (or could not be put) under custody as required; the upload must stay."""


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

    def to_entry(self) -> dict[str, Any]:
        """The ledger entry (the ledger adds seq, entry_key, recorded_at; tenant is already here)."""
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
        }

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- helpers ----------------------------------------------------------------------------------


def audio_entry_key(session_id: str, version: int, sha256_hex: str) -> str:
    return f"audio:{session_id}:v{version}:{sha256_hex}"


def guard_key(tenant: str, session_id: str, version: int, sha256_hex: str, ext: str) -> str:
    SessionKey(tenant, session_id, version)  # validates all three
    if not _SHA256.fullmatch(sha256_hex or ""):
        raise ValueError(f"sha256 must be 64 lowercase hex characters, got {sha256_hex!r}")
    ext = ext.lstrip(".").lower()
    if not _EXT.fullmatch(ext):
        raise ValueError(f"invalid audio extension {ext!r}")
    return f"{tenant}/audio/{session_id}/v{version}/{sha256_hex}.{ext}"


def parse_guard_key(key: str) -> dict[str, Any]:
    m = _GUARD_KEY.fullmatch(key)
    if not m:
        raise ValueError(f"not a custody audio key: {key!r} (expected <tenant>/audio/<session>/v<n>/<sha256>.<ext>)")
    validate_slug(m["tenant"])
    return {"tenant": m["tenant"], "session_id": m["session"], "version": int(m["version"]),
            "sha256": m["sha"], "ext": m["ext"]}


def iso_z(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


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


def _content_matches(s3, bucket: str, key: str, head: dict, sha256_hex: str) -> bool:
    known = s3_lib.full_object_sha256(head)
    if known is not None:
        return known == sha256_hex
    digest, _, _ = s3_lib.stream_sha256(s3, bucket, key, head.get("VersionId"))
    return digest == sha256_hex


def _locked_until(head: dict) -> datetime | None:
    if head.get("ObjectLockMode") != LOCK_MODE:
        return None
    until = head.get("ObjectLockRetainUntilDate")
    return until.astimezone(UTC) if until else None


def retention_problem(head: dict, entry: Mapping[str, Any]) -> str | None:
    """Why a custody copy's lock (HeadObject or GetObject response) is weaker than required, or None.

    Required: COMPLIANCE mode (GOVERNANCE can be bypassed), retained until at least the ledger
    entry's `retain_until` and at least MIN_RETENTION_DAYS after S3 made the copy (LastModified)."""
    mode, until = head.get("ObjectLockMode"), head.get("ObjectLockRetainUntilDate")
    modified = head["LastModified"].astimezone(UTC)
    floor = modified + timedelta(days=MIN_RETENTION_DAYS)
    recorded = parse_iso(entry["retain_until"])
    if mode == LOCK_MODE and until is not None and until >= recorded and until >= floor - RETENTION_SLACK:
        return None
    lock = f"locked {mode or 'not at all'}" + (f" until {iso_z(until)}" if until else "")
    return (
        f"s3://{entry['bucket']}/{entry['key']} version {entry['version_id']} is {lock}; required: {LOCK_MODE} until "
        f"at least the ledger's {entry['retain_until']} (it says {entry['retention_mode']}) and the floor "
        f"{iso_z(floor)} ({MIN_RETENTION_DAYS} days after the copy, {iso_z(modified)})"
    )


def _get_or_none(s3, bucket: str, key: str, version_id: str | None = None) -> tuple[str, int, dict] | None:
    """(sha256, size, GetObject response) of an object, None when it is missing."""
    try:
        return s3_lib.stream_sha256(s3, bucket, key, version_id)
    except ClientError as exc:
        if s3_lib.is_missing(exc):
            return None
        raise


def check_object(s3, entry: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(kind, detail) for what is wrong with the object a custody.audio entry records.

    Reads what the key serves now; when that is not the recorded version, reads the recorded
    version too. Other S3 errors (access, outage) raise: they are not evidence of tampering."""
    bucket, key, vid = entry["bucket"], entry["key"], entry["version_id"]
    sha, size, uri = entry["sha256"], entry["size"], f"s3://{entry['bucket']}/{entry['key']}"
    out: list[tuple[str, str]] = []
    latest = _get_or_none(s3, bucket, key)
    serves_recorded = latest is not None and latest[2].get("VersionId") == vid
    recorded = latest if serves_recorded else _get_or_none(s3, bucket, key, vid)
    if recorded is None:
        out.append(("object_missing", f"{uri} version {vid} (the custody copy) is gone"))
    else:
        digest, n, resp = recorded
        if digest != sha or n != size:
            out.append((
                "object_changed",
                f"{uri} version {vid} reads sha256 {digest} ({n} bytes), the ledger says {sha} ({size} bytes)",
            ))
        if "ObjectLockMode" not in resp:  # GetObject should carry it; ask HeadObject otherwise
            resp = s3.head_object(Bucket=bucket, Key=key, VersionId=vid)
        weakened = retention_problem(resp, entry)
        if weakened:
            out.append(("retention_weakened", weakened))
    if latest is None:
        if recorded is not None:
            hidden = f"{uri} has no current version: a delete marker hides the custody copy {vid}"
            out.append(("object_missing", hidden))
    elif latest[2].get("VersionId") != vid and latest[0] != sha:
        out.append((
            "object_changed",
            f"{uri} now serves version {latest[2].get('VersionId')} with sha256 {latest[0]} ({latest[1]} bytes), "
            f"not the custody copy {vid} ({sha})",
        ))
    return out


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

    Steps: (1) refuse a retention below MIN_RETENTION_DAYS, whatever built the Settings;
    (2) when the key already holds a copy with this SHA-256 under a COMPLIANCE lock that meets the
    floor (also one a delete marker hides), return it (copied=False): nothing is copied;
    (3) with `verify_source` (default) check the source against `sha256_hex` *before* the copy
    (its S3 checksum if it has one, else a stream read), because whatever lands under a locked
    key stays there for the retention period; (4) CopyObject with explicit COMPLIANCE retention
    and a SHA-256 checksum, of the version checked; (5) verify the copy's checksum, size and lock.
    Raises CustodyError on any mismatch."""
    prepare_client(s3)
    _refuse_short_retention(settings)
    key = guard_key(tenant, session_id, version, sha256_hex, ext)
    bucket, source_uri = settings.guard_bucket, f"s3://{src_bucket}/{src_key}"
    wanted = CustodyRecord(tenant, session_id, version, sha256_hex, 0, bucket, key, "", "", "", source_uri)

    existing = _locked_copy(s3, bucket, key, sha256_hex)
    if existing is not None:
        return _record_from_head(wanted, existing, copied=False)
    src = _checked_source(s3, src_bucket, src_key, sha256_hex, verify_source)
    resp, retain_until = _copy_locked(s3, wanted, src_bucket, src_key, src["ETag"], settings.guard_retention_days)
    head = _verified_copy(s3, wanted, resp, src, retain_until)
    return _record_from_head(wanted, head, copied=True)


def _refuse_short_retention(settings: Settings) -> None:
    # Settings refuses this when it is built; a Settings that skipped that (or was altered since)
    # must still not lock audio for less than the floor: the lock date could be in the past.
    try:
        check_retention_days(settings.guard_retention_days)
    except InvalidSetting as exc:
        raise CustodyError(f"{exc}: nothing copied") from None


def _locked_copy(s3, bucket: str, key: str, sha256_hex: str) -> dict | None:
    """HeadObject of a version at `key` holding this SHA-256 under a COMPLIANCE lock still in force.

    The current version; when the key serves nothing (a delete marker), its older versions:
    copying again would add an unledgered version beside the hidden custody copy, which stays
    hidden and is reported until someone removes the marker. Current content with another SHA-256
    raises: nothing is ever copied over it."""
    current = s3_lib.head(s3, bucket, key)
    if current is not None:
        if not _content_matches(s3, bucket, key, current, sha256_hex):
            raise CustodyError(
                f"s3://{bucket}/{key} (version {current.get('VersionId')}) already holds content whose "
                f"SHA-256 is not {sha256_hex}: refusing to copy over it; run `astra guard verify`"
            )
        return current if _lock_holds(current) else None  # not locked as required: copy again, locked
    for head in _version_heads(s3, bucket, key):
        if _lock_holds(head) and _content_matches(s3, bucket, key, head, sha256_hex):
            return head
    return None


def _lock_holds(head: dict) -> bool:
    """COMPLIANCE, still in force, and at least MIN_RETENTION_DAYS from the copy: worth reusing."""
    until = _locked_until(head)
    floor = head["LastModified"].astimezone(UTC) + timedelta(days=MIN_RETENTION_DAYS) - RETENTION_SLACK
    return until is not None and until > datetime.now(UTC) and until >= floor


def _checked_source(s3, bucket: str, key: str, sha256_hex: str, verify_content: bool) -> dict:
    """HeadObject of the source, once it is there (and, with `verify_content`, hashes to `sha256_hex`)."""
    src = s3_lib.head(s3, bucket, key)
    if src is None:
        raise CustodyError(f"source s3://{bucket}/{key} not found")
    if verify_content and not _content_matches(s3, bucket, key, src, sha256_hex):
        raise CustodyError(f"source s3://{bucket}/{key} does not have SHA-256 {sha256_hex}: nothing copied")
    return src


def _copy_locked(s3, wanted: CustodyRecord, src_bucket: str, src_key: str, src_etag: str,
                 days: int) -> tuple[dict, datetime]:
    """CopyObject into custody under COMPLIANCE retention for `days`; (response, retain-until asked)."""
    retain_until = (datetime.now(UTC) + timedelta(days=days)).replace(microsecond=0) + timedelta(
        seconds=1
    )  # whole seconds, rounded up: never shorter than configured
    resp = s3.copy_object(
        Bucket=wanted.bucket,
        Key=wanted.key,
        CopySource={"Bucket": src_bucket, "Key": src_key},
        CopySourceIfMatch=src_etag,  # the content checked, not a later overwrite
        ObjectLockMode=LOCK_MODE,
        ObjectLockRetainUntilDate=retain_until,
        ChecksumAlgorithm="SHA256",
    )
    return resp, retain_until


def _version_heads(s3, bucket: str, key: str) -> list[dict]:
    """HeadObject of every version of exactly `key`, newest first (delete markers left out)."""
    heads = []
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=key):
        for version in page.get("Versions", []):
            if version["Key"] == key:
                head = s3_lib.head(s3, bucket, key, version["VersionId"])
                if head is not None:
                    heads.append(head)
    return sorted(heads, key=lambda h: h["LastModified"], reverse=True)


def _verified_copy(s3, wanted: CustodyRecord, resp: dict, src: dict, retain_until: datetime) -> dict:
    """HeadObject of the copy CopyObject made, once its checksum, size and lock are as asked."""
    bucket, key, version_id = wanted.bucket, wanted.key, resp.get("VersionId")
    expected_b64 = s3_lib.b64_sha256(wanted.sha256)
    copied_b64 = resp.get("CopyObjectResult", {}).get("ChecksumSHA256")
    head = s3_lib.head(s3, bucket, key, version_id) if version_id else None
    left_behind = f"s3://{bucket}/{key} version {version_id} stays locked, with no ledger entry"
    if head is None:
        raise CustodyError(f"copy to s3://{bucket}/{key} returned version {version_id!r} that HeadObject cannot find")
    if copied_b64 != expected_b64 or head.get("ChecksumSHA256") != expected_b64:
        raise CustodyError(
            f"copy verification failed: checksum {copied_b64 or head.get('ChecksumSHA256')} != {expected_b64} "
            f"(sha256 {wanted.sha256}); {left_behind}"
        )
    if head.get("ContentLength") != src.get("ContentLength"):
        raise CustodyError(
            f"copy verification failed: size {head.get('ContentLength')} != {src.get('ContentLength')}; {left_behind}"
        )
    until = _locked_until(head)
    if until is None or until < retain_until:
        raise CustodyError(
            f"copy verification failed: lock {head.get('ObjectLockMode')} until "
            f"{head.get('ObjectLockRetainUntilDate')}, asked {LOCK_MODE} until {iso_z(retain_until)}; {left_behind}"
        )
    return head


def _record_from_head(wanted: CustodyRecord, head: dict, copied: bool) -> CustodyRecord:
    return CustodyRecord(
        tenant=wanted.tenant,
        session_id=wanted.session_id,
        version=wanted.version,
        sha256=wanted.sha256,
        size=int(head["ContentLength"]),
        bucket=wanted.bucket,
        key=wanted.key,
        version_id=head["VersionId"],
        retention_mode=head["ObjectLockMode"],
        retain_until=iso_z(head["ObjectLockRetainUntilDate"]),
        source_uri=wanted.source_uri,
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

    Only after this returns, and `verify_custody` passes, may the caller delete the temporary
    upload. Re-running it after a crash at any point completes the work without a second copy or
    a second entry; the entry returned is the first one written (entry.appended tells which)."""
    record = place_in_custody(
        s3, settings, tenant, session_id, version, src_bucket, src_key, sha256_hex, ext, verify_source=verify_source
    )
    entry = CustodyLedger(engine).append(tenant, record.to_entry(), record.entry_key)
    return record, entry


# -- the gate before any delete ---------------------------------------------------------------

CustodyTarget = CustodyRecord | LedgerEntry | Mapping[str, Any] | str


def verify_custody(s3, settings: Settings, engine: Engine, target: CustodyTarget) -> None:
    """Raise CustodyError unless the custody of `target` holds; call it before deleting an upload.

    The gate of every path that deletes a temporary upload (the handover, including its resume
    path, and the clean-up schedule). What holds is what `check_custody` checks."""
    problems = check_custody(s3, settings, engine, target)
    if problems:
        raise CustodyError(f"custody of {_describe(target)} not verified: " + "; ".join(problems))


def check_custody(s3, settings: Settings, engine: Engine, target: CustodyTarget) -> list[str]:
    """Everything wrong with one custody copy, as sentences "<kind>: <detail>" (empty: custody holds).

    `target` is the CustodyRecord from `place_in_custody`/`take_custody`, its LedgerEntry, the
    handover record's `custody` dict (CustodyRecord fields + `ledger_seq`, `ledger_entry_hash`),
    or the guard key `<tenant>/audio/<session>/v<n>/<sha256>.<ext>`. Checks:
      - the ledger entry for the key is present and is what the target says (entry key, version,
        SHA-256, bucket = the guard bucket; for a handover dict also its seq and entry hash);
      - the recorded object version is present, re-read, and hashes to the ledger's SHA-256 and size;
      - its lock is COMPLIANCE until at least the ledger's date and the floor (`retention_problem`);
      - the key still serves that content (no delete marker, no other content on top);
      - the tenant's chain and checkpoint are intact.
    S3 or database faults raise; they are not findings."""
    from astra.guard.verify import verify_chain  # verify imports this module

    tenant, entry_key = _target_key(target)
    ledger_entry = CustodyLedger(engine).get_by_key(tenant, entry_key)
    if ledger_entry is None:
        problems = [f"ledger: tenant {tenant} has no custody entry {entry_key}"]
        entry = _described_entry(target)  # what the caller holds can still be checked on S3
    else:
        entry = ledger_entry.entry
        problems = [f"ledger: {p}" for p in _ledger_mismatches(settings, ledger_entry, entry_key, target)]
    if entry is not None and all(name in entry for name in AUDIO_FIELDS):
        problems += [f"{kind}: {detail}" for kind, detail in check_object(s3, entry)]
    problems += [f"chain: {p.kind} at seq {p.seq}: {p.detail}" for p in verify_chain(engine, tenant)]
    return problems


def _target_key(target: CustodyTarget) -> tuple[str, str]:
    """(tenant, ledger entry key) of a custody target."""
    if isinstance(target, LedgerEntry):
        entry = target.entry
        if entry.get("event") != EVENT_AUDIO:
            raise ValueError(
                f"ledger entry seq {target.seq} of {target.tenant} is a {entry.get('event')!r}, not {EVENT_AUDIO!r}"
            )
        return target.tenant, audio_entry_key(entry["session_id"], entry["version"], entry["sha256"])
    if isinstance(target, CustodyRecord):
        return target.tenant, target.entry_key
    if isinstance(target, Mapping):
        return target["tenant"], audio_entry_key(target["session_id"], target["version"], target["sha256"])
    parts = parse_guard_key(target)
    return parts["tenant"], audio_entry_key(parts["session_id"], parts["version"], parts["sha256"])


def _described_entry(target: CustodyTarget) -> Mapping[str, Any] | None:
    if isinstance(target, CustodyRecord):
        return target.to_entry()
    if isinstance(target, Mapping):
        return target
    return None


def _ledger_mismatches(settings: Settings, found: LedgerEntry, entry_key: str, target: CustodyTarget) -> list[str]:
    """How the ledger entry found under `entry_key` differs from what it must be."""
    entry, out = found.entry, []
    if entry.get("entry_key") != entry_key:
        out.append(f"seq {found.seq} is filed under {entry_key} but its hashed entry_key is {entry.get('entry_key')!r}")
    if entry.get("bucket") != settings.guard_bucket:
        out.append(
            f"seq {found.seq} records bucket {entry.get('bucket')!r}, not the guard bucket {settings.guard_bucket}"
        )
    described = _described_entry(target)
    for name in ("version_id", "sha256", "key") if described is not None else ():
        if described.get(name) != entry.get(name):
            out.append(
                f"seq {found.seq} records {name} {entry.get(name)!r}, the custody record says {described.get(name)!r}"
            )
    if isinstance(target, Mapping):
        for name, value in (("ledger_seq", found.seq), ("ledger_entry_hash", found.entry_hash)):
            if name in target and target[name] != value:
                out.append(f"the custody record's {name} is {target[name]!r}, the ledger's is {value!r}")
    return out


def _describe(target: CustodyTarget) -> str:
    if isinstance(target, str):
        return target
    tenant, entry_key = _target_key(target)
    return f"{tenant} {entry_key}"
