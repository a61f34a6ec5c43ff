"""Group `guard`: the session audio under custody, and the check that keeps it honest.

A data-only session (no audio in its manifest) is a session: `custody_audio` materializes with
`audio: none`, and its check verifies what does apply — the manifest names no audio and the
handover record holds no custody copy — instead of failing on a copy that never should exist."""

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

from astra.guard.custody import check_custody
from astra.orchestrator.handover import load_record
from astra.tenancy import SessionKey
from astra_assets.orchestrator import session_handover
from astra_assets.partitions import sessions_partitions
from resources import PostgresResource, StorageLayout

CHECK = "custody_verified"


@asset(
    group_name="guard",
    partitions_def=sessions_partitions,
    deps=[session_handover],
    check_specs=[AssetCheckSpec(
        CHECK, asset="custody_audio", blocking=True,
        description="Object present in the guard bucket, COMPLIANCE retention until at least the ledger's date "
        "and 30 days after the copy, SHA-256 matches, ledger entry present, the tenant's chain valid. For a "
        "data-only session: the manifest names no audio and the handover record holds no custody copy.",
    )],
    description="The session audio in the WORM guard bucket, with its custody ledger entry (none for a "
    "data-only session).",
)
def custody_audio(
    context: AssetExecutionContext, s3: S3Resource, storage: StorageLayout, postgres: PostgresResource
) -> MaterializeResult:
    session = SessionKey.parse(context.partition_key)
    client = s3.get_client()
    settings = storage.settings(s3.endpoint_url)
    record = load_record(client, settings.assets_bucket, session)
    if record is None:
        raise Failure(f"{session.partition_key} has not been handed over")
    custody = record["custody"]
    if custody is None:
        return no_audio(record)
    problems = check_custody(client, settings, postgres.engine(), custody)
    return MaterializeResult(
        metadata={
            "audio": record["manifest"]["document"].get("audio"),
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
        check_results=[AssetCheckResult(check_name=CHECK, passed=not problems,
                                        metadata={"problems": MetadataValue.json(problems)})],
    )


def no_audio(record: dict) -> MaterializeResult:
    """A session without audio: nothing is held, and the check says what it verified instead."""
    named = record["manifest"]["document"].get("audio")
    audio_files = [f["path"] for f in record["files"] if f["role"] == "audio"]
    problems = [f"the manifest names audio {p} but the handover record holds no custody copy"
                for p in sorted({named, *audio_files} - {None})]
    return MaterializeResult(
        metadata={"audio": "none", "custody": "none: a data-only session has nothing to hold"},
        data_version=DataVersion("no-audio"),
        check_results=[AssetCheckResult(
            check_name=CHECK, passed=not problems,
            metadata={"applies": "no audio: verified the manifest names none and no custody copy is recorded",
                      "problems": MetadataValue.json(problems)},
        )],
    )


assets = [custody_audio]
