"""Models as artifacts (ARCHITECTURE §4): publish a saved IntentModel directory, find the latest, fetch it verified.

S3: ``models/<tenant>/<model_version>/<file>`` in the assets bucket, where ``model_version`` is the model's content
version (``IntentModel.version``, derived from its files' digests): the same bytes always land on the same keys, so
a retried or repeated publish overwrites nothing with anything different.

Postgres: one ``model_registry`` row per publication, ``version`` = 1, 2, 3… per tenant (allocated under the tenant
row's lock), ``uri`` = the S3 prefix, ``sha256`` = the sha256 of the artifact's ``manifest.json`` (which lists every
file's sha256, so it pins the whole artifact), ``metrics`` = the manifest's, ``status`` = ``active``. In the same
transaction an ``outbox`` row (topic ``model.updated``) carries the MODEL_UPDATED event; ``drain_outbox`` publishes
it to Redis pub/sub ``<prefix>:model-updated`` and marks it published only after PUBLISH returned, so a Redis
outage delays the event and loses nothing.

The base model is published under the reserved tenant slug ``base`` (``BASE_TENANT``): S3 ``models/base/…``, a
``tenants`` row ``base``, registry rows like any tenant's. A tenant with no active row of its own is served the base.

``fetch`` downloads into a local cache, ``<cache>/<tenant>/<model_version>/``: the manifest must hash to the
registry's sha256 and every file to its manifest sha256, else ``ModelIntegrityError`` and nothing is kept. Files
are also kept by sha256 in ``<cache>/blobs/`` and hard-linked, so the encoder (most of an artifact's bytes, the
same in every model on one base encoder) is downloaded once per machine.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

from sqlalchemy import Engine, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from astra import s3 as s3_lib
from astra.core.intent.store import BASE_TENANT, ModelIntegrityError, file_sha256
from astra.db.schema import model_registry, outbox, tenants
from astra.tenancy import validate_model_owner

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
TOPIC = "model.updated"
EVENT = "MODEL_UPDATED"
ACTIVE = "active"
CHANNEL = "model-updated"
_VERSION_CHARS = frozenset("0123456789abcdef")


def channel(prefix: str) -> str:
    """The Redis pub/sub channel of MODEL_UPDATED events."""
    return f"{prefix}:{CHANNEL}"


@dataclass(frozen=True)
class ModelRecord:
    """One published model: its registry row, as the service and the event see it."""

    tenant: str
    registry_version: int  # model_registry.version: 1, 2, 3… per tenant
    model_version: str  # the content version (IntentModel.version): what a Classify answer carries
    uri: str  # s3://<assets bucket>/models/<tenant>/<model_version>/
    sha256: str  # of manifest.json
    metrics: dict

    def event(self, published_at: str) -> dict:
        return {"event": EVENT, "tenant": self.tenant, "model_version": self.model_version, "uri": self.uri,
                "sha256": self.sha256, "published_at": published_at}


def model_prefix(tenant: str, model_version: str) -> str:
    return f"models/{tenant}/{model_version}/"


def _check_version(model_version: str) -> str:
    if not (isinstance(model_version, str) and 8 <= len(model_version) <= 64 and set(model_version) <= _VERSION_CHARS):
        raise ModelIntegrityError(f"invalid model version {model_version!r}: expected lowercase hex")
    return model_version


def _parse_uri(uri: str, bucket: str) -> str:
    """The key prefix of a registry uri; a uri outside the assets bucket's models/ is refused."""
    head = f"s3://{bucket}/"
    if not uri.startswith(head) or not uri[len(head):].startswith("models/") or not uri.endswith("/"):
        raise ModelIntegrityError(f"model uri {uri!r} is not under s3://{bucket}/models/")
    return uri[len(head):]


def read_manifest(directory: Path) -> tuple[dict, str]:
    """(manifest, its sha256) of a saved model directory."""
    data = (directory / MANIFEST).read_bytes()
    return json.loads(data), hashlib.sha256(data).hexdigest()


class ModelStore:
    def __init__(self, engine: Engine, s3, bucket: str, cache_dir: str | Path):
        self.engine, self.s3, self.bucket = engine, s3, bucket
        self.cache_dir = Path(cache_dir)

    # ---- publish ------------------------------------------------------------------------------------------------

    def publish(self, tenant: str, directory: str | Path, status: str = ACTIVE) -> ModelRecord:
        """Upload a saved model directory, then register it and queue its MODEL_UPDATED (one transaction)."""
        validate_model_owner(tenant)
        directory = Path(directory)
        manifest, manifest_sha = read_manifest(directory)
        model_version = _check_version(manifest.get("version", ""))
        prefix = model_prefix(tenant, model_version)
        self._upload(directory, prefix, manifest)
        uri = f"s3://{self.bucket}/{prefix}"
        return self._register(tenant, model_version, uri, manifest_sha, manifest.get("metrics") or {}, status)

    def _upload(self, directory: Path, prefix: str, manifest: dict) -> None:
        """Every file the manifest lists, each checked by S3 against its sha256; the manifest last."""
        for name, sha in sorted(manifest["files"].items()):
            if PurePosixPath(name).is_absolute() or ".." in PurePosixPath(name).parts:
                raise ModelIntegrityError(f"{directory}: manifest names a file outside the model: {name}")
            self._put(directory / name, prefix + name, sha)
        self._put(directory / MANIFEST, prefix + MANIFEST, file_sha256(directory / MANIFEST))

    def _put(self, path: Path, key: str, sha: str) -> None:
        head = s3_lib.head(self.s3, self.bucket, key)
        if head is not None and s3_lib.full_object_sha256(head) == sha:
            return  # content-addressed key already holding these bytes (a retried publish)
        with path.open("rb") as body:
            self.s3.put_object(Bucket=self.bucket, Key=key, Body=body, ChecksumSHA256=s3_lib.b64_sha256(sha))

    def _register(self, tenant: str, model_version: str, uri: str, sha: str, metrics: dict,
                  status: str) -> ModelRecord:
        published_at = datetime.now(UTC).isoformat()
        with self.engine.begin() as conn:
            conn.execute(pg_insert(tenants).values(tenant_id=tenant).on_conflict_do_nothing())
            conn.execute(select(tenants.c.tenant_id).where(tenants.c.tenant_id == tenant).with_for_update())
            last = conn.execute(select(func.max(model_registry.c.version))
                                .where(model_registry.c.tenant_id == tenant)).scalar()
            record = ModelRecord(tenant, (last or 0) + 1, model_version, uri, sha, metrics)
            conn.execute(model_registry.insert().values(
                tenant_id=tenant, version=record.registry_version, uri=uri, sha256=sha,
                metrics={**metrics, "model_version": model_version}, status=status))
            if status == ACTIVE:
                conn.execute(outbox.insert().values(tenant_id=tenant, topic=TOPIC, payload=record.event(published_at)))
        return record

    # ---- read ---------------------------------------------------------------------------------------------------

    def latest(self, tenant: str) -> ModelRecord | None:
        """The tenant's newest active model, or None (the caller then uses the base model's)."""
        validate_model_owner(tenant)
        with self.engine.connect() as conn:
            row = conn.execute(
                select(model_registry).where(model_registry.c.tenant_id == tenant, model_registry.c.status == ACTIVE)
                .order_by(model_registry.c.version.desc()).limit(1)).mappings().first()
        return None if row is None else self._record(row)

    def latest_all(self) -> dict[str, ModelRecord]:
        """Every tenant's newest active model (one query: the service's reconcile)."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(model_registry).distinct(model_registry.c.tenant_id)
                .where(model_registry.c.status == ACTIVE)
                .order_by(model_registry.c.tenant_id, model_registry.c.version.desc())).mappings().all()
        return {row["tenant_id"]: self._record(row) for row in rows}

    @staticmethod
    def _record(row) -> ModelRecord:
        metrics = dict(row["metrics"] or {})
        model_version = metrics.pop("model_version", None) or row["uri"].rstrip("/").rsplit("/", 1)[-1]
        return ModelRecord(row["tenant_id"], row["version"], model_version, row["uri"], row["sha256"], metrics)

    # ---- fetch --------------------------------------------------------------------------------------------------

    def fetch(self, record: ModelRecord) -> Path:
        """The model's verified directory in the local cache, downloaded when absent. ModelIntegrityError when the
        manifest does not hash to the registry's sha256 or a file not to its manifest's."""
        validate_model_owner(record.tenant)
        target = self.cache_dir / record.tenant / _check_version(record.model_version)
        if (target / MANIFEST).is_file() and file_sha256(target / MANIFEST) == record.sha256:
            return target  # IntentModel.load re-verifies every file against this manifest
        prefix = _parse_uri(record.uri, self.bucket)
        staging = Path(tempfile.mkdtemp(prefix=".fetch-", dir=self._ensure_dir(self.cache_dir)))
        try:
            manifest = self._download_manifest(prefix, staging, record)
            for name, sha in sorted(manifest.get("files", {}).items()):
                self._download_file(prefix, name, sha, staging)
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.exists():
                shutil.rmtree(target)  # a stale or damaged copy under the same version
            os.replace(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return target

    def _download_manifest(self, prefix: str, staging: Path, record: ModelRecord) -> dict:
        data = self.s3.get_object(Bucket=self.bucket, Key=prefix + MANIFEST)["Body"].read()
        if hashlib.sha256(data).hexdigest() != record.sha256:
            raise ModelIntegrityError(f"{record.uri}{MANIFEST} does not match the registry's sha256 "
                                      f"(model {record.tenant} v{record.registry_version})")
        manifest = json.loads(data)
        if manifest.get("version") != record.model_version:
            raise ModelIntegrityError(f"{record.uri}: manifest version {manifest.get('version')!r} is not "
                                      f"{record.model_version!r}")
        (staging / MANIFEST).write_bytes(data)
        return manifest

    def _download_file(self, prefix: str, name: str, sha: str, staging: Path) -> None:
        parts = PurePosixPath(name).parts
        if PurePosixPath(name).is_absolute() or ".." in parts or not parts:
            raise ModelIntegrityError(f"manifest names a file outside the model: {name!r}")
        blob = self._ensure_dir(self.cache_dir / "blobs") / sha
        if not blob.is_file():
            self._download_blob(prefix + name, sha, blob)
        path = staging / name
        path.parent.mkdir(parents=True, exist_ok=True)
        os.link(blob, path)

    def _download_blob(self, key: str, sha: str, blob: Path) -> None:
        handle, tmp = tempfile.mkstemp(prefix=".blob-", dir=blob.parent)
        try:
            digest = hashlib.sha256()
            with os.fdopen(handle, "wb") as out:
                body = self.s3.get_object(Bucket=self.bucket, Key=key)["Body"]
                for chunk in body.iter_chunks(s3_lib.CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
            if digest.hexdigest() != sha:
                raise ModelIntegrityError(f"s3://{self.bucket}/{key} does not match its sha256 in the manifest")
            os.replace(tmp, blob)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    @staticmethod
    def _ensure_dir(path: Path) -> Path:
        path.mkdir(parents=True, exist_ok=True)
        return path


def drain_outbox(engine: Engine, redis_client, prefix: str, limit: int = 100) -> int:
    """Publish queued MODEL_UPDATED events to ``<prefix>:model-updated``, oldest first; a row is marked published
    only after its PUBLISH returned. On a Redis error the row's attempts grow, the error is logged and the drain
    stops (the rest wait for the next drain). Returns how many were published."""
    published = 0
    with engine.begin() as conn:
        rows = conn.execute(
            select(outbox.c.id, outbox.c.payload).where(outbox.c.topic == TOPIC, outbox.c.published_at.is_(None))
            .order_by(outbox.c.id).limit(limit).with_for_update(skip_locked=True)).all()
        for row in rows:
            try:
                redis_client.publish(channel(prefix), json.dumps(row.payload, sort_keys=True))
            except Exception as exc:  # noqa: BLE001 — any Redis failure leaves the event queued
                log.warning("MODEL_UPDATED not published (kept in the outbox): %s", exc)
                conn.execute(update(outbox).where(outbox.c.id == row.id).values(attempts=outbox.c.attempts + 1))
                break
            conn.execute(update(outbox).where(outbox.c.id == row.id)
                         .values(published_at=func.now(), attempts=outbox.c.attempts + 1))
            published += 1
    return published


__all__ = ["BASE_TENANT", "ModelRecord", "ModelStore", "channel", "drain_outbox", "model_prefix"]
