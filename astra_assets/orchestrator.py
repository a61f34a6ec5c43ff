"""Group `orchestrator`: the session upload and its handover (ARCHITECTURE §2, §3)."""

from typing import Any

from dagster import (
    AssetExecutionContext,
    AssetSpec,
    Backoff,
    Config,
    DataVersion,
    Failure,
    MaterializeResult,
    MetadataValue,
    RetryPolicy,
    asset,
)
from dagster_aws.s3 import S3Resource

from astra.config_svc import TenantNotFound
from astra.orchestrator.handover import HandoverError, HandoverResult, hand_over, load_record, upload_as_next_version
from astra.orchestrator.manifest import ManifestRejected, manifest_session
from astra.settings import ENV
from astra.tenancy import SessionKey
from astra_assets.config import tenant_config
from astra_assets.partitions import sessions_partitions
from resources import HandoverResource, StorageLayout

session_upload = AssetSpec(
    "session_upload",
    group_name="orchestrator",
    partitions_def=sessions_partitions,
    description="A recorded session in the uploads bucket; manifest.json arrives last (external).",
    metadata={"bucket_env": ENV["uploads_bucket"], "key_pattern": "<tenant>/sessions/<session_id>/v<n>/"},
)

upload_quarantine = AssetSpec(
    "upload_quarantine",
    group_name="orchestrator",
    description="Uploads refused before any run (bad manifest, missing files, ids outside the key rules). "
    "Each refusal is an observation with the key and the reason; the upload is left untouched.",
)


class SessionManifestConfig(Config):
    """The manifest the sensor saw; the handover refuses it if it changed since."""

    manifest_key: str
    manifest_sha256: str


@asset(
    group_name="orchestrator",
    partitions_def=sessions_partitions,
    deps=[session_upload, tenant_config],
    description="The session handed over: config snapshot pinned, files hashed and deduplicated, durable "
    "content-addressed copies, audio under custody, then the temporary upload deleted.",
    # S3 or Postgres hiccups are retried (every step is idempotent); refusals are not (allow_retries=False).
    retry_policy=RetryPolicy(max_retries=3, delay=10, backoff=Backoff.EXPONENTIAL),
)
def session_handover(
    context: AssetExecutionContext, config: SessionManifestConfig, handover: HandoverResource
) -> MaterializeResult:
    try:
        if manifest_session(config.manifest_key).partition_key != context.partition_key:
            raise HandoverError(f"{config.manifest_key} is not a manifest of {context.partition_key}")
        result = hand_over(handover.handover(), config.manifest_key, config.manifest_sha256)
    except TenantNotFound as exc:
        # Not yet, maybe: the tenant's template may be in its own run right now. The retry
        # policy tries again; after that the run fails and the upload stays.
        raise Failure(description=f"{exc}: no config to build with yet (ingest the tenant's template first)",
                      metadata={"manifest_key": config.manifest_key}) from exc
    except (ManifestRejected, HandoverError) as exc:
        raise Failure(description=refusal(config.manifest_key, exc),
                      metadata={"manifest_key": config.manifest_key}, allow_retries=False) from exc
    rec = result.record
    context.log.info(f"{rec['session']['partition_key']}: dedup {rec['dedup']['status']}, "
                     f"{len(result.temp_deleted)} temp objects deleted")
    return MaterializeResult(metadata=handover_metadata(result), data_version=DataVersion(rec["manifest"]["sha256"]))


def refusal(manifest_key: str, exc: Exception) -> str:
    """One instruction, whatever the refusal: the version folder is used, so the fix goes in the next version."""
    said = f"handover refused: {exc}"
    try:
        advice = upload_as_next_version(manifest_session(manifest_key))
    except ManifestRejected:  # not a session key at all: there is no version to name
        return said
    return said if advice in said else f"{said}; the upload is kept: {advice}"


def handover_metadata(result: HandoverResult) -> dict:
    rec = result.record
    dedup, custody = rec["dedup"], rec["custody"]
    return {
        "uri": MetadataValue.url(result.record_uri),
        "manifest_sha256": rec["manifest"]["sha256"],
        "config_version": rec["config_version"],
        "template_sha256": rec["template_sha256"],
        "dedup": dedup["status"] if dedup["status"] == "registered" else f"skipped ({dedup['reason']})",
        "files": MetadataValue.md("\n".join(
            ["| file | sha256 | size | dedup |", "|---|---|---|---|"]
            + [f"| {f['path']} | `{f['sha256'][:16]}…` | {f['size']} | {f['dedup']} |" for f in rec["files"]])),
        "custody": f"s3://{custody['bucket']}/{custody['key']}" if custody else "none (no audio: a data-only session)",
        "ledger_seq": custody["ledger_seq"] if custody else 0,
        "temp_deleted": len(result.temp_deleted),
        "strays": MetadataValue.json({
            "deleted (copies of a file handed over)": sorted(s["key"] for s in rec.get("strays", [])
                                                             if s.get("same_as")),
            "kept (not handed over: never deleted)": result.cleanup.strays_kept}),
        "resumed": result.resumed,
    }


def handed_over_session(context: AssetExecutionContext, s3: S3Resource, storage: StorageLayout,
                        product: str) -> tuple[SessionKey, Any, str, dict]:
    """How an asset made from a session's handover record opens: the run's session version, an S3 client, the assets
    bucket, and the session's handover record (`handed_over`)."""
    session = SessionKey.parse(context.partition_key)
    client = s3.get_client()
    assets_bucket = storage.settings(s3.endpoint_url).assets_bucket
    return session, client, assets_bucket, handed_over(client, assets_bucket, session, product)


def handed_over(client, assets_bucket: str, session: SessionKey, product: str) -> dict:
    """The session's handover record, for an asset that makes its `product` from it. A session not handed over is
    refused, not retried: another attempt finds no record either."""
    record = load_record(client, assets_bucket, session)
    if record is None:
        raise Failure(f"{session.partition_key} has not been handed over: no {product} before the handover",
                      allow_retries=False)
    return record


assets = [session_upload, upload_quarantine, session_handover]
