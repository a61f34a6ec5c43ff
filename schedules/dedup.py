"""Reconciliation of fail-open handovers with the dedup registry."""

from dagster import DefaultScheduleStatus, OpExecutionContext, ScheduleDefinition, job, op

from astra.orchestrator.reconcile import reconcile
from resources import IngestRegistryResource, PostgresResource

# Off the session's hot path there is time to wait: a registry slower than 50 ms still answers.
RECONCILE_DEADLINE_S = 2.0


@op(description="Register the digests of sessions that failed open (registry down or slow).")
def reconcile_dedup(context: OpExecutionContext, postgres: PostgresResource,
                    registry: IngestRegistryResource) -> None:
    client = registry.client(deadline_s=RECONCILE_DEADLINE_S, wait_for_ready=True)
    outcome = reconcile(postgres.engine(), client)
    context.log.info(f"reconciled {outcome.registered} sessions ({outcome.new} new, {outcome.duplicate} duplicate "
                     f"digests); {outcome.still_pending} still pending")


@job(description="Dedup reconciliation")
def dedup_reconcile_job():
    reconcile_dedup()


dedup_reconcile = ScheduleDefinition(name="dedup_reconcile", job=dedup_reconcile_job, cron_schedule="*/5 * * * *",
                                     default_status=DefaultScheduleStatus.RUNNING)
