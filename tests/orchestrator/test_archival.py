"""Archival (astra/orchestrator/archival.py) against moto's S3 server and the test Postgres: ASTRA's lifecycle rules
are written and read back, reconciling is idempotent, rules someone else set are kept, and the guard bucket is never
asked anything.

moto stores and returns a lifecycle configuration but never applies it (no object changes storage class with time,
whatever the rule says), so the transitions themselves cannot be observed here: the rules are checked as S3 returns
them, which is what AWS evaluates."""

from __future__ import annotations

import uuid

import pytest
from botocore.exceptions import ClientError
from sqlalchemy import insert, text
from sqlalchemy.exc import IntegrityError

from astra import s3 as s3_lib
from astra.db.engine import make_engine
from astra.db.schema import tenants
from astra.orchestrator.archival import (
    ARCHIVE_CLASS,
    DEFAULT_ARCHIVE_AFTER_DAYS,
    MAX_RULES,
    ArchivalRefused,
    archive_rules,
    read_configuration,
    reconcile,
    rule_id,
    set_archive_after_days,
    tenant_retention,
)

pytestmark = pytest.mark.integration

FOREIGN = {"ID": "ops-expire-scratch", "Filter": {"Prefix": "scratch/"}, "Status": "Enabled",
           "Expiration": {"Days": 7}}


@pytest.fixture
def buckets(own_buckets):
    """(a fresh versioned assets bucket, a fresh Object Lock guard bucket, a client for them) of this test's own."""
    return own_buckets.assets_bucket, own_buckets.guard_bucket, s3_lib.client(own_buckets)


def rules_by_id(s3, bucket: str) -> dict[str, dict]:
    return {rule["ID"]: rule for rule in read_configuration(s3, bucket)["Rules"]}


def test_rules_are_written_and_read_back(buckets):
    assets, guard, s3 = buckets
    report = reconcile(s3, assets, guard, {"acme": 90, "acme-2": 400})
    assert report.written and report.tenants == 2 and not report.changed and not report.removed
    found = rules_by_id(s3, assets)
    assert sorted(found) == report.added == sorted(rule_id(t, a) for t in ("acme", "acme-2")
                                                    for a in ("documents", "blobs"))
    documents = found["astra-archive-acme--documents"]
    assert documents["Filter"] == {"Prefix": "acme/documents/"} and documents["Status"] == "Enabled"
    assert documents["Transitions"] == [{"Days": 90, "StorageClass": ARCHIVE_CLASS}]
    assert documents["NoncurrentVersionTransitions"] == [{"NoncurrentDays": 90, "StorageClass": ARCHIVE_CLASS}]
    blobs = found["astra-archive-acme-2--blobs"]
    assert blobs["Filter"] == {"Prefix": "acme-2/blobs/"}
    assert blobs["Transitions"] == [{"Days": 400, "StorageClass": ARCHIVE_CLASS}]
    # No rule of ASTRA's deletes anything, and "acme/" never reaches into "acme-2/".
    assert not any("Expiration" in rule or "NoncurrentVersionExpiration" in rule for rule in found.values())
    assert all(rule["Filter"]["Prefix"].endswith("/") for rule in found.values())


def test_reconciling_again_writes_nothing_and_a_change_is_applied(buckets):
    assets, guard, s3 = buckets
    reconcile(s3, assets, guard, {"acme": 90, "beta": 120})
    before = read_configuration(s3, assets)
    again = reconcile(s3, assets, guard, {"acme": 90, "beta": 120})
    assert not again.written and (again.added, again.changed, again.removed) == ([], [], [])
    assert read_configuration(s3, assets) == before

    changed = reconcile(s3, assets, guard, {"acme": 60, "beta": 120})
    assert changed.written and changed.changed == [rule_id("acme", "blobs"), rule_id("acme", "documents")]
    assert rules_by_id(s3, assets)[rule_id("acme", "blobs")]["Transitions"][0]["Days"] == 60
    assert rules_by_id(s3, assets)[rule_id("beta", "blobs")]["Transitions"][0]["Days"] == 120


def test_rules_others_set_are_kept(buckets):
    assets, guard, s3 = buckets
    s3.put_bucket_lifecycle_configuration(Bucket=assets, LifecycleConfiguration={"Rules": [FOREIGN]})
    report = reconcile(s3, assets, guard, {"acme": 90})
    assert report.foreign == [FOREIGN["ID"]]
    assert rules_by_id(s3, assets)[FOREIGN["ID"]] == FOREIGN

    gone = reconcile(s3, assets, guard, {"beta": 45})  # acme left: its rules go, beta's come, the foreign one stays
    assert gone.removed == [rule_id("acme", "blobs"), rule_id("acme", "documents")]
    assert sorted(rules_by_id(s3, assets)) == sorted([FOREIGN["ID"], rule_id("beta", "blobs"),
                                                     rule_id("beta", "documents")])
    reconcile(s3, assets, guard, {})
    assert rules_by_id(s3, assets) == {FOREIGN["ID"]: FOREIGN}


def test_no_rule_left_deletes_the_configuration(buckets):
    assets, guard, s3 = buckets
    reconcile(s3, assets, guard, {"acme": 90})
    assert reconcile(s3, assets, guard, {}).removed
    with pytest.raises(ClientError) as err:
        s3.get_bucket_lifecycle_configuration(Bucket=assets)
    assert s3_lib.error_code(err.value) == "NoSuchLifecycleConfiguration"


def test_the_guard_bucket_is_never_asked_anything(buckets):
    assets, guard, s3 = buckets
    called: list[tuple[str, str]] = []
    s3.meta.events.register("before-parameter-build.s3", lambda model, params, **_: called.append((model.name,
                                                                                          params.get("Bucket"))))
    s3.put_bucket_lifecycle_configuration(Bucket=assets, LifecycleConfiguration={"Rules": [FOREIGN]})
    called.clear()
    reconcile(s3, assets, guard, {"acme": 90})
    reconcile(s3, assets, guard, {"acme": 31})
    reconcile(s3, assets, guard, {})
    assert called and {bucket for _, bucket in called} == {assets}
    assert {name for name, _ in called} <= {"GetBucketLifecycleConfiguration", "PutBucketLifecycleConfiguration",
                                            "DeleteBucketLifecycle"}
    assert read_configuration(s3, guard) == {"Rules": []}  # nothing on the guard bucket either
    # One bucket for both: refused before anything is read or written.
    called.clear()
    with pytest.raises(ArchivalRefused, match="custody"):
        reconcile(s3, guard, guard, {"acme": 90})
    assert called == [] and read_configuration(s3, guard) == {"Rules": []}


@pytest.mark.parametrize("retention,match", [
    ({"acme": 29}, "between 30"),
    ({"acme": 36501}, "between 30"),
    ({"acme": True}, "whole number"),
    ({"Not-A-Slug": 90}, "invalid tenant"),
])
def test_bad_settings_are_refused_and_nothing_is_written(buckets, retention, match):
    assets, guard, s3 = buckets
    with pytest.raises(ArchivalRefused, match=match):
        reconcile(s3, assets, guard, retention)
    assert read_configuration(s3, assets) == {"Rules": []}


def test_a_class_that_needs_a_restore_is_refused():
    for storage_class in ("GLACIER", "DEEP_ARCHIVE"):
        with pytest.raises(ArchivalRefused, match="restore"):
            archive_rules({"acme": 90}, storage_class)
    assert archive_rules({"acme": 90}, "STANDARD_IA")[0]["Transitions"] == [{"Days": 90,
                                                                              "StorageClass": "STANDARD_IA"}]


def test_more_rules_than_s3_holds_are_refused_before_writing(buckets):
    assets, guard, s3 = buckets
    s3.put_bucket_lifecycle_configuration(Bucket=assets, LifecycleConfiguration={"Rules": [FOREIGN]})
    fits = {f"t{n}": 90 for n in range((MAX_RULES - 1) // 2)}
    with pytest.raises(ArchivalRefused, match="over S3's 1000"):
        reconcile(s3, assets, guard, {**fits, "one-more": 90})
    assert rules_by_id(s3, assets) == {FOREIGN["ID"]: FOREIGN}


def test_retention_comes_from_the_tenants_table(pg_url):
    engine = make_engine(pg_url)
    a, b = f"t-{uuid.uuid4().hex[:10]}", f"t-{uuid.uuid4().hex[:10]}"
    with engine.begin() as conn:
        conn.execute(insert(tenants).values(tenant_id=a))
        conn.execute(insert(tenants).values(tenant_id=b, archive_after_days=45))
        conn.execute(text("INSERT INTO tenants (tenant_id) VALUES ('base') ON CONFLICT DO NOTHING"))
    retention = tenant_retention(engine)
    assert (retention[a], retention[b]) == (DEFAULT_ARCHIVE_AFTER_DAYS, 45)
    assert "base" not in retention  # the base model's owner has no documents
    for days in (29, 36501):
        with pytest.raises(IntegrityError, match="tenants_archive_after_days"):
            with engine.begin() as conn:
                conn.execute(text("UPDATE tenants SET archive_after_days = :d WHERE tenant_id = :t"),
                             {"d": days, "t": a})


def test_a_tenants_retention_is_set_within_the_bounds(pg_url):
    engine = make_engine(pg_url)
    tenant = f"t-{uuid.uuid4().hex[:10]}"
    set_archive_after_days(engine, tenant, 60)  # a new tenant row
    assert tenant_retention(engine)[tenant] == 60
    set_archive_after_days(engine, tenant, 90)
    assert tenant_retention(engine)[tenant] == 90
    for bad_tenant, days in ((tenant, 29), (tenant, 36501), ("base", 90), ("Nope", 90)):
        with pytest.raises(ArchivalRefused):
            set_archive_after_days(engine, bad_tenant, days)
    assert tenant_retention(engine)[tenant] == 90
