"""Group `builder`: the session's document (ISSUE 9 §2). The engines are astra/builder/engine.py (the build),
astra/builder/session.py (its inputs and storage) and astra/builder/check.py (the checks).

`document_binary` builds a session version from its own intent output; `v2_clone_binary` builds a V2 clone
(`clone_of` in its manifest) from its parent version's inputs with the current config and model. DECISION: which of
the two a session version gets is decided by its manifest, in two places an operator sees:

* the session sensor's run for a clone selects `session_handover`, `custody_audio` and `v2_clone_binary`; for any
  other session `session_handover`, `custody_audio`, `transcript`, `intent_output` and `document_binary`;
* each asset materializes nothing for the other kind (its step succeeds and its log says which asset builds that
  session's document), so a run or backfill that selects both over any partitions — a re-offered run, a backfill
  of all sessions from the UI — succeeds and never builds a document from the wrong inputs.

Dagster has no partition mapping for "the parent version of this session key", so the edge from a clone to its
parent's document is in `v2_clone_binary`'s metadata (the parent's partition, URI, S3 version and sha256), not in
the asset graph.

Blocking checks, run on the bytes just stored: `document_opens` (python-docx opens it and LibreOffice headless
converts it to PDF — a copy with each zone cut to its first rows and paragraphs, since LibreOffice's time grows about
quadratically with a table's rows; the check's metadata says how much was left out, see astra/builder/check.py),
`no_forbidden_construct` (macros, OLE/ActiveX, altChunk, external relationships, fields other
than PAGE/NUMPAGES/DATE beyond what the audited template carries) and `every_zone_present` (an `astra:` content
control for every zone of the zone map). A failed check is a verdict on deterministic bytes, not an outage: the
materialization and the check results are recorded, then the step fails with `Failure(allow_retries=False)`, so
neither the retry policy nor the sensor's re-offer builds the same document again.
"""

import time
from collections.abc import Collection, Iterator

import grpc
from dagster import (
    AssetCheckResult,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    AssetRecordsFilter,
    AssetSpec,
    Backoff,
    DataVersion,
    Failure,
    MaterializeResult,
    MetadataValue,
    RetryPolicy,
    multi_asset,
)
from dagster_aws.s3 import S3Resource

from astra.builder.check import (
    BLOCKING_CHECKS,
    NO_FORBIDDEN,
    OPENS,
    PDF_MAX_ZONE_BLOCKS,
    PDF_MAX_ZONE_ROWS,
    ZONES_PRESENT,
    ConversionError,
    ConversionTimeout,
    check_document,
    controlled_zones,
    convert_to_pdf,
    pdf_check_copy,
)
from astra.builder.engine import BuildError
from astra.builder.session import (
    SessionBuildError,
    SessionDocument,
    build_session_document,
    clone_intent_output,
    clone_source,
    load_json_blob,
    load_template,
    parent_session,
)
from astra.config_svc import ConfigSnapshot, TenantNotFound, VersionNotFound
from astra.core.binding import BindingError
from astra.core.core_client import transient
from astra.core.intent_output import IntentServiceMismatch, TranscriptUnavailable
from astra.grpc_auth import ServiceAuthError
from astra.s3 import full_object_sha256, head
from astra.tenancy import SessionKey
from astra_assets.config import tenant_config
from astra_assets.core import intent_output
from astra_assets.ingest import template_atoms
from astra_assets.orchestrator import handed_over, handed_over_session, session_handover
from astra_assets.partitions import sessions_partitions
from resources import ConfigStoreResource, IntentServiceResource, StorageLayout

CHECKS = BLOCKING_CHECKS
NO_VERSION = "none (bucket not versioned)"
# check_document's findings about the zones; every other finding (forbidden_construct, field_not_allowed,
# external_relationship, misplaced_control, and any kind added later: never passed in silence) fails
# no_forbidden_construct.
ZONE_CODES = ("zone_missing", "duplicate_zone", "zone_in_field", "placeholder_left")
# S3 hiccups are retried; refusals (inputs missing or not fitting, the engine refusing or failing on them — it reads
# no service, so that repeats —, failed checks) are not (allow_retries=False).
BUILD_RETRY = RetryPolicy(max_retries=2, delay=10, backoff=Backoff.EXPONENTIAL)
# A clone also waits for its parent's document (the parent's run may still be building it) and for IntentService.
CLONE_RETRY = RetryPolicy(max_retries=3, delay=10, backoff=Backoff.EXPONENTIAL)


def check_specs(asset_name: str) -> list[AssetCheckSpec]:
    return [
        AssetCheckSpec(OPENS, asset=asset_name, blocking=True,
                       description="python-docx opens the stored document and LibreOffice headless converts it to "
                       f"PDF (each zone cut to its first {PDF_MAX_ZONE_ROWS:,} table rows and {PDF_MAX_ZONE_BLOCKS:,} "
                       "paragraphs or tables for LibreOffice)."),
        AssetCheckSpec(NO_FORBIDDEN, asset=asset_name, blocking=True,
                       description="No macros, OLE/ActiveX, altChunk, DTD, external relationship, field other "
                       "than PAGE, NUMPAGES and DATE (the audited template's own fields and links allowed), or content "
                       "control where none may stand."),
        AssetCheckSpec(ZONES_PRESENT, asset=asset_name, blocking=True,
                       description="Every zone of the pinned config version's zone map (of a docxtpl template, "
                       "every marked zone) is one astra: content control of the document, in no field (so LEARN "
                       "finds each zone in the edited document), and no {{ zone_id }} text is left outside the zones "
                       "(a docxtpl render replaces every tag)."),
    ]


def session_document_asset(name: str, deps: list, description: str, retry_policy: RetryPolicy):
    """The decorator of a builder asset: one asset over the sessions with the blocking checks, as a multi_asset,
    skippable and subsettable — the one way Dagster lets an asset with checks materialize nothing (the other kind's
    partitions, see the module docstring) without its check outputs being required."""
    return multi_asset(
        name=name,
        specs=[AssetSpec(name, group_name="builder", deps=deps, skippable=True, description=description)],
        check_specs=check_specs(name),
        partitions_def=sessions_partitions,
        can_subset=True,
        retry_policy=retry_policy,
    )


@session_document_asset(
    "document_binary",
    deps=[intent_output, tenant_config, template_atoms],
    description="The session's .docx: the template of the config version its handover pinned, its zones filled from "
    "the intent output and the session's images, content-addressed in the tenant's blobs and at "
    "<tenant>/documents/<session_id>/v<n>.docx. Nothing for a V2 clone (see v2_clone_binary).",
    retry_policy=BUILD_RETRY,
)
def document_binary(context: AssetExecutionContext, s3: S3Resource, storage: StorageLayout,
                    config_store: ConfigStoreResource) -> Iterator[MaterializeResult]:
    build_selected(context)
    session, client, bucket, record = handed_over_session(context, s3, storage, "document")
    parent = parent_session(record)
    if parent is not None:
        context.log.info(f"{session.partition_key} is a V2 clone of {parent.partition_key}: its document is "
                         "v2_clone_binary; nothing to build here")
        return
    output_sha256 = latest_metadata(context, intent_output.key, session.partition_key).get("sha256")
    if output_sha256 is None:
        raise Failure(f"{session.partition_key} has no intent output yet: materialize intent_output first",
                      allow_retries=False)
    try:
        output = load_json_blob(client, bucket, session.tenant, output_sha256, "intent output")
        snapshot = pinned_snapshot(config_store, session, record)
        template = load_template(client, bucket, session.tenant, snapshot.template_sha256)
        built = build_session_document(client, bucket, record, snapshot, template, output, output_sha256)
    except (SessionBuildError, BuildError) as exc:
        raise Failure(f"{session.partition_key}: cannot build: {exc}", allow_retries=False) from exc
    yield from checked(context, built, snapshot, template, document_metadata(built))


@session_document_asset(
    "v2_clone_binary",
    deps=[session_handover, tenant_config, template_atoms],
    description="A V2 clone's .docx: its parent version's transcript, data and media, classified again by the "
    "current model (IntentService) and bound to the config version the clone pinned (the latest at its handover); "
    "stored like document_binary at its own version's key. The parent's document is read, never changed. Nothing "
    "for a session version whose manifest has no clone_of.",
    retry_policy=CLONE_RETRY,
)
def v2_clone_binary(context: AssetExecutionContext, s3: S3Resource, storage: StorageLayout,
                    config_store: ConfigStoreResource,
                    intent_service: IntentServiceResource) -> Iterator[MaterializeResult]:
    build_selected(context)
    session, client, bucket, record = handed_over_session(context, s3, storage, "document")
    parent = parent_session(record)
    if parent is None:
        context.log.info(f"{session.partition_key} is not a V2 clone (its manifest has no clone_of): its document "
                         "is document_binary; nothing to build here")
        return
    parent_record = handed_over(client, bucket, parent, "document")
    parent_asset = v2_clone_binary.key if parent_session(parent_record) else document_binary.key
    parent_meta = latest_metadata(context, parent_asset, parent.partition_key)
    if "source_partition" not in parent_meta:
        # The parent's own run may still be building it: the retry policy waits, then the run fails for the
        # sensor to offer again.
        raise Failure(f"{session.partition_key} is rebuilt from {parent.partition_key}, whose document "
                      f"({parent_asset.to_user_string()}) is not built yet")
    try:
        source = clone_source(session, parent_meta["source_partition"])
        source_record = record if source == session else handed_over(client, bucket, source, "document")
        snapshot = pinned_snapshot(config_store, session, record)
        template = load_template(client, bucket, session.tenant, snapshot.template_sha256)
        intents = intent_service.client()
    except SessionBuildError as exc:
        raise Failure(f"{session.partition_key}: cannot build: {exc}", allow_retries=False) from exc
    except ServiceAuthError as exc:
        raise Failure(f"{session.partition_key}: intent service not reachable as configured: {exc}",
                      allow_retries=False) from exc
    try:
        output = clone_intent_output(client, bucket, record, source_record, parent_meta["transcript_sha256"],
                                     snapshot.zone_map, lambda texts: intents.classify(session.tenant, texts))
        built = build_session_document(client, bucket, record, snapshot, template, output.document, output.sha256,
                                       source_record)
    except grpc.RpcError as exc:
        said = f"{session.partition_key}: intent service at {intent_service.target}: {exc.code().name}: {exc.details()}"
        raise Failure(said, allow_retries=transient(exc)) from exc
    except IntentServiceMismatch as exc:
        raise Failure(f"{session.partition_key}: {exc}") from exc
    except (TranscriptUnavailable, BindingError, SessionBuildError, BuildError) as exc:
        raise Failure(f"{session.partition_key}: cannot build: {exc}", allow_retries=False) from exc
    finally:
        intents.close()
    metadata = {
        **document_metadata(built),
        "parent_partition": parent.partition_key,
        "parent_uri": parent_meta["uri"],
        "parent_version_id": parent_meta["version_id"],
        "parent_sha256": parent_meta["sha256"],
        "parent_config_version": parent_meta["config_version"],
        "parent_model_version": parent_meta["model_version"],
        "parent_unchanged": parent_unchanged(client, parent_meta),
    }
    yield from checked(context, built, snapshot, template, metadata)


def build_selected(context: AssetExecutionContext) -> None:
    """The checks judge the bytes a build just stored: they run with the build, not alone."""
    if not context.selected_asset_keys:
        raise Failure(f"the checks of {context.op_def.name} run with its build: select the asset too",
                      allow_retries=False)


def pinned_snapshot(config_store: ConfigStoreResource, session: SessionKey, record: dict) -> ConfigSnapshot:
    """The config version the session's handover pinned, never the tenant's latest: a session is built as it was
    handed over (a clone's handover pinned the latest of its time)."""
    try:
        return config_store.service().snapshot(session.tenant, record["config_version"])
    except (TenantNotFound, VersionNotFound) as exc:
        raise Failure(f"{session.partition_key}: {exc}", allow_retries=False) from exc


def latest_metadata(context: AssetExecutionContext, key: AssetKey, partition: str) -> dict:
    """The metadata of the partition's latest materialization of `key` (this run's, when the run made one)."""
    records = context.instance.fetch_materializations(
        AssetRecordsFilter(asset_key=key, asset_partitions=[partition]), limit=1).records
    return {k: v.value for k, v in records[0].asset_materialization.metadata.items()} if records else {}


def parent_unchanged(client, parent_meta: dict) -> bool:
    """The parent's documents key still holds, in the S3 version its materialization recorded, the bytes it
    recorded: what LEARN compares the parent's feedback with."""
    bucket, _, key = parent_meta["uri"].removeprefix("s3://").partition("/")
    version_id = parent_meta["version_id"]
    found = head(client, bucket, key, None if version_id == NO_VERSION else version_id)
    return found is not None and full_object_sha256(found) == parent_meta["sha256"]


def document_metadata(built: SessionDocument) -> dict:
    stored, fills = built.stored, built.build.fills
    return {
        "uri": MetadataValue.url(stored.uri),
        "version_id": stored.version_id or NO_VERSION,
        "blob_uri": MetadataValue.url(stored.blob_uri),
        "sha256": stored.sha256,
        "size": stored.size,
        "written": stored.written,
        "fills": MetadataValue.json({zone: fill["items"] for zone, fill in fills.items()}),
        "zones_filled": sum(1 for fill in fills.values() if fill["items"]),
        "config_version": built.config_version,
        "model_version": built.model_version or "none (no utterances)",
        "template_sha256": built.template_sha256,
        "intent_output_sha256": built.intent_output_sha256,
        "transcript_sha256": built.transcript_sha256,
        "source_partition": built.source.partition_key,
        "problems": MetadataValue.json(built.problems),
    }


def checked(context: AssetExecutionContext, built: SessionDocument, snapshot: ConfigSnapshot, template: bytes,
            metadata: dict) -> Iterator[MaterializeResult]:
    """The materialization with its check results; then, if a check failed, one refusal naming what failed."""
    for problem in built.problems:
        context.log.warning(f"{problem['zone'] or 'media'}: {problem['code']}: {problem['detail']}")
    selected = {key.name for key in context.selected_asset_check_keys}
    verdicts = document_checks(built.build.docx, snapshot.zone_map, template, selected)
    results = [AssetCheckResult(check_name=name, passed=not findings,
                                metadata={"findings": MetadataValue.json(findings), **extra})
               for name, findings, extra in verdicts]
    yield MaterializeResult(metadata=metadata, data_version=DataVersion(built.stored.sha256), check_results=results)
    failed = [(name, findings) for name, findings, _ in verdicts if findings]
    if failed:
        said = "; ".join(f"{name}: {findings[0]['detail']}" for name, findings in failed)
        raise Failure(f"{built.session.partition_key}: {len(failed)} blocking check(s) failed on "
                      f"{built.stored.uri} (sha256 {built.stored.sha256[:12]}…): {said}", allow_retries=False)


def document_checks(docx: bytes, zone_map: dict, template: bytes,
                    selected: Collection[str] = CHECKS) -> list[tuple[str, list[dict], dict]]:
    """The checks of the module docstring (those `selected`) on the document's bytes: (check name, findings, more
    metadata) each."""
    if not selected:
        return []
    report = check_document(docx, zone_map, template=template)
    findings = [f.to_json() for f in report.findings]
    unreadable = [f for f in findings if f["code"] == "does_not_open"]
    opens = list(unreadable)
    started = time.monotonic()
    pdf_size = rows_left_out = blocks_left_out = 0
    if not unreadable and OPENS in selected:
        try:
            copy = pdf_check_copy(docx)  # large zones cut: see astra/builder/check.py
            rows_left_out, blocks_left_out = copy.rows_left_out, copy.blocks_left_out
            pdf_size = len(convert_to_pdf(copy.docx))
        except ConversionTimeout as exc:
            opens.append({"code": "pdf_conversion_timeout", "detail": str(exc)})
        except ConversionError as exc:
            opens.append({"code": "pdf_conversion_failed", "detail": str(exc)})
    conversion_s = round(time.monotonic() - started, 2)
    # A package that cannot be read cannot be judged on its content: those checks fail too, saying why.
    unjudged = [{"code": "not_judged", "detail": "the document does not open"}] if unreadable else []
    verdicts = [
        (OPENS, opens, {"pdf_bytes": pdf_size, "conversion_s": conversion_s, "pdf_rows_left_out": rows_left_out,
                        "pdf_blocks_left_out": blocks_left_out}),
        (NO_FORBIDDEN, unjudged or [f for f in findings if f["code"] not in (*ZONE_CODES, "does_not_open")], {}),
        (ZONES_PRESENT, unjudged or [f for f in findings if f["code"] in ZONE_CODES],
         {"zones_found": MetadataValue.json(report.zones_found), "zones_expected": len(controlled_zones(zone_map))}),
    ]
    return [v for v in verdicts if v[0] in selected]


assets = [document_binary, v2_clone_binary]
