"""The dedup registry over gRPC: `astra.ingest.v1.AssetRegistry/RegisterAssets` (ARCHITECTURE §5).

Served by `astra serve ingest`, with `grpc.health.v1` beside it (SERVING for "" and for
`astra.ingest.v1.AssetRegistry`). With a service token every call but health must present it
(`astra.grpc_auth`), else UNAUTHENTICATED before the handler runs. With TLS files it serves TLS
(mTLS given a CA); beyond loopback it serves only with both the token and TLS. Graceful stop: health goes
NOT_SERVING, the server stops accepting calls, calls in flight finish within the grace period.

Status codes: INVALID_ARGUMENT for a malformed request (the message names each bad field);
UNAVAILABLE when Postgres cannot be reached (the orchestrator fails open on it); INTERNAL for
anything else. A call whose client has already gone (deadline passed, cancelled) is not run.
"""

from __future__ import annotations

import collections
import logging
import signal
import threading
import time
from collections.abc import Callable
from concurrent import futures

import grpc
import psycopg
import sqlalchemy.exc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from astra.grpc_auth import TlsFiles, check_exposure, join_target, server_credentials, server_interceptors, split_target
from astra.ingest.registry import (
    MAX_ASSETS_PER_REQUEST,
    AssetRegistry,
    Digest,
    InvalidRegistration,
    Outcome,
    Status,
    validate,
)
from astra.protos import ingest_registry_pb2 as pb
from astra.protos import ingest_registry_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["AssetRegistry"].full_name  # astra.ingest.v1.AssetRegistry
DEFAULT_WORKERS = 8
DEFAULT_LANES = 1
DEFAULT_GRACE_S = 10.0
_OUTCOME = {Outcome.NEW: pb.AssetStatus.NEW, Outcome.DUPLICATE: pb.AssetStatus.DUPLICATE}


class _Call:
    __slots__ = ("tenant", "digests", "context", "wake", "finished", "result", "error")

    def __init__(self, tenant: str, digests: list[Digest], context: grpc.ServicerContext | None):
        self.tenant, self.digests, self.context = tenant, digests, context
        self.wake = threading.Event()  # set when finished, or when promoted to run the queue
        self.finished = False
        self.result: list[Status] | None = None
        self.error: BaseException | None = None


class ClientGone(Exception):
    """The call's client went away before its batch ran, so it was not run. `code` is what the
    call ends with: DEADLINE_EXCEEDED when its deadline passed (the server can notice that a
    moment before the client's own timer fires, and the client fails open only on
    DEADLINE_EXCEEDED and UNAVAILABLE), CANCELLED when the client cancelled it."""

    def __init__(self, code: grpc.StatusCode = grpc.StatusCode.CANCELLED):
        super().__init__(f"client went away before the call ran ({code.name})")
        self.code = code


def _client_gone(context: grpc.ServicerContext | None) -> ClientGone | None:
    if context is None:
        return None
    remaining = context.time_remaining()
    if remaining is not None and remaining <= 0:
        return ClientGone(grpc.StatusCode.DEADLINE_EXCEEDED)
    if not context.is_active():
        return ClientGone(grpc.StatusCode.CANCELLED)
    return None


class Batcher:
    """Runs concurrent calls as few registry statements (opportunistic batching, flat combining).

    At most `lanes` statements run at once, each on its own pooled connection. A call that
    finds a lane free runs at once on its own thread, together with whatever calls are queued
    then; a call that finds every lane busy queues, and the next free lane runs it in a batch
    with the others queued. Nothing waits for a batch to fill: batches grow only while the
    database is busy, which is when they help (one statement, one commit, one foreign-key check
    of each tenant row for many calls). No thread handoff at low load.
    """

    def __init__(self, registry: AssetRegistry, lanes: int = 1, max_digests: int = 2000):
        if lanes < 1:
            raise ValueError("lanes must be >= 1")
        self.registry = registry
        self.max_digests = max(max_digests, MAX_ASSETS_PER_REQUEST)
        self._queue: collections.deque[_Call] = collections.deque()
        self._lock = threading.Lock()
        self._lanes = threading.Semaphore(lanes)

    def register(self, tenant: str, digests: list[Digest], context: grpc.ServicerContext | None = None) -> list[Status]:
        call = _Call(tenant, digests, context)
        with self._lock:
            self._queue.append(call)
        while not call.finished:
            # Enqueue before trying a lane, release a lane before looking at the queue: either
            # this call gets a lane, or the lane's holder sees it queued and promotes it.
            if self._lanes.acquire(blocking=False):
                try:
                    while not call.finished and (batch := self._take()):
                        self._run(batch)
                finally:
                    self._lanes.release()
                    self._promote_next()
            if not call.finished:
                call.wake.wait()
                call.wake.clear()
        if call.error is not None:
            raise call.error
        return call.result

    def close(self) -> None:
        """Nothing to stop (no threads of its own); kept so servers can close what they own."""

    def _take(self) -> list[_Call]:
        with self._lock:
            batch, size = [], 0
            while self._queue and (not batch or size + len(self._queue[0].digests) <= self.max_digests):
                call = self._queue.popleft()
                batch.append(call)
                size += len(call.digests)
            return batch

    def _promote_next(self) -> None:
        with self._lock:
            head = self._queue[0] if self._queue else None
        if head is not None:
            head.wake.set()

    def _run(self, batch: list[_Call]) -> None:
        live = []
        for call in batch:
            if (gone := _client_gone(call.context)) is not None:
                self._finish(call, error=gone)
            else:
                live.append(call)
        if not live:
            return
        try:
            results = self.registry.register_validated([(c.tenant, c.digests) for c in live])
        except BaseException as exc:  # noqa: BLE001 — handed to every caller of the batch
            for call in live:
                self._finish(call, error=exc)
            if not isinstance(exc, Exception):
                raise
            return
        for call, result in zip(live, results, strict=True):
            self._finish(call, result=result)

    @staticmethod
    def _finish(call: _Call, result: list[Status] | None = None, error: BaseException | None = None) -> None:
        call.result, call.error = result, error
        call.finished = True
        call.wake.set()


class AssetRegistryServicer(pb_grpc.AssetRegistryServicer):
    def __init__(self, registry: AssetRegistry, delay_s: float = 0.0, batcher: Batcher | None = None):
        self.registry = registry
        self.batcher = batcher
        self.delay_s = delay_s  # test hook: slow every call down by this much

    def RegisterAssets(self, request: pb.RegisterAssetsRequest, context: grpc.ServicerContext):  # noqa: N802
        if self.delay_s > 0:
            time.sleep(self.delay_s)
        if (gone := _client_gone(context)) is not None:  # the client gave up: it failed open already
            context.abort(gone.code, str(gone))
        digests = [Digest(a.sha256, a.size, a.media_type, a.name) for a in request.assets]
        try:
            validate(request.tenant, digests)
            if self.batcher is not None:
                statuses = self.batcher.register(request.tenant, digests, context)
            else:
                statuses = self.registry.register_validated([(request.tenant, digests)])[0]
        except InvalidRegistration as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except ClientGone as gone:
            context.abort(gone.code, str(gone))
        except (psycopg.OperationalError, sqlalchemy.exc.OperationalError, sqlalchemy.exc.TimeoutError) as exc:
            log.warning("RegisterAssets: database unavailable: %s", (str(exc).strip().splitlines() or [repr(exc)])[0])
            context.abort(grpc.StatusCode.UNAVAILABLE, "asset registry database unavailable")
        except Exception:
            log.exception("RegisterAssets failed")
            context.abort(grpc.StatusCode.INTERNAL, "asset registry internal error")
        return pb.RegisterAssetsResponse(
            statuses=[pb.AssetStatus(sha256=s.sha256, status=_OUTCOME[s.outcome], canonical_uri=s.canonical_uri)
                      for s in statuses]
        )


class RegistryServer(grpc.Server):
    """A started grpc.Server plus what a graceful stop needs: the bound port and the health servicer."""

    def __init__(self, server: grpc.Server, health_servicer: health.HealthServicer, batcher: Batcher | None, host: str,
                 port: int, tls: bool = False):
        self._server = server
        self.health = health_servicer
        self.batcher = batcher
        self.host = host
        self.port = port
        self.tls = tls
        self._stopping = threading.Lock()

    @property
    def target(self) -> str:
        return join_target(self.host, self.port)

    def graceful_stop(self, grace_s: float = DEFAULT_GRACE_S, announce_s: float = 0.0) -> None:
        """NOT_SERVING, then (after `announce_s`, for health checkers to notice) stop accepting
        calls and wait for those in flight, at most `grace_s`. Idempotent; blocks until stopped."""
        with self._stopping:
            self.health.enter_graceful_shutdown()
            if announce_s > 0:
                time.sleep(announce_s)
            self._server.stop(grace_s).wait()
            if self.batcher is not None:
                self.batcher.close()

    # grpc.Server, delegated
    def add_generic_rpc_handlers(self, generic_rpc_handlers):
        return self._server.add_generic_rpc_handlers(generic_rpc_handlers)

    def add_registered_method_handlers(self, service_name, method_handlers):
        return self._server.add_registered_method_handlers(service_name, method_handlers)

    def add_insecure_port(self, address: str) -> int:
        return self._server.add_insecure_port(address)

    def add_secure_port(self, address: str, server_credentials) -> int:
        return self._server.add_secure_port(address, server_credentials)

    def start(self) -> None:
        self._server.start()

    def stop(self, grace):
        stopped = self._server.stop(grace)
        if self.batcher is not None:
            threading.Thread(target=lambda: (stopped.wait(), self.batcher.close()), daemon=True).start()
        return stopped

    def wait_for_termination(self, timeout=None):
        return self._server.wait_for_termination(timeout)


def serve(
    target: str,
    registry: AssetRegistry,
    delay_s: float = 0.0,
    workers: int = DEFAULT_WORKERS,
    lanes: int = DEFAULT_LANES,
    token: str | None = None,
    tls: TlsFiles | None = None,
) -> RegistryServer:
    """Start serving the registry and health on `target` (`host:port`; port 0 picks a free one).

    Returns the started server; its `.port` is the bound port. `workers` gRPC threads take
    calls; `lanes` threads run them against Postgres in batches (one connection each: the
    registry engine's pool needs at least `lanes`). `tls` with a certificate serves TLS. Beyond
    loopback it serves only with `token` and TLS (`astra serve ingest` also refuses a loopback
    bind without a token unless told `--insecure-no-auth`).
    """
    host, _ = split_target(target)
    credentials = server_credentials(tls or TlsFiles())
    check_exposure(host, token, tls=credentials is not None)
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ingest-registry"),
        interceptors=server_interceptors(token),
        options=[("grpc.so_reuseport", 0)],  # a second server on a busy port must fail, not share it
    )
    batcher = Batcher(registry, lanes) if lanes > 0 else None
    pb_grpc.add_AssetRegistryServicer_to_server(AssetRegistryServicer(registry, delay_s, batcher), server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    port = _bind(server, join_target(*split_target(target)), credentials, batcher)
    server.start()
    for name in (health.OVERALL_HEALTH, SERVICE_NAME):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return RegistryServer(server, health_servicer, batcher, host, port, tls=credentials is not None)


def _bind(server: grpc.Server, target: str, credentials: grpc.ServerCredentials | None, batcher: Batcher | None) -> int:
    try:
        port = (server.add_insecure_port(target) if credentials is None
                else server.add_secure_port(target, credentials))
        if port == 0:
            raise RuntimeError("no address bound")
    except RuntimeError as exc:
        if batcher is not None:
            batcher.close()
        raise OSError(f"cannot listen on {target}: {exc}") from None
    return port


def run_forever(
    server: RegistryServer, grace_s: float = DEFAULT_GRACE_S, on_stop: Callable[[str], None] | None = None
) -> None:
    """Block until SIGTERM or SIGINT, then stop gracefully. Call from the main thread."""
    stop = threading.Event()
    received: list[str] = []

    def handler(signum, _frame):
        received.append(signal.Signals(signum).name)
        stop.set()

    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        while not stop.wait(1.0):
            pass
        if on_stop is not None:
            on_stop(received[0])
        server.graceful_stop(grace_s)
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
