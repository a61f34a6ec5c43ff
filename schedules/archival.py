"""`archive_rules`: daily, the assets bucket's lifecycle rules that move each tenant's documents and durable session
copies to GLACIER_IR once older than its retention (`tenants.archive_after_days`), reconciled from Postgres by
astra/orchestrator/archival.py. Rules others set on the bucket are kept; the guard bucket (custody) is never
touched. S3 does the moving, at its own pace: this run only writes the rules."""

from dagster import (
    DefaultScheduleStatus,
    Failure,
    MetadataValue,
    OpExecutionContext,
    Output,
    ScheduleDefinition,
    job,
    op,
)
from dagster_aws.s3 import S3Resource

from astra.orchestrator.archival import ArchivalRefused, reconcile, tenant_retention
from resources import PostgresResource, StorageLayout


@op(description="Reconcile ASTRA's archive lifecycle rules on the assets bucket with the tenants' retention.")
def reconcile_archive_rules(context: OpExecutionContext, s3: S3Resource, storage: StorageLayout,
                            postgres: PostgresResource):
    retention = tenant_retention(postgres.engine())
    try:
        report = reconcile(s3.get_client(), storage.assets_bucket, storage.guard_bucket, retention)
    except ArchivalRefused as exc:
        raise Failure(f"archive rules not written: {exc}", allow_retries=False) from exc
    summary = report.to_dict()
    context.log.info(f"archive rules on {report.bucket} for {report.tenants} tenants: {len(report.added)} added, "
                     f"{len(report.changed)} changed, {len(report.removed)} removed, {len(report.foreign)} other "
                     f"rules kept; {'written' if report.written else 'unchanged, nothing written'}")
    return Output(None, metadata={**{k: v for k, v in summary.items() if not isinstance(v, list)},
                                  **{k: MetadataValue.json(v) for k, v in summary.items() if isinstance(v, list)}})


@job(description="Archive lifecycle rules (assets bucket only)")
def archive_rules_job():
    reconcile_archive_rules()


archive_rules = ScheduleDefinition(name="archive_rules", job=archive_rules_job, cron_schedule="30 2 * * *",
                                   default_status=DefaultScheduleStatus.RUNNING)
