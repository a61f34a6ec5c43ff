"""Audit of the chain of custody: ledger chain, checkpoints and the objects in the guard bucket.

`verify` re-walks each tenant's chain from the genesis hash, re-reads every custody object from
S3 (streamed through SHA-256), lists the guard bucket for objects no entry accounts for, checks
the ledger still extends its last checkpoint, and, when the chain is intact, writes a new
checkpoint (the RFC 6962 Merkle root of the whole ledger). Per tenant it reports the first broken
link of the chain (what follows a break cannot be trusted to say more), plus every object problem.

Problem kinds:
  chain        edited · deleted · reordered · inserted   (seq = where the chain breaks)
  checkpoint   truncated (shorter than the checkpoint) · checkpoint_mismatch (does not extend it)
  objects      object_missing · object_changed · retention_weakened · orphan_object (seq null)

How a break is classified (the row's own hash, its link to the row before, its seq and tenant):
  - a seq gap → deleted;
  - content that does not hash to the stored entry_hash → edited if the row is still linked on
    both sides, inserted if it is not linked into the chain at all;
  - a row that is itself consistent but not linked: inserted (the row before it was slipped in,
    this one still links past it; or it copies an earlier entry or another tenant's), reordered
    (its entry was written for another seq, or it links to an entry at another seq), else edited
    (the row before was rewritten with a recomputed hash: this one still links to the old hash).
What the chain alone cannot see: a rewrite of the tail with every hash recomputed. Checkpoints
cover the ledger up to their size; objects without an entry show up as orphans.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from botocore.exceptions import ClientError
from sqlalchemy import Engine, select, union

from astra.db.schema import custody_checkpoints, custody_ledger
from astra.guard.custody import EVENT_AUDIO, LOCK_MODE, is_missing, iso_z, parse_iso, stream_sha256
from astra.guard.ledger import Checkpoint, GENESIS_HASH, canonical_json, chain_hash, last_checkpoint, write_checkpoint
from astra.guard.merkle import leaf_hash, root_from_leaf_hashes
from astra.settings import Settings
from astra.tenancy import validate_slug

log = logging.getLogger(__name__)

DEFAULT_ORPHAN_GRACE_SECONDS = 60.0
Progress = Callable[[str, int, int], None]  # (phase, done, total)


@dataclass(frozen=True)
class Problem:
    tenant: str
    seq: int | None
    kind: str
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class VerifyReport:
    tenants: int = 0
    entries: int = 0
    problems: list[Problem] = field(default_factory=list)
    checkpoints: list[Checkpoint] = field(default_factory=list)  # written by this run
    objects: int = 0  # custody objects re-hashed

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {
            "tenants": self.tenants,
            "entries": self.entries,
            "ok": self.ok,
            "problems": [p.to_dict() for p in self.problems],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)


@dataclass(frozen=True)
class Row:
    seq: int
    entry: str
    prev_hash: str
    entry_hash: str


# -- the chain --------------------------------------------------------------------------------


def _parse(text: str) -> dict[str, Any] | None:
    """The entry as a dict if the text is exactly its canonical JSON, else None."""
    try:
        value = json.loads(text)
        return value if isinstance(value, dict) and canonical_json(value).decode() == text else None
    except (ValueError, TypeError):
        return None


def check_chain(tenant: str, rows: Sequence[Row]) -> Problem | None:
    """The first broken link of a tenant's chain (rows in seq order), or None when intact."""
    by_hash: dict[str, list[int]] = defaultdict(list)
    for r in rows:
        by_hash[r.entry_hash].append(r.seq)

    def problem(seq: int, kind: str, detail: str) -> Problem:
        return Problem(tenant, seq, kind, detail)

    prev = GENESIS_HASH
    for i, r in enumerate(rows):
        expected = i + 1
        q = rows[i - 1] if i else None
        if r.seq > expected:
            missing = f"seq {expected}" if r.seq == expected + 1 else f"seqs {expected}..{r.seq - 1}"
            return problem(expected, "deleted", f"{missing} missing: the chain goes from seq {expected - 1} to {r.seq}")
        if r.seq < expected:  # only a seq below 1 can sort first like this
            return problem(r.seq, "inserted", f"seq {r.seq} is outside the chain (seqs start at 1)")
        parsed = _parse(r.entry)
        try:
            content_ok = parsed is not None and chain_hash(r.prev_hash, r.entry.encode()) == r.entry_hash
        except ValueError:  # prev_hash not hex
            content_ok = False
        linked = r.prev_hash == prev
        if not content_ok:
            nxt = rows[i + 1] if i + 1 < len(rows) else None
            if linked and (nxt is None or nxt.prev_hash == r.entry_hash):
                what = "is not canonical JSON" if parsed is None else "no longer hashes to its stored entry_hash"
                return problem(r.seq, "edited", f"the entry {what}; its links on both sides are intact")
            return problem(r.seq, "inserted", "the entry is not linked into the chain and does not hash to its entry_hash")
        earlier_copies = [s for s in by_hash[r.entry_hash] if s < r.seq]
        if earlier_copies:
            return problem(r.seq, "inserted", f"the entry is a copy of seq {earlier_copies[0]}")
        if parsed.get("tenant") != tenant:
            return problem(r.seq, "inserted", f"the entry was written for tenant {parsed.get('tenant')!r}")
        if not linked:
            if q is not None and r.prev_hash == q.prev_hash:
                return problem(q.seq, "inserted", f"seq {q.seq} was slipped in: seq {r.seq} still links to seq {q.seq - 1}")
            linked_to = [s for s in by_hash.get(r.prev_hash, []) if s != r.seq - 1]
            if parsed.get("seq") != r.seq or linked_to:
                where = f"it was written as seq {parsed.get('seq')}" if parsed.get("seq") != r.seq else ""
                where += ("; " if where else "") + (f"it links to seq {linked_to[0]}" if linked_to else "")
                return problem(r.seq, "reordered", f"entry out of place: {where}")
            if q is not None:
                return problem(
                    q.seq, "edited", f"seq {q.seq} was rewritten with a recomputed hash: seq {r.seq} still links to its old hash"
                )
            return problem(r.seq, "inserted", "the first entry does not start from the genesis hash")
        if parsed.get("seq") != r.seq:
            return problem(r.seq, "reordered", f"entry out of place: it was written as seq {parsed.get('seq')}")
        prev = r.entry_hash
    return None


def check_checkpoint(tenant: str, rows: Sequence[Row], cp: Checkpoint | None, leaves: Sequence[bytes]) -> Problem | None:
    if cp is None:
        return None
    if len(rows) < cp.size:
        last = rows[-1].seq if rows else 0
        return Problem(
            tenant, last + 1 if last < cp.size else None, "truncated",
            f"the ledger has {len(rows)} entries, fewer than the {cp.size} of its checkpoint "
            f"(root {cp.merkle_root[:16]}…, {cp.created_at})",
        )
    root = root_from_leaf_hashes(leaves[: cp.size]).hex()
    if root != cp.merkle_root:
        return Problem(
            tenant, None, "checkpoint_mismatch",
            f"the first {cp.size} entries hash to {root[:16]}…, not to the checkpointed root "
            f"{cp.merkle_root[:16]}… ({cp.created_at}): the ledger does not extend its checkpoint",
        )
    return None


def _read_tenant(engine: Engine, tenant: str) -> tuple[Checkpoint | None, list[Row]]:
    # One snapshot for the checkpoint and the rows, so a concurrent audit cannot fall between.
    with engine.connect().execution_options(isolation_level="REPEATABLE READ") as conn, conn.begin():
        cp = last_checkpoint(conn, tenant)
        rows = conn.execute(
            select(custody_ledger.c.seq, custody_ledger.c.entry, custody_ledger.c.prev_hash, custody_ledger.c.entry_hash)
            .where(custody_ledger.c.tenant_id == tenant)
            .order_by(custody_ledger.c.seq)
        ).all()
    return cp, [Row(r.seq, r.entry, r.prev_hash, r.entry_hash) for r in rows]


def verify_chain(engine: Engine, tenant: str) -> list[Problem]:
    """The chain and checkpoint problems of one tenant (no S3, no checkpoint written)."""
    validate_slug(tenant)
    cp, rows = _read_tenant(engine, tenant)
    leaves = [leaf_hash(r.entry.encode()) for r in rows]
    return [p for p in (check_chain(tenant, rows), check_checkpoint(tenant, rows, cp, leaves)) if p]


# -- the objects ------------------------------------------------------------------------------


def _get(s3, bucket: str, key: str, version_id: str | None = None):
    try:
        return stream_sha256(s3, bucket, key, version_id)
    except ClientError as exc:
        if is_missing(exc):
            return None
        raise


def check_object(s3, entry: dict[str, Any]) -> list[tuple[str, str]]:
    """(kind, detail) for what is wrong with the object a custody.audio entry records.

    Reads what the key serves now; when that is not the recorded version, reads the recorded
    version too. Other S3 errors (access, outage) raise: they are not evidence of tampering."""
    bucket, key, vid = entry["bucket"], entry["key"], entry["version_id"]
    sha, size, uri = entry["sha256"], entry["size"], f"s3://{entry['bucket']}/{entry['key']}"
    out: list[tuple[str, str]] = []
    latest = _get(s3, bucket, key)
    recorded = latest if latest is not None and latest[2].get("VersionId") == vid else _get(s3, bucket, key, vid)
    if recorded is None:
        out.append(("object_missing", f"{uri} version {vid} (the custody copy) is gone"))
    else:
        digest, n, resp = recorded
        if digest != sha or n != size:
            out.append(("object_changed", f"{uri} version {vid} reads sha256 {digest} ({n} bytes), the ledger says {sha} ({size} bytes)"))
        if "ObjectLockMode" not in resp:  # GetObject should carry it; ask HeadObject otherwise
            resp = s3.head_object(Bucket=bucket, Key=key, VersionId=vid)
        mode, until = resp.get("ObjectLockMode"), resp.get("ObjectLockRetainUntilDate")
        if mode != LOCK_MODE or until is None or until < parse_iso(entry["retain_until"]):
            out.append((
                "retention_weakened",
                f"{uri} version {vid} is locked {mode or 'not at all'}"
                + (f" until {iso_z(until)}" if until else "")
                + f", the ledger says {entry['retention_mode']} until {entry['retain_until']}",
            ))
    if latest is None:
        if recorded is not None:
            out.append(("object_missing", f"{uri} has no current version: a delete marker hides the custody copy {vid}"))
    elif latest[2].get("VersionId") != vid and latest[0] != sha:
        out.append((
            "object_changed",
            f"{uri} now serves version {latest[2].get('VersionId')} with sha256 {latest[0]} ({latest[1]} bytes), "
            f"not the custody copy {vid} ({sha})",
        ))
    return out


def _list_guard(s3, bucket: str, prefix: str) -> dict[str, list[tuple[str, datetime]]]:
    """Current keys of the guard bucket by tenant (the first path segment)."""
    by_tenant: dict[str, list[tuple[str, datetime]]] = defaultdict(list)
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            by_tenant[obj["Key"].split("/", 1)[0]].append((obj["Key"], obj["LastModified"]))
    return by_tenant


def _is_audio_entry(entry: Any) -> bool:
    keys = ("bucket", "key", "version_id", "sha256", "size", "retain_until", "retention_mode")
    return isinstance(entry, dict) and entry.get("event") == EVENT_AUDIO and all(k in entry for k in keys)


# -- the audit --------------------------------------------------------------------------------


def verify(
    engine: Engine,
    s3,
    settings: Settings,
    tenant: str | None = None,
    *,
    write_checkpoints: bool = True,
    orphan_grace_seconds: float = DEFAULT_ORPHAN_GRACE_SECONDS,
    workers: int = 8,
    progress: Progress | None = None,
) -> VerifyReport:
    """Audit one tenant or all of them; `report.ok` only when everything is intact.

    Objects younger than `orphan_grace_seconds` are not called orphans: between its copy and its
    ledger append a custody copy has no entry yet (the bucket is listed before the ledger is read,
    so only copies still in flight fall in that window)."""
    if tenant is not None:
        validate_slug(tenant)
    report = VerifyReport()
    bucket = settings.guard_bucket
    listed = _list_guard(s3, bucket, f"{tenant}/" if tenant else "")
    if tenant is not None:
        tenant_ids = {tenant}
    else:
        # The one query across tenants: which tenants have custody data at all.
        with engine.connect() as conn:
            tenant_ids = set(
                conn.execute(
                    union(select(custody_ledger.c.tenant_id).distinct(), select(custody_checkpoints.c.tenant_id).distinct())
                ).scalars()
            )
    tenant_ids |= set(listed)
    report.tenants = len(tenant_ids)

    audio: list[tuple[str, int, dict[str, Any]]] = []
    ledger_keys: dict[str, set[tuple[str, str]]] = defaultdict(set)
    ordered = sorted(tenant_ids)
    for done, t in enumerate(ordered, 1):
        cp, rows = _read_tenant(engine, t)
        report.entries += len(rows)
        leaves = [leaf_hash(r.entry.encode()) for r in rows]
        chain = check_chain(t, rows)
        checkpoint = check_checkpoint(t, rows, cp, leaves)
        report.problems += [p for p in (chain, checkpoint) if p]
        for r in rows:
            try:
                entry = json.loads(r.entry)
            except ValueError:
                continue
            if _is_audio_entry(entry):
                audio.append((t, r.seq, entry))
                ledger_keys[t].add((entry["bucket"], entry["key"]))
        if write_checkpoints and chain is None and checkpoint is None and rows and (cp is None or cp.size < len(rows)):
            with engine.begin() as conn:
                written = write_checkpoint(conn, t, len(rows), root_from_leaf_hashes(leaves).hex())
            if written:
                report.checkpoints.append(written)
        if progress:
            progress("ledger", done, len(ordered))

    cutoff = datetime.now(timezone.utc) - timedelta(seconds=orphan_grace_seconds)
    for t, objects in listed.items():
        for key, modified in objects:
            if (bucket, key) not in ledger_keys[t] and modified <= cutoff:
                report.problems.append(
                    Problem(t, None, "orphan_object", f"s3://{bucket}/{key} has no ledger entry (last modified {iso_z(modified)})")
                )

    report.objects = len(audio)
    if progress:
        progress("objects", 0, len(audio))
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = {pool.submit(check_object, s3, entry): (t, seq) for t, seq, entry in audio}
        for done, fut in enumerate(as_completed(futures), 1):
            t, seq = futures[fut]
            report.problems += [Problem(t, seq, kind, detail) for kind, detail in fut.result()]
            if progress:
                progress("objects", done, len(audio))

    report.problems.sort(key=lambda p: (p.tenant, p.seq is None, p.seq or 0, p.kind, p.detail))
    return report
