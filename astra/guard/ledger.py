"""The custody ledger: append-only, hash-chained per tenant, idempotent by entry key.

Row `seq` of a tenant stores the entry's canonical JSON and

    entry_hash = sha256(bytes.fromhex(prev_hash) + canonical).hexdigest()

where `prev_hash` is the entry_hash of seq-1 (GENESIS_HASH for seq 1). The canonical JSON
carries, besides the event's own fields, every column that code reads to decide something:
`seq`, `tenant`, `entry_key` (the idempotency lookup) and `recorded_at` (the row's timestamp, to
the microsecond), plus `ledger_format` (2). So the hash binds each entry to its position, its
tenant, its key and its time: moving or copying a row, or editing a column beside the entry, is
visible even when the hashes are copied along (`verify` compares each column with the entry).

Format 1 (before this) hashed only `seq` and `tenant`; `verify` reports a format-1 row as
`old_format` rather than trusting columns it cannot check. The ledger is append-only, so old rows
cannot be re-hashed in place: a sandbox with format-1 rows is recreated, not migrated.

Appends of one tenant are serialized by a row lock on `tenants` (as CONFIG_SVC publish does), so
seq is 1, 2, 3… without gaps under concurrent appenders. The Postgres trigger of migration 0001
refuses UPDATE, DELETE and TRUNCATE; what a superuser can still do with the triggers disabled is
what `astra.guard.verify` detects.

Checkpoints (`custody_checkpoints`, append-only too) pin the Merkle root of a tenant's first
`size` entries. A superuser can rewrite those rows as well, so `verify` writes each one through
`astra.guard.checkpoints.record_checkpoint`, which also puts it, before the row commits, as an
object under an S3 Object Lock COMPLIANCE retention in the guard bucket
(`<tenant>/checkpoints/<size>.json`); the audit checks the ledger and these rows against the
objects. `write_checkpoint` alone writes only the row (an audit reports it: no WORM object).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, func, insert, select
from sqlalchemy.dialects.postgresql import insert as pg_insert

from astra.canonical import canonical_json
from astra.db.schema import custody_checkpoints, custody_ledger, tenants
from astra.tenancy import validate_slug

GENESIS_HASH = "0" * 64
LEDGER_FORMAT = 2
# Written by the ledger into every canonical entry; an appended entry may not carry them.
LEDGER_FIELDS = ("seq", "entry_key", "recorded_at", "ledger_format")


def chain_hash(prev_hash: str, canonical: bytes) -> str:
    return hashlib.sha256(bytes.fromhex(prev_hash) + canonical).hexdigest()


def ledger_time(value: datetime) -> str:
    """How `recorded_at` is written in the canonical entry: UTC, microseconds (Postgres' precision)."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class LedgerEntry:
    tenant: str
    seq: int
    entry: dict[str, Any]  # includes the LEDGER_FIELDS and "tenant"
    canonical: str  # the stored text; canonical.encode() is what was hashed
    prev_hash: str
    entry_hash: str
    entry_key: str | None
    recorded_at: datetime
    appended: bool = field(default=True, compare=False)  # False: an earlier append with this key was returned

    def to_dict(self) -> dict[str, Any]:
        return {
            "tenant": self.tenant,
            "seq": self.seq,
            "entry": self.entry,
            "prev_hash": self.prev_hash,
            "entry_hash": self.entry_hash,
            "entry_key": self.entry_key,
            "recorded_at": self.recorded_at.isoformat(),
        }


@dataclass(frozen=True)
class Checkpoint:
    tenant: str
    size: int
    merkle_root: str
    created_at: datetime | None = None


def _entry_from_row(row: Any, appended: bool = True) -> LedgerEntry:
    return LedgerEntry(
        tenant=row.tenant_id,
        seq=row.seq,
        entry=json.loads(row.entry),
        canonical=row.entry,
        prev_hash=row.prev_hash,
        entry_hash=row.entry_hash,
        entry_key=row.entry_key,
        recorded_at=row.recorded_at,
        appended=appended,
    )


class CustodyLedger:
    def __init__(self, engine: Engine):
        self.engine = engine

    # -- writes -------------------------------------------------------------------------------

    def append(self, tenant: str, entry: dict[str, Any], entry_key: str | None = None) -> LedgerEntry:
        """Append `entry` to the tenant's chain; with an `entry_key` already present, return that
        entry instead (appended=False) so a crashed run can simply be re-run."""
        _check_entry(tenant, entry)
        if entry_key is not None:
            existing = self.get_by_key(tenant, entry_key)
            if existing is not None:
                return existing
        with self.engine.begin() as conn:
            conn.execute(pg_insert(tenants).values(tenant_id=tenant).on_conflict_do_nothing())
            # The row lock serializes the tenant's appenders: seq = last+1 is gap-free and the
            # entry_key re-check below cannot race another appender of the same key.
            conn.execute(select(tenants.c.tenant_id).where(tenants.c.tenant_id == tenant).with_for_update())
            if entry_key is not None:
                row = conn.execute(
                    select(custody_ledger).where(
                        custody_ledger.c.tenant_id == tenant, custody_ledger.c.entry_key == entry_key
                    )
                ).one_or_none()
                if row is not None:
                    return _entry_from_row(row, appended=False)
            row = _insert_next(conn, tenant, entry, entry_key)
        return _entry_from_row(row)

    # -- reads --------------------------------------------------------------------------------

    def get_by_key(self, tenant: str, entry_key: str) -> LedgerEntry | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(custody_ledger).where(
                    custody_ledger.c.tenant_id == tenant, custody_ledger.c.entry_key == entry_key
                )
            ).one_or_none()
        return None if row is None else _entry_from_row(row, appended=False)

    def entries(self, tenant: str) -> list[LedgerEntry]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(custody_ledger).where(custody_ledger.c.tenant_id == tenant).order_by(custody_ledger.c.seq)
            ).all()
        return [_entry_from_row(r, appended=False) for r in rows]

    def last_checkpoint(self, tenant: str) -> Checkpoint | None:
        with self.engine.connect() as conn:
            return last_checkpoint(conn, tenant)


def _check_entry(tenant: str, entry: dict[str, Any]) -> None:
    validate_slug(tenant)
    if not isinstance(entry, dict):
        raise TypeError("a ledger entry is a JSON object (dict)")
    owned = [name for name in LEDGER_FIELDS if name in entry]
    if owned:
        raise ValueError(f"a ledger entry must not carry {', '.join(map(repr, owned))}: the ledger writes them")
    if entry.get("tenant", tenant) != tenant:
        raise ValueError(f"entry names tenant {entry['tenant']!r}, appended to {tenant!r}")


def _insert_next(conn: Connection, tenant: str, entry: dict[str, Any], entry_key: str | None) -> Any:
    """Insert the entry as the tenant's next seq (the caller holds the tenant's row lock)."""
    last = conn.execute(
        select(custody_ledger.c.seq, custody_ledger.c.entry_hash)
        .where(custody_ledger.c.tenant_id == tenant)
        .order_by(custody_ledger.c.seq.desc())
        .limit(1)
    ).one_or_none()
    seq = 1 if last is None else last.seq + 1
    prev_hash = GENESIS_HASH if last is None else last.entry_hash
    # The database's clock, read under the lock: recorded_at grows with seq across appenders.
    recorded_at = conn.execute(select(func.clock_timestamp())).scalar_one()
    canonical = canonical_json({
        **entry, "seq": seq, "tenant": tenant, "entry_key": entry_key,
        "recorded_at": ledger_time(recorded_at), "ledger_format": LEDGER_FORMAT,
    })
    return conn.execute(
        insert(custody_ledger)
        .values(
            tenant_id=tenant,
            seq=seq,
            entry=canonical.decode(),
            prev_hash=prev_hash,
            entry_hash=chain_hash(prev_hash, canonical),
            entry_key=entry_key,
            recorded_at=recorded_at,
        )
        .returning(custody_ledger)
    ).one()


def last_checkpoint(conn: Connection, tenant: str) -> Checkpoint | None:
    row = conn.execute(
        select(custody_checkpoints)
        .where(custody_checkpoints.c.tenant_id == tenant)
        .order_by(custody_checkpoints.c.size.desc())
        .limit(1)
    ).one_or_none()
    return None if row is None else Checkpoint(row.tenant_id, row.size, row.merkle_root, row.created_at)


def checkpoints(conn: Connection, tenant: str) -> list[Checkpoint]:
    """Every checkpoint row of the tenant, by size."""
    rows = conn.execute(
        select(custody_checkpoints)
        .where(custody_checkpoints.c.tenant_id == tenant)
        .order_by(custody_checkpoints.c.size)
    ).all()
    return [Checkpoint(r.tenant_id, r.size, r.merkle_root, r.created_at) for r in rows]


def write_checkpoint(conn: Connection, tenant: str, size: int, merkle_root: str) -> Checkpoint | None:
    """Insert a checkpoint row; None when one of that size exists already (a concurrent audit).

    Only the row: `checkpoints.record_checkpoint` calls this and writes the WORM object in the same
    transaction, before it commits."""
    row = conn.execute(
        pg_insert(custody_checkpoints)
        .values(tenant_id=tenant, size=size, merkle_root=merkle_root)
        .on_conflict_do_nothing()
        .returning(custody_checkpoints.c.created_at)
    ).one_or_none()
    return None if row is None else Checkpoint(tenant, size, merkle_root, row.created_at)
