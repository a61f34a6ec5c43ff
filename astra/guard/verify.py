"""Audit of the chain of custody: ledger chain, checkpoints and the objects in the guard bucket.

`verify` re-walks each tenant's chain from the genesis hash, re-reads every custody object from
S3 (streamed through SHA-256) and checks its lock, lists every object version and delete marker
of the guard bucket for versions no entry accounts for, checks the ledger still extends its last
checkpoint row and every WORM checkpoint object (`astra.guard.checkpoints`:
`<tenant>/checkpoints/<size>.json` under Object Lock COMPLIANCE), checks the checkpoint rows and
objects agree, and, when all of that is intact, writes a new checkpoint (the RFC 6962 Merkle root
of the whole ledger): its locked object first, then its row. Per tenant it reports the first
broken link of the chain (what follows a break cannot be trusted to say more), plus every object
and checkpoint problem. `verify_tenant_checkpoints` is the WORM checkpoint part alone, for other
audits (no Dagster, writes nothing).

Problem kinds:
  chain        edited · deleted · reordered · inserted   (seq = where the chain breaks)
               old_format (a format-1 entry: its entry_key and recorded_at are not hashed)
  checkpoint   truncated (shorter than the checkpoint row) · checkpoint_mismatch (does not extend it)
  WORM         worm_checkpoint_mismatch (the ledger is shorter than, or does not hash to, a checkpoint
               object's root: the tail was rewritten even if every hash and row was recomputed)
               worm_checkpoint_missing (a checkpoint row with no checkpoint object of its size)
               checkpoint_row_mismatch (a row whose root is not its object's: the row was rewritten)
               checkpoint_row_missing (an object with no row, after the grace period: the row was deleted)
               worm_checkpoint_unlocked (a version not COMPLIANCE until >= its write + the floor, or the
               newest checkpoint's lock has run out)
               worm_checkpoint_replaced (versions of one checkpoint key with different roots)
               worm_checkpoint_invalid (under <tenant>/checkpoints/: not a checkpoint key, or a body that
               is not the canonical checkpoint JSON for its key) · delete_marker there too   (seq null)
  objects      object_missing · object_changed · retention_weakened (not COMPLIANCE, or until before the
               ledger's date or the floor: custody.retention_problem)
  bucket       orphan_object (a version no entry records, current or not; checkpoint keys are
               accounted for by the WORM checks) · delete_marker (seq null)

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
cover the ledger up to their size; the rows can be rewritten too (by the same superuser), the
locked objects cannot: a rewrite of anything a WORM checkpoint covers is worm_checkpoint_mismatch.
What is appended after the newest checkpoint is covered from the next audit on. Objects without
an entry show up as orphans.
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
from astra.guard.checkpoints import (
    CheckpointConflict,
    CheckpointVersion,
    checkpoint_key,
    list_checkpoint_versions,
    record_checkpoint,
    renew_locks,
)
from astra.guard.custody import AUDIO_FIELDS, EVENT_AUDIO, check_object, iso_z
from astra.guard.ledger import (
    GENESIS_HASH,
    LEDGER_FORMAT,
    Checkpoint,
    canonical_json,
    chain_hash,
    checkpoints,
    ledger_time,
)
from astra.guard.merkle import leaf_hash, prefix_roots, root_from_leaf_hashes
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


def _read_tenant(engine: Engine, tenant: str) -> tuple[list[Checkpoint], list[Row]]:
    """(checkpoint rows by size, ledger rows by seq). One snapshot for both, so a concurrent audit
    cannot fall between; list the checkpoint objects after it (a committed row's object is older)."""
    with engine.connect().execution_options(isolation_level="REPEATABLE READ") as conn, conn.begin():
        cps = checkpoints(conn, tenant)
        rows = conn.execute(
            select(
                custody_ledger.c.seq, custody_ledger.c.entry, custody_ledger.c.prev_hash, custody_ledger.c.entry_hash,
                custody_ledger.c.entry_key, custody_ledger.c.recorded_at,
            )
            .where(custody_ledger.c.tenant_id == tenant)
            .order_by(custody_ledger.c.seq)
        ).all()
    return cps, [Row(r.seq, r.entry, r.prev_hash, r.entry_hash, r.entry_key, r.recorded_at) for r in rows]


def verify_chain(engine: Engine, tenant: str) -> list[Problem]:
    """The chain and checkpoint-row problems of one tenant (no S3, no checkpoint written; the WORM
    checkpoints are `verify_tenant_checkpoints`)."""
    validate_slug(tenant)
    cps, rows = _read_tenant(engine, tenant)
    leaves = [leaf_hash(r.entry.encode()) for r in rows]
    cp = cps[-1] if cps else None
    return [p for p in (check_chain(tenant, rows), check_checkpoint(tenant, rows, cp, leaves)) if p]


# -- the WORM checkpoints ---------------------------------------------------------------------


def check_worm_checkpoints(
    bucket: str,
    tenant: str,
    versions: Sequence[CheckpointVersion],
    rows: Sequence[Checkpoint],
    leaves: Sequence[bytes],
    cutoff: datetime,
    now: datetime | None = None,
) -> list[Problem]:
    """What is wrong between a tenant's checkpoint objects (every version and delete marker under
    `<tenant>/checkpoints/`, read back), its checkpoint rows and its ledger (leaf hashes in seq order).

    Each version must be a valid checkpoint for its key, locked COMPLIANCE for at least the floor;
    the newest checkpoint's lock must still be in force; the versions of one key must agree; the
    first `size` entries must hash to each object's root; each row must have an object of its size
    with its root, and each object (older than `cutoff`) a row."""
    now = now or datetime.now(UTC)
    problems: list[Problem] = []

    def add(kind: str, detail: str) -> None:
        problems.append(Problem(tenant, None, kind, detail))

    valid: dict[int, list[CheckpointVersion]] = defaultdict(list)
    for v in versions:
        if v.delete_marker:
            add("delete_marker", f"{v.where} is a delete marker (made {iso_z(v.modified)}) over a checkpoint key: "
                "nothing in ASTRA deletes from the guard bucket; the versions under it stay locked")
            continue
        if v.checkpoint is None:
            add("worm_checkpoint_invalid", f"{v.where} is under the checkpoints prefix but is not a checkpoint: "
                f"{v.invalid}")
            continue
        lock = v.lock_problem()
        if lock:
            add("worm_checkpoint_unlocked", f"{v.where} (checkpoint of size {v.checkpoint.size}) is {lock}")
        valid[v.checkpoint.size].append(v)
    if valid:
        newest = valid[max(valid)]
        locked = [v for v in newest if v.lock_problem() is None]
        if locked and all(v.retain_until <= now for v in locked):
            until = max(v.retain_until for v in locked)
            add("worm_checkpoint_unlocked", f"s3://{locked[0].bucket}/{locked[0].key}, the newest checkpoint, is "
                f"no longer locked (its retention ended {iso_z(until)}): nothing pins the ledger outside the "
                "database until a newer checkpoint is written")

    roots = {n: r.hex() for n, r in prefix_roots(leaves, valid).items()}
    for size, vs in sorted(valid.items()):
        distinct = sorted({v.checkpoint.merkle_root for v in vs})
        uri = f"s3://{vs[0].bucket}/{vs[0].key}"
        if len(distinct) > 1:
            add("worm_checkpoint_replaced", f"{uri} holds versions with different roots ("
                + ", ".join(f"{v.version_id}: {v.checkpoint.merkle_root[:16]}…" for v in vs)
                + "): a checkpoint is written once; a version was added over it")
        for root in distinct:
            created = min(iso_z(v.checkpoint.created_at) for v in vs if v.checkpoint.merkle_root == root)
            pinned = f"the WORM checkpoint {uri} (size {size}, root {root[:16]}…, created {created})"
            if size > len(leaves):
                add("worm_checkpoint_mismatch", f"the ledger has {len(leaves)} entries, fewer than {pinned}: "
                    "entries were deleted")
            elif roots[size] != root:
                add("worm_checkpoint_mismatch", f"the first {size} entries hash to {roots[size][:16]}…, not to "
                    f"{pinned}: the ledger does not extend it (entries rewritten, hashes recomputed)")

    sizes = {c.size for c in rows}
    for c in rows:
        vs = valid.get(c.size, [])
        if not vs:
            add("worm_checkpoint_missing", f"the checkpoint row of size {c.size} (root {c.merkle_root[:16]}…, "
                f"created {iso_z(c.created_at) if c.created_at else '?'}) has no checkpoint object "
                f"s3://{bucket}/{checkpoint_key(tenant, c.size)}: the row was written without its locked copy "
                "(not by verify), or inserted by hand")
        elif all(v.checkpoint.merkle_root != c.merkle_root for v in vs):
            add("checkpoint_row_mismatch", f"the checkpoint row of size {c.size} has root {c.merkle_root[:16]}…, "
                f"its WORM object s3://{vs[0].bucket}/{vs[0].key} says {vs[0].checkpoint.merkle_root[:16]}…: "
                "the row was rewritten")
    for size, vs in sorted(valid.items()):
        if size not in sizes and any(v.modified <= cutoff for v in vs):
            add("checkpoint_row_missing", f"s3://{vs[0].bucket}/{vs[0].key} (size {size}, root "
                f"{vs[0].checkpoint.merkle_root[:16]}…) has no row in custody_checkpoints: the row was deleted")
    return problems


def verify_tenant_checkpoints(
    engine: Engine,
    s3,
    bucket: str,
    tenant: str,
    *,
    grace_seconds: float = DEFAULT_ORPHAN_GRACE_SECONDS,
) -> list[Problem]:
    """The WORM checkpoint problems of one tenant (kinds worm_checkpoint_*, checkpoint_row_*,
    delete_marker under its checkpoints prefix); empty when its checkpoints hold. Plain Python, for
    any audit (`astra guard verify` runs the same check inside `verify`); writes nothing.

    Reads the checkpoint rows and the ledger in one snapshot, then lists and reads back every
    version under `<tenant>/checkpoints/` in `bucket` (the guard bucket). An object younger than
    `grace_seconds` without a row is in flight, not a finding. It does not re-walk the chain
    (`verify_chain`) or re-hash the custody objects (`verify`). S3 and database faults raise."""
    validate_slug(tenant)
    cutoff = datetime.now(UTC) - timedelta(seconds=grace_seconds)
    cps, rows = _read_tenant(engine, tenant)
    versions = list_checkpoint_versions(s3, bucket, tenant)
    leaves = [leaf_hash(r.entry.encode()) for r in rows]
    problems = check_worm_checkpoints(bucket, tenant, versions, cps, leaves, cutoff)
    return sorted(problems, key=lambda p: (p.kind, p.detail))


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
                 cutoff: datetime, accounted: set[tuple[str, str]] = frozenset()) -> list[Problem]:
    """Delete markers, and versions no ledger entry records (older than `cutoff`), of one tenant.

    `accounted`: (key, version id) of versions and markers another check has examined and reported
    itself (the WORM checkpoints); those are neither orphans nor reported twice."""
    problems = []
    for item in sorted(listed, key=lambda i: (i.key, i.modified)):
        where = f"s3://{bucket}/{item.key} version {item.version_id}"
        if (item.key, item.version_id) in accounted:
            continue
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
    checkpoints: set[tuple[str, str]] = field(default_factory=set)  # (key, version_id) the WORM check read


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
    chain, check the checkpoint row, read back the WORM checkpoint objects and check them against
    the ledger and the rows, and when all is intact write a new checkpoint (locked object, then
    row) or extend the newest one's lock; (3) report delete markers and versions no entry records
    (checkpoint objects are accounted for by step 2); (4) re-hash every recorded object and check
    its lock. Objects younger than `orphan_grace_seconds` are not called orphans: between its copy
    and its ledger append a custody copy has no entry yet (the bucket is listed before the ledger
    is read, so only copies still in flight fall in that window); the same grace applies to a
    checkpoint object whose row is not committed yet. An unknown `tenant` raises UnknownTenant."""
    report = VerifyReport()
    bucket = settings.guard_bucket
    cutoff = datetime.now(UTC) - timedelta(seconds=orphan_grace_seconds)
    listed = _list_guard(s3, bucket, f"{tenant}/" if tenant else "")
    tenant_ids = _tenants_to_audit(engine, tenant, listed)
    report.tenants = len(tenant_ids)
    ledgers: dict[str, _TenantLedger] = {}
    for done, t in enumerate(tenant_ids, 1):
        ledgers[t] = _audit_ledger(engine, s3, settings, t, report, write_checkpoints, cutoff)
        if progress:
            progress("ledger", done, len(tenant_ids))
    for t in tenant_ids:
        report.problems += check_bucket(bucket, t, listed.get(t, []), ledgers[t].recorded, cutoff,
                                        ledgers[t].checkpoints)
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
    engine: Engine, s3, settings: Settings, tenant: str, report: VerifyReport, write_checkpoints: bool,
    cutoff: datetime,
) -> _TenantLedger:
    """Chain and checkpoint problems into `report`, a new checkpoint when intact; the audio entries."""
    bucket = settings.guard_bucket
    cps, rows = _read_tenant(engine, tenant)
    versions = list_checkpoint_versions(s3, bucket, tenant)  # after the snapshot: see _read_tenant
    report.entries += len(rows)
    leaves = [leaf_hash(r.entry.encode()) for r in rows]
    cp = cps[-1] if cps else None
    chain = check_chain(tenant, rows)
    checkpoint = check_checkpoint(tenant, rows, cp, leaves)
    worm = check_worm_checkpoints(bucket, tenant, versions, cps, leaves, cutoff)
    report.problems += [p for p in (chain, checkpoint) if p] + worm
    if write_checkpoints and chain is None and checkpoint is None and not worm and rows:
        if cp is None or cp.size < len(rows):
            try:
                written = record_checkpoint(engine, s3, settings, tenant, len(rows),
                                            root_from_leaf_hashes(leaves).hex())
            except CheckpointConflict as exc:  # a WORM checkpoint of this size appeared since the listing
                report.problems.append(Problem(tenant, None, "worm_checkpoint_mismatch", str(exc)))
            else:
                if written:
                    report.checkpoints.append(written)
        else:
            renew_locks(s3, settings, versions)
    found = _TenantLedger(checkpoints={(v.key, v.version_id) for v in versions})
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
