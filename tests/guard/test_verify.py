"""`verify` against tampering done as a superuser would (plain SQL, triggers off) and on S3."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import text

from astra.guard import canonical_json, chain_hash, check_custody, verify, verify_chain
from astra.guard.merkle import merkle_root_hex
from tests.guard.conftest import custody_n, rows, superuser_sql

pytestmark = pytest.mark.integration


def audit(engine, s3, settings, tenant, **kw):
    kw.setdefault("orphan_grace_seconds", 0)
    return verify(engine, s3, settings, tenant, **kw)


def kinds(report):
    return [(p.kind, p.seq) for p in report.problems]


@pytest.fixture
def five(engine, s3, settings, tenant):
    """A tenant with five custody entries, audited once (so it has a checkpoint of size 5)."""
    out = custody_n(engine, s3, settings, tenant, 5)
    report = audit(engine, s3, settings, tenant)
    assert report.ok and report.entries == 5 and report.tenants == 1 and report.objects == 5
    assert [(c.size, c.merkle_root) for c in report.checkpoints] == [(5, merkle_root_hex(r.entry.encode() for r in rows(engine, tenant)))]
    return out


def entry_of(engine, tenant, seq):
    return json.loads(next(r.entry for r in rows(engine, tenant) if r.seq == seq))


# -- intact -----------------------------------------------------------------------------------


def test_intact_report_format_and_checkpoints(engine, s3, settings, tenant, five):
    again = audit(engine, s3, settings, tenant)
    assert again.to_dict() == {"tenants": 1, "entries": 5, "ok": True, "problems": []}
    assert again.checkpoints == []  # nothing new to pin
    custody_n(engine, s3, settings, tenant, 1)
    grown = audit(engine, s3, settings, tenant)
    assert grown.ok and [c.size for c in grown.checkpoints] == [6]
    with engine.connect() as conn:
        sizes = conn.execute(text("SELECT size FROM custody_checkpoints WHERE tenant_id = :t ORDER BY size"), {"t": tenant}).scalars().all()
    assert sizes == [5, 6]


def test_empty_tenant_is_intact(engine, s3, settings, tenant):
    report = audit(engine, s3, settings, tenant)
    assert report.ok and report.entries == 0 and report.checkpoints == []


# -- the chain --------------------------------------------------------------------------------


def test_edited_entry(engine, s3, settings, tenant, five):
    e = entry_of(engine, tenant, 3)
    e["source_uri"] = "s3://elsewhere/forged.wav"
    superuser_sql(engine, ("UPDATE custody_ledger SET entry = :e WHERE tenant_id = :t AND seq = 3",
                           {"e": canonical_json(e).decode(), "t": tenant}))
    report = audit(engine, s3, settings, tenant)
    assert ("edited", 3) in kinds(report) and ("checkpoint_mismatch", None) in kinds(report)
    assert not report.ok and report.checkpoints == []


def test_edited_entry_with_its_hash_recomputed(engine, s3, settings, tenant, five):
    row = rows(engine, tenant)[1]  # seq 2
    e = json.loads(row.entry)
    e["size"] += 1
    canonical = canonical_json(e)
    superuser_sql(engine, ("UPDATE custody_ledger SET entry = :e, entry_hash = :h WHERE tenant_id = :t AND seq = 2",
                           {"e": canonical.decode(), "h": chain_hash(row.prev_hash, canonical), "t": tenant}))
    report = audit(engine, s3, settings, tenant)
    assert kinds(report)[0] == ("edited", 2)
    assert ("object_changed", 2) in kinds(report)  # and the object no longer matches the entry


def test_deleted_entry_is_a_seq_gap(engine, s3, settings, tenant, five):
    superuser_sql(engine, ("DELETE FROM custody_ledger WHERE tenant_id = :t AND seq = 2", {"t": tenant}))
    report = audit(engine, s3, settings, tenant)
    # 4 entries left under a checkpoint of 5: shorter than the checkpoint too (no tail seq missing)
    assert kinds(report) == [("deleted", 2), ("orphan_object", None), ("truncated", None)]
    assert ("orphan_object", None) in kinds(report)  # its audio is still in the guard bucket


def test_reordered_entries(engine, s3, settings, tenant, five):
    p = {"t": tenant}
    superuser_sql(
        engine,
        ("UPDATE custody_ledger SET seq = -3 WHERE tenant_id = :t AND seq = 3", p),
        ("UPDATE custody_ledger SET seq = 3 WHERE tenant_id = :t AND seq = 4", p),
        ("UPDATE custody_ledger SET seq = 4 WHERE tenant_id = :t AND seq = -3", p),
    )
    report = audit(engine, s3, settings, tenant)
    assert [k for k in kinds(report) if k[0] != "checkpoint_mismatch"] == [("reordered", 3)]


def test_inserted_entry_with_a_made_up_hash(engine, s3, settings, tenant, five):
    forged = {"event": "custody.audio", "tenant": tenant, "seq": 6, "note": "forged"}
    superuser_sql(engine, (
        "INSERT INTO custody_ledger (tenant_id, seq, entry, prev_hash, entry_hash) VALUES (:t, 6, :e, :p, :h)",
        {"t": tenant, "e": canonical_json(forged).decode(), "p": "ab" * 32, "h": "cd" * 32},
    ))
    report = audit(engine, s3, settings, tenant)
    assert kinds(report) == [("inserted", 6)]


def test_inserted_entry_in_the_middle_with_valid_hashes(engine, s3, settings, tenant, five):
    """The careful forger: shift seqs 3..5 up, slip a self-consistent entry in at 3 linked to seq 2."""
    p = {"t": tenant}
    prev = rows(engine, tenant)[1].entry_hash
    forged = canonical_json({"event": "note", "tenant": tenant, "seq": 3, "text": "backdated"})
    superuser_sql(
        engine,
        ("UPDATE custody_ledger SET seq = -seq WHERE tenant_id = :t AND seq >= 3", p),
        ("UPDATE custody_ledger SET seq = -seq + 1 WHERE tenant_id = :t AND seq < 0", p),
        ("INSERT INTO custody_ledger (tenant_id, seq, entry, prev_hash, entry_hash) VALUES (:t, 3, :e, :p, :h)",
         {**p, "e": forged.decode(), "p": prev, "h": chain_hash(prev, forged)}),
    )
    report = audit(engine, s3, settings, tenant)
    assert kinds(report) == [("inserted", 3), ("checkpoint_mismatch", None)]


def test_entry_copied_from_another_tenant(engine, s3, settings, tenant):
    other = f"{tenant}-x"
    custody_n(engine, s3, settings, tenant, 2)
    custody_n(engine, s3, settings, other, 3)
    theirs = rows(engine, other)[2]
    superuser_sql(engine, (
        "INSERT INTO custody_ledger (tenant_id, seq, entry, prev_hash, entry_hash) VALUES (:t, 3, :e, :p, :h)",
        {"t": tenant, "e": theirs.entry, "p": theirs.prev_hash, "h": theirs.entry_hash},
    ))
    report = audit(engine, s3, settings, tenant)
    assert kinds(report)[0] == ("inserted", 3)
    assert audit(engine, s3, settings, other).ok


def test_only_the_first_broken_link_is_reported(engine, s3, settings, tenant, five):
    for seq in (2, 4):
        e = entry_of(engine, tenant, seq)
        e["version"] = 99
        superuser_sql(engine, ("UPDATE custody_ledger SET entry = :e WHERE tenant_id = :t AND seq = :s",
                               {"e": canonical_json(e).decode(), "t": tenant, "s": seq}))
    chain = [k for k in kinds(audit(engine, s3, settings, tenant)) if k[0] in ("edited", "deleted", "reordered", "inserted")]
    assert chain == [("edited", 2)]


# -- checkpoints ------------------------------------------------------------------------------


def test_truncated_below_the_checkpoint(engine, s3, settings, tenant, five):
    superuser_sql(engine, ("DELETE FROM custody_ledger WHERE tenant_id = :t AND seq >= 4", {"t": tenant}))
    assert verify_chain(engine, tenant)[0].kind == "truncated"
    report = audit(engine, s3, settings, tenant)
    assert ("truncated", 4) in kinds(report)
    assert [k for k in kinds(report) if k[0] == "orphan_object"] == [("orphan_object", None)] * 2


def test_tail_rewritten_with_all_hashes_recomputed_breaks_the_checkpoint(engine, s3, settings, tenant, five):
    last = rows(engine, tenant)[-1]
    e = json.loads(last.entry)
    e["recorded_at"] = "2020-01-01T00:00:00Z"  # backdated: the chain alone cannot tell
    c = canonical_json(e)
    superuser_sql(engine, ("UPDATE custody_ledger SET entry = :e, entry_hash = :h WHERE tenant_id = :t AND seq = 5",
                           {"e": c.decode(), "h": chain_hash(last.prev_hash, c), "t": tenant}))
    assert kinds(audit(engine, s3, settings, tenant)) == [("checkpoint_mismatch", None)]


# -- objects ----------------------------------------------------------------------------------


def test_object_changed_by_a_new_version(engine, s3, settings, tenant, five):
    rec = five[1][0]
    s3.put_object(Bucket=rec.bucket, Key=rec.key, Body=b"doctored audio", ChecksumAlgorithm="SHA256")
    report = audit(engine, s3, settings, tenant)
    assert kinds(report) == [("object_changed", 2)]
    assert "now serves version" in report.problems[0].detail
    assert any(p.startswith("object_changed") for p in check_custody(s3, settings, engine, rec))


def test_object_hidden_by_a_delete_marker(engine, s3, settings, tenant, five):
    rec = five[0][0]
    s3.delete_object(Bucket=rec.bucket, Key=rec.key)
    assert kinds(audit(engine, s3, settings, tenant)) == [("object_missing", 1)]


def test_object_version_gone_and_retention_weakened(engine, s3, settings, tenant, five):
    """AWS refuses both steps (COMPLIANCE can only be extended); moto allows them, which lets us
    test that the audit would notice if a backend ever did."""
    a, b = five[2][0], five[3][0]
    short = datetime.now(timezone.utc) + timedelta(hours=1)
    s3.put_object_retention(Bucket=b.bucket, Key=b.key, VersionId=b.version_id,
                            Retention={"Mode": "COMPLIANCE", "RetainUntilDate": short})
    s3.put_object_retention(Bucket=a.bucket, Key=a.key, VersionId=a.version_id,
                            Retention={"Mode": "GOVERNANCE", "RetainUntilDate": short})
    s3.delete_object(Bucket=a.bucket, Key=a.key, VersionId=a.version_id, BypassGovernanceRetention=True)
    assert kinds(audit(engine, s3, settings, tenant)) == [("object_missing", 3), ("retention_weakened", 4)]
    assert any(p.startswith("retention") for p in check_custody(s3, settings, engine, b))


def test_orphan_object_in_the_guard_bucket(engine, s3, settings, tenant, five):
    key = f"{tenant}/audio/ghost/v1/{'e' * 64}.wav"
    s3.put_object(Bucket=settings.guard_bucket, Key=key, Body=b"no entry", ChecksumAlgorithm="SHA256")
    assert audit(engine, s3, settings, tenant, orphan_grace_seconds=3600).ok  # still in its grace window
    report = audit(engine, s3, settings, tenant)
    assert kinds(report) == [("orphan_object", None)] and key in report.problems[0].detail


# -- all tenants ------------------------------------------------------------------------------


def test_all_tenants_audit_names_each_tenant(engine, s3, settings, tenant):
    good, bad, orphan_only = f"{tenant}-good", f"{tenant}-bad", f"{tenant}-orphan"
    custody_n(engine, s3, settings, good, 2)
    custody_n(engine, s3, settings, bad, 2)
    superuser_sql(engine, ("DELETE FROM custody_ledger WHERE tenant_id = :t AND seq = 1", {"t": bad}))
    s3.put_object(Bucket=settings.guard_bucket, Key=f"{orphan_only}/audio/s/v1/{'f' * 64}.wav", Body=b"x",
                  ChecksumAlgorithm="SHA256")
    report = verify(engine, s3, settings, orphan_grace_seconds=0, write_checkpoints=False)
    mine = {(p.tenant, p.kind, p.seq) for p in report.problems if p.tenant.startswith(tenant)}
    assert mine == {(bad, "deleted", 1), (bad, "orphan_object", None), (orphan_only, "orphan_object", None)}
    assert not report.ok and report.tenants >= 3 and report.entries >= 3
