"""`verify` against tampering done as a superuser would (plain SQL, triggers off) and on S3."""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from astra.guard import (
    CustodyLedger,
    CustodyRecord,
    UnknownTenant,
    canonical_json,
    chain_hash,
    check_custody,
    verify,
    verify_chain,
)
from astra.guard.custody import LOCK_MODE, iso_z
from astra.guard.ledger import GENESIS_HASH, ledger_time
from astra.guard.merkle import merkle_root_hex
from tests.guard.conftest import custody_n, rows, superuser_sql

pytestmark = pytest.mark.integration


def audit(engine, s3, settings, tenant, **kw):
    kw.setdefault("orphan_grace_seconds", 0)
    return verify(engine, s3, settings, tenant, **kw)


CHAIN_KINDS = ("edited", "deleted", "reordered", "inserted")


def kinds(report):
    return [(p.kind, p.seq) for p in report.problems]


@pytest.fixture
def five(engine, s3, settings, tenant):
    """A tenant with five custody entries, audited once (so it has a checkpoint of size 5)."""
    out = custody_n(engine, s3, settings, tenant, 5)
    report = audit(engine, s3, settings, tenant)
    assert report.ok and report.entries == 5 and report.tenants == 1 and report.objects == 5
    root = merkle_root_hex(r.entry.encode() for r in rows(engine, tenant))
    assert [(c.size, c.merkle_root) for c in report.checkpoints] == [(5, root)]
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
        sizes = conn.execute(text("SELECT size FROM custody_checkpoints WHERE tenant_id = :t ORDER BY size"),
                             {"t": tenant}).scalars().all()
    assert sizes == [5, 6]


def test_empty_tenant_is_intact(engine, s3, settings, tenant):
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO tenants (tenant_id) VALUES (:t)"), {"t": tenant})
    report = audit(engine, s3, settings, tenant)
    assert report.ok and report.entries == 0 and report.checkpoints == []


def test_unknown_tenant_is_an_error(engine, s3, settings, tenant):
    with pytest.raises(UnknownTenant, match=tenant):
        audit(engine, s3, settings, tenant)


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
    # 4 entries left under a checkpoint of 5: shorter than the checkpoint row and its WORM object too
    assert kinds(report) == [("deleted", 2), ("orphan_object", None), ("truncated", None),
                             ("worm_checkpoint_mismatch", None)]
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
    checkpoints = ("checkpoint_mismatch", "worm_checkpoint_mismatch")
    assert [k for k in kinds(report) if k[0] not in checkpoints] == [("reordered", 3)]


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
    at = datetime(2026, 1, 1, tzinfo=UTC)
    forged = canonical_json({"event": "note", "tenant": tenant, "seq": 3, "text": "backdated", "entry_key": None,
                             "recorded_at": ledger_time(at), "ledger_format": 2})
    superuser_sql(
        engine,
        ("UPDATE custody_ledger SET seq = -seq WHERE tenant_id = :t AND seq >= 3", p),
        ("UPDATE custody_ledger SET seq = -seq + 1 WHERE tenant_id = :t AND seq < 0", p),
        ("INSERT INTO custody_ledger (tenant_id, seq, entry, prev_hash, entry_hash, recorded_at) "
         "VALUES (:t, 3, :e, :p, :h, :at)",
         {**p, "e": forged.decode(), "p": prev, "h": chain_hash(prev, forged), "at": at}),
    )
    report = audit(engine, s3, settings, tenant)
    assert kinds(report) == [("inserted", 3), ("checkpoint_mismatch", None), ("worm_checkpoint_mismatch", None)]


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
    chain = [k for k in kinds(audit(engine, s3, settings, tenant)) if k[0] in CHAIN_KINDS]
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
    e["source_uri"] = "s3://elsewhere/forged.wav"  # the chain alone cannot tell
    c = canonical_json(e)
    superuser_sql(engine, ("UPDATE custody_ledger SET entry = :e, entry_hash = :h WHERE tenant_id = :t AND seq = 5",
                           {"e": c.decode(), "h": chain_hash(last.prev_hash, c), "t": tenant}))
    assert kinds(audit(engine, s3, settings, tenant)) == [("checkpoint_mismatch", None),
                                                          ("worm_checkpoint_mismatch", None)]


# -- objects ----------------------------------------------------------------------------------


def test_object_changed_by_a_new_version(engine, s3, settings, tenant, five):
    rec = five[1][0]
    s3.put_object(Bucket=rec.bucket, Key=rec.key, Body=b"doctored audio", ChecksumAlgorithm="SHA256")
    report = audit(engine, s3, settings, tenant)
    assert kinds(report) == [("object_changed", 2), ("orphan_object", None)]  # the new version has no entry
    assert "now serves version" in report.problems[0].detail
    assert any(p.startswith("object_changed") for p in check_custody(s3, settings, engine, rec))


def test_object_hidden_by_a_delete_marker(engine, s3, settings, tenant, five):
    rec = five[0][0]
    marker = s3.delete_object(Bucket=rec.bucket, Key=rec.key)["VersionId"]
    report = audit(engine, s3, settings, tenant)
    assert kinds(report) == [("object_missing", 1), ("delete_marker", None)]
    assert f"{rec.key} version {marker} is a delete marker" in report.problems[1].detail


def test_object_version_gone_and_retention_weakened(engine, s3, settings, tenant, five):
    """AWS refuses both steps (COMPLIANCE can only be extended); moto allows them, which lets us
    test that the audit would notice if a backend ever did."""
    a, b = five[2][0], five[3][0]
    short = datetime.now(UTC) + timedelta(hours=1)
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


# -- every column the code reads is covered by the chain ---------------------------------------

# column -> (tampering SQL on seq 3, the kind reported at seq 3)
COLUMN_TAMPERING = {
    "entry_key": ("UPDATE custody_ledger SET entry_key = 'audio:elsewhere' WHERE tenant_id = :t AND seq = 3", "edited"),
    "recorded_at": ("UPDATE custody_ledger SET recorded_at = recorded_at - interval '1 day' "
                    "WHERE tenant_id = :t AND seq = 3", "edited"),
    "entry": ("UPDATE custody_ledger SET entry = replace(entry, 'custody.audio', 'custody.other') "
              "WHERE tenant_id = :t AND seq = 3", "edited"),
    "prev_hash": ("UPDATE custody_ledger SET prev_hash = repeat('ab', 32) WHERE tenant_id = :t AND seq = 3",
                  "inserted"),
    "entry_hash": ("UPDATE custody_ledger SET entry_hash = repeat('cd', 32) WHERE tenant_id = :t AND seq = 3",
                   "inserted"),
    "seq": ("UPDATE custody_ledger SET seq = 99 WHERE tenant_id = :t AND seq = 3", "deleted"),
}


@pytest.mark.parametrize("column", list(COLUMN_TAMPERING))
def test_each_column_edited_with_triggers_off_is_named(engine, s3, settings, tenant, five, column):
    sql, kind = COLUMN_TAMPERING[column]
    superuser_sql(engine, (sql, {"t": tenant}))
    report = audit(engine, s3, settings, tenant)
    chain = [p for p in report.problems if p.kind in CHAIN_KINDS]
    assert [(p.kind, p.seq) for p in chain] == [(kind, 3)]
    if column in ("entry_key", "recorded_at"):
        assert f"column {column} is" in chain[0].detail
    assert not report.ok and report.checkpoints == []


def test_a_row_moved_to_another_tenant_is_named_in_both(engine, s3, settings, tenant, five):
    other = f"{tenant}-b"
    custody_n(engine, s3, settings, other, 2)
    superuser_sql(engine, ("UPDATE custody_ledger SET tenant_id = :o WHERE tenant_id = :t AND seq = 3",
                           {"t": tenant, "o": other}))
    assert ("deleted", 3) in kinds(audit(engine, s3, settings, tenant))
    theirs = audit(engine, s3, settings, other)
    assert kinds(theirs)[0] == ("inserted", 3) and "written for tenant" in theirs.problems[0].detail


def test_entry_keys_swapped_between_rows_mislead_no_lookup(engine, s3, settings, tenant, five):
    """The idempotency lookup reads the entry_key column: swapped keys would make a re-run or the
    pre-delete gate find another session's entry. The chain and the gate both see it."""
    r3, r4 = rows(engine, tenant)[2], rows(engine, tenant)[3]
    p = {"t": tenant, "k3": r3.entry_key, "k4": r4.entry_key}
    superuser_sql(
        engine,
        ("UPDATE custody_ledger SET entry_key = 'swap' WHERE tenant_id = :t AND seq = 3", p),
        ("UPDATE custody_ledger SET entry_key = :k3 WHERE tenant_id = :t AND seq = 4", p),
        ("UPDATE custody_ledger SET entry_key = :k4 WHERE tenant_id = :t AND seq = 3", p),
    )
    assert kinds(audit(engine, s3, settings, tenant))[0] == ("edited", 3)
    problems = check_custody(s3, settings, engine, five[2][0])
    assert any(f"seq 4 is filed under {r3.entry_key}" in p for p in problems)
    assert any(p.startswith("chain: edited at seq 3") for p in problems)


def test_a_format_1_entry_is_reported_not_trusted(engine, s3, settings, tenant):
    """Format 1 hashed neither entry_key nor recorded_at: such a ledger is named, not passed."""
    entry = canonical_json({"event": "test", "seq": 1, "tenant": tenant})
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO tenants (tenant_id) VALUES (:t)"), {"t": tenant})
        conn.execute(text("INSERT INTO custody_ledger (tenant_id, seq, entry, prev_hash, entry_hash, entry_key) "
                          "VALUES (:t, 1, :e, :p, :h, 'k')"),
                     {"t": tenant, "e": entry.decode(), "p": GENESIS_HASH, "h": chain_hash(GENESIS_HASH, entry)})
    report = audit(engine, s3, settings, tenant)
    assert kinds(report) == [("old_format", 1)] and report.checkpoints == []


# -- retention --------------------------------------------------------------------------------


def planted_custody(engine, s3, settings, tenant, mode: str, days: float):
    """An object in the guard bucket locked `mode` for `days`, with a matching ledger entry: what a
    weakened configuration (or a tampered backend) would have left behind."""
    data = b"RIFF" + uuid.uuid4().bytes * 64
    sha = hashlib.sha256(data).hexdigest()
    key = f"{tenant}/audio/weak-{uuid.uuid4().hex[:6]}/v1/{sha}.wav"
    until = datetime.now(UTC) + timedelta(days=days)
    put = s3.put_object(Bucket=settings.guard_bucket, Key=key, Body=data, ChecksumAlgorithm="SHA256",
                        ObjectLockMode=mode, ObjectLockRetainUntilDate=until)
    head = s3.head_object(Bucket=settings.guard_bucket, Key=key, VersionId=put["VersionId"])
    session = key.split("/")[2]
    rec = CustodyRecord(tenant, session, 1, sha, len(data), settings.guard_bucket, key, put["VersionId"],
                        head["ObjectLockMode"], iso_z(head["ObjectLockRetainUntilDate"]), "s3://uploads/x.wav")
    CustodyLedger(engine).append(tenant, rec.to_entry(), rec.entry_key)
    return rec


@pytest.mark.parametrize("mode, days", [(LOCK_MODE, 1), (LOCK_MODE, 29), ("GOVERNANCE", 365)])
def test_a_lock_below_the_floor_or_not_compliance_is_a_finding_even_when_the_ledger_agrees(
        engine, s3, settings, tenant, mode, days):
    rec = planted_custody(engine, s3, settings, tenant, mode, days)
    report = audit(engine, s3, settings, tenant)
    assert kinds(report) == [("retention_weakened", 1)]
    assert f"locked {mode} until" in report.problems[0].detail and "30 days after the copy" in report.problems[0].detail
    assert any(p.startswith("retention_weakened") for p in check_custody(s3, settings, engine, rec))


def test_a_lock_at_the_floor_is_enough(engine, s3, settings, tenant):
    rec = planted_custody(engine, s3, settings, tenant, LOCK_MODE, 30)
    assert audit(engine, s3, settings, tenant).ok
    assert check_custody(s3, settings, engine, rec) == []


def test_a_compliance_lock_shortened_after_the_fact(engine, s3, settings, tenant, five):
    """moto lets COMPLIANCE be shortened (AWS does not): the audit compares with the ledger."""
    rec = five[4][0]
    shorter = datetime.now(UTC) + timedelta(days=settings.guard_retention_days - 1)
    s3.put_object_retention(Bucket=rec.bucket, Key=rec.key, VersionId=rec.version_id,
                            Retention={"Mode": LOCK_MODE, "RetainUntilDate": shorter})
    report = audit(engine, s3, settings, tenant)
    assert kinds(report) == [("retention_weakened", 5)] and rec.retain_until in report.problems[0].detail


# -- versions and delete markers --------------------------------------------------------------


def test_an_orphan_hidden_by_a_delete_marker_is_found(engine, s3, settings, tenant, five):
    key = f"{tenant}/audio/ghost/v1/{'e' * 64}.wav"
    put = s3.put_object(Bucket=settings.guard_bucket, Key=key, Body=b"no entry", ChecksumAlgorithm="SHA256")
    marker = s3.delete_object(Bucket=settings.guard_bucket, Key=key)["VersionId"]
    report = audit(engine, s3, settings, tenant)
    assert sorted(kinds(report)) == [("delete_marker", None), ("orphan_object", None)]
    details = " | ".join(p.detail for p in report.problems)
    assert f"{key} version {put['VersionId']} has no ledger entry" in details
    assert f"{key} version {marker} is a delete marker" in details
