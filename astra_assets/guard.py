"""Group `guard`: the session audio under custody, and the check that keeps it honest."""

from dagster import (
    AssetCheckResult,
    AssetCheckSpec,
    AssetExecutionContext,
    DataVersion,
    Failure,
    MaterializeResult,
    MetadataValue,
    asset,
)
from dagster_aws.s3 import S3Resource

from astra.guard.custody import check_custody, prepare_client
from astra.orchestrator.handover import load_record
from astra.tenancy import SessionKey
from astra_assets.orchestrator import session_handover
from astra_assets.partitions import sessions_partitions
from resources import ConfigStoreResource, StorageLayout


@asset(
    group_name="guard",
    partitions_def=sessions_partitions,
    deps=[session_handover],
    check_specs=[AssetCheckSpec(
        "custody_verified", asset="custody_audio", blocking=True,
        description="Object present in the guard bucket, COMPLIANCE retention until at least the configured date, "
        "SHA-256 matches, ledger entry present, the tenant's chain valid.",
    )],
    description="The session audio in the WORM guard bucket, with its custody ledger entry.",
)
def custody_audio(
    context: AssetExecutionContext, s3: S3Resource, storage: StorageLayout, config_store: ConfigStoreResource
) -> MaterializeResult:
    session = SessionKey.parse(context.partition_key)
    client = prepare_client(s3.get_client())
    settings = storage.settings(s3.endpoint_url)
    record = load_record(client, settings.assets_bucket, session)
    if record is None:
        raise Failure(f"{session.partition_key} has not been handed over")
    custody = record["custody"]
    if custody is None:
        raise Failure(f"{session.partition_key} has no audio: nothing to hold in custody")
    problems = check_custody(client, settings, config_store.engine(), custody["key"])
    return MaterializeResult(
        metadata={
            "uri": MetadataValue.url(f"s3://{custody['bucket']}/{custody['key']}"),
            "version_id": custody["version_id"],
            "sha256": custody["sha256"],
            "size": custody["size"],
            "retention": f"{custody['retention_mode']} until {custody['retain_until']}",
            "ledger_seq": custody["ledger_seq"],
            "ledger_entry_hash": custody["ledger_entry_hash"],
            "source": custody["source_uri"],
        },
        data_version=DataVersion(custody["sha256"]),
        check_results=[AssetCheckResult(
            check_name="custody_verified", passed=not problems,
            metadata={"problems": MetadataValue.json(problems)},
        )],
    )


assets = [custody_audio]
