"""The schedules that do real work, evaluated as the daemon evaluates them (build_schedule_context, evaluate_tick)
against the test Postgres, Redis and moto: `retrain_catch_up` (a tenant's retrain only once enough new corrections
arrived, never twice, never beside a retrain already queued) and `archive_rules` (its run writes the lifecycle rules
of the tenants in Postgres on the assets bucket, idempotently, and never touches the guard bucket).

The schedule tests have a database of their own (both schedules read every tenant, and the shared database holds
the other tests' tenants), except the one that runs a requested retrain end to end, which looks at its tenant only.
The daemon's launch of a requested run is stood in for by a run record with the tags the daemon gives it
(`dagster/schedule_name`, `dagster/run_key`), or by executing the request in process.
"""

from __future__ import annotations

import uuid

import pytest
import redis
from dagster import DagsterRunStatus, build_schedule_context
from dagster._core.storage.dagster_run import DagsterRun
from dagster._core.utils import make_new_run_id
from dagster_aws.s3 import S3Resource
from sqlalchemy import func, insert, select

from astra.core.model_store import ACTIVE
from astra.db.engine import make_engine
from astra.db.schema import model_registry, tenants
from astra.learn.backlog import DEFAULT_MIN_CORRECTIONS, REVISION_METRIC, min_corrections, retrain_backlog
from astra.learn.examples import LabelledExample
from astra.learn.feedback import FeedbackConsumer, latest_revision, publish_examples, settle
from astra.orchestrator.archival import ARCHIVE_CLASS, read_configuration, rule_id
from astra.settings import ENV, InvalidSetting
from resources import PostgresResource, StorageLayout
from tests.conftest import migrated_database
from tests.dagster.test_learn_model import dataset, genuine, learn_instance, prefix, registry  # noqa: F401 — fixtures

pytestmark = pytest.mark.integration

REPORT_SHA256 = "cd" * 32


@pytest.fixture
def own_db():
    with migrated_database(f"astra_sched_{uuid.uuid4().hex[:10]}") as url:
        yield url


@pytest.fixture
def feed(own_db, redis_url, redis_prefix):
    """add(tenant, n): n new labelled examples of the tenant through the feedback stream into learn_examples (as the
    sensor's consumer stores them); returns the tenant's latest revision."""
    stream_prefix = f"{redis_prefix}:sched-{uuid.uuid4().hex[:8]}"
    client, engine = redis.Redis.from_url(redis_url), make_engine(own_db)
    consumer = FeedbackConsumer(client, engine, stream_prefix, "test-schedules")
    sent: dict[str, int] = {}

    def add(tenant: str, n: int) -> int:
        start = sent.get(tenant, 0)
        sent[tenant] = start + n
        publish_examples(client, stream_prefix, [
            LabelledExample(tenant, f"{tenant}--s-1--v1", f"u{i}", f"move money number {i}", "transfer", "moved",
                            "summary", "notes", "m1", REPORT_SHA256) for i in range(start, start + n)])
        consumer.consume(count=1000)
        return latest_revision(engine, tenant)

    return add


@pytest.fixture
def min_five(monkeypatch):
    monkeypatch.setenv(ENV["retrain_min_corrections"], "5")
    return 5


def evaluate(defs, instance, db_url: str, name: str = "retrain_catch_up"):
    schedule = defs.resolve_schedule_def(name)
    with build_schedule_context(instance=instance, resources={"postgres": PostgresResource(url=db_url)},
                                repository_def=defs.get_repository_def()) as context:
        return schedule.evaluate_tick(context)


def launched(instance, request, status: DagsterRunStatus) -> DagsterRun:
    """The run the daemon would create for `request`, with the tags it gives it, in `status`."""
    run = DagsterRun(job_name="retrain_catch_up_job", run_id=make_new_run_id(), status=status,
                     tags={**request.tags, "dagster/run_key": request.run_key})
    return instance.run_storage.add_run(run)


def other_run(instance, tags: dict, status: DagsterRunStatus) -> DagsterRun:
    return instance.run_storage.add_run(DagsterRun(job_name="__ASSET_JOB", run_id=make_new_run_id(), status=status,
                                                   tags=tags))


def trained_to(db_url: str, tenant: str, revision: int, accepted: bool = True) -> None:
    """What intent_model leaves behind for a retrain up to `revision`: a registry row (active when the gate passed,
    with the revision it was trained to) and the examples it read settled with the verdict."""
    engine = make_engine(db_url)
    with engine.begin() as conn:
        version = conn.scalar(select(func.count()).where(model_registry.c.tenant_id == tenant)) + 1
        conn.execute(insert(model_registry).values(
            tenant_id=tenant, version=version, uri=f"s3://assets/models/{tenant}/m{version}/", sha256="0" * 64,
            metrics={REVISION_METRIC: revision}, status="active" if accepted else "rejected"))
    settle(engine, tenant, revision, accepted=accepted, registry_version=version)


def test_retrain_is_requested_once_enough_new_corrections_arrived_and_never_twice(
        defs, dagster_instance, own_db, feed, min_five):
    tenant = f"t-{uuid.uuid4().hex[:10]}"
    feed(tenant, 3)
    tick = evaluate(defs, dagster_instance, own_db)
    assert tick.run_requests == []
    assert f"{tenant}: 3 new corrections, 5 needed" in tick.skip_message

    revision = feed(tenant, 3)
    tick = evaluate(defs, dagster_instance, own_db)
    (request,) = tick.run_requests
    assert (request.partition_key, request.run_key) == (tenant, f"{tenant}-r{revision}")
    assert request.run_config["ops"]["intent_model"]["config"] == {"up_to_revision": revision}
    assert request.tags["astra/learn-tenant"] == tenant and request.tags["dagster/schedule_name"] == "retrain_catch_up"
    assert request.tags["dagster/partition"] == tenant
    assert dagster_instance.has_dynamic_partition("tenants", tenant)  # added for it: a schedule cannot ask for it

    # Launched, not finished (a queued run needs a code location's origin: NOT_STARTED stands in for it): the next
    # tick does not request it again.
    run = launched(dagster_instance, request, DagsterRunStatus.NOT_STARTED)
    tick = evaluate(defs, dagster_instance, own_db)
    assert tick.run_requests == []
    assert f"{tenant}: a retrain is queued or running (run {run.run_id})" in tick.skip_message
    # It failed for good (nothing settled): the schedule does not request the same revision again…
    dagster_instance.run_storage.delete_run(run.run_id)
    launched(dagster_instance, request, DagsterRunStatus.FAILURE)
    tick = evaluate(defs, dagster_instance, own_db)
    assert tick.run_requests == [] and f"revision {revision} was requested before" in tick.skip_message
    # …but does once more corrections arrived.
    later = feed(tenant, 1)
    (request,) = evaluate(defs, dagster_instance, own_db).run_requests
    assert request.run_key == f"{tenant}-r{later}"

    # The retrain up to `later` passed its gate: nothing is new any more, until 5 more arrive.
    trained_to(own_db, tenant, later)
    tick = evaluate(defs, dagster_instance, own_db)
    assert tick.run_requests == [] and "none has new corrections" in tick.skip_message
    feed(tenant, 4)
    assert f"{tenant}: 4 new corrections, 5 needed" in evaluate(defs, dagster_instance, own_db).skip_message
    newest = feed(tenant, 1)
    (request,) = evaluate(defs, dagster_instance, own_db).run_requests
    assert request.run_key == f"{tenant}-r{newest}"
    assert retrain_backlog(make_engine(own_db))[0].trained_revision == later


def test_a_rejected_round_does_not_count_and_a_sensor_retrain_holds_its_tenant_back(
        defs, dagster_instance, own_db, feed, min_five):
    a, b = sorted(f"t-{uuid.uuid4().hex[:10]}" for _ in range(2))
    rejected = feed(a, 6)
    trained_to(own_db, a, rejected, accepted=False)  # the gate rejected the round: its examples train nothing more
    feed(b, 6)
    tick = evaluate(defs, dagster_instance, own_db)
    assert [r.partition_key for r in tick.run_requests] == [b]

    # The sensor's retrain of `a` is running (its tag, no schedule's): more corrections for `a` wait for it.
    running = other_run(dagster_instance, {"astra/learn-tenant": a, "dagster/sensor_name": "learn_feedback_sensor"},
                        DagsterRunStatus.STARTED)
    feed(a, 5)
    launched(dagster_instance, tick.run_requests[0], DagsterRunStatus.SUCCESS)
    trained_to(own_db, b, latest_revision(make_engine(own_db), b))
    tick = evaluate(defs, dagster_instance, own_db)
    assert tick.run_requests == []
    assert f"{a}: a retrain is queued or running (run {running.run_id})" in tick.skip_message
    dagster_instance.run_storage.delete_run(running.run_id)
    assert [r.partition_key for r in evaluate(defs, dagster_instance, own_db).run_requests] == [a]


def test_min_corrections_is_a_setting_with_a_default():
    name = ENV["retrain_min_corrections"]
    assert min_corrections({}) == DEFAULT_MIN_CORRECTIONS == 20
    assert min_corrections({name: " 3 "}) == 3
    for bad in ("0", "-1", "2.5", "many", "99999999"):
        with pytest.raises(InvalidSetting, match=name):
            min_corrections({name: bad})


def test_the_revision_metric_is_the_one_intent_model_writes():
    from astra_assets.learn import REVISION_METRIC as WRITTEN

    assert REVISION_METRIC == WRITTEN


def archive_resources(settings, db_url: str, guard_bucket: str | None = None) -> dict:
    return {"s3": S3Resource(endpoint_url=settings.s3_endpoint_url, region_name=settings.aws_region),
            "storage": StorageLayout(uploads_bucket=settings.uploads_bucket, assets_bucket=settings.assets_bucket,
                                     guard_bucket=guard_bucket or settings.guard_bucket),
            "postgres": PostgresResource(url=db_url)}


def test_archive_rules_run_writes_each_tenants_rules_once_and_leaves_the_guard_bucket_alone(
        defs, dagster_instance, own_db, own_buckets, s3):
    from schedules.archival import archive_rules_job

    (request,) = evaluate(defs, dagster_instance, own_db, "archive_rules").run_requests
    assert request.tags["dagster/schedule_name"] == "archive_rules"
    a, b = sorted(f"t-{uuid.uuid4().hex[:10]}" for _ in range(2))
    with make_engine(own_db).begin() as conn:
        conn.execute(insert(tenants).values(tenant_id=a))
        conn.execute(insert(tenants).values(tenant_id=b, archive_after_days=40))
    foreign = {"ID": "ops-scratch", "Filter": {"Prefix": "scratch/"}, "Status": "Enabled", "Expiration": {"Days": 7}}
    s3.put_bucket_lifecycle_configuration(Bucket=own_buckets.assets_bucket,
                                          LifecycleConfiguration={"Rules": [foreign]})
    resources = archive_resources(own_buckets, own_db)

    def run():
        result = archive_rules_job.execute_in_process(instance=dagster_instance, resources=resources,
                                                      run_config=request.run_config, tags=request.tags)
        assert result.success
        (materialized,) = [e for e in result.all_events if e.event_type_value == "STEP_OUTPUT"]
        return {k: v.value for k, v in materialized.event_specific_data.metadata.items()}

    first = run()
    assert first["written"] is True and first["tenants"] == 2 and first["foreign"] == ["ops-scratch"]
    rules = {r["ID"]: r for r in read_configuration(s3, own_buckets.assets_bucket)["Rules"]}
    assert rules["ops-scratch"] == foreign
    assert rules[rule_id(a, "documents")]["Transitions"] == [{"Days": 365, "StorageClass": ARCHIVE_CLASS}]
    assert rules[rule_id(b, "blobs")]["Filter"] == {"Prefix": f"{b}/blobs/"}
    assert rules[rule_id(b, "blobs")]["NoncurrentVersionTransitions"] == [{"NoncurrentDays": 40,
                                                                           "StorageClass": ARCHIVE_CLASS}]
    second = run()
    assert second["written"] is False and second["added"] == second["changed"] == []
    assert read_configuration(s3, own_buckets.guard_bucket) == {"Rules": []}


def test_archive_rules_refuse_a_guard_bucket_that_is_the_assets_bucket(dagster_instance, own_db, own_buckets, s3):
    from schedules.archival import archive_rules_job

    resources = archive_resources(own_buckets, own_db, guard_bucket=own_buckets.assets_bucket)
    result = archive_rules_job.execute_in_process(instance=dagster_instance, resources=resources,
                                                  raise_on_error=False)
    assert not result.success
    (failure,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert "custody" in failure.event_specific_data.error.message
    assert read_configuration(s3, own_buckets.assets_bucket) == {"Rules": []}


@pytest.mark.parametrize("name,job_name,cron", [
    ("custody_audit", "custody_audit_job", "0 3 * * *"),
    ("temp_cleanup", "temp_cleanup_job", "15 * * * *"),
    ("dedup_reconcile", "dedup_reconcile_job", "*/5 * * * *"),
    ("archive_rules", "archive_rules_job", "30 2 * * *"),
    ("retrain_catch_up", "retrain_catch_up_job", "40 * * * *"),
])
def test_every_schedule_runs_by_default_and_targets_its_job(defs, name, job_name, cron):
    from dagster import DefaultScheduleStatus

    schedule = defs.resolve_schedule_def(name)
    assert (schedule.job_name, schedule.cron_schedule, schedule.default_status) == (
        job_name, cron, DefaultScheduleStatus.RUNNING)
    assert defs.resolve_job_def(job_name) is not None


def test_temp_cleanup_run_removes_a_handed_over_sessions_leftovers(defs, dagster_instance, s3, run_settings, tenant):
    """A session handed over through the sensor, whose uploads come back (a handover that died while deleting them
    leaves the same): the scheduled run deletes them, custody verified; the tick asks for exactly that job."""
    from astra.orchestrator.upload import upload_session
    from astra.samples import session_files
    from astra.tenancy import SessionKey
    from astra_assets.local_runner import tick
    from tests.dagster.conftest import publish_sample_config

    publish_sample_config(tenant)
    session = SessionKey(tenant, f"s-{uuid.uuid4().hex[:6]}", 1)
    bucket = run_settings.uploads_bucket
    upload_session(s3, bucket, session, "field_inspection", session_files())
    uploaded = {o["Key"]: s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()
                for o in s3.list_objects_v2(Bucket=bucket, Prefix=session.upload_prefix)["Contents"]}
    assert tick(defs, dagster_instance, "session_upload_sensor").results[0].success
    for key, body in uploaded.items():  # the same bytes back, the manifest last
        if not key.endswith("manifest.json"):
            s3.put_object(Bucket=bucket, Key=key, Body=body)
    manifest = next(key for key in uploaded if key.endswith("manifest.json"))
    s3.put_object(Bucket=bucket, Key=manifest, Body=uploaded[manifest])
    assert s3.list_objects_v2(Bucket=bucket, Prefix=session.upload_prefix)["KeyCount"] == len(uploaded)
    with build_schedule_context(instance=dagster_instance, repository_def=defs.get_repository_def()) as context:
        (request,) = defs.resolve_schedule_def("temp_cleanup").evaluate_tick(context).run_requests
    result = defs.resolve_job_def("temp_cleanup_job").execute_in_process(instance=dagster_instance,
                                                                        run_config=request.run_config,
                                                                        tags=request.tags)
    assert result.success
    assert s3.list_objects_v2(Bucket=bucket, Prefix=session.upload_prefix)["KeyCount"] == 0


def test_a_backlog_the_sensor_never_saw_is_retrained_by_the_schedules_run(
        learn_instance, run_settings, settings, s3, pg_url, redis_url, prefix, sample_intents_model, tmp_path,  # noqa: F811
        min_five):
    """Corrections stored while the sensor was stopped (consumed by another consumer of the group): the schedule's
    request, run as the daemon would run it, retrains and promotes the tenant's model up to the latest revision; the
    next tick has nothing left to ask for that tenant."""
    from astra_assets.definitions import build_definitions

    tenant = f"t-{uuid.uuid4().hex[:10]}"
    engine = make_engine(pg_url)
    labelled = [LabelledExample(tenant, f"{tenant}--s-learn--v1", f"u{n}", text, intent, "moved", "summary", "notes",
                                sample_intents_model[1].version, REPORT_SHA256)
                for n, (text, intent) in enumerate(genuine(dataset()))]
    client = redis.Redis.from_url(redis_url)
    publish_examples(client, prefix, labelled)
    while FeedbackConsumer(client, engine, prefix, "stopped-sensor-stand-in").consume(count=500).acked:
        pass
    revision = latest_revision(engine, tenant)
    defs = build_definitions()
    requests = [r for r in evaluate(defs, learn_instance, pg_url).run_requests if r.partition_key == tenant]
    assert [r.run_key for r in requests] == [f"{tenant}-r{revision}"]
    (request,) = requests
    result = defs.resolve_job_def("retrain_catch_up_job").execute_in_process(
        instance=learn_instance, partition_key=tenant, run_config=request.run_config,
        tags={**request.tags, "dagster/run_key": request.run_key})
    assert result.success
    model = registry(settings, s3, pg_url, tmp_path).latest(tenant)
    assert model.status == ACTIVE and model.metrics[REVISION_METRIC] == revision
    (item,) = [b for b in retrain_backlog(engine) if b.tenant == tenant]
    assert (item.trained_revision, item.new_corrections) == (revision, 0)
    assert tenant not in [r.partition_key for r in evaluate(defs, learn_instance, pg_url).run_requests]
