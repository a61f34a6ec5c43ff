"""Group `core`: what was said in a session and where it goes in the template (ISSUE 8 §1, §3).
The engines are astra/core/transcribe.py and astra/core/intent_output.py."""

import grpc
from dagster import (
    AssetExecutionContext,
    AssetRecordsFilter,
    Backoff,
    DataVersion,
    Failure,
    MaterializeResult,
    MetadataValue,
    RetryPolicy,
    asset,
)
from dagster_aws.s3 import S3Resource

from astra.config_svc import TenantNotFound, VersionNotFound
from astra.core.audio import AudioError
from astra.core.binding import FLAG_LOCALE_UNSUPPORTED, BindingError
from astra.core.core_client import transient
from astra.core.intent_output import TranscriptUnavailable, build_intent_output, load_transcript
from astra.core.transcribe import LM_CACHE, LanguageModelSource, SessionFileError, store_document, transcribe
from astra.core.transcript import TranscriptError
from astra.grpc_auth import ServiceAuthError
from astra.stack.stack import state_dir
from astra.tenancy import SessionKey
from astra_assets.orchestrator import handed_over_session, session_handover
from astra_assets.partitions import sessions_partitions
from resources import ConfigStoreResource, IntentCatalogResource, IntentServiceResource, StorageLayout


@asset(
    group_name="core",
    partitions_def=sessions_partitions,
    deps=[session_handover],
    description="The session's utterances as JSON, content-addressed in the assets bucket: from the manifest's "
    "transcript, else offline speech recognition (pocketsphinx, in-domain LM) of its audio, else empty "
    "(a data-only session).",
    # S3 hiccups are retried; a refused file is not (allow_retries=False).
    retry_policy=RetryPolicy(max_retries=2, delay=10, backoff=Backoff.EXPONENTIAL),
)
def transcript(
    context: AssetExecutionContext, s3: S3Resource, storage: StorageLayout, intent_catalog: IntentCatalogResource
) -> MaterializeResult:
    session, client, assets_bucket, record = handed_over_session(context, s3, storage, "transcript")
    lm_source = LanguageModelSource.beside_catalog(intent_catalog.path, state_dir() / LM_CACHE)
    try:
        document = transcribe(client, record, lm_source)
    except (TranscriptError, AudioError, SessionFileError) as exc:
        raise Failure(f"{session.partition_key}: transcript refused: {exc}", allow_retries=False) from exc
    stored = store_document(client, assets_bucket, session.tenant, document)
    return MaterializeResult(metadata=transcript_metadata(stored.document, stored.uri, stored.sha256),
                             data_version=DataVersion(stored.sha256))


def transcript_metadata(document: dict, uri: str, sha256: str) -> dict:
    return {
        "uri": MetadataValue.url(uri),
        "sha256": sha256,
        "source": document["source"],
        "origin": document["origin"] or "none",
        "utterances": document["utterance_count"],
        "duration_s": document["duration_seconds"],
        "confidence": MetadataValue.json(document["confidence"] or {}),
        "asr_model_sha256": document["asr_model_sha256"] or "n/a",
        "lm_sha256": document["lm_sha256"] or "n/a",
    }


@asset(
    group_name="core",
    partitions_def=sessions_partitions,
    deps=[transcript, session_handover],
    description="The session's utterances classified by IntentService (astra serve core) and bound, with the "
    "tables of its data/ files, to the zones of the config version its handover pinned; JSON, content-addressed "
    "in the assets bucket. Bad data files are reported in it, never a reason to fail.",
    # The service down or restarting is retried here (and the run re-offered by the sensor after that); a request
    # the service refuses, a config version gone or a damaged transcript is not (allow_retries=False).
    retry_policy=RetryPolicy(max_retries=3, delay=2, backoff=Backoff.EXPONENTIAL),
)
def intent_output(
    context: AssetExecutionContext, s3: S3Resource, storage: StorageLayout, config_store: ConfigStoreResource,
    intent_service: IntentServiceResource,
) -> MaterializeResult:
    session, client, assets_bucket, record = handed_over_session(context, s3, storage, "intent output")
    transcript_sha256 = latest_transcript_sha256(context, session)
    try:
        document = load_transcript(client, assets_bucket, session.tenant, transcript_sha256)
        # The version the handover pinned, never the tenant's latest: the session is built as it was handed over.
        zone_map = config_store.service().snapshot(session.tenant, record["config_version"]).zone_map
    except (TranscriptUnavailable, TenantNotFound, VersionNotFound) as exc:
        raise Failure(f"{session.partition_key}: {exc}", allow_retries=False) from exc
    try:
        intents = intent_service.client()
    except ServiceAuthError as exc:
        raise Failure(f"{session.partition_key}: intent service not reachable as configured: {exc}",
                      allow_retries=False) from exc
    try:
        output = build_intent_output(client, record, document, zone_map,
                                     lambda texts: intents.classify(session.tenant, texts), transcript_sha256)
    except grpc.RpcError as exc:
        said = f"{session.partition_key}: intent service at {intent_service.target}: {exc.code().name}: {exc.details()}"
        raise Failure(said, allow_retries=transient(exc)) from exc
    except BindingError as exc:
        raise Failure(f"{session.partition_key}: cannot bind: {exc}", allow_retries=False) from exc
    finally:
        intents.close()
    stored = store_document(client, assets_bucket, session.tenant, output)
    for problem in output["data_problems"]:
        context.log.warning(f"{problem['source']}: {problem['reason']}: {problem['detail']}")
    if FLAG_LOCALE_UNSUPPORTED in output["flags"]:
        context.log.warning(f"locale {output['locale']!r} is not covered by the models: every utterance flagged "
                            "and sent to the fallback zone")
    return MaterializeResult(metadata=intent_output_metadata(stored.document, stored.uri, stored.sha256),
                             data_version=DataVersion(stored.sha256))


def latest_transcript_sha256(context: AssetExecutionContext, session: SessionKey) -> str:
    """The session's transcript as last materialized (this run's, when the run made one): its content hash, which
    also names its blob. The event log says which transcript is current; its bytes are checked against it."""
    records = context.instance.fetch_materializations(
        AssetRecordsFilter(asset_key=transcript.key, asset_partitions=[session.partition_key]), limit=1).records
    metadata = records[0].asset_materialization.metadata if records else {}
    if "sha256" not in metadata:
        raise Failure(f"{session.partition_key} has no transcript yet: materialize transcript first",
                      allow_retries=False)
    return metadata["sha256"].value


def intent_output_metadata(document: dict, uri: str, sha256: str) -> dict:
    counts = document["counts"]
    return {
        "uri": MetadataValue.url(uri),
        "sha256": sha256,
        "model_version": document["model_version"] or "none (no utterances)",
        "config_version": document["config_version"],
        "locale": document["locale"] or "not given",
        "locale_supported": FLAG_LOCALE_UNSUPPORTED not in document["flags"],
        "utterances": counts["utterances"],
        "per_zone": MetadataValue.json(counts["per_zone"]),
        "out_of_scope": counts["out_of_scope"],
        "low_confidence": counts["low_confidence"],
        "unmatched": counts["unmatched"],
        "tables": MetadataValue.json({t["id"]: t["zone"] for t in document["tables"]}),
        "data_problems": MetadataValue.json(document["data_problems"]),
        "transcript_sha256": document["transcript_sha256"],
    }


assets = [transcript, intent_output]
