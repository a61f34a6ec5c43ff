"""LEARN's retrain path over the real services: labelled examples on the feedback stream → `learn_feedback_sensor`
(stored, acknowledged) → one `intent_model` run per tenant whose examples changed → a candidate behind the holdout
gate. A genuine round is promoted (active, MODEL_UPDATED through the outbox to pub/sub); a poisoned one is rejected
with the reason, never announced; each tenant's model learns only its own corrections. With Redis down nothing is
lost: the feedback waits in the stream, MODEL_UPDATED in the outbox."""

from __future__ import annotations

import json
import time
import uuid

import pytest
import redis
from dagster import AssetKey, build_sensor_context
from sqlalchemy import select

from astra.core.intent.data import DEFAULT_DATASET
from astra.core.model_store import ACTIVE, REJECTED, ModelStore, channel
from astra.db.engine import make_engine
from astra.db.schema import learn_examples, outbox
from astra.learn.examples import LabelledExample
from astra.learn.feedback import ACCEPTED, pending_tenants, publish_examples, stream_key
from astra.learn.gate import in_base_slice
from astra.settings import ENV
from astra.stack.processes import free_port
from astra_assets.local_runner import CURSOR_KEY, tick
from resources import PostgresResource, RedisResource
from sensors.learn import learn_feedback_sensor, model_updated_publisher
from tests.dagster.conftest import SAMPLE_INTENTS
from tests.dagster.test_learn_feedback import failure_of

pytestmark = pytest.mark.integration
SENSOR = "learn_feedback_sensor"
REPORT_SHA256 = "ab" * 32


@pytest.fixture
def prefix(redis_prefix, monkeypatch) -> str:
    """A feedback stream of this test's own (other tests' examples are not consumed here), under the run's prefix
    so the run's clean-up removes it."""
    own = f"{redis_prefix}:learn-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv(ENV["redis_prefix"], own)
    return own


@pytest.fixture
def learn_instance(dagster_instance, pg_url, tmp_path, monkeypatch):
    """The instance, its learn sensor's cursor past every tenant's examples so far (other tests' rows in the shared
    database are not this test's to retrain), models cached under this test's state dir."""
    monkeypatch.setenv(ENV["state_dir"], str(tmp_path / "state"))
    seen = pending_tenants(make_engine(pg_url), {})
    dagster_instance.run_storage.set_cursor_values({CURSOR_KEY + SENSOR: json.dumps(seen)})
    return dagster_instance


def dataset() -> dict:
    return json.loads(DEFAULT_DATASET.read_text())


def examples(tenant: str, labelled: list[tuple[str, str]], model_version: str) -> list[LabelledExample]:
    session = f"{tenant}--s-learn--v1"
    return [LabelledExample(tenant, session, f"u{n}", text, intent, "moved", "summary", "notes", model_version,
                            REPORT_SHA256) for n, (text, intent) in enumerate(labelled)]


def genuine(data: dict) -> list[tuple[str, str]]:
    """Training utterances of the sample intents the tiny base model never saw, with their right labels."""
    return [(text, label) for intent in SAMPLE_INTENTS
            for text, label in [row for row in data["train"] if row[1] == intent][10:30]]


def poisoned(data: dict) -> list[tuple[str, str]]:
    """The gate's own slice of val, every utterance labelled with another intent: the round teaches wrong answers
    to exactly what the gate asks."""
    wrong = {intent: SAMPLE_INTENTS[(k + 1) % len(SAMPLE_INTENTS)] for k, intent in enumerate(SAMPLE_INTENTS)}
    return [(text, wrong[label]) for text, label in data["val"] if label in wrong and in_base_slice(text)] + \
        [(text, SAMPLE_INTENTS[0]) for text, _ in data["oos_val"] if in_base_slice(text)]


def registry(settings, s3, pg_url, tmp_path) -> ModelStore:
    return ModelStore(make_engine(pg_url), s3, settings.assets_bucket, tmp_path / "reader")


def next_message(listener, timeout: float = 5.0) -> dict:
    """The next message published on the listener's channel (subscription confirmations skipped)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        message = listener.get_message(timeout=0.2)
        if message is not None:
            return json.loads(message["data"])
    raise AssertionError("no message published")


def outbox_rows(pg_url, tenant: str) -> list:
    with make_engine(pg_url).connect() as conn:
        return conn.execute(select(outbox).where(outbox.c.tenant_id == tenant)).all()


def test_a_genuine_round_is_promoted_and_announced_a_poisoned_one_rejected(
        defs, learn_instance, settings, s3, pg_url, redis_url, prefix, sample_intents_model, tmp_path):
    good, bad = f"t-{uuid.uuid4().hex[:10]}", f"t-{uuid.uuid4().hex[:10]}"
    base_version = sample_intents_model[1].version
    data = dataset()
    good_examples, bad_examples = examples(good, genuine(data), base_version), examples(bad, poisoned(data),
                                                                                       base_version)
    listener = redis.Redis.from_url(redis_url).pubsub(ignore_subscribe_messages=True)
    listener.subscribe(channel(prefix))
    publish_examples(redis.Redis.from_url(redis_url), prefix, good_examples + bad_examples)

    outcome = tick(defs, learn_instance, SENSOR)
    runs = {run.dagster_run.tags["dagster/partition"]: run for run in outcome.results}
    assert sorted(runs) == sorted([good, bad])
    assert learn_instance.has_dynamic_partition("tenants", good)
    store = registry(settings, s3, pg_url, tmp_path)

    # The genuine round: active, its MODEL_UPDATED drained from the outbox to pub/sub by the run.
    assert runs[good].success
    (check,) = runs[good].get_asset_check_evaluations()
    assert check.check_name == "holdout_gate" and check.passed
    assert check.metadata["reason"].value.startswith("not worse than the current model")
    model = store.latest(good)
    assert model.status == ACTIVE and model.metrics["gate"]["passed"] is True
    assert model.metrics["gate"]["models"]["base"] == base_version  # judged against the base model too
    assert not model.metrics["gate"]["comparisons"]["drift"]["worse"]
    trained = sum(not e.holdout() for e in good_examples)
    assert (model.metrics["corrections"], model.metrics["held_back"]) == (trained, len(good_examples) - trained)
    assert model.metrics["base_version"] == base_version
    (event,) = outbox_rows(pg_url, good)
    assert event.published_at is not None and event.payload["model_version"] == model.model_version
    assert next_message(listener) == event.payload
    with make_engine(pg_url).connect() as conn:
        verdicts = conn.execute(select(learn_examples.c.verdict).where(learn_examples.c.tenant_id == good)).scalars()
        assert set(verdicts) == {ACCEPTED}

    # The poisoned round: registered as rejected with the reason, never served nor announced.
    assert not runs[bad].success
    (check,) = runs[bad].get_asset_check_evaluations()
    assert not check.passed and "worse than the current model" in check.metadata["reason"].value
    assert check.metadata["metrics"].value["failed"]  # which comparison stopped it
    assert "rejected by the holdout gate" in failure_of(runs[bad])
    assert store.latest(bad) is None and outbox_rows(pg_url, bad) == []
    rejected = store.record(bad, 1)
    assert rejected.status == REJECTED and rejected.metrics["gate"]["reason"] == check.metadata["reason"].value
    # Each tenant's model learned its own corrections only.
    assert rejected.metrics["corrections"] == sum(not e.holdout() for e in bad_examples)

    # The same revision materialized again (a retried or manual run): the verdict stands, nothing is registered.
    revision = int(runs[good].dagster_run.tags["dagster/run_key"].rsplit("-r", 1)[1])
    rerun = defs.resolve_implicit_global_asset_job_def().execute_in_process(
        instance=learn_instance, asset_selection=[AssetKey("intent_model")], partition_key=good,
        run_config={"ops": {"intent_model": {"config": {"up_to_revision": revision}}}})
    assert rerun.success and store.record(good, 2) is None and len(outbox_rows(pg_url, good)) == 1

    # A manual run at a revision the tenant has not reached (nor any revision at all): refused at once, not
    # retried, nothing registered nor settled.
    for unreached in (revision + 1, 0):
        refused = defs.resolve_implicit_global_asset_job_def().execute_in_process(
            instance=learn_instance, asset_selection=[AssetKey("intent_model")], partition_key=good,
            run_config={"ops": {"intent_model": {"config": {"up_to_revision": unreached}}}}, raise_on_error=False)
        assert not refused.success
        assert "STEP_UP_FOR_RETRY" not in {event.event_type_value for event in refused.all_events}
        assert f"up_to_revision {unreached} is not one of the tenant's learning revisions (1 to {revision}, the " \
            "latest): nothing retrained" in failure_of(refused)
    assert store.record(good, 2) is None

    # Nothing new: no run; the same revision again (a lost cursor) runs once only.
    assert tick(defs, learn_instance, SENSOR).results == []
    learn_instance.run_storage.set_cursor_values({CURSOR_KEY + SENSOR: "{}"})
    again = tick(defs, learn_instance, SENSOR)
    assert again.results == []
    assert {run.dagster_run.tags["dagster/run_key"] for run in runs.values()} <= set(again.skipped_run_keys)


def sensor_result(sensor, instance, pg_url, redis_url: str, prefix: str):
    resources = {"postgres": PostgresResource(url=pg_url), "redis": RedisResource(url=redis_url, key_prefix=prefix)}
    with build_sensor_context(instance=instance, resources=resources, cursor="{}") as context:
        return sensor(context)


def test_with_redis_down_feedback_and_events_wait(learn_instance, settings, s3, pg_url, redis_url, prefix,
                                                  sample_intents_model, tmp_path):
    down = f"redis://127.0.0.1:{free_port()}/0"
    tenant = f"t-{uuid.uuid4().hex[:10]}"
    publish_examples(redis.Redis.from_url(redis_url), prefix, examples(tenant, genuine(dataset())[:3], "0" * 16))
    skipped = sensor_result(learn_feedback_sensor, learn_instance, pg_url, down, prefix)
    assert "feedback not consumed" in skipped.skip_message and "nothing lost" in skipped.skip_message
    assert redis.Redis.from_url(redis_url).xlen(stream_key(prefix)) == 3  # still there, for the next tick

    registry(settings, s3, pg_url, tmp_path).publish(tenant, sample_intents_model[0])  # active: MODEL_UPDATED queued
    waiting = sensor_result(model_updated_publisher, learn_instance, pg_url, down, prefix)
    assert waiting.skip_message.startswith("0 MODEL_UPDATED published") and "Redis did not take them" in \
        waiting.skip_message
    (event,) = outbox_rows(pg_url, tenant)
    assert event.published_at is None and event.attempts >= 1

    listener = redis.Redis.from_url(redis_url).pubsub(ignore_subscribe_messages=True)
    listener.subscribe(channel(prefix))
    sent = sensor_result(model_updated_publisher, learn_instance, pg_url, redis_url, prefix)
    assert "0 waiting" in sent.skip_message
    (event,) = outbox_rows(pg_url, tenant)
    assert event.published_at is not None
    assert next_message(listener)["tenant"] == tenant


def test_a_round_with_nothing_to_train_on_registers_nothing(defs, learn_instance, settings, s3, pg_url, redis_url,
                                                            prefix, sample_intents_model, tmp_path):
    tenant = f"t-{uuid.uuid4().hex[:10]}"
    held_back = [e for e in examples(tenant, genuine(dataset()), sample_intents_model[1].version) if e.holdout()][:2]
    publish_examples(redis.Redis.from_url(redis_url), prefix, held_back)
    (run,) = tick(defs, learn_instance, SENSOR).results
    assert not run.success
    said = failure_of(run)
    assert "no retrain at revision 1 (0 corrections to train on, 2 held back for the gate)" in said
    assert registry(settings, s3, pg_url, tmp_path).record(tenant, 1) is None and outbox_rows(pg_url, tenant) == []
