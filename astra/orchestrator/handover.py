"""Session handover (ARCHITECTURE §2): from a complete upload to durable copies and audio in custody.

    1. read the tenant's CONFIG_SVC snapshot; its version is the one the session is built with
    2. sha256 every file the manifest names
    3. RegisterAssets (one channel, 50 ms); DEADLINE_EXCEEDED/UNAVAILABLE fail open: all NEW,
       `dedup: skipped`, and a reconciliation is queued in the outbox
    4. copy the blobs content-addressed into the assets bucket (per tenant)
    5. CopyObject the audio into the guard bucket under COMPLIANCE retention, verify, ledger entry
       (a data-only session has no audio: its record says `custody: null`)
    6. write the handover record (with the strays: objects in the version folder the manifest
       does not name), verify custody again, and only then delete the temporary upload
       (manifest last) and the strays that are byte copies of a file just secured

Crash-safety: the uploads are untouched until the handover record exists, and every step is
idempotent (blobs are written once, custody and ledger entries are keyed), so a re-run after a
failure anywhere converges. A re-run that finds the record only finishes the clean-up, and it
too verifies custody first: nothing is ever deleted from the uploads bucket unless the guard's
`check_custody` finds the custody copy, its retention, its ledger entry and the chain intact.
Handovers of one session version are serialized by a Postgres advisory lock, so concurrent runs
converge on one custody copy and one ledger entry; deletes are ETag-conditional and an object
already gone counts as deleted.

Strays: a client other than `astra session upload` may leave files the manifest does not name
(e.g. a second upload into the version folder that replaced the manifest). They are never
handed over (the version is sealed by its record). A stray is deleted with the upload only when
its bytes are those of a file this handover holds durably (same SHA-256, so the same blob, and
the custody copy for the audio); any other stray is kept and reported, in the record and the
run's metadata: nothing the handover has not secured is ever deleted, whenever it was written.
A clone (`clone_of`) is handed over only once the version it is rebuilt from has been.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError
from sqlalchemy import Engine, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert

from astra.config_svc import ConfigService, ConfigSnapshot
from astra.db.schema import outbox, tenants
from astra.guard.custody import check_custody, take_custody
from astra.ingest.registry import Digest
from astra.ingest.store import BlobStore, blob_uri
from astra.orchestrator.manifest import SessionManifest, load_manifest, manifest_session
from astra.orchestrator.registry_client import RegistryClient
from astra.s3 import (
    b64_sha256,
    delete_if_unchanged,
    error_code,
    full_object_sha256,
    head,
    is_missing,
    is_precondition_failed,
    stream_sha256,
)
from astra.settings import Settings
from astra.tenancy import SessionKey

log = logging.getLogger(__name__)

RECONCILE_TOPIC = "dedup.reconcile"
LOCK_NAMESPACE = "astra.handover"


class HandoverError(RuntimeError):
    pass


class CustodyNotVerified(HandoverError):
    """The custody copy does not verify: the upload is the only other copy, so it is kept."""


def upload_as_next_version(session: SessionKey) -> str:
    """The one instruction for an upload that cannot be handed over as it is."""
    return f"session versions are immutable: upload it as v{session.version + 1}"


def handover_record_key(session: SessionKey) -> str:
    return f"{session.tenant}/sessions/{session.session_id}/v{session.version}/handover.json"


@dataclass
class Handover:
    """Everything a handover needs; built once per process (the registry client's channel too)."""

    s3: Any
    settings: Settings
    engine: Engine
    config: ConfigService
    registry: RegistryClient | None  # None: no registry configured, dedup is skipped


@dataclass
class TempCleanup:
    deleted: list[str] = field(default_factory=list)  # keys deleted from the uploads bucket (manifest last)
    strays_kept: list[str] = field(default_factory=list)  # unnamed objects not held durably: never deleted


@dataclass
class HandoverResult:
    record: dict
    record_uri: str
    resumed: bool = False  # the record existed: this run only finished the clean-up
    cleanup: TempCleanup = field(default_factory=TempCleanup)

    @property
    def temp_deleted(self) -> list[str]:
        return self.cleanup.deleted


def hand_over(h: Handover, manifest_key: str, expected_sha256: str | None = None) -> HandoverResult:
    """The steps of the module docstring, in order; a second handover of the session waits for the first."""
    session = manifest_session(manifest_key)
    with _one_handover_at_a_time(h.engine, session):
        existing = load_record(h.s3, h.settings.assets_bucket, session)
        if existing is not None:
            return _resume(h, existing, expected_sha256)
        manifest = load_manifest(h.s3, h.settings.uploads_bucket, manifest_key)
        if expected_sha256 and manifest.sha256 != expected_sha256:
            raise HandoverError(f"{manifest_key} changed since the sensor saw it (sha256 {manifest.sha256[:12]}…)")
        refuse_a_clone_of_nothing(h, manifest)
        snapshot = config_snapshot(h, manifest)
        files = hash_files(h, manifest)
        dedup = register(h, session, files)
        stored_manifest = store_blobs(h, manifest, files)
        custody = hold_audio(h, session, files)
        record = {
            "session": {"tenant": session.tenant, "session_id": session.session_id, "version": session.version,
                        "partition_key": session.partition_key},
            "manifest": stored_manifest,
            "config_version": snapshot.version,
            "template_sha256": snapshot.template_sha256,
            "files": files,
            "dedup": dedup,
            "custody": custody,
            "strays": find_strays(h, manifest, files),
            "handed_over_at": datetime.now(UTC).isoformat(),
        }
        meta = BlobStore(h.s3, h.settings.assets_bucket, session.tenant).put_json(handover_record_key(session), record)
        return HandoverResult(record, meta["uri"], cleanup=delete_temp_upload(h, record))


@contextmanager
def _one_handover_at_a_time(engine: Engine, session: SessionKey) -> Iterator[None]:
    """Hold a transaction-scoped advisory lock on the session version for the handover.

    Two runs of one session (a retry beside a slow run, a second sensor) would otherwise both copy
    the audio into custody: the ledger keeps one entry, but the guard bucket would keep a second
    locked version no entry records. The second run waits, then finds the record and only
    finishes the clean-up. The lock goes with the transaction, so a crashed run never holds it."""
    with engine.begin() as conn:
        conn.execute(select(func.pg_advisory_xact_lock(func.hashtext(LOCK_NAMESPACE),
                                                       func.hashtext(session.partition_key))))
        yield


def _resume(h: Handover, record: dict, expected_sha256: str | None) -> HandoverResult:
    session = _session(record)
    if expected_sha256 and record["manifest"]["sha256"] != expected_sha256:
        raise HandoverError(f"{session.partition_key} was already handed over with another manifest: "
                            f"{upload_as_next_version(session)}")
    return HandoverResult(record, _record_uri(h, session), resumed=True, cleanup=delete_temp_upload(h, record))


def refuse_a_clone_of_nothing(h: Handover, manifest: SessionManifest) -> None:
    """A clone is rebuilt from a handed-over version: one never handed over has nothing to rebuild from."""
    clone = manifest.document.get("clone_of")
    if clone is None:
        return
    session = manifest.session
    parent = SessionKey(session.tenant, session.session_id, clone["version"])
    if load_record(h.s3, h.settings.assets_bucket, parent) is None:
        raise HandoverError(f"{session.partition_key} is a clone of {parent.partition_key}, which was never handed "
                            "over: there is nothing to rebuild it from")


def config_snapshot(h: Handover, manifest: SessionManifest) -> ConfigSnapshot:
    """Step 1: the tenant's config (TenantNotFound: no template ingested yet), for the named template."""
    session = manifest.session
    snapshot = h.config.snapshot(session.tenant)
    named = manifest.document["template"]
    if snapshot.template_name is not None and named != snapshot.template_name:
        raise HandoverError(f"{session.partition_key} names template {named!r}, but the tenant's current config "
                            f"(v{snapshot.version}) comes from template {snapshot.template_name!r}")
    return snapshot


def hash_files(h: Handover, manifest: SessionManifest) -> list[dict]:
    """Step 2: sha256, size and ETag of every named file (the ETag pins the version hashed)."""
    files = []
    for f in manifest.files:
        sha, size, resp = stream_sha256(h.s3, h.settings.uploads_bucket, f.key)
        files.append({"role": f.role, "path": f.path, "key": f.key, "media_type": f.media_type,
                      "sha256": sha, "size": size, "etag": resp["ETag"]})
    return files


def register(h: Handover, session: SessionKey, files: list[dict]) -> dict:
    """Step 3: dedup statuses per file, or the fail-open outcome with a queued reconciliation."""
    digests = [Digest(f["sha256"], f["size"], f["media_type"], f["path"]) for f in files]
    if not digests:
        return {"status": "registered"}
    result = h.registry.register(session.tenant, digests) if h.registry else None
    if result is not None and not result.skipped:
        for f, s in zip(files, result.statuses, strict=True):  # one status per digest sent
            f["dedup"] = s.outcome.value
        return {"status": "registered"}
    reason = result.skipped_reason if result is not None else "no registry configured"
    log.warning("dedup skipped for %s (%s): every asset taken as new, reconciliation queued",
                session.partition_key, reason)
    for f in files:
        f["dedup"] = "skipped"
    queue_reconciliation(h.engine, session, digests)
    return {"status": "skipped", "reason": reason}


def queue_reconciliation(engine: Engine, session: SessionKey, digests: list[Digest]) -> None:
    payload = {"session": session.partition_key,
               "digests": [{"sha256": d.sha256, "size": d.size, "media_type": d.media_type, "name": d.name}
                           for d in digests]}
    with engine.begin() as conn:
        conn.execute(pg_insert(tenants).values(tenant_id=session.tenant).on_conflict_do_nothing())
        already = conn.execute(
            select(outbox.c.id).where(outbox.c.tenant_id == session.tenant, outbox.c.topic == RECONCILE_TOPIC,
                                      outbox.c.payload["session"].astext == session.partition_key,
                                      outbox.c.published_at.is_(None))
        ).first()
        if already is None:  # a re-run of the same handover queues it once
            conn.execute(outbox.insert().values(tenant_id=session.tenant, topic=RECONCILE_TOPIC, payload=payload))


def store_blobs(h: Handover, manifest: SessionManifest, files: list[dict]) -> dict:
    """Step 4: every file and the manifest into the tenant's blobs; returns the record's manifest part."""
    uploads, assets, tenant = h.settings.uploads_bucket, h.settings.assets_bucket, manifest.session.tenant
    store = BlobStore(h.s3, assets, tenant)
    for f in files:
        f["blob_uri"] = blob_uri(assets, tenant, f["sha256"])
        f["blob_copied"] = _copy_blob(h, store, uploads, f)
    got = h.s3.get_object(Bucket=uploads, Key=manifest.key)
    raw = got["Body"].read()
    if hashlib.sha256(raw).hexdigest() != manifest.sha256:
        raise HandoverError(f"{manifest.key} changed during the handover; the upload is kept")
    store.put_once(manifest.sha256, raw)
    return {"key": manifest.key, "sha256": manifest.sha256, "etag": got["ETag"], "document": manifest.document,
            "last_modified": got["LastModified"].astimezone(UTC).isoformat(),
            "blob_uri": blob_uri(assets, tenant, manifest.sha256)}


def _copy_blob(h: Handover, store: BlobStore, bucket: str, f: dict) -> bool:
    """Server-side copy into the content-addressed store unless the blob is there; True if copied.

    The copy is of the version that was hashed (CopySourceIfMatch) and is checked by the SHA-256
    S3 computes while copying: a blob key never holds bytes that are not its hash; a wrong copy
    is removed again before the error."""
    sha256, target = f["sha256"], store.key(f["sha256"])
    stored = head(h.s3, store.bucket, target)
    if stored is not None:
        known = full_object_sha256(stored)  # None for a composite (multipart) checksum: nothing to compare
        if known is not None and known != sha256:
            raise HandoverError(f"s3://{store.bucket}/{target} holds bytes that are not {sha256}: the blob store "
                                "is damaged; the upload is kept")
        return False
    resp = h.s3.copy_object(Bucket=store.bucket, Key=target, CopySource={"Bucket": bucket, "Key": f["key"]},
                            CopySourceIfMatch=f["etag"], ChecksumAlgorithm="SHA256")
    if resp.get("CopyObjectResult", {}).get("ChecksumSHA256") != b64_sha256(sha256):
        version = {"VersionId": resp["VersionId"]} if resp.get("VersionId") else {}
        h.s3.delete_object(Bucket=store.bucket, Key=target, **version)
        raise HandoverError(f"{f['key']} changed after it was hashed (its copy is not {sha256}); the upload is kept")
    return True


def hold_audio(h: Handover, session: SessionKey, files: list[dict]) -> dict | None:
    """Step 5: the audio into custody and the ledger; None for a data-only session."""
    audio = next((f for f in files if f["role"] == "audio"), None)
    if audio is None:
        return None
    ext = audio["path"].rsplit(".", 1)[1]
    record, entry = take_custody(h.engine, h.s3, h.settings, session.tenant, session.session_id,
                                 session.version, h.settings.uploads_bucket, audio["key"], audio["sha256"], ext)
    return {**record.to_dict(), "ledger_seq": entry.seq, "ledger_entry_hash": entry.entry_hash}


def find_strays(h: Handover, manifest: SessionManifest, files: list[dict]) -> list[dict]:
    """Objects in the version folder the manifest does not name; `same_as` is the named file whose
    bytes a stray has (same SHA-256: held durably by this handover), else None (kept for good)."""
    named = {f.key for f in manifest.files} | {manifest.key}
    pages = h.s3.get_paginator("list_objects_v2").paginate(Bucket=h.settings.uploads_bucket,
                                                           Prefix=manifest.session.upload_prefix)
    return [_stray(h, o, files) for page in pages for o in page.get("Contents", []) if o["Key"] not in named]


def _stray(h: Handover, obj: dict, files: list[dict]) -> dict:
    same_as = None
    if any(f["size"] == obj["Size"] for f in files):  # only a stray of a named file's size can hold its bytes
        try:
            sha, _, _ = stream_sha256(h.s3, h.settings.uploads_bucket, obj["Key"], IfMatch=obj["ETag"])
            same_as = next((f["path"] for f in files if f["sha256"] == sha), None)
        except ClientError as exc:
            if not (is_missing(exc) or is_precondition_failed(exc)):  # gone or rewritten since listed: kept
                raise
    return {"key": obj["Key"], "etag": obj["ETag"], "size": obj["Size"],
            "last_modified": obj["LastModified"].astimezone(UTC).isoformat(), "same_as": same_as}


def custody_problems(h: Handover, record: dict) -> list[str]:
    """What stands between this record and deleting its upload: the guard's verification of the
    custody copy, or, for a session without audio, that the record names no audio either."""
    audio = next((f for f in record["files"] if f["role"] == "audio"), None)
    custody = record["custody"]
    if custody is None:
        return [f"the record names audio {audio['path']} but no custody copy"] if audio else []
    if audio is None or custody["sha256"] != audio["sha256"]:
        return [f"the custody copy {custody['key']} is not of the audio this record names"]
    return check_custody(h.s3, h.settings, h.engine, custody)  # the record's copy: ledger seq and hash too


def delete_temp_upload(h: Handover, record: dict) -> TempCleanup:
    """Step 6 (and the resume path, and the clean-up schedule): verify custody, then delete the
    upload's files and the strays holding the bytes of one of them, the manifest last, so an
    interrupted clean-up is seen again. Every other stray is kept (records older than `same_as`
    have none marked, so theirs are all kept).

    Only objects that are still exactly what was handed over (same ETag) are deleted: a file
    re-uploaded under the same key since then is new input, and deleting it would lose it.
    An object already gone (a concurrent clean-up) counts as deleted."""
    partition_key = record["session"]["partition_key"]
    problems = custody_problems(h, record)
    if problems:
        raise CustodyNotVerified(f"{partition_key}: custody not verified, nothing deleted: {'; '.join(problems)}")
    bucket, manifest = h.settings.uploads_bucket, record["manifest"]
    strays = record.get("strays", [])  # records written before strays were looked for have none
    targets = [(f["key"], f["etag"]) for f in record["files"]]
    targets += [(s["key"], s["etag"]) for s in strays if s.get("same_as")]
    targets.append((manifest["key"], manifest["etag"]))
    present, changed = [], []
    for key, etag in targets:
        now = head(h.s3, bucket, key, checksum=False)
        if now is not None:  # None: deleted already
            (present if now["ETag"] == etag else changed).append(key)
    if not changed:
        for key, etag in targets:  # conditional: a re-upload landing between the check and here is kept
            if key in present and not delete_if_unchanged(h.s3, bucket, key, etag):
                changed.append(key)
    if changed:
        raise HandoverError(
            f"{partition_key} was already handed over, and these uploads differ from what was handed over: "
            f"{', '.join(changed)} (not deleted): {upload_as_next_version(_session(record))}"
        )
    return TempCleanup(deleted=present, strays_kept=[s["key"] for s in strays if not s.get("same_as")])


def _session(record: dict) -> SessionKey:
    return SessionKey(**{k: record["session"][k] for k in ("tenant", "session_id", "version")})


def _record_uri(h: Handover, session: SessionKey) -> str:
    return f"s3://{h.settings.assets_bucket}/{handover_record_key(session)}"


def load_record(s3, assets_bucket: str, session: SessionKey) -> dict | None:
    """The session version's handover record, or None when it was not handed over (only S3's
    "not found" means that: a throttle or an outage raises)."""
    try:
        return BlobStore(s3, assets_bucket, session.tenant).get_json(handover_record_key(session))
    except ClientError as exc:
        # A missing bucket is misconfiguration, not "never handed over" (is_missing's 404 fallback says missing)
        if is_missing(exc) and error_code(exc) != "NoSuchBucket":
            return None
        raise
