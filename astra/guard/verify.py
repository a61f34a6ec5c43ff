"""Audit of the chain of custody: ledger chain, checkpoints and the objects in the guard bucket.

`verify` re-walks each tenant's chain from the genesis hash, re-reads every custody object from
S3 (streamed through SHA-256) and checks its lock, lists every object version and delete marker
of the guard bucket for versions no entry accounts for, checks the ledger still extends its last
checkpoint, and, when the chain is intact, writes a new checkpoint (the RFC 6962 Merkle root of
the whole ledger). Per tenant it reports the first broken link of the chain (what follows a break
cannot be trusted to say more), plus every object problem.

Problem kinds:
  chain        edited · deleted · reordered · inserted   (seq = where the chain breaks)
               old_format (a format-1 entry: its entry_key and recorded_at are not hashed)
  checkpoint   truncated (shorter than the checkpoint) · checkpoint_mismatch (does not extend it)
  objects      object_missing · object_changed · retention_weakened (not COMPLIANCE, or until before the
               ledger's date or the floor: custody.retention_problem)
  bucket       orphan_object (a version no entry records, current or not) · delete_marker (seq null)

How a break is classified (the row's own hash, its link to the row before, its seq and tenant):
  - a seq gap → deleted;
  - content that does not hash to the stored entry_hash → edited if the row is still linked on
    both sides, inserted if it is not linked into the chain at all;
  - a row that is itself consistent but not linked: inserted (the row before it was slipped in,
    this one still links past it; or it copies an earlier entry or another tenant's), reordered
    (its entry was written for another seq, or it links to an entry at another seq), else edited
    (the row before was rewritten with a recomputed hash: this one still links to the old hash);
  - a column beside the entry (entry_key, recorded_at) that differs from the hashed entry → edited.
What the chain alone cannot see: a rewrite of the tail with every hash recomputed. Checkpoints
cover the ledger up to their size; objects without an entry show up as orphans.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, select, union

from astra.db.schema import custody_checkpoints, custody_ledger, tenants
from astra.guard.custody import AUDIO_FIELDS, EVENT_AUDIO, check_object, iso_z
from astra.guard.ledger import (
    GENESIS_HASH,
    LEDGER_FORMAT,
    Checkpoint,
    canonical_json,
    chain_hash,
    last_checkpoint,
    ledger_time,
    write_checkpoint,
)
from astra.guard.merkle import leaf_hash, root_from_leaf_hashes
from astra.settings import Settings
from astra.tenancy import validate_slug

DEFAULT_ORPHAN_GRACE_SECONDS = 60.0
Progress = Callable[[str, int, int], None]  # (phase, done, total)


class UnknownTenant(LookupError):
    """The tenant has no row in `tenants` and nothing in the guard bucket: a typo, not an empty audit."""


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
    entry_key: str | None
    recorded_at: datetime


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
            return problem(
                r.seq, "inserted", "the entry is not linked into the chain and does not hash to its entry_hash"
            )
        earlier_copies = [s for s in by_hash[r.entry_hash] if s < r.seq]
        if earlier_copies:
            return problem(r.seq, "inserted", f"the entry is a copy of seq {earlier_copies[0]}")
        if parsed.get("tenant") != tenant:
            return problem(r.seq, "inserted", f"the entry was written for tenant {parsed.get('tenant')!r}")
        if not linked:
            if q is not None and r.prev_hash == q.prev_hash:
                return problem(
                    q.seq, "inserted", f"seq {q.seq} was slipped in: seq {r.seq} still links to seq {q.seq - 1}"
                )
            linked_to = [s for s in by_hash.get(r.prev_hash, []) if s != r.seq - 1]
            if parsed.get("seq") != r.seq or linked_to:
                where = f"it was written as seq {parsed.get('seq')}" if parsed.get("seq") != r.seq else ""
                where += ("; " if where else "") + (f"it links to seq {linked_to[0]}" if linked_to else "")
                return problem(r.seq, "reordered", f"entry out of place: {where}")
            if q is not None:
                return problem(
                    q.seq, "edited",
                    f"seq {q.seq} was rewritten with a recomputed hash: seq {r.seq} still links to its old hash",
                )
            return problem(r.seq, "inserted", "the first entry does not start from the genesis hash")
        if parsed.get("seq") != r.seq:
            return problem(r.seq, "reordered", f"entry out of place: it was written as seq {parsed.get('seq')}")
        unbound = _columns_problem(tenant, r, parsed)
        if unbound:
            return unbound
        prev = r.entry_hash
    return None


def _columns_problem(tenant: str, r: Row, parsed: dict[str, Any]) -> Problem | None:
    """The row's columns beside the entry must be what the hashed entry says they are."""
    if parsed.get("ledger_format") != LEDGER_FORMAT:
        return Problem(
            tenant, r.seq, "old_format",
            f"the entry is in ledger format {parsed.get('ledger_format', 1)}, which does not hash its entry_key and "
            f"recorded_at columns: this ledger predates format {LEDGER_FORMAT} (recreate the sandbox)",
        )
    for column, stored, hashed in (
        ("entry_key", r.entry_key, parsed.get("entry_key")),
        ("recorded_at", ledger_time(r.recorded_at), parsed.get("recorded_at")),
    ):
        if stored != hashed:
            return Problem(tenant, r.seq, "edited", f"column {column} is {stored!r}, the hashed entry says {hashed!r}")
    return None


def check_checkpoint(
    tenant: str, rows: Sequence[Row], cp: Checkpoint | None, leaves: Sequence[bytes]
) -> Problem | None:
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
            select(
                custody_ledger.c.seq, custody_ledger.c.entry, custody_ledger.c.prev_hash, custody_ledger.c.entry_hash,
                custody_ledger.c.entry_key, custody_ledger.c.recorded_at,
            )
            .where(custody_ledger.c.tenant_id == tenant)
            .order_by(custody_ledger.c.seq)
        ).all()
    return cp, [Row(r.seq, r.entry, r.prev_hash, r.entry_hash, r.entry_key, r.recorded_at) for r in rows]


def verify_chain(engine: Engine, tenant: str) -> list[Problem]:
    """The chain and checkpoint problems of one tenant (no S3, no checkpoint written)."""
    validate_slug(tenant)
    cp, rows = _read_tenant(engine, tenant)
    leaves = [leaf_hash(r.entry.encode()) for r in rows]
    return [p for p in (check_chain(tenant, rows), check_checkpoint(tenant, rows, cp, leaves)) if p]


# -- the bucket -------------------------------------------------------------------------------


@dataclass(frozen=True)
class GuardVersion:
    """One object version or delete marker of the guard bucket."""

    key: str
    version_id: str
    modified: datetime
    delete_marker: bool


def _list_guard(s3, bucket: str, prefix: str) -> dict[str, list[GuardVersion]]:
    """Every object version and delete marker of the guard bucket, by tenant (the first path segment).

    Versions, not current objects: a version hidden by a delete marker is still data to account for."""
    by_tenant: dict[str, list[GuardVersion]] = defaultdict(list)
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=prefix):
        for marker, items in ((False, page.get("Versions", [])), (True, page.get("DeleteMarkers", []))):
            for item in items:
                listed = GuardVersion(item["Key"], item["VersionId"], item["LastModified"], marker)
                by_tenant[item["Key"].split("/", 1)[0]].append(listed)
    return by_tenant


def check_bucket(bucket: str, tenant: str, listed: Sequence[GuardVersion], recorded: set[tuple[str, str]],
                 cutoff: datetime) -> list[Problem]:
    """Delete markers, and versions no ledger entry records (older than `cutoff`), of one tenant."""
    problems = []
    for item in sorted(listed, key=lambda i: (i.key, i.modified)):
        where = f"s3://{bucket}/{item.key} version {item.version_id}"
        if item.delete_marker:
            problems.append(Problem(
                tenant, None, "delete_marker",
                f"{where} is a delete marker (made {iso_z(item.modified)}): nothing in ASTRA deletes from the guard "
                "bucket; the versions under it stay locked, removing the marker shows them again",
            ))
        elif (item.key, item.version_id) not in recorded and item.modified <= cutoff:
            problems.append(Problem(
                tenant, None, "orphan_object", f"{where} has no ledger entry (last modified {iso_z(item.modified)})"
            ))
    return problems


def _is_audio_entry(entry: Any) -> bool:
    return isinstance(entry, dict) and entry.get("event") == EVENT_AUDIO and all(k in entry for k in AUDIO_FIELDS)


# -- the audit --------------------------------------------------------------------------------


@dataclass
class _TenantLedger:
    """What the ledger pass learns of one tenant for the object and bucket passes."""

    audio: list[tuple[int, dict[str, Any]]] = field(default_factory=list)  # (seq, custody.audio entry)
    recorded: set[tuple[str, str]] = field(default_factory=set)  # (key, version_id) in the guard bucket


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

    Steps: (1) list the guard bucket's versions and delete markers; (2) per tenant, re-walk the
    chain, check the checkpoint and write a new one when intact; (3) report delete markers and
    versions no entry records; (4) re-hash every recorded object and check its lock.
    Objects younger than `orphan_grace_seconds` are not called orphans: between its copy and its
    ledger append a custody copy has no entry yet (the bucket is listed before the ledger is read,
    so only copies still in flight fall in that window). An unknown `tenant` raises UnknownTenant."""
    report = VerifyReport()
    bucket = settings.guard_bucket
    cutoff = datetime.now(UTC) - timedelta(seconds=orphan_grace_seconds)
    listed = _list_guard(s3, bucket, f"{tenant}/" if tenant else "")
    tenant_ids = _tenants_to_audit(engine, tenant, listed)
    report.tenants = len(tenant_ids)
    ledgers: dict[str, _TenantLedger] = {}
    for done, t in enumerate(tenant_ids, 1):
        ledgers[t] = _audit_ledger(engine, t, bucket, report, write_checkpoints)
        if progress:
            progress("ledger", done, len(tenant_ids))
    for t in tenant_ids:
        report.problems += check_bucket(bucket, t, listed.get(t, []), ledgers[t].recorded, cutoff)
    _audit_objects(s3, ledgers, report, workers, progress)
    report.problems.sort(key=lambda p: (p.tenant, p.seq is None, p.seq or 0, p.kind, p.detail))
    return report


def _tenants_to_audit(engine: Engine, tenant: str | None, listed: dict[str, list[GuardVersion]]) -> list[str]:
    if tenant is not None:
        validate_slug(tenant)
        with engine.connect() as conn:
            known = conn.execute(select(tenants.c.tenant_id).where(tenants.c.tenant_id == tenant)).first()
        if known is None and tenant not in listed:
            raise UnknownTenant(f"unknown tenant {tenant!r}: no such tenant in the database and nothing in custody")
        return [tenant]
    # The one query across tenants: which tenants have custody data at all.
    with engine.connect() as conn:
        ids = set(conn.execute(
            union(select(custody_ledger.c.tenant_id).distinct(), select(custody_checkpoints.c.tenant_id).distinct())
        ).scalars())
    return sorted(ids | set(listed))


def _audit_ledger(
    engine: Engine, tenant: str, bucket: str, report: VerifyReport, write_checkpoints: bool
) -> _TenantLedger:
    """Chain and checkpoint problems into `report`, a new checkpoint when intact; the audio entries."""
    cp, rows = _read_tenant(engine, tenant)
    report.entries += len(rows)
    leaves = [leaf_hash(r.entry.encode()) for r in rows]
    chain = check_chain(tenant, rows)
    checkpoint = check_checkpoint(tenant, rows, cp, leaves)
    report.problems += [p for p in (chain, checkpoint) if p]
    if write_checkpoints and chain is None and checkpoint is None and rows and (cp is None or cp.size < len(rows)):
        with engine.begin() as conn:
            written = write_checkpoint(conn, tenant, len(rows), root_from_leaf_hashes(leaves).hex())
        if written:
            report.checkpoints.append(written)
    found = _TenantLedger()
    for r in rows:
        try:
            entry = json.loads(r.entry)
        except ValueError:
            continue
        if _is_audio_entry(entry):
            found.audio.append((r.seq, entry))
            if entry["bucket"] == bucket:
                found.recorded.add((entry["key"], entry["version_id"]))
    return found


def _audit_objects(s3, ledgers: dict[str, _TenantLedger], report: VerifyReport, workers: int,
                   progress: Progress | None) -> None:
    audio = [(t, seq, entry) for t, found in ledgers.items() for seq, entry in found.audio]
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
