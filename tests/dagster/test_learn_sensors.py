"""`learn_feedback_sensor` re-offers a retrain that failed for a transient reason, as the upload sensors do, unless a
later revision of its tenant has been requested since; its cursor keeps the revisions and the re-offer state, and
still reads the older {tenant: revision} cursor."""

from __future__ import annotations

import json
import uuid

import pytest
import redis
from dagster import RetryPolicy

from astra.core.model_store import ACTIVE
from astra.db.engine import make_engine
from astra.learn.examples import LabelledExample
from astra.learn.feedback import latest_revision, publish_examples
from astra.settings import ENV
from astra.stack.processes import free_port
from astra_assets.learn import intent_model
from astra_assets.local_runner import tick
from sensors import reoffer
from sensors.learn import dump_cursor, load_cursor
from tests.dagster.test_learn_model import (  # noqa: F401 — fixtures
    REPORT_SHA256,
    SENSOR,
    dataset,
    genuine,
    learn_instance,
    prefix,
    registry,
)
from tests.dagster.test_sensors import cursor_of
from tests.dagster.test_template_path import runs_for

pytestmark = pytest.mark.integration


def test_the_cursor_keeps_revisions_and_reoffer_state_and_reads_the_older_shape():
    assert load_cursor(dump_cursor({"acme": 3}, {"after": 12.5})) == ({"acme": 3}, {"after": 12.5})
    assert load_cursor('{"acme": 3, "revisions": 7}') == ({"acme": 3, "revisions": 7}, {})  # older: tenants only
    assert load_cursor('{"revisions": {"acme": 3, "bad": "x"}}') == ({"acme": 3}, {})
    assert load_cursor('{"revisions": {"acme": 3}, "reoffer": [1]}') == ({"acme": 3}, {})
    for unreadable in (None, "", "not json", "[1, 2]"):
        assert load_cursor(unreadable) == ({}, {})


def labelled(tenant: str, rows: list[tuple[str, str]], start: int, model_version: str) -> list[LabelledExample]:
    return [LabelledExample(tenant, f"{tenant}--s-learn--v1", f"u{start + n}", text, intent, "moved", "summary",
                            "notes", model_version, REPORT_SHA256) for n, (text, intent) in enumerate(rows)]


@pytest.fixture
def quick_retries(monkeypatch):
    """Re-offers without their delay, and intent_model's step retried at once rather than 30 s later."""
    monkeypatch.setattr(reoffer, "DELAY_SECONDS", 0.0)
    monkeypatch.setattr(intent_model.op, "_retry_policy", RetryPolicy(max_retries=1))


def test_a_retrain_failed_by_an_outage_is_offered_again_unless_a_later_revision_was_requested(
        learn_instance, run_settings, settings, s3, pg_url, redis_url, prefix, sample_intents_model, tmp_path,  # noqa: F811
        monkeypatch, quick_retries):
    from astra_assets.definitions import build_definitions

    tenant = f"t-{uuid.uuid4().hex[:10]}"
    engine, client = make_engine(pg_url), redis.Redis.from_url(redis_url)
    rows, base_version = genuine(dataset()), sample_intents_model[1].version
    others = json.loads(cursor_of(learn_instance, SENSOR))  # the older cursor shape, other tenants' revisions
    publish_examples(client, prefix, labelled(tenant, rows, 0, base_version))

    def outage_tick():
        with monkeypatch.context() as outage:  # S3 unreachable: the base model cannot be fetched
            outage.setenv(ENV["s3_endpoint_url"], f"http://127.0.0.1:{free_port()}")
            return runs_for(tick(build_definitions(), learn_instance, SENSOR), tenant)

    (failed,) = outage_tick()
    assert not failed.success
    assert [e for e in failed.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]  # retried, then failed
    first = failed.dagster_run.tags["dagster/run_key"]
    assert first == f"{tenant}-r{latest_revision(engine, tenant)}"
    revisions, _ = load_cursor(cursor_of(learn_instance, SENSOR))
    assert revisions == {**others, tenant: latest_revision(engine, tenant)}

    defs = build_definitions()
    (retried,) = runs_for(tick(defs, learn_instance, SENSOR), tenant)
    assert retried.success
    tags = retried.dagster_run.tags
    assert tags["dagster/run_key"] == f"{first}-retry1" and tags[reoffer.REOFFER_TAG] == "1"
    assert retried.dagster_run.run_config["ops"] == failed.dagster_run.run_config["ops"]
    assert registry(settings, s3, pg_url, tmp_path).latest(tenant).status == ACTIVE
    assert runs_for(tick(defs, learn_instance, SENSOR), tenant) == []  # settled: nothing more

    # A retrain fails, and more feedback arrives before its re-offer: the later revision's run reads it all, the
    # failed one is not offered again (it could only train an older model after the newer one).
    more = [(text, label) for text, label in dataset()["train"] if label in {label for _, label in rows}][-8:]
    publish_examples(client, prefix, labelled(tenant, more[:4], len(rows), base_version))
    (failed_again,) = outage_tick()
    assert not failed_again.success
    publish_examples(client, prefix, labelled(tenant, more[4:], len(rows) + 4, base_version))
    later = tick(defs, learn_instance, SENSOR)
    assert [r.dagster_run.tags["dagster/run_key"] for r in runs_for(later, tenant)] == [
        f"{tenant}-r{latest_revision(engine, tenant)}"]
    assert not [key for key in later.skipped_run_keys if key.startswith(f"{tenant}-")]
    assert runs_for(tick(defs, learn_instance, SENSOR), tenant) == []


def test_the_first_tick_starts_from_the_examples_stored_now(learn_instance, pg_url, redis_url, prefix):  # noqa: F811
    """A sensor with no cursor yet (new, or reset) retrains no tenant for examples stored before it: a retrain of
    every tenant at once would fill the run queue. What it consumes itself in that tick is retrained."""
    from dagster import build_sensor_context

    from astra.learn.feedback import FeedbackConsumer
    from resources import PostgresResource, RedisResource
    from sensors.learn import learn_feedback_sensor

    old, new = f"t-{uuid.uuid4().hex[:10]}", f"t-{uuid.uuid4().hex[:10]}"
    client, engine = redis.Redis.from_url(redis_url), make_engine(pg_url)
    publish_examples(client, prefix, labelled(old, [("book a flight to rome", "book_flight")], 0, "m1"))
    FeedbackConsumer(client, engine, prefix, "earlier-consumer").consume()  # stored before the sensor ever ran
    publish_examples(client, prefix, labelled(new, [("move money to savings", "transfer")], 0, "m1"))
    resources = {"postgres": PostgresResource(url=pg_url), "redis": RedisResource(url=redis_url, key_prefix=prefix)}
    with build_sensor_context(instance=learn_instance, resources=resources, cursor=None,
                              sensor_name=SENSOR) as context:
        result = learn_feedback_sensor(context)
    assert [r.partition_key for r in result.run_requests] == [new]
    revisions, _ = load_cursor(result.cursor)
    assert revisions[old] == latest_revision(engine, old) and revisions[new] == latest_revision(engine, new)
