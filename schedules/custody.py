"""Custody schedules: the daily audit, and the temp clean-up that waits for verified custody."""

from dagster import (
    Config,
    DefaultScheduleStatus,
    Failure,
    MetadataValue,
    OpExecutionContext,
    ScheduleDefinition,
    job,
    op,
)
from dagster_aws.s3 import S3Resource

from astra.guard.custody import prepare_client
from astra.guard.verify import verify
from astra.orchestrator.cleanup import clean_verified_uploads
from resources import HandoverResource, PostgresResource, StorageLayout


class CustodyAuditConfig(Config):
    tenant: str | None = None  # one tenant, or every tenant when unset (the schedule)


@op(description="`astra guard verify`: chains, checkpoints, objects; writes checkpoints.")
def verify_custody(context: OpExecutionContext, config: CustodyAuditConfig, s3: S3Resource, storage: StorageLayout,
                   postgres: PostgresResource) -> None:
    report = verify(postgres.engine(), prepare_client(s3.get_client()), storage.settings(s3.endpoint_url),
                    tenant=config.tenant)
    summary = report.to_dict()
    context.log.info(f"custody audit: {summary['tenants']} tenants, {summary['entries']} entries, ok={summary['ok']}")
    if not report.ok:
        raise Failure(
            description=f"custody audit found {len(summary['problems'])} problem(s); first: {summary['problems'][0]}",
            metadata={"problems": MetadataValue.json(summary["problems"])},
        )


@job(description="Daily custody audit")
def custody_audit_job():
    verify_custody()


@op(description="Delete leftover temporary uploads of sessions whose custody verifies; never anything else.")
def clean_temp_uploads(context: OpExecutionContext, handover: HandoverResource) -> None:
    report = clean_verified_uploads(handover.handover())
    for key, why in report.kept.items():
        context.log.info(f"kept {key}: {why}")
    for partition_key, keys in report.strays_kept.items():
        context.log.warning(f"{partition_key}: kept objects the manifest does not name: {', '.join(keys)}")
    for folder, keys in report.unfinished.items():
        context.log.warning(f"{folder}: {len(keys)} uploaded files and no manifest for over a day (left in place)")
    context.log.info(f"cleaned {sum(map(len, report.cleaned.values()))} objects of {len(report.cleaned)} sessions")


@job(description="Temp upload clean-up (custody verified only)")
def temp_cleanup_job():
    clean_temp_uploads()


custody_audit = ScheduleDefinition(name="custody_audit", job=custody_audit_job, cron_schedule="0 3 * * *",
                                   default_status=DefaultScheduleStatus.RUNNING)
temp_cleanup = ScheduleDefinition(name="temp_cleanup", job=temp_cleanup_job, cron_schedule="15 * * * *",
                                  default_status=DefaultScheduleStatus.RUNNING)
