"""Group `learn` (issue 10): a user's edited document compared with the exact binary its session version produced
(`comparison_report`), and the tenant's intent model retrained from the labelled examples behind the holdout gate
(`intent_model` + its blocking check `holdout_gate`). Engines: astra/learn/ and astra/core/model_store.py.

Feedback is `<tenant>/feedback/<session_id>/v<n>.docx` in the uploads bucket, with an optional
`v<n>.corrections.json` beside it written BEFORE the .docx: the .docx arriving means the feedback is complete (as
manifest.json does for a session), so a client uploads the corrections first and the document last.
`sensors/feedback_upload.py` finds it; `comparison_report` reads exactly the objects it saw (If-Match on their ETags,
and their S3 versions when the bucket keeps versions).

A refusal (feedback not derived from that binary, corrections that do not fit, no document for that version) is
`Failure(allow_retries=False)` naming the code and the reason; nothing is published. An outage (S3, Redis) is
retried, then re-offered by the sensor: the report is content-addressed, so a retry stores the same bytes, and the
feedback consumer absorbs examples published twice.

The retrain, the gate and the model load live in the run (the intent engine imports ONNX Runtime, which the code
server never loads: tests/test_code_server_imports.py).
"""

import hashlib
import re
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from botocore.exceptions import ClientError
from dagster import (
    AssetCheckResult,
    AssetCheckSpec,
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
    multi_asset,
)
from dagster_aws.s3 import S3Resource
from sqlalchemy import func, select

from astra import s3 as s3_lib
from astra.builder.session import SessionBuildError, load_blob, load_json_blob, parent_session
from astra.config_svc import TenantNotFound, VersionNotFound
from astra.core.model_store import ACTIVE, BASE_TENANT, CANDIDATE, ModelRecord, ModelStore, drain_outbox, model_prefix
from astra.db.schema import model_registry
from astra.ingest.audit import AuditLimits
from astra.ingest.store import BlobStore, blob_uri
from astra.learn.compare import ComparisonError, FeedbackRefused, compare, report_bytes, report_examples
from astra.learn.feedback import (
    FeedbackStreamError,
    corrections,
    latest_revision,
    publish_examples,
    settle,
)
from astra.learn.labels import MAX_CORRECTIONS_BYTES, CorrectionsRefused, IntentRanker, parse_corrections
from astra.settings import ENV
from astra.tenancy import InvalidKey, SessionKey, validate_slug
from astra_assets.builder import NO_VERSION, document_binary, latest_metadata, v2_clone_binary
from astra_assets.orchestrator import handed_over_session
from astra_assets.partitions import sessions_partitions, tenants_partitions
from resources import ConfigStoreResource, ModelStoreResource, PostgresResource, RedisResource, StorageLayout

GATE = "holdout_gate"
MAX_FEEDBACK_BYTES = AuditLimits().max_upload_bytes  # the INGEST audit's cap: compare refuses more anyway
FEEDBACK_KEY = re.compile(r"(?P<tenant>[^/]+)/feedback/(?P<session_id>[^/]+)/v(?P<version>[1-9][0-9]{0,8})\.docx")
CORRECTIONS_SUFFIX = ".corrections.json"
REVISION_METRIC = "learn_revision"  # on a candidate's registry metrics: the examples' revision it was trained to
# S3 or Redis hiccups are retried; refusals are not (allow_retries=False).
REPORT_RETRY = RetryPolicy(max_retries=2, delay=10, backoff=Backoff.EXPONENTIAL)
RETRAIN_RETRY = RetryPolicy(max_retries=2, delay=30, backoff=Backoff.EXPONENTIAL)

feedback_upload = AssetSpec(
    "feedback_upload",
    group_name="learn",
    partitions_def=sessions_partitions,
    description="A user-edited document vN (+ optional corrections JSON, written before it) in the uploads bucket "
    "(external).",
    metadata={"bucket_env": ENV["uploads_bucket"], "key_pattern": "<tenant>/feedback/<session_id>/v<n>.docx"},
)


def feedback_session(key: str) -> SessionKey:
    """The session version a feedback key names; InvalidKey for any other key."""
    found = FEEDBACK_KEY.fullmatch(key)
    if found is None:
        raise InvalidKey(f"{key!r} is not a feedback key: expected <tenant>/feedback/<session_id>/v<n>.docx")
    return SessionKey(found["tenant"], found["session_id"], int(found["version"]))


def corrections_key(feedback_key: str) -> str:
    return feedback_key.removesuffix(".docx") + CORRECTIONS_SUFFIX


class FeedbackConfig(Config):
    """The feedback upload the sensor saw; the run reads exactly those bytes or refuses."""

    feedback_key: str
    etag: str
    version_id: str | None = None  # when the uploads bucket keeps versions
    corrections_key: str | None = None  # the v<n>.corrections.json beside it, when there was one
    corrections_etag: str | None = None
    corrections_version_id: str | None = None


@asset(
    group_name="learn",
    partitions_def=sessions_partitions,
    deps=[feedback_upload, document_binary, v2_clone_binary],
    description="The user's edited document compared with the exact binary its session version produced "
    "(document_binary, or a V2 clone's own v2_clone_binary): per zone what was kept, edited, deleted, added, moved "
    "between zones, cells changed, formatting only; and the labelled examples it teaches, published to the feedback "
    "stream. JSON content-addressed in the tenant's blobs and at <tenant>/reports/<session_id>/v<n>.comparison.json.",
    retry_policy=REPORT_RETRY,
)
def comparison_report(context: AssetExecutionContext, config: FeedbackConfig, s3: S3Resource, storage: StorageLayout,
                      config_store: ConfigStoreResource, redis: RedisResource,
                      model_store: ModelStoreResource) -> MaterializeResult:
    session, client, bucket, record = handed_over_session(context, s3, storage, "comparison report")
    pk = session.partition_key
    document_asset, document = compared_document(context, session, record)
    edited, corrections_json = read_feedback(client, storage.uploads_bucket, config, session)
    try:
        generated = load_blob(client, bucket, session.tenant, document["sha256"], "document")
        output = load_json_blob(client, bucket, session.tenant, document["intent_output_sha256"], "intent output")
        zone_map = config_store.service().snapshot(session.tenant, document["config_version"]).zone_map
    except (SessionBuildError, TenantNotFound, VersionNotFound) as exc:
        raise Failure(f"{pk}: cannot compare with {document_asset}: {exc}", allow_retries=False) from exc
    model_version = None if str(document["model_version"]).startswith("none") else document["model_version"]
    try:
        report = compare(generated, edited, zone_map, output, corrections=corrections_json, tenant=session.tenant,
                         session=pk, config_version=document["config_version"], model_version=model_version,
                         ranker=producing_ranker(model_store.store(), session, model_version))
    except FeedbackRefused as exc:
        raise refused(session, exc.code, exc.message) from exc
    except ComparisonError as exc:
        raise Failure(f"{pk}: the generated document, its zone map and its intent output do not fit together: {exc}",
                      allow_retries=False) from exc
    body = report_bytes(report)
    sha256 = hashlib.sha256(body).hexdigest()
    BlobStore(client, bucket, session.tenant).put_once(sha256, body)
    key = report_key(session)
    version_id, _ = s3_lib.put_if_changed(client, bucket, key, body, sha256, "application/json")
    examples = report_examples(report)
    try:
        publish_examples(redis.client(), redis.key_prefix, examples)
    except FeedbackStreamError as exc:
        raise Failure(f"{pk}: report stored, examples not published: {exc}") from exc  # retried, then re-offered
    context.log.info(f"{pk}: {len(examples)} labelled examples published; counts {report['counts']}")
    return MaterializeResult(metadata={
        "uri": MetadataValue.url(f"s3://{bucket}/{key}"),
        "version_id": version_id or NO_VERSION,
        "blob_uri": MetadataValue.url(blob_uri(bucket, session.tenant, sha256)),
        "sha256": sha256,
        "counts": MetadataValue.json(report["counts"]),
        "examples": len(examples),
        "model_version": model_version or "none (no utterances)",
        "config_version": document["config_version"],
        "document_asset": document_asset,
        "document_sha256": report["document_sha256"],
        "feedback_key": config.feedback_key,
        "feedback_sha256": report["feedback_sha256"],
        "corrections_key": config.corrections_key or "none",
    }, data_version=DataVersion(sha256))


def read_feedback(client, uploads_bucket: str, config: FeedbackConfig,
                  session: SessionKey) -> tuple[bytes, dict | None]:
    """(the edited document, its corrections or None) as the sensor saw them."""
    try:
        if feedback_session(config.feedback_key) != session:
            raise InvalidKey(f"{config.feedback_key} is feedback on another version than {session.partition_key}")
        if config.corrections_key not in (None, corrections_key(config.feedback_key)):
            raise InvalidKey(f"{config.corrections_key} is not the corrections of {config.feedback_key}")
    except InvalidKey as exc:
        raise Failure(f"{session.partition_key}: {exc}", allow_retries=False) from exc
    edited = read_upload(client, uploads_bucket, config.feedback_key, config.etag, config.version_id,
                         MAX_FEEDBACK_BYTES, session)
    if not config.corrections_key:
        return edited, None
    data = read_upload(client, uploads_bucket, config.corrections_key, config.corrections_etag or "*",
                       config.corrections_version_id, MAX_CORRECTIONS_BYTES, session, code="bad_corrections")
    try:
        return edited, parse_corrections(data)
    except CorrectionsRefused as exc:
        raise refused(session, "bad_corrections", str(exc)) from exc


def refused(session: SessionKey, code: str, reason: str) -> Failure:
    return Failure(f"{session.partition_key}: feedback refused ({code}): {reason}; nothing was learned from it",
                   metadata={"code": code}, allow_retries=False)


def compared_document(context: AssetExecutionContext, session: SessionKey, record: dict) -> tuple[str, dict]:
    """(asset name, its latest materialization's metadata) of the binary this session version produced: a V2 clone's
    own v2_clone_binary, never its parent's document."""
    built = v2_clone_binary if parent_session(record) else document_binary
    name = built.key.to_user_string()
    metadata = latest_metadata(context, built.key, session.partition_key)
    if "sha256" not in metadata:
        raise refused(session, "no_document", f"{name} has not been built for this version: feedback is compared "
                      "with the binary its version produced")
    return name, metadata


def read_upload(client, bucket: str, key: str, etag: str, version_id: str | None, limit: int, session: SessionKey,
                code: str = "not_docx") -> bytes:
    """The upload exactly as the sensor saw it (If-Match its ETag, its version when given), at most `limit` bytes."""
    extra = {"VersionId": version_id} if version_id else {}
    try:
        response = client.get_object(Bucket=bucket, Key=key, IfMatch=etag, **extra)
    except ClientError as exc:
        if s3_lib.is_missing(exc) or s3_lib.is_precondition_failed(exc):
            raise Failure(f"{session.partition_key}: s3://{bucket}/{key} was removed or replaced since the sensor saw "
                          "it: nothing compared (a new upload gets its own run)", allow_retries=False) from exc
        raise
    body = response["Body"]
    try:
        if response["ContentLength"] > limit:
            raise refused(session, code, f"{key} is {response['ContentLength']} bytes, over the {limit}-byte limit")
        return body.read(limit + 1)
    finally:
        body.close()


def report_key(session: SessionKey) -> str:
    return f"{session.tenant}/reports/{session.session_id}/v{session.version}.comparison.json"


def registry_record(store: ModelStore, owner: str, model_version: str) -> ModelRecord | None:
    """The newest registry row of `owner` for the model `model_version`, whatever its status."""
    uri = f"s3://{store.bucket}/{model_prefix(owner, model_version)}"
    with store.engine.connect() as conn:
        version = conn.scalar(select(func.max(model_registry.c.version))
                              .where(model_registry.c.tenant_id == owner, model_registry.c.uri == uri))
    return store.record(owner, version) if version else None


def producing_ranker(store: ModelStore, session: SessionKey, model_version: str | None) -> IntentRanker:
    """The ranking of the model that classified the original (the tenant's own model of that version, else the
    base's), which labels an utterance moved to another zone. No model version (no utterance was classified): a
    ranker that knows nothing, and no example names a model."""
    if model_version is None:
        return IntentRanker(lambda text: [], {})
    from astra.core.intent.model import IntentModel  # ONNX Runtime: in the run only, never in the code server

    for owner in (session.tenant, BASE_TENANT):
        found = registry_record(store, owner, model_version)
        if found is not None:
            return IntentRanker.from_model(store.load(found, IntentModel.load))
    raise Failure(f"{session.partition_key}: model {model_version}, which classified the original, is in neither "
                  f"{session.tenant!r}'s registry nor the base's", allow_retries=False)


class RetrainConfig(Config):
    """The learning revision of the tenant's examples the retrain reads up to: the one the sensor saw. Unset (a
    manual run): the latest. One the tenant has not reached is refused."""

    up_to_revision: int | None = None


@multi_asset(
    name="intent_model",
    specs=[AssetSpec("intent_model", group_name="learn", deps=[comparison_report],
                     description="The tenant's intent model: the base model updated with the tenant's accepted "
                     "corrections (warm-started from its current model), at models/<tenant>/<version>/ with a "
                     "model_registry row. Active, and MODEL_UPDATED queued, only when the holdout gate passes; "
                     "otherwise registered as rejected with the reason.")],
    check_specs=[AssetCheckSpec(GATE, asset="intent_model", blocking=True,
                                description="The candidate is not worse than the model the tenant is served now on "
                                "its holdout (a fixed slice of the base data's val and its held-back corrections), "
                                "nor than the base model on that slice (astra/learn/gate.py).")],
    partitions_def=tenants_partitions,
    retry_policy=RETRAIN_RETRY,
)
def intent_model(context: AssetExecutionContext, config: RetrainConfig, postgres: PostgresResource,
                 redis: RedisResource, model_store: ModelStoreResource) -> Iterator[MaterializeResult]:
    tenant = context.partition_key
    try:
        validate_slug(tenant)
    except InvalidKey as exc:
        raise Failure(f"no intent model for {tenant!r}: {exc}", allow_retries=False) from exc
    engine, store = postgres.engine(), model_store.store()
    revision = retrain_revision(tenant, config.up_to_revision, latest_revision(engine, tenant))
    started = time.monotonic()
    trained = held_back = 0
    record = published_for(store, tenant, revision)
    if record is None or record.status == CANDIDATE:
        record, trained, held_back = retrain_and_judge(context, store, engine, tenant, revision, record)
    else:
        context.log.info(f"{tenant}: revision {revision} was judged before (model v{record.registry_version}, "
                         f"{record.status}): the verdict stands")
    gate, passed = record.metrics["gate"], record.status == ACTIVE
    settle(engine, tenant, revision, accepted=passed, registry_version=record.registry_version)
    try:
        drain_outbox(engine, redis.client(), redis.key_prefix)
    except Exception as exc:  # noqa: BLE001 — the event waits in the outbox: model_updated_publisher sends it
        context.log.warning(f"MODEL_UPDATED left in the outbox for the publisher sensor: {exc}")
    reason = gate["reason"]
    yield MaterializeResult(
        metadata={
            "registry_version": record.registry_version,
            "model_version": record.model_version,
            "uri": MetadataValue.url(record.uri),
            "sha256": record.sha256,
            "status": record.status,
            "revision": revision,
            "corrections_used": trained,
            "corrections_held_back": held_back,
            "retrain_s": round(time.monotonic() - started, 2),
            "gate": MetadataValue.json(gate),
            "gate_reason": reason,
        },
        data_version=DataVersion(record.model_version),
        check_results=[AssetCheckResult(check_name=GATE, passed=passed,
                                        metadata={"reason": reason, "metrics": MetadataValue.json(gate)})],
    )
    if not passed:
        raise Failure(f"{tenant}: model v{record.registry_version} ({record.model_version}) rejected by the holdout "
                      f"gate: {reason}", allow_retries=False)


def retrain_revision(tenant: str, requested: int | None, latest: int) -> int:
    """The revision to retrain up to: ``requested``, else the tenant's ``latest``. A revision the tenant has not
    reached is refused: its verdict would settle examples that arrive later, never read nor judged."""
    if not latest:
        raise Failure(f"{tenant} has no labelled examples yet: nothing to retrain from", allow_retries=False)
    if requested is None:
        return latest
    if not 1 <= requested <= latest:
        raise Failure(f"{tenant}: up_to_revision {requested} is not one of the tenant's learning revisions (1 to "
                      f"{latest}, the latest): nothing retrained", allow_retries=False)
    return requested


def published_for(store: ModelStore, tenant: str, revision: int) -> ModelRecord | None:
    """The model a run for this revision already registered (a retried run), or None."""
    with store.engine.connect() as conn:
        version = conn.scalar(select(func.max(model_registry.c.version)).where(
            model_registry.c.tenant_id == tenant,
            model_registry.c.metrics[REVISION_METRIC].as_integer() == revision))
    return store.record(tenant, version) if version else None


def retrain_and_judge(context: AssetExecutionContext, store: ModelStore, engine, tenant: str, revision: int,
                      record: ModelRecord | None) -> tuple[ModelRecord, int, int]:
    """The candidate of this revision (retrained and published, or the one an earlier attempt registered) judged by
    the holdout gate against the model the tenant is served now (its own, else the base) and against the base model
    (so that rounds each a little worse cannot add up), then promoted (active + MODEL_UPDATED in the outbox, one
    transaction) or rejected with the reason. (its record, corrections trained on, corrections held back)."""
    from astra.core.intent.model import IntentModel  # ONNX Runtime: in the run only, never in the code server
    from astra.learn.gate import build_holdout, holdout_gate
    from astra.learn.retrain import RetrainError, retrain

    base_record = store.latest(BASE_TENANT)
    if base_record is None:
        raise Failure("no active base model in the registry: publish one (astra core train) first",
                      allow_retries=False)
    base = store.load(base_record, IntentModel.load)
    current_record = store.latest(tenant)
    current = store.load(current_record, IntentModel.load) if current_record else None
    train = [e.to_example() for e in corrections(engine, tenant, holdout=False, up_to_revision=revision)]
    held = [e.to_example() for e in corrections(engine, tenant, holdout=True, up_to_revision=revision)]
    if record is None:
        try:
            model = retrain(base, tenant, train, current)
        except RetrainError as exc:
            raise Failure(f"{tenant}: no retrain at revision {revision} ({len(train)} corrections to train on, "
                          f"{len(held)} held back for the gate): {exc}", allow_retries=False) from exc
        model.metrics = {**model.metrics, REVISION_METRIC: revision, "held_back": len(held)}
        with tempfile.TemporaryDirectory(prefix="astra-intent-model-") as tmp:
            directory = Path(tmp) / model.version
            model.save(directory)
            record = store.publish(tenant, directory, status=CANDIDATE)
        context.log.info(f"{tenant}: candidate v{record.registry_version} ({record.model_version}) from "
                         f"{len(train)} corrections up to revision {revision}")
    else:
        model = store.load(record, IntentModel.load)
    served = current or base
    verdict = holdout_gate(served, model, build_holdout(served, held), base=base)
    if verdict.passed:
        record = store.promote(tenant, record.registry_version, verdict.metrics)
    else:
        record = store.reject(tenant, record.registry_version, verdict.reason, verdict.metrics)
    return record, len(train), len(held)


assets = [feedback_upload, comparison_report, intent_model]
