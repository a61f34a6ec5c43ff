"""Checkpoints outside the database: the locked copy in the guard bucket (moto server) and what the audit
makes of it, against a superuser who rewrites the ledger tail AND the checkpoint rows (triggers off)."""

from __future__ import annotations

import dataclasses
import json
import threading
from datetime import UTC, datetime, timedelta

import pytest
from botocore.exceptions import ClientError

from astra.canonical import canonical_json
from astra.guard import (
    CheckpointConflict,
    CustodyLedger,
    chain_hash,
    record_checkpoint,
    verify,
    verify_chain,
    verify_tenant_checkpoints,
)
from astra.guard.checkpoints import (
    CHECKPOINT_FORMAT,
    anchor_checkpoint,
    checkpoint_body,
    checkpoint_key,
    list_checkpoint_versions,
    parse_checkpoint_body,
    parse_checkpoint_key,
)
from astra.guard.ledger import Checkpoint, checkpoints, ledger_time, write_checkpoint
from astra.guard.merkle import leaf_hash, merkle_root_hex
from astra.guard.verify import check_worm_checkpoints
from tests.guard.conftest import rows, superuser_sql

pytestmark = pytest.mark.integration


def audit(engine, s3, settings, tenant, **kw):
    kw.setdefault("orphan_grace_seconds", 0)
    return verify(engine, s3, settings, tenant, **kw)


def kinds(problems):
    return sorted((p.kind, p.seq) for p in problems)


def append(engine, tenant, n):
    ledger = CustodyLedger(engine)
    for _ in range(n):
        ledger.append(tenant, {"event": "test", "note": "x"})


def root_of(engine, tenant, size=None):
    return merkle_root_hex(r.entry.encode() for r in rows(engine, tenant)[:size])


def versions(s3, settings, key):
    listing = s3.list_object_versions(Bucket=settings.guard_bucket, Prefix=key)
    return listing.get("Versions", []), listing.get("DeleteMarkers", [])


def db_checkpoints(engine, tenant):
    with engine.connect() as conn:
        return [(c.size, c.merkle_root) for c in checkpoints(conn, tenant)]


@pytest.fixture
def pinned(engine, s3, settings, tenant):
    """A tenant audited at 3 entries and again at 5: checkpoints of size 3 and 5, in Postgres and in S3."""
    append(engine, tenant, 3)
    assert [c.size for c in audit(engine, s3, settings, tenant).checkpoints] == [3]
    append(engine, tenant, 2)
    report = audit(engine, s3, settings, tenant)
    assert report.ok and [c.size for c in report.checkpoints] == [5]
    return {3: root_of(engine, tenant, 3), 5: root_of(engine, tenant, 5)}


def rewrite_tail(engine, tenant, from_seq: int) -> str:
    """As a superuser would: edit every entry from `from_seq` on and recompute every hash after it, so the
    chain re-walks clean. Returns the new root of the whole ledger."""
    stored = rows(engine, tenant)
    prev, statements = stored[from_seq - 2].entry_hash, []
    for r in stored[from_seq - 1:]:
        entry = json.loads(r.entry)
        entry["note"] = "rewritten"
        c = canonical_json(entry)
        h = chain_hash(prev, c)
        statements.append(("UPDATE custody_ledger SET entry = :e, prev_hash = :p, entry_hash = :h "
                           "WHERE tenant_id = :t AND seq = :s",
                           {"e": c.decode(), "p": prev, "h": h, "t": tenant, "s": r.seq}))
        prev = h
    superuser_sql(engine, *statements)
    return root_of(engine, tenant)


# -- keys and bodies --------------------------------------------------------------------------


def test_key_and_body_format(tenant):
    key = checkpoint_key(tenant, 42)
    assert key == f"{tenant}/checkpoints/00000000000000000042.json" and parse_checkpoint_key(key) == (tenant, 42)
    assert checkpoint_key(tenant, 9) < checkpoint_key(tenant, 10)  # listed in size order
    cp = Checkpoint(tenant, 42, "ab" * 32, datetime(2026, 5, 1, 12, 0, 0, 123456, tzinfo=UTC))
    body = checkpoint_body(cp)
    assert json.loads(body) == {"tenant": tenant, "size": 42, "merkle_root": "ab" * 32,
                                "created_at": "2026-05-01T12:00:00.123456Z", "format": CHECKPOINT_FORMAT}
    assert body == canonical_json(json.loads(body)) and parse_checkpoint_body(key, body) == cp
    for bad_size in (0, -1, True, 1.5):
        with pytest.raises(ValueError):
            checkpoint_key(tenant, bad_size)
    with pytest.raises(ValueError):
        checkpoint_key("Not_A_Slug", 1)


@pytest.mark.parametrize("body, why", [
    (b"not json", "not canonical JSON"),
    (b'{"size":42}', "fields"),
    (b'{ "created_at":"2026-05-01T12:00:00Z","format":1,"merkle_root":"' + b"ab" * 32 + b'","size":42,"tenant":"T"}',
     "not canonical JSON"),
    (None, "size 41"),  # a body for another size than its key
    (b"x" * 5000, "larger than"),
])
def test_a_body_that_is_not_the_checkpoint_of_its_key_is_refused(tenant, body, why):
    key = checkpoint_key(tenant, 42)
    if body is None:
        body = checkpoint_body(Checkpoint(tenant, 41, "ab" * 32, datetime.now(UTC)))
    with pytest.raises(ValueError, match=why):
        parse_checkpoint_body(key, body.replace(b'"T"', f'"{tenant}"'.encode()))


# -- the happy path ---------------------------------------------------------------------------


def test_every_checkpoint_written_is_a_locked_object(engine, s3, settings, tenant, pinned):
    before = datetime.now(UTC)
    assert db_checkpoints(engine, tenant) == [(3, pinned[3]), (5, pinned[5])]
    with engine.connect() as conn:
        rows_by_size = {c.size: c for c in checkpoints(conn, tenant)}
    for size in (3, 5):
        key = checkpoint_key(tenant, size)
        live, markers = versions(s3, settings, key)
        assert len(live) == 1 and markers == []
        got = s3.get_object(Bucket=settings.guard_bucket, Key=key, VersionId=live[0]["VersionId"])
        body = got["Body"].read()
        assert json.loads(body) == {"tenant": tenant, "size": size, "merkle_root": pinned[size],
                                    "created_at": ledger_time(rows_by_size[size].created_at), "format": 1}
        head = s3.head_object(Bucket=settings.guard_bucket, Key=key, VersionId=live[0]["VersionId"])
        assert head["ObjectLockMode"] == "COMPLIANCE"
        assert head["ObjectLockRetainUntilDate"] >= before + timedelta(days=settings.guard_retention_days - 1)
    assert verify_tenant_checkpoints(engine, s3, settings.guard_bucket, tenant) == []
    again = audit(engine, s3, settings, tenant)
    assert again.ok and again.checkpoints == [] and len(versions(s3, settings, checkpoint_key(tenant, 5))[0]) == 1


def test_no_checkpoint_option_writes_no_object(engine, s3, settings, tenant):
    append(engine, tenant, 2)
    assert audit(engine, s3, settings, tenant, write_checkpoints=False).ok
    assert versions(s3, settings, f"{tenant}/checkpoints/") == ([], [])
    assert db_checkpoints(engine, tenant) == []


# -- the attack -------------------------------------------------------------------------------


@pytest.mark.parametrize("rows_done", ["rewritten", "deleted"])
def test_tail_and_checkpoint_rows_rewritten_by_a_superuser_are_caught_by_the_worm_copy(
        engine, s3, settings, tenant, pinned, rows_done):
    new_root = rewrite_tail(engine, tenant, 4)
    if rows_done == "rewritten":  # the row of size 5 now pins the forged ledger
        superuser_sql(engine, ("UPDATE custody_checkpoints SET merkle_root = :r WHERE tenant_id = :t AND size = 5",
                               {"r": new_root, "t": tenant}), table="custody_checkpoints")
    else:  # every row gone: nothing in Postgres says what the ledger was
        superuser_sql(engine, ("DELETE FROM custody_checkpoints WHERE tenant_id = :t", {"t": tenant}),
                      table="custody_checkpoints")
    assert verify_chain(engine, tenant) == []  # the database alone no longer sees anything

    report = audit(engine, s3, settings, tenant)
    expected = {"rewritten": [("checkpoint_row_mismatch", None), ("worm_checkpoint_mismatch", None)],
                "deleted": [("checkpoint_row_missing", None)] * 2 + [("worm_checkpoint_mismatch", None)]}
    assert kinds(report.problems) == expected[rows_done]
    mismatch = next(p for p in report.problems if p.kind == "worm_checkpoint_mismatch")
    assert checkpoint_key(tenant, 5) in mismatch.detail and pinned[5][:16] in mismatch.detail
    assert kinds(verify_tenant_checkpoints(engine, s3, settings.guard_bucket, tenant, grace_seconds=0)) == \
        expected[rows_done]
    # and the audit pinned nothing of the forged ledger: no row, no second version
    assert report.checkpoints == [] and len(versions(s3, settings, checkpoint_key(tenant, 5))[0]) == 1
    assert db_checkpoints(engine, tenant) == ([(3, pinned[3]), (5, new_root)] if rows_done == "rewritten" else [])


def test_a_truncated_ledger_with_its_rows_deleted_is_caught(engine, s3, settings, tenant, pinned):
    superuser_sql(engine, ("DELETE FROM custody_ledger WHERE tenant_id = :t AND seq >= 4", {"t": tenant}))
    superuser_sql(engine, ("DELETE FROM custody_checkpoints WHERE tenant_id = :t AND size = 5", {"t": tenant}),
                  table="custody_checkpoints")
    assert verify_chain(engine, tenant) == []
    problems = audit(engine, s3, settings, tenant).problems
    assert kinds(problems) == [("checkpoint_row_missing", None), ("worm_checkpoint_mismatch", None)]
    assert "fewer than the WORM checkpoint" in next(p.detail for p in problems if p.kind == "worm_checkpoint_mismatch")


def test_a_checkpoint_row_without_its_object_is_reported(engine, s3, settings, tenant):
    append(engine, tenant, 2)
    with engine.begin() as conn:  # the row alone, as a superuser (or older code) would write it
        write_checkpoint(conn, tenant, 2, root_of(engine, tenant))
    problems = audit(engine, s3, settings, tenant).problems
    assert kinds(problems) == [("worm_checkpoint_missing", None)]
    assert checkpoint_key(tenant, 2) in problems[0].detail


# -- the objects themselves -------------------------------------------------------------------


def test_s3_refuses_deleting_a_checkpoint_version(engine, s3, settings, tenant, pinned):
    """moto enforces the COMPLIANCE lock on a versioned delete, as AWS does (also with the governance bypass)."""
    key = checkpoint_key(tenant, 5)
    vid = versions(s3, settings, key)[0][0]["VersionId"]
    for kwargs in ({}, {"BypassGovernanceRetention": True}):
        with pytest.raises(ClientError) as exc:
            s3.delete_object(Bucket=settings.guard_bucket, Key=key, VersionId=vid, **kwargs)
        assert exc.value.response["Error"]["Code"] == "AccessDenied"
    bulk = s3.delete_objects(Bucket=settings.guard_bucket, Delete={"Objects": [{"Key": key, "VersionId": vid}]})
    assert [e["Code"] for e in bulk.get("Errors", [])] == ["AccessDenied"] and not bulk.get("Deleted")
    assert [v["VersionId"] for v in versions(s3, settings, key)[0]] == [vid]
    assert audit(engine, s3, settings, tenant).ok


def test_a_delete_marker_over_a_checkpoint_is_reported_once(engine, s3, settings, tenant, pinned):
    key = checkpoint_key(tenant, 5)
    s3.delete_object(Bucket=settings.guard_bucket, Key=key)  # allowed: it only hides the locked version
    problems = audit(engine, s3, settings, tenant).problems
    assert kinds(problems) == [("delete_marker", None)] and key in problems[0].detail


def test_a_checkpoint_replaced_by_a_new_version_is_caught(engine, s3, settings, tenant, pinned):
    """The superuser rewrites the tail and the row, and adds a new, properly locked version with the forged
    root over the checkpoint object (the old version cannot be removed): the old version still speaks."""
    new_root = rewrite_tail(engine, tenant, 4)
    superuser_sql(engine, ("UPDATE custody_checkpoints SET merkle_root = :r WHERE tenant_id = :t AND size = 5",
                           {"r": new_root, "t": tenant}), table="custody_checkpoints")
    key = checkpoint_key(tenant, 5)
    forged = checkpoint_body(Checkpoint(tenant, 5, new_root, datetime.now(UTC)))
    s3.put_object(Bucket=settings.guard_bucket, Key=key, Body=forged, ChecksumAlgorithm="SHA256",
                  ObjectLockMode="COMPLIANCE", ObjectLockRetainUntilDate=datetime.now(UTC) + timedelta(days=40))
    problems = audit(engine, s3, settings, tenant).problems
    assert kinds(problems) == [("worm_checkpoint_mismatch", None), ("worm_checkpoint_replaced", None)]
    assert "different roots" in next(p.detail for p in problems if p.kind == "worm_checkpoint_replaced")


@pytest.mark.parametrize("what", ["garbage at the key", "another key under checkpoints/", "another tenant's body"])
def test_an_object_under_checkpoints_that_is_not_a_checkpoint_is_flagged_not_orphaned(
        engine, s3, settings, tenant, pinned, what):
    key, body = {
        "garbage at the key": (checkpoint_key(tenant, 5), b"{}"),
        "another key under checkpoints/": (f"{tenant}/checkpoints/notes.txt", b"hello"),
        "another tenant's body": (checkpoint_key(tenant, 6),
                                  checkpoint_body(Checkpoint(f"{tenant}-b", 6, "ab" * 32, datetime.now(UTC)))),
    }[what]
    s3.put_object(Bucket=settings.guard_bucket, Key=key, Body=body, ChecksumAlgorithm="SHA256")
    problems = audit(engine, s3, settings, tenant).problems
    assert kinds(problems) == [("worm_checkpoint_invalid", None)] and key in problems[0].detail


def test_a_checkpoint_version_locked_weaker_is_flagged(engine, s3, settings, tenant, pinned):
    key = checkpoint_key(tenant, 5)
    body = checkpoint_body(Checkpoint(tenant, 5, pinned[5], datetime.now(UTC)))
    s3.put_object(Bucket=settings.guard_bucket, Key=key, Body=body, ChecksumAlgorithm="SHA256",
                  ObjectLockMode="GOVERNANCE", ObjectLockRetainUntilDate=datetime.now(UTC) + timedelta(days=365))
    problems = audit(engine, s3, settings, tenant).problems
    assert kinds(problems) == [("worm_checkpoint_unlocked", None)] and "locked GOVERNANCE" in problems[0].detail


def test_the_newest_checkpoint_lock_running_out_is_flagged_and_renewed(engine, s3, settings, tenant, pinned):
    bucket = settings.guard_bucket
    listed = list_checkpoint_versions(s3, bucket, tenant)
    with engine.connect() as conn:
        cps = checkpoints(conn, tenant)
    leaves = [leaf_hash(r.entry.encode()) for r in rows(engine, tenant)]
    cutoff = datetime.now(UTC)
    assert check_worm_checkpoints(bucket, tenant, listed, cps, leaves, cutoff) == []
    later = datetime.now(UTC) + timedelta(days=settings.guard_retention_days + 1)
    problems = check_worm_checkpoints(bucket, tenant, listed, cps, leaves, cutoff, now=later)
    assert kinds(problems) == [("worm_checkpoint_unlocked", None)] and "no longer locked" in problems[0].detail

    # A quiet tenant: the audit extends the newest lock once less than half the configured days remain.
    longer = dataclasses.replace(settings, guard_retention_days=100)
    key = checkpoint_key(tenant, 5)
    vid = versions(s3, settings, key)[0][0]["VersionId"]
    assert audit(engine, s3, longer, tenant).ok
    until = s3.head_object(Bucket=bucket, Key=key, VersionId=vid)["ObjectLockRetainUntilDate"]
    assert until >= datetime.now(UTC) + timedelta(days=99)
    old = checkpoint_key(tenant, 3)  # older checkpoints are left to run out
    assert s3.head_object(Bucket=bucket, Key=old)["ObjectLockRetainUntilDate"] < datetime.now(UTC) + timedelta(days=31)


# -- idempotent and concurrent ----------------------------------------------------------------


def test_anchoring_again_writes_nothing_and_another_root_is_a_conflict(engine, s3, settings, tenant, pinned):
    with engine.connect() as conn:
        row = checkpoints(conn, tenant)[-1]
    first = versions(s3, settings, checkpoint_key(tenant, 5))[0]
    found, written = anchor_checkpoint(s3, settings, row)
    assert not written and found.version_id == first[0]["VersionId"]
    with pytest.raises(CheckpointConflict, match="not the one being checkpointed"):
        anchor_checkpoint(s3, settings, dataclasses.replace(row, merkle_root="cd" * 32))
    assert versions(s3, settings, checkpoint_key(tenant, 5))[0] == first


def test_concurrent_audits_write_one_row_and_one_object(engine, s3, settings, tenant):
    append(engine, tenant, 4)
    barrier, results, errors = threading.Barrier(4), [], []

    def run():
        barrier.wait()
        try:
            results.append(record_checkpoint(engine, s3, settings, tenant, 4, root_of(engine, tenant)))
        except Exception as exc:  # noqa: BLE001 - any error is the failure
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and sum(r is not None for r in results) == 1
    assert len(versions(s3, settings, checkpoint_key(tenant, 4))[0]) == 1
    assert db_checkpoints(engine, tenant) == [(4, root_of(engine, tenant))]

    append(engine, tenant, 1)  # and whole audits racing each other
    reports = []
    # (the default grace: an object a racing audit wrote after this one read its rows is in flight)
    threads = [threading.Thread(target=lambda: reports.append(verify(engine, s3, settings, tenant)))
               for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r.ok for r in reports) and sum(len(r.checkpoints) for r in reports) == 1
    assert len(versions(s3, settings, checkpoint_key(tenant, 5))[0]) == 1


def test_a_crash_between_the_object_and_the_row_commit(engine, s3, settings, tenant):
    """The object is written before the row commits: a crash leaves an object without a row. Inside the grace
    period it is in flight (the next audit writes the row and reuses the object); after it, it is reported."""
    append(engine, tenant, 3)
    cp = Checkpoint(tenant, 3, root_of(engine, tenant), datetime.now(UTC))
    anchor_checkpoint(s3, settings, cp)
    late = audit(engine, s3, settings, tenant, write_checkpoints=False)
    assert kinds(late.problems) == [("checkpoint_row_missing", None)]
    healed = audit(engine, s3, settings, tenant, orphan_grace_seconds=3600)
    assert healed.ok and [c.size for c in healed.checkpoints] == [3]
    assert len(versions(s3, settings, checkpoint_key(tenant, 3))[0]) == 1
    assert audit(engine, s3, settings, tenant).ok


def test_a_failed_object_write_leaves_no_row(engine, s3, settings, tenant):
    append(engine, tenant, 2)
    broken = dataclasses.replace(settings, guard_bucket=f"{settings.guard_bucket}-missing")
    with pytest.raises(ClientError):
        record_checkpoint(engine, s3, broken, tenant, 2, root_of(engine, tenant))
    assert db_checkpoints(engine, tenant) == []


def test_concurrent_writers_of_one_object_leave_one_version(s3, settings, tenant):
    """Without the database between them (If-None-Match: * on the first write): one version, no error."""
    cp = Checkpoint(tenant, 7, "ab" * 32, datetime.now(UTC))
    barrier, results, errors = threading.Barrier(6), [], []

    def run():
        barrier.wait()
        try:
            results.append(anchor_checkpoint(s3, settings, cp))
        except Exception as exc:  # noqa: BLE001 - any error is the failure
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    live, _ = versions(s3, settings, checkpoint_key(tenant, 7))
    assert errors == [] and len(live) == 1 and sum(written for _, written in results) == 1
    assert {found.version_id for found, _ in results} == {live[0]["VersionId"]}
