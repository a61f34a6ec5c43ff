"""`astra serve ingest [--host H] [--port N]`: INGEST's dedup registry over gRPC (ARCHITECTURE §5).

Binds ASTRA_INGEST_TARGET (default 127.0.0.1:50051); --host/--port override its parts. Needs
ASTRA_DATABASE_URL; canonical URIs name ASTRA_ASSETS_BUCKET. Every call but health must carry
ASTRA_SERVICE_TOKEN (`astra.grpc_auth`): without it the command refuses to start (exit 2) unless
given --insecure-no-auth, which serves loopback only. ASTRA_GRPC_TLS_CERT and ASTRA_GRPC_TLS_KEY
(PEM files) make it serve TLS, and ASTRA_GRPC_TLS_CA also require client certificates (mTLS);
beyond loopback it refuses to start (exit 2) without both the token and TLS. Prints one line on stdout once
serving (with the bound port: `--port 0` picks a free one) and runs until SIGTERM or SIGINT,
then stops gracefully (health NOT_SERVING, calls in flight drained) and exits 0.
ASTRA_INGEST_DELAY_MS slows every call down (a test hook; never set it in production).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer

from astra.cli.common import console, errors, fail
from astra.grpc_auth import (
    INSECURE_FLAG,
    ServiceAuthError,
    TlsFiles,
    check_serving_auth,
    join_target,
    server_credentials,
    split_target,
)
from astra.settings import ENV, Settings

DEFAULT_INGEST_TARGET = "127.0.0.1:50051"

app = typer.Typer(help="Run ASTRA's gRPC services.", no_args_is_help=True)


@app.callback()
def main() -> None:
    """Run ASTRA's gRPC services in the foreground (stop with SIGTERM or Ctrl-C)."""


@app.command()
def ingest(
    host: str = typer.Option(
        None, "--host", help="address to bind (default: the host of ASTRA_INGEST_TARGET, else 127.0.0.1)"),
    port: int = typer.Option(
        None, "--port", min=0, max=65535,
        help="port to bind, 0 for a free one (default: the port of ASTRA_INGEST_TARGET, else 50051)"),
    workers: int = typer.Option(8, "--workers", min=1, help="gRPC threads: calls taken at once"),
    lanes: int = typer.Option(
        1, "--lanes", min=0,
        help="calls run against Postgres at once, each batching the calls queued behind it "
             "(0: no batching, one connection per worker)"),
    grace: float = typer.Option(10.0, "--grace", min=0, help="seconds given to calls in flight on shutdown"),
    insecure_no_auth: bool = typer.Option(
        False, INSECURE_FLAG,
        help=f"serve without {ENV['service_token']} (a local dev run; loopback binds only)"),
) -> None:
    """Serve astra.ingest.v1.AssetRegistry (the per-tenant asset dedup registry) and grpc.health.v1."""
    with errors():
        from astra.ingest.registry import AssetRegistry, registry_engine
        from astra.ingest.registry_server import serve

        settings = Settings.from_env()
        tls = TlsFiles(settings.grpc_tls_cert, settings.grpc_tls_key, settings.grpc_tls_ca)
        target = _bind_target(settings, tls, host, port, insecure_no_auth)
        delay_s = _test_delay_s()
        engine = registry_engine(settings.require("database_url"), pool_size=lanes or workers)
        registry = AssetRegistry(engine, settings.assets_bucket)
        server = serve(target, registry, delay_s=delay_s, workers=workers, lanes=lanes, token=settings.service_token,
                       tls=tls)
        try:
            extra = f" (test delay {delay_s * 1000:g} ms per call)" if delay_s > 0 else ""
            _serve_in_foreground(server, "astra ingest registry", settings, tls, grace, extra)
        finally:
            server.stop(0)
            engine.dispose()


@app.command()
def core(
    host: str = typer.Option(
        None, "--host", help="address to bind (default: the host of ASTRA_CORE_TARGET, else 127.0.0.1)"),
    port: int = typer.Option(
        None, "--port", min=0, max=65535,
        help="port to bind, 0 for a free one (default: the port of ASTRA_CORE_TARGET, else 50052)"),
    workers: int = typer.Option(4, "--workers", min=1, help="gRPC threads: calls taken at once"),
    max_tenants: int = typer.Option(
        64, "--max-tenants", min=1, help="tenants whose own models are kept loaded (LRU; tenants the base model "
                                         "serves are not counted)"),
    max_model_bytes: int = typer.Option(
        1 << 30, "--max-model-bytes", min=1,
        help="bytes the tenants' own models may hold beyond the shared encoder (LRU; the base model not counted)"),
    reconcile: float = typer.Option(30.0, "--reconcile", min=0.1, help="seconds between reconciles with the registry"),
    cache_dir: Path = typer.Option(
        None, "--cache-dir", help="verified model downloads (default: <state dir>/model-cache)"),
    grace: float = typer.Option(10.0, "--grace", min=0, help="seconds given to calls in flight on shutdown"),
    insecure_no_auth: bool = typer.Option(
        False, INSECURE_FLAG,
        help=f"serve without {ENV['service_token']} (a local dev run; loopback binds only)"),
) -> None:
    """Serve astra.core.v1.IntentService (per-tenant intent models, hot-reloaded on MODEL_UPDATED) and health.

    Binds ASTRA_CORE_TARGET (default 127.0.0.1:50052) with the same token, TLS and loopback rules as `ingest`;
    needs ASTRA_DATABASE_URL, ASTRA_REDIS_URL and the assets bucket (models/<tenant>/<version>/)."""
    with errors():
        import redis

        from astra import s3 as s3_lib
        from astra.core.core_client import DEFAULT_CORE_TARGET
        from astra.core.model_store import ModelStore
        from astra.core.service import default_cache_dir, serve
        from astra.db.engine import make_engine
        from astra.stack.stack import state_dir

        settings = Settings.from_env()
        tls = TlsFiles(settings.grpc_tls_cert, settings.grpc_tls_key, settings.grpc_tls_ca)
        target = _bind_target(settings, tls, host, port, insecure_no_auth, settings.core_target or DEFAULT_CORE_TARGET)
        store = ModelStore(make_engine(settings.require("database_url")), s3_lib.client(settings),
                           settings.assets_bucket, cache_dir or default_cache_dir(state_dir()))
        redis_client = redis.Redis.from_url(settings.require("redis_url"), socket_connect_timeout=2)
        server = serve(target, store, redis_client, settings.redis_prefix, token=settings.service_token, tls=tls,
                       workers=workers, max_tenants=max_tenants, max_model_bytes=max_model_bytes,
                       reconcile_s=reconcile)
        try:
            _serve_in_foreground(server, "astra core intent service", settings, tls, grace)
        finally:
            server.stop(0)


def _serve_in_foreground(server, name: str, settings: Settings, tls: TlsFiles, grace: float, extra: str = "") -> None:
    """Announce the service (how it authenticates and encrypts), serve until a signal, then drain."""
    from astra.ingest.registry_server import run_forever

    note = "" if settings.service_token else f" WITHOUT AUTHENTICATION ({INSECURE_FLAG})"
    note += (" (mTLS)" if tls.ca else " (TLS)") if server.tls else " (plaintext)"
    # Plain stdout, flushed: supervisors and tests read this line (and the port) from a pipe.
    sys.stdout.write(f"{name} serving on {server.target} (pid {os.getpid()}){note}{extra}\n")
    sys.stdout.flush()
    run_forever(server, grace_s=grace, on_stop=lambda sig: console.print(
        f"{sig}: stopping, draining calls in flight (<= {grace:g} s)", markup=False))
    console.print(f"{name} stopped", markup=False)


def _bind_target(settings: Settings, tls: TlsFiles, host: str | None, port: int | None, insecure_no_auth: bool,
                 configured: str | None = None) -> str:
    """`host:port` to bind, once the authentication policy allows serving there (else exit 2)."""
    env_host, env_port = split_target(configured or settings.ingest_target or DEFAULT_INGEST_TARGET)
    host = (host or env_host).strip("[]")  # `::1` and `[::1]` alike
    try:
        check_serving_auth(host, settings.service_token, insecure_no_auth, tls=server_credentials(tls) is not None)
    except ServiceAuthError as exc:
        raise fail(str(exc), 2) from None
    return join_target(host, env_port if port is None else port)


def _test_delay_s() -> float:
    delay_ms = os.environ.get(ENV["ingest_delay_ms"]) or "0"
    try:
        return float(delay_ms) / 1000
    except ValueError:
        raise ValueError(f"{ENV['ingest_delay_ms']} must be a number of milliseconds, got {delay_ms!r}") from None
