"""`retrain_catch_up`: the periodic catch-up of LEARN's retrains, beside `learn_feedback_sensor`.

The sensor (sensors/learn.py) retrains a tenant as soon as its examples change: that stays the fast path. What it
leaves behind is caught up here, hourly: examples stored before the sensor's first tick (a new or reset sensor starts
from the revisions stored then), while the sensor was stopped, or whose retrain failed for good and that nobody has
requested again. A tenant is requested only when it has at least ``ASTRA_RETRAIN_MIN_CORRECTIONS`` (default 20) new
corrections: examples no holdout gate has judged yet, past the revision its active model was trained to
(astra/learn/backlog.py, one query).

No duplicate work: a tenant with a retrain queued or running (any run tagged ``astra/learn-tenant`` with its slug,
the sensor's included) is skipped, and the run key ``<tenant>-r<revision>`` is one this schedule has not used (the
daemon drops a used one too): a revision is requested at most once by the schedule, a failed one is not requested
again until more corrections arrive. Its runs carry the same ``astra/learn-tenant`` tag, so the run queue still
runs one retrain per tenant at a time, and a revision already judged (the sensor requesting it later) keeps its
verdict without retraining (intent_model's `published_for`). Nothing due: a SkipReason saying, per tenant with new
corrections, why not.
"""

from __future__ import annotations

from dagster import (
    DefaultScheduleStatus,
    RunConfig,
    RunRequest,
    RunsFilter,
    ScheduleEvaluationContext,
    SkipReason,
    define_asset_job,
    schedule,
)
from dagster._core.storage.dagster_run import NOT_FINISHED_STATUSES
from sqlalchemy.exc import SQLAlchemyError

from astra.learn.backlog import min_corrections, retrain_backlog
from astra.settings import InvalidSetting
from astra_assets.learn import RetrainConfig, intent_model
from astra_assets.partitions import tenants_partitions
from resources import PostgresResource
from sensors.learn import LEARN_TENANT_TAG

NAME = "retrain_catch_up"
SCHEDULE_TAG, RUN_KEY_TAG = "dagster/schedule_name", "dagster/run_key"  # what the daemon tags a schedule's runs with
CATCH_UP_TAG = "astra/retrain"

retrain_catch_up_job = define_asset_job("retrain_catch_up_job", selection=[intent_model],
                                        partitions_def=tenants_partitions,
                                        description="A tenant's intent_model retrain, requested by retrain_catch_up")


def run_key(tenant: str, revision: int) -> str:
    return f"{tenant}-r{revision}"


@schedule(
    name=NAME,
    cron_schedule="40 * * * *",
    job=retrain_catch_up_job,
    default_status=DefaultScheduleStatus.RUNNING,
    description="Hourly: retrains (intent_model) each tenant with at least ASTRA_RETRAIN_MIN_CORRECTIONS new "
    "corrections that no retrain is queued, running or already requested for.",
)
def retrain_catch_up(context: ScheduleEvaluationContext, postgres: PostgresResource):
    try:
        needed = min_corrections()
        backlog = retrain_backlog(postgres.engine())
    except (InvalidSetting, SQLAlchemyError) as exc:
        return SkipReason(f"retrain backlog not read ({type(exc).__name__}: {exc}); retrying next tick")
    instance = context.instance
    requests, reasons = [], []
    for item in backlog:
        tenant, revision = item.tenant, item.latest_revision
        if not item.new_corrections:
            continue
        if not item.due(needed):
            reasons.append(f"{tenant}: {item.new_corrections} new corrections, {needed} needed")
            continue
        busy = instance.get_runs(RunsFilter(tags={LEARN_TENANT_TAG: tenant}, statuses=NOT_FINISHED_STATUSES),
                                 limit=1)
        if busy:
            reasons.append(f"{tenant}: a retrain is queued or running (run {busy[0].run_id})")
            continue
        key = run_key(tenant, revision)
        if instance.get_runs(RunsFilter(tags={SCHEDULE_TAG: NAME, RUN_KEY_TAG: key}), limit=1):
            reasons.append(f"{tenant}: revision {revision} was requested before (run key {key}); waiting for more "
                           "corrections")
            continue
        requests.append(RunRequest(
            run_key=key, partition_key=tenant,
            run_config=RunConfig(ops={"intent_model": RetrainConfig(up_to_revision=revision)}),
            tags={"astra/tenant": tenant, LEARN_TENANT_TAG: tenant, CATCH_UP_TAG: "catch-up"}))
        context.log.info(f"{tenant}: {item.new_corrections} new corrections since revision "
                         f"{item.trained_revision}: retrain up to revision {revision}")
    for reason in reasons:
        context.log.info(reason)
    if not requests:
        return SkipReason("no tenant is due for a retrain" + (": " + "; ".join(reasons) if reasons else
                                                              f" (none has new corrections; {needed} needed)"))
    # A schedule cannot ask for dynamic partitions as a sensor does: the tenants it requests are added here (the
    # sensor adds them only for what it requests itself).
    missing = [r.partition_key for r in requests
               if not instance.has_dynamic_partition(tenants_partitions.name, r.partition_key)]
    if missing:
        instance.add_dynamic_partitions(tenants_partitions.name, missing)
    return requests
