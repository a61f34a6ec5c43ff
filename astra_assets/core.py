"""Group `core`: what was said in a session (ISSUE 8 §1). The engine is astra/core/transcribe.py."""

from dagster import (
    AssetExecutionContext,
    Backoff,
    DataVersion,
    Failure,
    MaterializeResult,
    MetadataValue,
    RetryPolicy,
    asset,
)
from dagster_aws.s3 import S3Resource

from astra.core.audio import AudioError
from astra.core.transcribe import LanguageModelSource, SessionFileError, store_document, transcribe
from astra.core.transcript import TranscriptError
from astra.orchestrator.handover import load_record
from astra.stack.stack import state_dir
from astra.tenancy import SessionKey
from astra_assets.orchestrator import session_handover
from astra_assets.partitions import sessions_partitions
from resources import IntentCatalogResource, StorageLayout

LM_CACHE = "lm-cache"


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
    session = SessionKey.parse(context.partition_key)
    client = s3.get_client()
    assets_bucket = storage.settings(s3.endpoint_url).assets_bucket
    record = load_record(client, assets_bucket, session)
    if record is None:
        raise Failure(f"{session.partition_key} has not been handed over: no transcript before the handover",
                      allow_retries=False)
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


assets = [transcript]
