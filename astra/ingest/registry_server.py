"""The dedup registry over gRPC: `astra.ingest.v1.AssetRegistry/RegisterAssets` (ARCHITECTURE §5).

Served by `astra serve ingest`, with `grpc.health.v1` beside it (SERVING for "" and for
`astra.ingest.v1.AssetRegistry`). Graceful stop: health goes NOT_SERVING, the server stops
accepting calls, calls in flight finish within the grace period.

Status codes: INVALID_ARGUMENT for a malformed request (the message names each bad field);
UNAVAILABLE when Postgres cannot be reached (the orchestrator fails open on it); INTERNAL for
anything else. A call whose client has already gone (deadline passed, cancelled) is not run.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from concurrent import futures
from typing import Callable

import grpc
import psycopg
import sqlalchemy.exc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from astra.ingest.registry import AssetRegistry, Digest, InvalidRegistration, Outcome
from astra.protos import ingest_registry_pb2 as pb
from astra.protos import ingest_registry_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["AssetRegistry"].full_name  # astra.ingest.v1.AssetRegistry
DEFAULT_WORKERS = 8
DEFAULT_GRACE_S = 10.0
_OUTCOME = {Outcome.NEW: pb.AssetStatus.NEW, Outcome.DUPLICATE: pb.AssetStatus.DUPLICATE}


class AssetRegistryServicer(pb_grpc.AssetRegistryServicer):
    def __init__(self, registry: AssetRegistry, delay_s: float = 0.0):
        self.registry = registry
        self.delay_s = delay_s  # test hook: slow every call down by this much

    def RegisterAssets(self, request: pb.RegisterAssetsRequest, context: grpc.ServicerContext):  # noqa: N802
        if self.delay_s > 0:
            time.sleep(self.delay_s)
        if not context.is_active():  # the client gave up (deadline, cancel): it fails open anyway
            context.abort(grpc.StatusCode.CANCELLED, "client went away before the call ran")
        digests = [Digest(a.sha256, a.size, a.media_type, a.name) for a in request.assets]
        try:
            statuses = self.registry.register(request.tenant, digests)
        except InvalidRegistration as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except (psycopg.OperationalError, sqlalchemy.exc.OperationalError, sqlalchemy.exc.TimeoutError) as exc:
            log.warning("RegisterAssets: database unavailable: %s", str(exc).strip().splitlines()[0] if str(exc) else exc)
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

    def __init__(self, server: grpc.Server, health_servicer: health.HealthServicer, host: str, port: int):
        self._server = server
        self.health = health_servicer
        self.host = host
        self.port = port
        self._stopping = threading.Lock()

    @property
    def target(self) -> str:
        return f"{self.host}:{self.port}"

    def graceful_stop(self, grace_s: float = DEFAULT_GRACE_S, announce_s: float = 0.0) -> None:
        """NOT_SERVING, then (after `announce_s`, for health checkers to notice) stop accepting
        calls and wait for those in flight, at most `grace_s`. Idempotent; blocks until stopped."""
        with self._stopping:
            self.health.enter_graceful_shutdown()
            if announce_s > 0:
                time.sleep(announce_s)
            self._server.stop(grace_s).wait()

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
        return self._server.stop(grace)

    def wait_for_termination(self, timeout=None):
        return self._server.wait_for_termination(timeout)


def split_target(target: str) -> tuple[str, int]:
    host, sep, port = target.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"invalid target {target!r}: expected host:port, e.g. 127.0.0.1:50051")
    return host.strip("[]"), int(port)


def serve(target: str, registry: AssetRegistry, delay_s: float = 0.0, workers: int = DEFAULT_WORKERS) -> RegistryServer:
    """Start serving the registry and health on `target` (`host:port`; port 0 picks a free one).

    Returns the started server; its `.port` is the bound port. `workers` bounds the calls run at
    once: size the registry engine's pool to match.
    """
    host, _ = split_target(target)
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ingest-registry"),
        options=[("grpc.so_reuseport", 0)],  # a second server on a busy port must fail, not share it
    )
    pb_grpc.add_AssetRegistryServicer_to_server(AssetRegistryServicer(registry, delay_s), server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    try:
        port = server.add_insecure_port(target)
    except RuntimeError as exc:
        raise OSError(f"cannot listen on {target}: {exc}") from None
    if port == 0:
        raise OSError(f"cannot listen on {target}")
    server.start()
    for name in (health.OVERALL_HEALTH, SERVICE_NAME):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return RegistryServer(server, health_servicer, host, port)


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
