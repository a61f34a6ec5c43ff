"""IntentService over gRPC: `astra.core.v1.IntentService/Classify` with `grpc.health.v1` (ARCHITECTURE §5).

Served by `astra serve core`, authenticated and bound like the ingest registry (`astra.grpc_auth`: service token on
every call but health, loopback plaintext, token AND TLS beyond loopback).

Models (`ModelCache`): a tenant's model is loaded on its first Classify (its newest active `model_registry` row,
else the base model, tenant `base`), fetched through `ModelStore` (manifest sha256 against the registry, every file
against the manifest) and kept in a bounded LRU (`max_tenants`). A request takes the tenant's `Loaded` once and
classifies with that object, so a swap never shows it half a model; the answer carries the version it used.
Models on one base encoder share the encoder in memory; `Loaded.footprint` is what a model adds (its arrays).

Hot reload (`Reloader`, one thread): subscribed to `<prefix>:model-updated`; a MODEL_UPDATED for a tenant in the
cache (or for `base`) makes it read the tenant's newest active row (the registry, not the event, says what serves:
a late or replayed event cannot roll a model back), fetch, load, swap. It also reconciles every tenant in the cache
with the registry at start, after every (re)subscription and every `reconcile_s` seconds (pub/sub drops what is
sent while nobody listens), and drains the outbox (a publisher that could not reach Redis left its event there).
A bad artifact (wrong hash, unloadable) is refused and logged once per sha256; the model in place keeps serving.
"""

from __future__ import annotations

import collections
import json
import logging
import threading
import time
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path

import grpc
import psycopg
import sqlalchemy.exc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from astra.core.intent.model import IntentModel
from astra.core.intent.store import BASE_TENANT
from astra.core.model_store import ModelRecord, ModelStore, channel, drain_outbox
from astra.core.transcript import MAX_TEXT_CHARS as TRANSCRIPT_MAX_TEXT_CHARS
from astra.grpc_auth import TlsFiles, check_exposure, join_target, server_credentials, server_interceptors, split_target
from astra.ingest.registry_server import RegistryServer
from astra.protos import core_intent_pb2 as pb
from astra.protos import core_intent_pb2_grpc as pb_grpc
from astra.tenancy import InvalidKey, validate_model_owner, validate_slug

log = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["IntentService"].full_name  # astra.core.v1.IntentService
DEFAULT_WORKERS = 4
DEFAULT_MAX_TENANTS = 64
DEFAULT_RECONCILE_S = 30.0
MAX_UTTERANCES = 2000
MAX_TEXT_CHARS = TRANSCRIPT_MAX_TEXT_CHARS  # one cap: every utterance a transcript may hold can be classified
_DB_ERRORS = (psycopg.OperationalError, sqlalchemy.exc.OperationalError, sqlalchemy.exc.TimeoutError)


class ModelUnavailable(RuntimeError):
    """No model can serve the tenant: none published (not even the base), or its artifact was refused."""


@dataclass(frozen=True)
class Loaded:
    record: ModelRecord
    model: IntentModel
    footprint: int  # bytes the model holds beyond the shared encoder


def footprint(model: IntentModel) -> int:
    """Bytes of the model's own arrays (head, training set, n-gram idf); the encoder is shared, not counted."""
    head, training = model.head, model.training
    arrays = [head.mean, head.scale, head.dense, head.sparse, head.bias, training.embeddings, training.weights]
    if head.ngrams is not None:
        vocabulary, idf = head.ngrams.state()
        arrays.append(idf)
        text = sum(len(k) + 80 for k in vocabulary)  # a str key and its int in a dict: ~80 bytes beyond the chars
    else:
        text = 0
    text += sum(len(t) + 50 for t in training.texts)
    return int(sum(a.nbytes for a in arrays)) + text


class ModelCache:
    """tenant -> the model serving it, loaded on first use, LRU-bounded; the base model always held."""

    def __init__(self, store: ModelStore, max_tenants: int = DEFAULT_MAX_TENANTS):
        self.store = store
        self.max_tenants = max_tenants
        self._entries: collections.OrderedDict[str, Loaded | None] = collections.OrderedDict()  # None: the base
        self._base: Loaded | None = None
        self._lock = threading.Lock()  # guards the dict; held for microseconds
        self._load_lock = threading.Lock()  # one download/load at a time
        self._refused: dict[str, str] = {}  # sha256 -> why, so a bad artifact is tried (and logged) once

    def get(self, tenant: str) -> Loaded:
        with self._lock:
            if tenant in self._entries:
                self._entries.move_to_end(tenant)
                return self._serving(tenant)
        with self._load_lock:
            if tenant not in self._entries:
                self._admit(tenant, self._load(self.store.latest(tenant)) if tenant != BASE_TENANT else None)
        with self._lock:
            return self._serving(tenant)

    def _serving(self, tenant: str) -> Loaded:
        loaded = self._entries.get(tenant) or self._base
        if loaded is None:
            raise ModelUnavailable("no base model is published (publish one for tenant 'base')")
        return loaded

    def _admit(self, tenant: str, loaded: Loaded | None) -> None:
        with self._lock:
            self._entries[tenant] = loaded
            self._entries.move_to_end(tenant)
            while len(self._entries) > self.max_tenants:
                evicted, _ = self._entries.popitem(last=False)
                log.info("model of tenant %s evicted (cache holds %d tenants)", evicted, self.max_tenants)

    def _load(self, record: ModelRecord | None) -> Loaded | None:
        """The record's model, fetched and verified; None for no record. ModelUnavailable when refused."""
        if record is None:
            return None
        if record.sha256 in self._refused:
            raise ModelUnavailable(self._refused[record.sha256])
        try:
            model = IntentModel.load(self.store.fetch(record))
        except Exception as exc:  # noqa: BLE001 — any failure to fetch or load refuses this artifact
            if isinstance(exc, _DB_ERRORS):
                raise
            why = f"model {record.tenant} v{record.registry_version} ({record.model_version}) refused: {exc}"
            self._refused[record.sha256] = why
            log.error("%s; the model in place keeps serving", why)
            raise ModelUnavailable(why) from None
        loaded = Loaded(record, model, footprint(model))
        log.info("model %s v%d (%s) loaded: %d bytes beyond the shared encoder", record.tenant,
                 record.registry_version, record.model_version, loaded.footprint)
        return loaded

    # ---- reload -------------------------------------------------------------------------------------------------

    def refresh(self, tenant: str, record: ModelRecord | None) -> bool:
        """Serve `record` for `tenant` (None: the base) if it is not what serves it now. True when swapped."""
        with self._load_lock:
            current = self._base if tenant == BASE_TENANT else self._entries.get(tenant)
            if tenant != BASE_TENANT and tenant not in self._entries:
                return False  # not in use here: loaded on first use
            if (current.record.sha256 if current else None) == (record.sha256 if record else None):
                return False
            try:
                loaded = self._load(record)
            except ModelUnavailable:
                return False
            with self._lock:
                if tenant == BASE_TENANT:
                    self._base = loaded
                elif tenant in self._entries:
                    self._entries[tenant] = loaded
            return True

    def tenants(self) -> list[str]:
        with self._lock:
            return list(self._entries)

    def stats(self) -> dict:
        with self._lock:
            own = [e for e in self._entries.values() if e is not None]
            return {"tenants": len(self._entries), "own_models": len(own),
                    "bytes": sum(e.footprint for e in own) + (self._base.footprint if self._base else 0),
                    "base_version": self._base.model.version if self._base else None}

    def reconcile(self) -> int:
        """Bring the base and every cached tenant to the registry's newest active model. Returns swaps made."""
        latest = self.store.latest_all()
        swaps = int(self.refresh(BASE_TENANT, latest.get(BASE_TENANT)))
        for tenant in self.tenants():
            if tenant != BASE_TENANT:
                swaps += self.refresh(tenant, latest.get(tenant))
        return swaps


class Reloader(threading.Thread):
    """Listens for MODEL_UPDATED, reconciles periodically; never raises (errors are logged and retried)."""

    def __init__(self, cache: ModelCache, redis_client, prefix: str, reconcile_s: float = DEFAULT_RECONCILE_S):
        super().__init__(name="core-model-reloader", daemon=True)
        self.cache, self.redis, self.prefix, self.reconcile_s = cache, redis_client, prefix, reconcile_s
        self._stop = threading.Event()
        self.subscribed = threading.Event()

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        while not self._stop.is_set():
            try:
                self._listen()
            except Exception as exc:  # noqa: BLE001 — Redis gone: reconcile from Postgres, retry the subscription
                self.subscribed.clear()
                log.warning("model-updated subscription lost (%s); retrying", exc)
                self._tick()
                self._stop.wait(1.0)

    def _listen(self) -> None:
        pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
        try:
            pubsub.subscribe(channel(self.prefix))
            self._tick()  # whatever was sent before this subscription
            self.subscribed.set()
            due = time.monotonic() + self.reconcile_s
            while not self._stop.is_set():
                message = pubsub.get_message(timeout=0.5)
                if message is not None and message.get("type") == "message":
                    self._on_event(message["data"])
                if time.monotonic() >= due:
                    self._tick()
                    due = time.monotonic() + self.reconcile_s
        finally:
            pubsub.close()

    def _on_event(self, data: bytes | str) -> None:
        try:
            event = json.loads(data)
            tenant = validate_model_owner(event["tenant"]) if event.get("event") == "MODEL_UPDATED" else None
        except (ValueError, KeyError, TypeError, InvalidKey) as exc:
            log.warning("ignored a malformed model-updated message: %s", exc)
            return
        if tenant is not None:
            try:
                if self.cache.refresh(tenant, self.cache.store.latest(tenant)):
                    log.info("hot reload: tenant %s now serves %s", tenant, event.get("model_version"))
            except Exception:  # noqa: BLE001 — the next reconcile retries
                log.exception("hot reload of tenant %s failed", tenant)

    def _tick(self) -> None:
        try:
            self.cache.reconcile()
        except Exception:  # noqa: BLE001 — the model in place keeps serving
            log.exception("reconcile with model_registry failed")
        try:
            drain_outbox(self.cache.store.engine, self.redis, self.prefix)
        except Exception as exc:  # noqa: BLE001 — events stay queued
            log.warning("outbox not drained: %s", exc)


class IntentServicer(pb_grpc.IntentServiceServicer):
    def __init__(self, cache: ModelCache):
        self.cache = cache

    def Classify(self, request: pb.ClassifyRequest, context: grpc.ServicerContext):  # noqa: N802
        try:
            validate_slug(request.tenant)
            _check_size(request)
            loaded = self.cache.get(request.tenant)  # this object serves the whole request, whatever swaps meanwhile
            predictions = loaded.model.classify([u.text for u in request.utterances])
        except (InvalidKey, ValueError) as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except ModelUnavailable as exc:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        except _DB_ERRORS as exc:
            log.warning("Classify: model registry unavailable: %s", (str(exc).strip().splitlines() or [repr(exc)])[0])
            context.abort(grpc.StatusCode.UNAVAILABLE, "model registry unavailable")
        except Exception:
            log.exception("Classify failed")
            context.abort(grpc.StatusCode.INTERNAL, "intent service internal error")
        return pb.ClassifyResponse(
            intents=[pb.Intent(utterance_id=u.id, intent=p.intent, confidence=p.confidence, domain=p.domain or "",
                               oos=p.oos)
                     for u, p in zip(request.utterances, predictions, strict=True)],
            model_version=loaded.model.version)


def _check_size(request: pb.ClassifyRequest) -> None:
    if len(request.utterances) > MAX_UTTERANCES:
        raise ValueError(f"too many utterances: {len(request.utterances)} > {MAX_UTTERANCES} per call")
    long = [u.id or str(k) for k, u in enumerate(request.utterances) if len(u.text) > MAX_TEXT_CHARS]
    if long:
        raise ValueError(f"utterances over {MAX_TEXT_CHARS} characters: {', '.join(long[:5])}")


class CoreServer(RegistryServer):
    """The started server, its health, and the reloader stopped with it."""

    def __init__(self, server, health_servicer, host, port, tls, cache: ModelCache, reloader: Reloader | None):
        super().__init__(server, health_servicer, None, host, port, tls=tls)
        self.cache, self.reloader = cache, reloader

    def graceful_stop(self, grace_s: float = 10.0, announce_s: float = 0.0) -> None:
        super().graceful_stop(grace_s, announce_s)
        self._stop_reloader()

    def stop(self, grace):
        self._stop_reloader()
        return super().stop(grace)

    def _stop_reloader(self) -> None:
        if self.reloader is not None:
            self.reloader.stop()


def serve(target: str, store: ModelStore, redis_client=None, prefix: str = "astra", *, token: str | None = None,
          tls: TlsFiles | None = None, workers: int = DEFAULT_WORKERS, max_tenants: int = DEFAULT_MAX_TENANTS,
          reconcile_s: float = DEFAULT_RECONCILE_S) -> CoreServer:
    """Start IntentService and health on `target` (port 0: a free one). Without `redis_client` there is no hot
    reload (a test or a one-shot run); with it the reloader subscribes and reconciles before this returns."""
    host, _ = split_target(target)
    credentials = server_credentials(tls or TlsFiles())
    check_exposure(host, token, tls=credentials is not None)
    cache = ModelCache(store, max_tenants)
    reloader = Reloader(cache, redis_client, prefix, reconcile_s) if redis_client is not None else None
    if reloader is not None:
        reloader.start()
        reloader.subscribed.wait(10.0)  # and reconciled: the base model is loaded before the first call
    else:
        cache.reconcile()
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="core"),
        interceptors=server_interceptors(token), options=[("grpc.so_reuseport", 0)])
    pb_grpc.add_IntentServiceServicer_to_server(IntentServicer(cache), server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    try:
        port = _bind(server, join_target(*split_target(target)), credentials)
    except OSError:
        if reloader is not None:
            reloader.stop()
        raise
    server.start()
    for name in (health.OVERALL_HEALTH, SERVICE_NAME):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return CoreServer(server, health_servicer, host, port, credentials is not None, cache, reloader)


def _bind(server: grpc.Server, target: str, credentials) -> int:
    try:
        port = server.add_insecure_port(target) if credentials is None else server.add_secure_port(target, credentials)
        if port == 0:
            raise RuntimeError("no address bound")
    except RuntimeError as exc:
        raise OSError(f"cannot listen on {target}: {exc}") from None
    return port


def default_cache_dir(state_dir: Path) -> Path:
    return state_dir / "model-cache"
