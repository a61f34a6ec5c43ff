"""LEARN's sensors: the feedback stream into Postgres and retrains (`learn_feedback_sensor`), and MODEL_UPDATED out of
the outbox (`model_updated_publisher`).

`learn_feedback_sensor`, each tick: the consumer `dagster-sensor` of the group `learn` stores what the feedback
stream holds (reclaiming entries a crashed consumer left pending, XAUTOCLAIM; acknowledged only after the commit),
then every tenant whose examples changed past the cursor gets a run of `intent_model` for its partition, reading its
examples up to the revision seen: run key `<tenant>-r<revision>` (a revision is never reused, so a run key never
runs twice). A run that failed for a transient reason is offered again (`sensors/reoffer.py`) unless a later
revision of its tenant has been requested since: that run reads every example this one would, and a re-offer could
only train an older model after it. Cursor: JSON {"revisions": {tenant: revision}, "reoffer": {...}} (the older
{tenant: revision} is still read). Redis or Postgres down: a skip reason says so and nothing is lost (entries stay
pending in the stream, the cursor does not move).

`model_updated_publisher`, every 30 s: drains the outbox to `<prefix>:model-updated` (intent_model drains it
itself right after a promotion; this sends what an outage held back). Redis down: the events wait in the outbox and
the skip reason counts them.
"""

from __future__ import annotations

import json

from dagster import (
    DefaultSensorStatus,
    RunConfig,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from astra.core.model_store import TOPIC, drain_outbox
from astra.db.schema import outbox
from astra.learn.feedback import FeedbackConsumer, FeedbackStreamError, pending_tenants
from astra_assets.learn import RetrainConfig, intent_model
from astra_assets.partitions import tenants_partitions
from resources import PostgresResource, RedisResource
from sensors.partitions import add_new_partitions
from sensors.reoffer import reoffers

CONSUMER = "dagster-sensor"
BATCH = 100  # stream entries per consume(); a tick stores at most BATCHES_PER_TICK of them
BATCHES_PER_TICK = 20
DRAIN_LIMIT, DRAINS_PER_TICK = 100, 10  # events per drain_outbox call, calls per tick
LEARN_TENANT_TAG = "astra/learn-tenant"  # one retrain per tenant at a time, where the run queue limits it


def load_cursor(raw: str | None) -> tuple[dict[str, int], dict]:
    """The cursor: (the highest revision requested per tenant, the re-offer state). The older cursor, {tenant:
    revision} alone, keeps its revisions. Unreadable: start afresh (run keys hold: a revision requested before is
    not run again)."""
    try:
        value = json.loads(raw) if raw else {}
    except ValueError:
        value = {}
    if not isinstance(value, dict):
        return {}, {}
    reoffer = {}
    if isinstance(value.get("revisions"), dict):
        reoffer = value["reoffer"] if isinstance(value.get("reoffer"), dict) else {}
        value = value["revisions"]
    return {tenant: revision for tenant, revision in value.items() if isinstance(revision, int)}, reoffer


def dump_cursor(revisions: dict[str, int], reoffer: dict) -> str:
    return json.dumps({"revisions": revisions, "reoffer": reoffer}, sort_keys=True, separators=(",", ":"))


def superseded(request: RunRequest, revisions: dict[str, int]) -> bool:
    """Whether a later revision of the re-offered run's tenant has been requested."""
    revision = request.run_config["ops"]["intent_model"]["config"]["up_to_revision"]
    return revision < revisions.get(request.partition_key, 0)


@sensor(
    name="learn_feedback_sensor",
    asset_selection=[intent_model],
    minimum_interval_seconds=30,
    default_status=DefaultSensorStatus.RUNNING,
    description="Stores the feedback stream's labelled examples (consumer group learn) and retrains each tenant "
    "whose examples changed.",
)
def learn_feedback_sensor(context: SensorEvaluationContext, postgres: PostgresResource, redis: RedisResource):
    revisions, reoffer = load_cursor(context.cursor)
    engine = postgres.engine()
    stored = 0
    try:
        if context.cursor is None:
            # The first tick ever (or after a reset) starts from the revisions stored now: examples consumed before
            # this sensor existed wait for their tenant's next feedback instead of a retrain of every tenant at once.
            revisions = pending_tenants(engine, {})
        consumer = FeedbackConsumer(redis.client(), engine, redis.key_prefix, CONSUMER)
        for _ in range(BATCHES_PER_TICK):
            result = consumer.consume(count=BATCH)
            stored += sum(result.stored.values())
            if result.acked < BATCH:
                break
        pending = pending_tenants(engine, revisions)
    except (FeedbackStreamError, SQLAlchemyError) as exc:
        return SkipReason(f"feedback not consumed ({type(exc).__name__}: {exc}); nothing lost: the entries stay in "
                          "the stream, retrying next tick")
    requests = [
        RunRequest(run_key=f"{tenant}-r{revision}", partition_key=tenant,
                   run_config=RunConfig(ops={"intent_model": RetrainConfig(up_to_revision=revision)}),
                   tags={"astra/tenant": tenant, LEARN_TENANT_TAG: tenant})
        for tenant, revision in sorted(pending.items())
    ]
    revisions = {**revisions, **pending}
    retries, reoffer = reoffers(context, reoffer)
    for retry in retries:
        if superseded(retry, revisions):
            context.log.info(f"not offering {retry.run_key}: revision {revisions[retry.partition_key]} of its "
                             "tenant has been requested since and reads every example it would")
        else:
            requests.append(retry)
    skip = None if requests else SkipReason(f"no tenant's examples changed ({stored} examples stored this tick)")
    return SensorResult(run_requests=requests, cursor=dump_cursor(revisions, reoffer),
                        dynamic_partitions_requests=add_new_partitions(context, tenants_partitions, sorted(pending)),
                        skip_reason=skip)


def waiting_events(engine) -> int:
    with engine.connect() as conn:
        return conn.scalar(select(func.count()).select_from(outbox)
                           .where(outbox.c.topic == TOPIC, outbox.c.published_at.is_(None)))


@sensor(
    name="model_updated_publisher",
    minimum_interval_seconds=30,
    default_status=DefaultSensorStatus.RUNNING,
    description="Publishes queued MODEL_UPDATED events from the outbox to Redis pub/sub; with Redis down they wait.",
)
def model_updated_publisher(context: SensorEvaluationContext, postgres: PostgresResource, redis: RedisResource):
    engine = postgres.engine()
    published = 0
    try:
        client = redis.client()
        for _ in range(DRAINS_PER_TICK):
            sent = drain_outbox(engine, client, redis.key_prefix, limit=DRAIN_LIMIT)
            published += sent
            if sent < DRAIN_LIMIT:
                break
        waiting = waiting_events(engine)
    except SQLAlchemyError as exc:
        return SkipReason(f"outbox not read ({type(exc).__name__}: {exc}): the events wait, retrying next tick")
    if waiting:
        context.log.warning(f"{waiting} MODEL_UPDATED events wait in the outbox (Redis did not take them)")
    return SkipReason(f"{published} MODEL_UPDATED published, {waiting} waiting in the outbox"
                      + (" (Redis did not take them: retried next tick)" if waiting else ""))
