"""IntentService over gRPC: `astra.core.v1.IntentService/Classify` with `grpc.health.v1` (ARCHITECTURE §5).

Served by `astra serve core`, authenticated and bound like the ingest registry (`astra.grpc_auth`: service token on
every call but health, loopback plaintext, token AND TLS beyond loopback).

Models (`ModelCache`): a tenant's model is loaded on its first Classify (its newest active `model_registry` row,
else the base model, tenant `base`), fetched through `ModelStore` (manifest sha256 against the registry, every file
against the manifest; a damaged local copy is downloaded again). Own models are kept in an LRU bounded by
`max_tenants` and `max_bytes` (their footprints); tenants the base serves are remembered apart, so they never evict
an own model. A request takes the tenant's `Loaded` once and classifies with that object, so a swap never shows it
half a model; the answer carries the version it used. Models on one base encoder share the encoder in memory;
`Loaded.footprint` is what a model adds (its arrays).

Hot reload (`Reloader`, one thread): subscribed to `<prefix>:model-updated`; a MODEL_UPDATED for a tenant known
here (or for `base`) makes it read the tenant's newest active row (the registry, not the event, says what serves:
a late or replayed event cannot roll a model back), fetch, load, swap (a tenant the base served is loaded on its
next use instead). It also reconciles every tenant known here with the registry at start, after every
(re)subscription and every `reconcile_s` seconds (pub/sub drops what is sent while nobody listens), and drains the
outbox (a publisher that could not reach Redis left its event there).

Failures: an artifact that is bad (wrong hash, unknown format, unloadable) is refused for good and logged once per
sha256; the newest older active model that loads serves instead (or the one in place keeps serving). An artifact
that could not be fetched (S3, network, disk) is tried again by the next reconcile or request, after a backoff
(1 s doubling to 30 s, per sha256); meanwhile a Classify that needs it answers UNAVAILABLE.
"""

from __future__ import annotations

import collections
import json
import logging
import threading
import time
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path

import botocore.exceptions
import grpc
import numpy as np
import psycopg
import sqlalchemy.exc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from astra.core.intent.model import IntentModel, PackedTexts
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
DEFAULT_MAX_MODEL_BYTES = 1 << 30  # the CLINC150 base model holds ~24 MB (n-gram weights 20 MB, vocabulary)
DEFAULT_MAX_BASE_SERVED = 10_000  # model-less tenants remembered (a name each): beyond, one registry query on next use
DEFAULT_RECONCILE_S = 30.0
FALLBACK_MODELS = 10  # active models of a tenant tried, newest first, when the newest is refused
RETRY_FIRST_S, RETRY_MAX_S = 1.0, 30.0  # backoff between attempts to fetch an artifact that failed to arrive
MAX_UTTERANCES = 2000
MAX_TEXT_CHARS = TRANSCRIPT_MAX_TEXT_CHARS  # one cap: every utterance a transcript may hold can be classified
# Characters per call: what intent_output's batches may hold at most (256 utterances x MAX_TEXT_CHARS), so no batch
# of a valid transcript is refused; it takes ~3.4 s on the base model, below 2,000 short utterances' ~5.3 s.
MAX_REQUEST_CHARS = 1_280_000
_DB_ERRORS = (psycopg.OperationalError, sqlalchemy.exc.OperationalError, sqlalchemy.exc.TimeoutError)
# Getting the artifact failed, not the artifact: S3 or the network (botocore), the disk (OSError: full, I/O), memory.
_FETCH_ERRORS = (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError, OSError, MemoryError)


class ModelUnavailable(RuntimeError):
    """No model can serve the tenant: none published (not even the base), or every artifact it has was refused."""


class ModelFetchFailed(ModelUnavailable):
    """The model could not be fetched or opened this time (S3, the network, the disk): tried again after a backoff,
    so the caller should retry later."""


@dataclass(frozen=True)
class Loaded:
    record: ModelRecord
    model: IntentModel
    footprint: int  # bytes the model holds beyond the shared encoder


@dataclass(frozen=True)
class _Backoff:
    attempts: int
    retry_at: float  # time.monotonic()
    why: str


def footprint(model: IntentModel) -> int:
    """Bytes the model holds in this process: its head's arrays, n-gram vocabulary and idf, and the training set
    unless memory-mapped from its files (a loaded model's: page cache, read only by an update). The encoder is
    shared, not counted."""
    head, training = model.head, model.training
    arrays = [head.mean, head.scale, head.dense, head.sparse, head.bias, training.embeddings, training.weights]
    text = 0
    if head.ngrams is not None:
        vocabulary, idf = head.ngrams.state()
        arrays.append(idf)
        text += sum(len(k) + 80 for k in vocabulary)  # a str key and its int in a dict: ~80 bytes beyond the chars
    if isinstance(training.texts, PackedTexts):
        arrays += [training.texts.utf8, training.texts.ends]
    else:
        text += sum(len(t) + 50 for t in training.texts)
    return sum(0 if isinstance(a, np.memmap) else int(a.nbytes) for a in arrays) + text


class ModelCache:
    """tenant -> the model serving it, loaded on first use; the base model always held.

    Tenants with a model of their own are kept in an LRU bounded by `max_tenants` and by `max_bytes` (the sum of
    their footprints; the base is not counted). Tenants served by the base are remembered apart (an LRU of names,
    `max_base_served`), so a flood of model-less tenants never evicts a real model."""

    def __init__(self, store: ModelStore, max_tenants: int = DEFAULT_MAX_TENANTS,
                 max_bytes: int = DEFAULT_MAX_MODEL_BYTES, max_base_served: int = DEFAULT_MAX_BASE_SERVED,
                 on_base: Callable[[Loaded | None], None] | None = None):
        self.store = store
        self.max_tenants, self.max_bytes, self.max_base_served = max_tenants, max_bytes, max_base_served
        self._on_base = on_base  # told every time the base model changes (health follows it)
        self._own: collections.OrderedDict[str, Loaded] = collections.OrderedDict()
        self._base_served: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._base: Loaded | None = None
        self._base_problem: tuple[type[ModelUnavailable], str] | None = None  # why no base serves although published
        self._lock = threading.Lock()  # guards the dicts; held for microseconds
        self._load_lock = threading.Lock()  # one download/load at a time
        self._refused: dict[str, str] = {}  # sha256 -> why: a bad artifact is tried (and logged) once
        self._backoff: dict[str, _Backoff] = {}  # sha256 -> when an artifact that failed to arrive is tried again

    def get(self, tenant: str) -> Loaded:
        """The model serving `tenant` now, loaded on first use. ModelUnavailable when none can serve it
        (ModelFetchFailed: not this time, try later)."""
        if tenant != BASE_TENANT:
            own, known = self._lookup(tenant)
            if own is not None:
                return own
            if not known:
                with self._load_lock:
                    own, known = self._lookup(tenant)
                    if not known:
                        own = self._resolve(tenant, self.store.latest(tenant), None)
                        self._place(tenant, own)
                if own is not None:
                    return own
        with self._lock:
            if self._base is None:
                kind, why = self._base_problem or (ModelUnavailable, "no base model is published (publish one for "
                                                                     f"tenant '{BASE_TENANT}')")
                raise kind(why)
            return self._base

    def _lookup(self, tenant: str) -> tuple[Loaded | None, bool]:
        """(the tenant's own model, whether the tenant is known here at all); a hit counts as a use."""
        with self._lock:
            if tenant in self._own:
                self._own.move_to_end(tenant)
                return self._own[tenant], True
            if tenant in self._base_served:
                self._base_served.move_to_end(tenant)
                return None, True
            return None, False

    def _resolve(self, tenant: str, newest: ModelRecord | None, current: Loaded | None) -> Loaded | None:
        """What should serve the tenant: its newest active model that loads, `current` when that is the one, None
        when it has none. A refused artifact is passed over for the next older active one (logged); a failure to
        fetch stops the walk (ModelFetchFailed): the newest may arrive in a moment. ModelUnavailable when every
        active model is refused."""
        if newest is None:
            return None
        refused = []
        for record in self._candidates(tenant, newest):
            if current is not None and record.sha256 == current.record.sha256:
                return current
            try:
                loaded = self._load(record)
            except ModelFetchFailed:
                raise
            except ModelUnavailable as exc:
                refused.append(str(exc))
                continue
            if refused:
                log.warning("tenant %s: serving v%d (%s), its newest active model that loads (%d newer refused)",
                            tenant, record.registry_version, record.model_version, len(refused))
            return loaded
        raise ModelUnavailable(refused[0] if len(refused) == 1 else
                               f"every active model of tenant {tenant} was refused; newest: {refused[0]}")

    def _candidates(self, tenant: str, newest: ModelRecord):
        """`newest`, then (queried only when needed) the tenant's older active models, newest first."""
        yield newest
        yield from (record for record in self.store.active(tenant, FALLBACK_MODELS)
                    if record.registry_version < newest.registry_version)

    def _load(self, record: ModelRecord) -> Loaded:
        """The record's model, fetched and verified. ModelUnavailable when its artifact is refused (for good: it is
        not tried again), ModelFetchFailed when it could not be fetched or opened (tried again after a backoff)."""
        if record.sha256 in self._refused:
            raise ModelUnavailable(self._refused[record.sha256])
        backoff = self._backoff.get(record.sha256)
        if backoff is not None and time.monotonic() < backoff.retry_at:
            raise ModelFetchFailed(backoff.why)
        name = f"model {record.tenant} v{record.registry_version} ({record.model_version})"
        try:
            model = self.store.load(record, IntentModel.load)
        except _FETCH_ERRORS as exc:
            attempts = backoff.attempts + 1 if backoff is not None else 1
            delay = min(RETRY_FIRST_S * 2 ** (attempts - 1), RETRY_MAX_S)
            why = f"{name} could not be fetched: {_first_line(exc)}"
            self._backoff[record.sha256] = _Backoff(attempts, time.monotonic() + delay, why)
            log.warning("%s; tried again in %g s at the earliest", why, delay)
            raise ModelFetchFailed(why) from None
        except Exception as exc:  # noqa: BLE001 — anything else is the artifact itself (integrity, format)
            why = f"{name} refused: {_first_line(exc)}"
            self._refused[record.sha256] = why
            self._backoff.pop(record.sha256, None)
            log.error("%s; the model in place keeps serving", why)
            raise ModelUnavailable(why) from None
        self._backoff.pop(record.sha256, None)
        loaded = Loaded(record, model, footprint(model))
        log.info("%s loaded: %d bytes beyond the shared encoder", name, loaded.footprint)
        return loaded

    def _place(self, tenant: str, loaded: Loaded | None) -> None:
        """Make `loaded` serve `tenant` (None: the base serves it), then evict what the bounds no longer allow."""
        with self._lock:
            if tenant == BASE_TENANT:
                self._base = loaded
                self._base_problem = None
            elif loaded is None:
                self._own.pop(tenant, None)
                self._base_served[tenant] = None
                self._base_served.move_to_end(tenant)
                while len(self._base_served) > self.max_base_served:
                    self._base_served.popitem(last=False)
            else:
                self._base_served.pop(tenant, None)
                self._own[tenant] = loaded
                self._evict()
        if tenant == BASE_TENANT and self._on_base is not None:
            self._on_base(loaded)

    def _evict(self) -> None:
        """Drop least recently used own models while over `max_tenants` or `max_bytes` (the last one stays, even
        alone over `max_bytes`: it is in use). Caller holds `_lock`."""
        held = sum(loaded.footprint for loaded in self._own.values())
        while len(self._own) > self.max_tenants or (held > self.max_bytes and len(self._own) > 1):
            evicted, loaded = self._own.popitem(last=False)
            held -= loaded.footprint
            log.info("model of tenant %s evicted (%d bytes; cache holds %d models, %d bytes)", evicted,
                     loaded.footprint, len(self._own), held)

    # ---- reload -------------------------------------------------------------------------------------------------

    def refresh(self, tenant: str, newest: ModelRecord | None) -> bool:
        """Bring `tenant` (held here) to its newest active model that loads, `newest` being the registry's newest
        active row (None: it has none, the base serves it). True when what serves it changed."""
        with self._load_lock:
            with self._lock:
                current = self._base if tenant == BASE_TENANT else self._own.get(tenant)
                known = tenant == BASE_TENANT or tenant in self._own or tenant in self._base_served
            if not known or (current.record.sha256 if current else None) == (newest.sha256 if newest else None):
                if tenant == BASE_TENANT and newest is None:
                    with self._lock:
                        self._base_problem = None  # no base published (any more): nothing failed
                return False
            if tenant != BASE_TENANT and current is None:
                with self._lock:  # a model of its own now: loaded on its next use, not for a tenant maybe gone
                    self._base_served.pop(tenant, None)
                return True
            try:
                loaded = self._resolve(tenant, newest, current)
            except ModelUnavailable as exc:
                if tenant == BASE_TENANT and current is None:
                    with self._lock:
                        self._base_problem = (type(exc), str(exc))
                return False  # the model in place keeps serving
            if loaded is current:
                return False
            self._place(tenant, loaded)
            return True

    def tenants(self) -> list[str]:
        """Every tenant known here: with a model of its own, then served by the base."""
        with self._lock:
            return [*self._own, *self._base_served]

    def stats(self) -> dict:
        with self._lock:
            own_bytes = sum(loaded.footprint for loaded in self._own.values())
            return {"tenants": len(self._own) + len(self._base_served), "own_models": len(self._own),
                    "base_served": len(self._base_served), "own_bytes": own_bytes,
                    "bytes": own_bytes + (self._base.footprint if self._base else 0),
                    "base_version": self._base.model.version if self._base else None}

    def reconcile(self) -> int:
        """Bring the base and every tenant known here to the registry's newest active model. Returns changes made."""
        latest = self.store.latest_all()
        swaps = int(self.refresh(BASE_TENANT, latest.get(BASE_TENANT)))
        for tenant in self.tenants():
            swaps += self.refresh(tenant, latest.get(tenant))
        return swaps


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [repr(exc)])[0]


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
                if self._stop.is_set():
                    break  # a stopped server's reloader must not fetch into the cache its successor uses
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
        except ModelFetchFailed as exc:
            context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
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
    total = sum(len(u.text) for u in request.utterances)
    if total > MAX_REQUEST_CHARS:
        raise ValueError(f"too much text: {total} characters > {MAX_REQUEST_CHARS} per call")


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
          max_model_bytes: int = DEFAULT_MAX_MODEL_BYTES, reconcile_s: float = DEFAULT_RECONCILE_S) -> CoreServer:
    """Start IntentService and health on `target` (port 0: a free one). Without `redis_client` there is no hot
    reload (a test or a one-shot run); with it the reloader subscribes and reconciles before this returns.

    Health: the overall service ("") is SERVING once the server runs (what `astra up` waits for, a fresh stack
    having no base model yet); astra.core.v1.IntentService is SERVING only while a base model is loaded."""
    host, _ = split_target(target)
    credentials = server_credentials(tls or TlsFiles())
    check_exposure(host, token, tls=credentials is not None)
    health_servicer = health.HealthServicer()
    health_servicer.set(SERVICE_NAME, health_pb2.HealthCheckResponse.NOT_SERVING)

    def base_changed(loaded: Loaded | None) -> None:
        health_servicer.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING if loaded is not None
                            else health_pb2.HealthCheckResponse.NOT_SERVING)

    cache = ModelCache(store, max_tenants, max_model_bytes, on_base=base_changed)
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
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    try:
        port = _bind(server, join_target(*split_target(target)), credentials)
    except OSError:
        if reloader is not None:
            reloader.stop()
        raise
    server.start()
    health_servicer.set(health.OVERALL_HEALTH, health_pb2.HealthCheckResponse.SERVING)
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
