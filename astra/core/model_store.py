"""Models as artifacts (ARCHITECTURE §4): publish a saved IntentModel directory, find the latest, fetch it verified.

S3: ``models/<tenant>/<model_version>/<file>`` in the assets bucket, where ``model_version`` is the model's content
version (``IntentModel.version``, derived from its files' digests): the same bytes always land on the same keys, so
a retried or repeated publish overwrites nothing with anything different.

Postgres: one ``model_registry`` row per publication, ``version`` = 1, 2, 3… per tenant (allocated under the tenant
row's lock), ``uri`` = the S3 prefix, ``sha256`` = the sha256 of the artifact's ``manifest.json`` (which lists every
file's sha256, so it pins the whole artifact), ``metrics`` = the manifest's, ``status`` one of:

- ``active``: served. An ``outbox`` row (topic ``model.updated``) carrying the MODEL_UPDATED event is written in the
  same transaction that makes a row active (``publish`` as active, or ``promote``); ``drain_outbox`` publishes it to
  Redis pub/sub ``<prefix>:model-updated`` and marks it published only after PUBLISH returned, so a Redis outage
  delays the event and loses nothing.
- ``candidate``: registered and uploaded, never served nor announced; waiting for LEARN's holdout gate.
- ``rejected``: a candidate the gate refused (``reject``); ``metrics.gate`` holds the reason. Never served nor
  announced, and never promoted later.

Only active rows are read by ``latest``, ``active`` and ``latest_all``: what the service loads.

The base model is published under the reserved tenant slug ``base`` (``BASE_TENANT``): S3 ``models/base/…``, a
``tenants`` row ``base``, registry rows like any tenant's. A tenant with no active row of its own is served the base.

``fetch`` downloads into a local cache, ``<cache>/<tenant>/<model_version>/``: the row's uri must be exactly
``s3://<assets bucket>/models/<its tenant>/<its model_version>/``, the manifest must hash to the registry's sha256
and every file to its manifest sha256, else ``ModelIntegrityError`` and nothing is kept. Files are also kept by
sha256 in ``<cache>/blobs/`` and hard-linked, so the encoder (most of an artifact's bytes, the same in every model on
one base encoder) is downloaded once per machine. ``load`` fetches and opens a model; when a local copy fails its
integrity check (a damaged disk, a file edited by hand) that copy and the damaged blobs it linked are deleted and
the model is downloaded once more before the artifact is refused.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import TypeVar

from sqlalchemy import Engine, func, select, update
from sqlalchemy.dialects.postgresql import distinct_on
from sqlalchemy.dialects.postgresql import insert as pg_insert

from astra import s3 as s3_lib
from astra.core.intent.store import BASE_TENANT, ModelIntegrityError, file_sha256
from astra.db.schema import model_registry, outbox, tenants
from astra.tenancy import MODEL_STORE_ROOT, validate_model_owner

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
TOPIC = "model.updated"
EVENT = "MODEL_UPDATED"
ACTIVE = "active"
CANDIDATE = "candidate"
REJECTED = "rejected"
CHANNEL = "model-updated"
_HEX = frozenset("0123456789abcdef")
T = TypeVar("T")


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
    metrics: dict  # the manifest's, and once gated the holdout gate's under "gate"
    status: str = ACTIVE

    def event(self, published_at: str) -> dict:
        return {"event": EVENT, "tenant": self.tenant, "model_version": self.model_version, "uri": self.uri,
                "sha256": self.sha256, "published_at": published_at}


class RegistryError(ValueError):
    """A registry change that is not allowed (or a row that does not exist); the message says which."""


def _check_gate(gate_metrics: object) -> None:
    if not isinstance(gate_metrics, dict):
        raise RegistryError(f"the gate's metrics are a JSON object, not a {type(gate_metrics).__name__}")


def _row(tenant: str, registry_version: int):
    """The query of one registry row of the tenant."""
    validate_model_owner(tenant)
    if isinstance(registry_version, bool) or not isinstance(registry_version, int) or registry_version < 1:
        raise RegistryError(f"registry version {registry_version!r} is not a positive integer")
    return select(model_registry).where(model_registry.c.tenant_id == tenant,
                                        model_registry.c.version == registry_version)


def model_prefix(tenant: str, model_version: str) -> str:
    return f"{MODEL_STORE_ROOT}/{tenant}/{model_version}/"


def _check_version(model_version: str) -> str:
    if not (isinstance(model_version, str) and 8 <= len(model_version) <= 64 and set(model_version) <= _HEX):
        raise ModelIntegrityError(f"invalid model version {model_version!r}: expected lowercase hex")
    return model_version


def _check_sha256(sha: object, name: str) -> str:
    # The digest names a file under blobs/: anything but 64 lowercase hex could name another path.
    if not (isinstance(sha, str) and len(sha) == 64 and set(sha) <= _HEX):
        raise ModelIntegrityError(f"manifest gives {name!r} an invalid sha256 {sha!r}: expected 64 lowercase hex")
    return sha


def _record_prefix(record: ModelRecord, bucket: str) -> str:
    """The key prefix of a registry row: its uri must be exactly its own tenant's and version's prefix, so a row of
    one tenant cannot point at another tenant's model (or anything else in the bucket)."""
    prefix = model_prefix(record.tenant, _check_version(record.model_version))
    if record.uri != f"s3://{bucket}/{prefix}":
        raise ModelIntegrityError(f"uri {record.uri!r} is not s3://{bucket}/{prefix}")
    return prefix


def _holds(directory: Path, record: ModelRecord) -> bool:
    """Whether `directory` is a copy of the record's model (its manifest hashes to the registry's sha256)."""
    try:
        return file_sha256(directory / MANIFEST) == record.sha256
    except OSError:
        return False


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
        """Upload a saved model directory, then register it (and queue its MODEL_UPDATED when it is active, in the
        same transaction). A candidate waits for ``promote`` or ``reject``."""
        validate_model_owner(tenant)
        if status not in (ACTIVE, CANDIDATE):
            raise RegistryError(f"a model is published as {ACTIVE!r} or {CANDIDATE!r}, not {status!r} "
                                "(a candidate is rejected with its reason by reject())")
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
            record = ModelRecord(tenant, (last or 0) + 1, model_version, uri, sha, metrics, status)
            conn.execute(model_registry.insert().values(
                tenant_id=tenant, version=record.registry_version, uri=uri, sha256=sha,
                metrics={**metrics, "model_version": model_version}, status=status))
            if status == ACTIVE:
                conn.execute(outbox.insert().values(tenant_id=tenant, topic=TOPIC, payload=record.event(published_at)))
        return record

    # ---- the holdout gate's decision ----------------------------------------------------------------------------

    def promote(self, tenant: str, registry_version: int, gate_metrics: dict) -> ModelRecord:
        """A candidate made active, with the gate's metrics, and its MODEL_UPDATED queued: one transaction, under
        the row's lock. Promoting an active row again changes and queues nothing (a retried run); a rejected row is
        never promoted (RegistryError)."""
        _check_gate(gate_metrics)
        with self.engine.begin() as conn:
            row = self._locked(conn, tenant, registry_version)
            if row["status"] == ACTIVE:
                return self._record(row)
            if row["status"] != CANDIDATE:
                raise RegistryError(f"model {tenant} v{registry_version} is {row['status']}: only a candidate is "
                                    "promoted")
            record = self._set_status(conn, row, ACTIVE, gate_metrics)
            conn.execute(outbox.insert().values(tenant_id=tenant, topic=TOPIC,
                                                payload=record.event(datetime.now(UTC).isoformat())))
        return record

    def reject(self, tenant: str, registry_version: int, reason: str, gate_metrics: dict) -> ModelRecord:
        """A candidate marked rejected, never served nor announced; ``metrics.gate`` keeps the gate's metrics and
        the reason (what the UI shows). Rejecting a rejected row again changes nothing (the first verdict stays);
        an active row cannot be rejected: it was announced (RegistryError)."""
        if not isinstance(reason, str) or not reason.strip():
            raise RegistryError("a rejection needs a reason")
        _check_gate(gate_metrics)
        with self.engine.begin() as conn:
            row = self._locked(conn, tenant, registry_version)
            if row["status"] == REJECTED:
                return self._record(row)
            if row["status"] != CANDIDATE:
                raise RegistryError(f"model {tenant} v{registry_version} is {row['status']}: only a candidate is "
                                    "rejected")
            return self._set_status(conn, row, REJECTED, {**gate_metrics, "reason": reason})

    def record(self, tenant: str, registry_version: int) -> ModelRecord | None:
        """One registry row of the tenant, whatever its status; None when it has no such row."""
        with self.engine.connect() as conn:
            row = conn.execute(_row(tenant, registry_version)).mappings().first()
        return self._record(row) if row is not None else None

    @staticmethod
    def _locked(conn, tenant: str, registry_version: int):
        row = conn.execute(_row(tenant, registry_version).with_for_update()).mappings().first()
        if row is None:
            raise RegistryError(f"tenant {tenant!r} has no model v{registry_version}")
        return row

    def _set_status(self, conn, row, status: str, gate: dict) -> ModelRecord:
        metrics = {**(row["metrics"] or {}), "gate": gate}
        conn.execute(update(model_registry).where(model_registry.c.tenant_id == row["tenant_id"],
                                                  model_registry.c.version == row["version"])
                     .values(status=status, metrics=metrics))
        return self._record({**row, "status": status, "metrics": metrics})

    # ---- read ---------------------------------------------------------------------------------------------------

    def latest(self, tenant: str) -> ModelRecord | None:
        """The tenant's newest active model, or None (the caller then uses the base model's)."""
        return next(iter(self.active(tenant, limit=1)), None)

    def active(self, tenant: str, limit: int) -> list[ModelRecord]:
        """The tenant's active models, newest first, at most `limit` (the service falls back along them when the
        newest is refused)."""
        validate_model_owner(tenant)
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(model_registry).where(model_registry.c.tenant_id == tenant, model_registry.c.status == ACTIVE)
                .order_by(model_registry.c.version.desc()).limit(limit)).mappings().all()
        return [self._record(row) for row in rows]

    def latest_all(self) -> dict[str, ModelRecord]:
        """Every tenant's newest active model (one query: the service's reconcile)."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(model_registry).ext(distinct_on(model_registry.c.tenant_id))
                .where(model_registry.c.status == ACTIVE)
                .order_by(model_registry.c.tenant_id, model_registry.c.version.desc())).mappings().all()
        return {row["tenant_id"]: self._record(row) for row in rows}

    @staticmethod
    def _record(row) -> ModelRecord:
        metrics = dict(row["metrics"] or {})
        model_version = metrics.pop("model_version", None) or row["uri"].rstrip("/").rsplit("/", 1)[-1]
        return ModelRecord(row["tenant_id"], row["version"], model_version, row["uri"], row["sha256"], metrics,
                           row["status"])

    # ---- fetch --------------------------------------------------------------------------------------------------

    def fetch(self, record: ModelRecord) -> Path:
        """The model's directory in the local cache, downloaded when absent. ModelIntegrityError when the row's uri
        is not its own prefix, the manifest does not hash to the registry's sha256 or a file not to its manifest's.
        A copy already cached is trusted when its manifest hashes right: its files are verified by whoever opens
        it (`load`)."""
        return self._fetch(record)[0]

    def load(self, record: ModelRecord, opener: Callable[[Path], T]) -> T:
        """`opener` applied to the fetched model directory (it verifies the files against the manifest). When a copy
        that used local bytes fails with ModelIntegrityError, that copy and the damaged blobs it linked are deleted
        and the model is downloaded once more: only bytes fresh from S3 get an artifact refused."""
        path, reused = self._fetch(record)
        try:
            return opener(path)
        except ModelIntegrityError as exc:
            if not reused:
                raise
            log.warning("local copy of model %s v%d (%s) is damaged (%s): deleted, downloading it again",
                        record.tenant, record.registry_version, record.model_version, exc)
            self._discard(path)
        return opener(self._fetch(record)[0])

    def _fetch(self, record: ModelRecord) -> tuple[Path, bool]:
        """(the model directory, whether it holds bytes that were on this disk before this call)."""
        validate_model_owner(record.tenant)
        prefix = _record_prefix(record, self.bucket)
        target = self.cache_dir / record.tenant / record.model_version
        if _holds(target, record):
            return target, True
        staging = Path(tempfile.mkdtemp(prefix=".fetch-", dir=self._ensure_dir(self.cache_dir)))
        try:
            files = self._download_manifest(prefix, staging, record)
            reused = False
            for name, sha in sorted(files.items()):
                reused |= self._download_file(prefix, name, sha, staging)
            target.parent.mkdir(parents=True, exist_ok=True)
            # Another fetch sharing this cache (a reloader still stopping, a second process) may have put the same
            # model in place meanwhile: keep that copy, someone may be opening it.
            if not _holds(target, record):
                if target.exists():
                    shutil.rmtree(target)  # a stale or damaged copy under the same version
                try:
                    os.replace(staging, target)
                except OSError:
                    if not _holds(target, record):
                        raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return target, reused

    def _discard(self, directory: Path) -> None:
        """Delete a local model copy and every blob it lists whose bytes no longer match their sha256 (an intact
        blob, such as the shared encoder, stays)."""
        try:
            files = json.loads((directory / MANIFEST).read_bytes()).get("files") or {}
        except (OSError, ValueError, AttributeError):
            files = {}  # the copy's manifest is unreadable: the copy goes, blobs are checked when next linked
        for name, sha in files.items():
            try:
                blob = self.cache_dir / "blobs" / _check_sha256(sha, name)
            except ModelIntegrityError:
                continue
            if blob.is_file() and file_sha256(blob) != sha:
                blob.unlink()
        shutil.rmtree(directory, ignore_errors=True)

    def _download_manifest(self, prefix: str, staging: Path, record: ModelRecord) -> dict:
        data = self.s3.get_object(Bucket=self.bucket, Key=prefix + MANIFEST)["Body"].read()
        if hashlib.sha256(data).hexdigest() != record.sha256:
            raise ModelIntegrityError(f"{record.uri}{MANIFEST} does not match the registry's sha256 "
                                      f"(model {record.tenant} v{record.registry_version})")
        try:
            manifest = json.loads(data)
        except ValueError as exc:
            raise ModelIntegrityError(f"{record.uri}{MANIFEST} is not JSON: {exc}") from None
        files = manifest.get("files") if isinstance(manifest, dict) else None
        if not isinstance(files, dict):
            raise ModelIntegrityError(f"{record.uri}{MANIFEST} lists no files")
        if manifest.get("version") != record.model_version:
            raise ModelIntegrityError(f"{record.uri}: manifest version {manifest.get('version')!r} is not "
                                      f"{record.model_version!r}")
        (staging / MANIFEST).write_bytes(data)
        return files

    def _download_file(self, prefix: str, name: str, sha: str, staging: Path) -> bool:
        """Link the file into `staging`, downloading its blob when absent. True when the blob was already here."""
        parts = PurePosixPath(name).parts
        if PurePosixPath(name).is_absolute() or ".." in parts or not parts:
            raise ModelIntegrityError(f"manifest names a file outside the model: {name!r}")
        blob = self._ensure_dir(self.cache_dir / "blobs") / _check_sha256(sha, name)
        reused = blob.is_file()
        if not reused:
            self._download_blob(prefix + name, sha, blob)
        path = staging / name
        path.parent.mkdir(parents=True, exist_ok=True)
        os.link(blob, path)
        return reused

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


__all__ = ["ACTIVE", "BASE_TENANT", "CANDIDATE", "REJECTED", "ModelRecord", "ModelStore", "RegistryError", "channel",
           "drain_outbox", "model_prefix"]
