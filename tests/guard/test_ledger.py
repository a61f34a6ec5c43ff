"""The custody ledger: hash chain by the exact definition, idempotent appends, gap-free seqs."""

from __future__ import annotations

import hashlib
import json
import threading

import pytest
from sqlalchemy import text

from astra.guard import GENESIS_HASH, CustodyLedger, verify_chain
from tests.guard.conftest import rows

pytestmark = pytest.mark.integration


def test_chain_follows_the_definition(ledger, engine, tenant):
    a = ledger.append(tenant, {"event": "test", "n": 1, "note": "é ünïcode"}, "k1")
    b = ledger.append(tenant, {"event": "test", "n": 2}, "k2")
    assert (a.seq, b.seq) == (1, 2) and a.appended and b.appended
    assert a.prev_hash == GENESIS_HASH == "0" * 64 and b.prev_hash == a.entry_hash

    stored = rows(engine, tenant)
    for row, prev in zip(stored, [GENESIS_HASH, stored[0].entry_hash], strict=True):
        entry = json.loads(row.entry)
        # canonical JSON exactly as specified; seq and tenant are part of the hashed entry
        canonical = json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
        assert row.entry.encode() == canonical
        assert entry["seq"] == row.seq and entry["tenant"] == tenant
        assert row.prev_hash == prev
        assert row.entry_hash == hashlib.sha256(bytes.fromhex(prev) + canonical).hexdigest()
    assert "é ünïcode" in stored[0].entry  # ensure_ascii=False: stored as UTF-8, not \u escapes
    assert verify_chain(engine, tenant) == []


def test_append_is_idempotent_by_key(ledger, engine, tenant):
    first = ledger.append(tenant, {"event": "test", "n": 1}, "same-key")
    again = ledger.append(tenant, {"event": "test", "n": 1, "retry": True}, "same-key")
    assert again == first and again.appended is False
    assert len(rows(engine, tenant)) == 1
    assert ledger.append(tenant, {"event": "test"}, None).seq == 2  # no key: always appends


def test_chains_are_per_tenant(ledger, tenant):
    other = f"{tenant}-b"
    x1 = ledger.append(tenant, {"event": "test"}, "k")
    y1 = ledger.append(other, {"event": "test"}, "k")  # same key, other tenant: its own entry
    x2 = ledger.append(tenant, {"event": "test"}, "k2")
    assert (x1.seq, y1.seq, x2.seq) == (1, 1, 2)
    assert y1.prev_hash == GENESIS_HASH and x2.prev_hash == x1.entry_hash
    assert [e.seq for e in ledger.entries(other)] == [1]


def test_reserved_fields_and_tenant_checks(ledger, tenant):
    with pytest.raises(ValueError, match="seq"):
        ledger.append(tenant, {"seq": 5}, None)
    with pytest.raises(ValueError, match="tenant"):
        ledger.append(tenant, {"tenant": "someone-else"}, None)
    with pytest.raises(ValueError, match="invalid tenant"):
        ledger.append("Not_A_Slug", {}, None)
    assert ledger.append(tenant, {"tenant": tenant}, None).seq == 1


def test_concurrent_appends_are_gap_free_and_idempotent(engine, tenant):
    ledger = CustodyLedger(engine)
    threads, per_thread, errors = 8, 6, []
    barrier = threading.Barrier(threads)

    def work(i: int) -> None:
        try:
            barrier.wait()
            for j in range(per_thread):
                ledger.append(tenant, {"event": "test", "writer": i, "j": j}, f"w{i}-{j}")
                ledger.append(tenant, {"event": "test", "shared": j}, f"shared-{j}")  # all threads race on these
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    pool = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    [t.start() for t in pool]
    [t.join(30) for t in pool]
    assert errors == []
    stored = rows(engine, tenant)
    assert [r.seq for r in stored] == list(range(1, threads * per_thread + per_thread + 1))
    shared = sorted(r.entry_key for r in stored if r.entry_key.startswith("shared-"))
    assert shared == [f"shared-{j}" for j in range(per_thread)]
    assert verify_chain(engine, tenant) == []


def test_ledger_and_checkpoints_refuse_update_and_delete(ledger, engine, tenant):
    ledger.append(tenant, {"event": "test"}, None)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO custody_checkpoints (tenant_id, size, merkle_root) "
                          "VALUES (:t, 1, repeat('a', 64))"), {"t": tenant})
    for stmt in (
        "UPDATE custody_ledger SET entry = '{}' WHERE tenant_id = :t",
        "DELETE FROM custody_ledger WHERE tenant_id = :t",
        "UPDATE custody_checkpoints SET merkle_root = repeat('b', 64) WHERE tenant_id = :t",
        "DELETE FROM custody_checkpoints WHERE tenant_id = :t",
    ):
        with pytest.raises(Exception, match="append-only"):
            with engine.begin() as conn:
                conn.execute(text(stmt), {"t": tenant})


def test_entry_key_is_unique_per_tenant_in_the_database(ledger, engine, tenant):
    ledger.append(tenant, {"event": "test"}, "dup")
    with pytest.raises(Exception, match="custody_ledger_entry_key"):
        with engine.begin() as conn:
            conn.execute(text(
                "INSERT INTO custody_ledger (tenant_id, seq, entry, prev_hash, entry_hash, entry_key) "
                "VALUES (:t, 2, '{}', repeat('0', 64), repeat('1', 64), 'dup')"
            ), {"t": tenant})
