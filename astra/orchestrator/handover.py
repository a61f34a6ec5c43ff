"""Session handover (ARCHITECTURE §2): from a complete upload to durable copies and audio in custody.

    1. read the tenant's CONFIG_SVC snapshot; its version is the one the session is built with
    2. sha256 every file the manifest names
    3. RegisterAssets (one channel, 50 ms); DEADLINE_EXCEEDED/UNAVAILABLE fail open: all NEW,
       `dedup: skipped`, and a reconciliation is queued in the outbox
    4. copy the blobs content-addressed into the assets bucket (per tenant)
    5. CopyObject the audio into the guard bucket under COMPLIANCE retention, verify, ledger entry
    6. write the handover record, and only then delete the temporary upload (manifest last)

Crash-safety: the uploads are untouched until the handover record exists, and every step is
idempotent (blobs are written once, custody and ledger entries are keyed), so a re-run after a
failure anywhere converges. A re-run that finds the record only finishes the clean-up.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from botocore.exceptions import ClientError
from sqlalchemy import Engine, select
from sqlalchemy.dialects.postgresql import insert as pg_insert

from astra.config_svc import ConfigService
from astra.db.schema import outbox, tenants
from astra.guard.custody import b64_sha256, stream_sha256, take_custody
from astra.ingest.registry import Digest
from astra.ingest.store import BlobStore, blob_uri
from astra.orchestrator.manifest import load_manifest, manifest_session
from astra.orchestrator.registry_client import RegistryClient
from astra.settings import Settings
from astra.tenancy import SessionKey

log = logging.getLogger(__name__)

RECONCILE_TOPIC = "dedup.reconcile"


class HandoverError(RuntimeError):
    pass


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
class HandoverResult:
    record: dict
    record_uri: str
    resumed: bool = False  # the record existed: this run only finished the clean-up
    temp_deleted: list[str] = field(default_factory=list)


def hand_over(h: Handover, manifest_key: str, expected_sha256: str | None = None) -> HandoverResult:
    uploads, assets = h.settings.uploads_bucket, h.settings.assets_bucket
    session = manifest_session(manifest_key)
    existing = load_record(h.s3, assets, session)
    if existing is not None:
        if expected_sha256 and existing["manifest"]["sha256"] != expected_sha256:
            raise HandoverError(f"{session.partition_key} was already handed over with another manifest: "
                                f"session versions are immutable, upload it as v{session.version + 1}")
        deleted = delete_temp_upload(h, existing)
        return HandoverResult(existing, _record_uri(h, session), resumed=True, temp_deleted=deleted)

    manifest = load_manifest(h.s3, uploads, manifest_key)
    if expected_sha256 and manifest.sha256 != expected_sha256:
        raise HandoverError(f"{manifest_key} changed since the sensor saw it (sha256 {manifest.sha256[:12]}…)")

    snapshot = h.config.snapshot(session.tenant)  # TenantNotFound: no template ingested yet
    named = manifest.document["template"]
    if snapshot.template_name is not None and named != snapshot.template_name:
        raise HandoverError(f"{session.partition_key} names template {named!r}, but the tenant's current config "
                            f"(v{snapshot.version}) comes from template {snapshot.template_name!r}")

    files = []
    for f in manifest.files:
        sha, size, resp = stream_sha256(h.s3, uploads, f.key)
        files.append({"role": f.role, "path": f.path, "key": f.key, "media_type": f.media_type,
                      "sha256": sha, "size": size, "etag": resp["ETag"]})

    dedup = register(h, session, files)

    store = BlobStore(h.s3, assets, session.tenant)
    for f in files:
        f["blob_uri"] = blob_uri(assets, session.tenant, f["sha256"])
        f["blob_copied"] = _copy_blob(h, store, uploads, f)
    got = h.s3.get_object(Bucket=uploads, Key=manifest_key)
    raw_manifest = got["Body"].read()
    if hashlib.sha256(raw_manifest).hexdigest() != manifest.sha256:
        raise HandoverError(f"{manifest_key} changed during the handover; the upload is kept")
    store.put_once(manifest.sha256, raw_manifest)

    custody = None
    audio = next((f for f in files if f["role"] == "audio"), None)
    if audio is not None:
        ext = audio["path"].rsplit(".", 1)[1]
        record, entry = take_custody(h.engine, h.s3, h.settings, session.tenant, session.session_id,
                                     session.version, uploads, audio["key"], audio["sha256"], ext)
        custody = {**record.to_dict(), "ledger_seq": entry.seq, "ledger_entry_hash": entry.entry_hash}

    record = {
        "session": {"tenant": session.tenant, "session_id": session.session_id, "version": session.version,
                    "partition_key": session.partition_key},
        "manifest": {"key": manifest_key, "sha256": manifest.sha256, "etag": got["ETag"], "document": manifest.document,
                     "blob_uri": blob_uri(assets, session.tenant, manifest.sha256)},
        "config_version": snapshot.version,
        "template_sha256": snapshot.template_sha256,
        "files": files,
        "dedup": dedup,
        "custody": custody,
        "handed_over_at": datetime.now(timezone.utc).isoformat(),
    }
    meta = store.put_json(handover_record_key(session), record)
    deleted = delete_temp_upload(h, record)
    return HandoverResult(record, meta["uri"], temp_deleted=deleted)


def register(h: Handover, session: SessionKey, files: list[dict]) -> dict:
    """Dedup statuses per file, or the fail-open outcome with a queued reconciliation."""
    digests = [Digest(f["sha256"], f["size"], f["media_type"], f["path"]) for f in files]
    if not digests:
        return {"status": "registered"}
    result = h.registry.register(session.tenant, digests) if h.registry else None
    if result is not None and not result.skipped:
        for f, s in zip(files, result.statuses):
            f["dedup"] = s.outcome.value
        return {"status": "registered"}
    reason = result.skipped_reason if result is not None else "no registry configured"
    log.warning("dedup skipped for %s (%s): every asset taken as new, reconciliation queued", session.partition_key, reason)
    for f in files:
        f["dedup"] = "skipped"
    queue_reconciliation(h.engine, session, digests)
    return {"status": "skipped", "reason": reason}


def queue_reconciliation(engine: Engine, session: SessionKey, digests: list[Digest]) -> None:
    payload = {"session": session.partition_key,
               "digests": [{"sha256": d.sha256, "size": d.size, "media_type": d.media_type, "name": d.name} for d in digests]}
    with engine.begin() as conn:
        conn.execute(pg_insert(tenants).values(tenant_id=session.tenant).on_conflict_do_nothing())
        already = conn.execute(
            select(outbox.c.id).where(outbox.c.tenant_id == session.tenant, outbox.c.topic == RECONCILE_TOPIC,
                                      outbox.c.payload["session"].astext == session.partition_key,
                                      outbox.c.published_at.is_(None))
        ).first()
        if already is None:  # a re-run of the same handover queues it once
            conn.execute(outbox.insert().values(tenant_id=session.tenant, topic=RECONCILE_TOPIC, payload=payload))


def _copy_blob(h: Handover, store: BlobStore, bucket: str, f: dict) -> bool:
    """Server-side copy into the content-addressed store unless the blob is there; True if copied.

    The copy is of the version that was hashed (CopySourceIfMatch) and is checked by the SHA-256
    S3 computes while copying: a blob key never holds bytes that are not its hash; a wrong copy
    is removed again before the error."""
    sha256, target = f["sha256"], store.key(f["sha256"])
    try:
        head = h.s3.head_object(Bucket=store.bucket, Key=target, ChecksumMode="ENABLED")
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchKey", "NotFound"):
            raise
    else:
        stored = head.get("ChecksumSHA256")
        if stored and stored != b64_sha256(sha256):
            raise HandoverError(f"s3://{store.bucket}/{target} holds bytes that are not {sha256}: the blob store "
                                "is damaged; the upload is kept")
        return False
    resp = h.s3.copy_object(Bucket=store.bucket, Key=target, CopySource={"Bucket": bucket, "Key": f["key"]},
                            CopySourceIfMatch=f["etag"], ChecksumAlgorithm="SHA256")
    if resp.get("CopyObjectResult", {}).get("ChecksumSHA256") != b64_sha256(sha256):
        h.s3.delete_object(Bucket=store.bucket, Key=target, **({"VersionId": resp["VersionId"]} if resp.get("VersionId") else {}))
        raise HandoverError(f"{f['key']} changed after it was hashed (its copy is not {sha256}); the upload is kept")
    return True


def delete_temp_upload(h: Handover, record: dict) -> list[str]:
    """Delete the upload's files, the manifest last, so an interrupted clean-up is seen again.

    Only objects that are still exactly what was handed over (same ETag) are deleted: a file
    re-uploaded under the same key since then is new input, and deleting it would lose it."""
    bucket = h.settings.uploads_bucket
    expected = [(f["key"], f["etag"]) for f in record["files"]] + [(record["manifest"]["key"], record["manifest"]["etag"])]
    present, changed = [], []
    for key, etag in expected:
        try:
            head = h.s3.head_object(Bucket=bucket, Key=key)
        except ClientError:
            continue  # deleted already
        (present if head["ETag"] == etag else changed).append((key, etag))
    if not changed:
        for key, etag in present:
            try:  # conditional: a re-upload landing between the check and here is kept
                h.s3.delete_object(Bucket=bucket, Key=key, IfMatch=etag)
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") != "PreconditionFailed":
                    raise
                changed.append((key, etag))
    if changed:
        raise HandoverError(
            f"{record['session']['partition_key']} was already handed over, and these uploads differ from what "
            f"was handed over: {', '.join(k for k, _ in changed)}. Session versions are immutable: upload it as "
            f"v{record['session']['version'] + 1}. They were not deleted."
        )
    return [key for key, _ in present]


def _record_uri(h: Handover, session: SessionKey) -> str:
    return f"s3://{h.settings.assets_bucket}/{handover_record_key(session)}"


def load_record(s3, assets_bucket: str, session: SessionKey) -> dict | None:
    """The session version's handover record, or None when it was not handed over."""
    try:
        return BlobStore(s3, assets_bucket, session.tenant).get_json(handover_record_key(session))
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
            return None
        raise
