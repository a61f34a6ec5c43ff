"""A handed-over session's document: its build inputs gathered from what earlier steps made durable, built by
:func:`astra.builder.engine.build`, and stored.

Inputs of a session version ``v<n>``:

* the template of the config version its handover pinned, reassembled from the tenant's atoms (the same
  reassembly the ``template_roundtrip_lossless`` check proves lossless), with that version's zone and style maps;
* its intent output document (content-addressed JSON, read back by its hash);
* the images of its ``media/`` files, from the handover's durable copies. A copy over the image cap is left out
  before it is read, a copy that is missing or does not hold the handed-over bytes is left out too: both are
  problems of the build (with what the engine refuses: not an image, a decompression bomb...), never a reason to
  fail.

A **V2 clone** (``clone_of`` in its manifest) is rebuilt from its parent version's inputs — the transcript the
parent's document was built from and the data and media of the version those came from (its *source*: the parent
itself, or the parent's own source when the parent is a clone too) — with the **current** config and model: the
config version the clone's handover pinned (the tenant's latest then) and a fresh classification by IntentService
(:func:`clone_intent_output`). Its own files, if it carries any, are not inputs. The parent's document is only read.

Storage: content-addressed in the tenant's blobs (written once) and at ``<tenant>/documents/<session_id>/v<n>.docx``
in the assets bucket (versioning on). The documents key is written only when it does not already hold these bytes
(S3's full-object SHA-256 says so), so rebuilding the same inputs adds no S3 version; different bytes (new inputs
for the same version: a re-run after an intent output changed) become a new S3 version, the old one kept.

Errors: :class:`SessionBuildError` (inputs missing or not fitting, a clone's source outside its own session) and
:class:`~astra.builder.engine.BuildError` (the engine refuses the inputs, or fails on them: the engine reads no
service, so any fault of it repeats) are verdicts on the inputs; only S3's errors are worth another attempt.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

from botocore.exceptions import ClientError

from astra.builder.engine import BuildCaps, BuildError, BuildResult, build
from astra.config_svc import ConfigSnapshot
from astra.core.intent_output import Classify, build_intent_output, load_transcript
from astra.core.transcribe import SessionFileError, StoredJson, read_blob
from astra.core.transcribe import store_document as store_json
from astra.ingest.store import BlobStore, blob_uri
from astra.ingest.template_ingest import load_manifest, rebuild_template
from astra.s3 import is_missing, put_if_changed
from astra.tenancy import SessionKey

DOCX_MEDIA_TYPE = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
MEDIA_ROLE = "media"


class SessionBuildError(ValueError):
    """The session's build inputs are missing or do not fit together: nothing was built or stored."""


@dataclass(frozen=True)
class StoredDocument:
    uri: str  # s3://<assets>/<tenant>/documents/<session_id>/v<n>.docx
    version_id: str | None  # the S3 version of that key holding these bytes
    blob_uri: str
    sha256: str
    size: int
    written: bool  # False: the documents key held these bytes already


@dataclass(frozen=True)
class SessionDocument:
    session: SessionKey
    source: SessionKey  # whose transcript, data and media went in (the session itself unless it is a clone)
    build: BuildResult
    stored: StoredDocument
    config_version: int
    template_sha256: str
    model_version: str | None  # None: no utterance, no model was asked
    intent_output_sha256: str
    transcript_sha256: str
    problems: list[dict] = field(default_factory=list)  # images left out, truncations: {"zone", "code", "detail"}


def document_key(session: SessionKey) -> str:
    return f"{session.tenant}/documents/{session.session_id}/v{session.version}.docx"


def record_session(record: dict) -> SessionKey:
    return SessionKey(**{k: record["session"][k] for k in ("tenant", "session_id", "version")})


def parent_session(record: dict) -> SessionKey | None:
    """The version a clone is rebuilt from (its manifest's ``clone_of``), or None for a session that is not one."""
    clone_of = record["manifest"]["document"].get("clone_of")
    if clone_of is None:
        return None
    session = record_session(record)
    return SessionKey(session.tenant, session.session_id, clone_of["version"])


def load_template(s3, bucket: str, tenant: str, template_sha256: str) -> bytes:
    """The template a config version names, reassembled from the tenant's atoms (every part checked by its hash)."""
    try:
        manifest = load_manifest(s3, bucket, tenant, template_sha256)
    except ClientError as exc:
        if is_missing(exc):
            raise SessionBuildError(f"template {template_sha256[:12]}… has no atoms in s3://{bucket}/{tenant}/atoms/: "
                                    "was it ingested?") from None
        raise
    try:
        return rebuild_template(s3, bucket, tenant, manifest)
    except KeyError as exc:
        raise SessionBuildError(f"template {template_sha256[:12]}…: atom {exc.args[0]} is missing") from None


def load_blob(s3, bucket: str, tenant: str, sha256: str, what: str) -> bytes:
    """Bytes stored content-addressed under the tenant, checked against their hash."""
    try:
        body = BlobStore(s3, bucket, tenant).get(sha256)
    except KeyError:
        raise SessionBuildError(f"the {what} {blob_uri(bucket, tenant, sha256)} is missing") from None
    if hashlib.sha256(body).hexdigest() != sha256:
        raise SessionBuildError(f"the {what} {blob_uri(bucket, tenant, sha256)} does not hold the bytes stored")
    return body


def load_json_blob(s3, bucket: str, tenant: str, sha256: str, what: str) -> dict:
    """A JSON document stored content-addressed under the tenant, checked against its hash."""
    body = load_blob(s3, bucket, tenant, sha256, what)
    try:
        return json.loads(body)
    except ValueError as exc:
        raise SessionBuildError(f"the {what} {blob_uri(bucket, tenant, sha256)} is not JSON: {exc}") from None


def clone_source(clone: SessionKey, source_partition: str) -> SessionKey:
    """The session version a clone's inputs come from (its parent's ``source_partition``), which must be a version
    of the clone's own session: a clone never reads another session's, let alone another tenant's, inputs."""
    source = SessionKey.parse(source_partition)
    if (source.tenant, source.session_id) != (clone.tenant, clone.session_id):
        raise SessionBuildError(f"{clone.partition_key}: its parent's inputs are recorded as {source_partition}, "
                                "another session's: refusing to build from them")
    return source


def session_media(s3, record: dict, caps: BuildCaps = BuildCaps()) -> tuple[dict[str, bytes], list[dict]]:
    """The images of the record's ``media/`` files by their session path, and the files left out (too large to
    read, or a durable copy missing or damaged) as build problems."""
    media, problems = {}, []
    for f in sorted((f for f in record["files"] if f["role"] == MEDIA_ROLE), key=lambda f: f["path"]):
        if f["size"] > caps.max_image_bytes:  # refused before it is read into memory
            problems.append({"zone": None, "code": "image_refused",
                             "detail": f"{f['path']}: too_large: {f['size']} bytes, over the "
                                       f"{caps.max_image_bytes}-byte limit"})
            continue
        try:
            media[f["path"]] = read_blob(s3, f)
        except SessionFileError as exc:
            problems.append({"zone": None, "code": "media_unreadable", "detail": str(exc)})
    return media, problems


def store_document(s3, bucket: str, session: SessionKey, result: BuildResult) -> StoredDocument:
    """The document in the tenant's blobs and at its documents key (see the module docstring)."""
    BlobStore(s3, bucket, session.tenant).put_once(result.sha256, result.docx)
    key = document_key(session)
    version_id, written = put_if_changed(s3, bucket, key, result.docx, result.sha256, DOCX_MEDIA_TYPE)
    return StoredDocument(f"s3://{bucket}/{key}", version_id, blob_uri(bucket, session.tenant, result.sha256),
                          result.sha256, result.size, written)


def build_session_document(s3, bucket: str, record: dict, snapshot: ConfigSnapshot, template: bytes,
                           intent_output: dict, intent_output_sha256: str, source_record: dict | None = None,
                           caps: BuildCaps = BuildCaps()) -> SessionDocument:
    """Build and store the document of the session ``record`` describes, from the config ``snapshot`` and its
    ``template`` (:func:`load_template`) and the intent output; media come from ``source_record`` (a clone's
    source), else from the record itself."""
    session = record_session(record)
    source_record = source_record or record
    clone_source(session, record_session(source_record).partition_key)
    if intent_output.get("config_version") != snapshot.version:
        raise SessionBuildError(f"{session.partition_key}: the intent output was bound to config version "
                                f"{intent_output.get('config_version')}, not to v{snapshot.version}: bind it again")
    media, problems = session_media(s3, source_record, caps)
    try:
        result = build(template, snapshot.zone_map, snapshot.style_map, intent_output, media, caps=caps)
    except (BuildError, MemoryError):  # a refusal already; or the worker's state, which another attempt may not hit
        raise
    except Exception as exc:
        # The engine reads no service: a fault on these inputs is met again on every attempt, so it is a refusal
        # of the inputs (failed once), not an outage for the retry policy.
        raise BuildError(f"the engine failed on these inputs: {type(exc).__name__}: {exc}") from exc
    stored = store_document(s3, bucket, session, result)
    return SessionDocument(
        session=session, source=record_session(source_record), build=result, stored=stored,
        config_version=snapshot.version, template_sha256=snapshot.template_sha256,
        model_version=intent_output.get("model_version"), intent_output_sha256=intent_output_sha256,
        transcript_sha256=intent_output["transcript_sha256"],
        problems=problems + [p.to_json() for p in result.problems],
    )


def clone_intent_output(s3, bucket: str, clone_record: dict, source_record: dict, transcript_sha256: str,
                        zone_map: dict, classify: Classify) -> StoredJson:
    """A clone's intent output: the source's transcript classified again by ``classify`` (the current model) and
    bound, with the source's data files, to ``zone_map`` (the config version the clone pinned); stored like any
    intent output. The source's manifest gives the locale: the words and data are the source's."""
    session = record_session(clone_record)
    transcript = load_transcript(s3, bucket, session.tenant, transcript_sha256)
    rebuilt_from = {**source_record, "session": clone_record["session"],
                    "config_version": clone_record["config_version"]}
    document = build_intent_output(s3, rebuilt_from, transcript, zone_map, classify, transcript_sha256)
    return store_json(s3, bucket, session.tenant, document)
