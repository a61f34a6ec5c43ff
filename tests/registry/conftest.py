"""Fixtures for INGEST's dedup registry: a registry over the test database, real gRPC servers
on free loopback ports (in-process threads, or `astra serve ingest` in a subprocess), all
requiring the service token TOKEN, which every test here also has in ASTRA_SERVICE_TOKEN."""

from __future__ import annotations

import hashlib
import os
import secrets
import subprocess
import sys
import uuid
from pathlib import Path

import grpc
import pytest

from astra.grpc_auth import bearer_metadata
from astra.ingest.registry import AssetRegistry, Digest, registry_engine
from astra.ingest.registry_server import serve
from astra.protos import ingest_registry_pb2 as pb
from astra.protos import ingest_registry_pb2_grpc as pb_grpc
from astra.settings import ENV

ROOT = Path(__file__).resolve().parents[2]
TOKEN = secrets.token_urlsafe(32)
AUTH = bearer_metadata(TOKEN)


def new_digest(name: str = "", media_type: str = "application/octet-stream") -> Digest:
    data = uuid.uuid4().bytes
    return Digest(hashlib.sha256(data).hexdigest(), len(data), media_type, name)


def request(tenant: str, *digests: Digest) -> pb.RegisterAssetsRequest:
    return pb.RegisterAssetsRequest(
        tenant=tenant,
        assets=[pb.AssetDigest(sha256=d.sha256, size=d.size, media_type=d.media_type, name=d.name) for d in digests],
    )


class _Metadata(grpc.UnaryUnaryClientInterceptor):
    def __init__(self, metadata):
        self.metadata = tuple(metadata)

    def intercept_unary_unary(self, continuation, details, request):
        return continuation(details._replace(metadata=(*(details.metadata or ()), *self.metadata)), request)


def stub(target: str, metadata=AUTH) -> pb_grpc.AssetRegistryStub:
    """A raw stub whose every call carries `metadata` (the service token unless told otherwise)."""
    return pb_grpc.AssetRegistryStub(grpc.intercept_channel(grpc.insecure_channel(target), _Metadata(metadata)))


def serve_ingest_argv(*args: str) -> list[str]:
    """`astra serve ingest …` once the lead has wired serve_cmd into astra.cli.main; until then
    the same typer app, run the same way in its own interpreter."""
    from astra.cli import main

    if any(g.name == "serve" for g in main.app.registered_groups):
        return [str(Path(sys.executable).with_name("astra")), "serve", "ingest", *args]
    return [sys.executable, "-c", "import sys; from astra.cli.serve_cmd import app; app(sys.argv[1:])", "ingest", *args]


def spawn_serve_ingest(env: dict[str, str], *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        serve_ingest_argv(*args), env={**os.environ, **env}, cwd=ROOT, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
    )


@pytest.fixture(autouse=True)
def service_token_env(monkeypatch) -> str:
    monkeypatch.setenv(ENV["service_token"], TOKEN)
    return TOKEN


@pytest.fixture(scope="session")
def registry_engine_(pg_url):
    engine = registry_engine(pg_url, pool_size=8)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def registry(registry_engine_, settings) -> AssetRegistry:
    return AssetRegistry(registry_engine_, settings.assets_bucket)


@pytest.fixture
def server(registry):
    """A real gRPC server on a free loopback port, in this process's threads."""
    srv = serve("127.0.0.1:0", registry, token=TOKEN)
    yield srv
    srv.graceful_stop(0)


@pytest.fixture
def ingest_env(settings) -> dict[str, str]:
    return {"ASTRA_DATABASE_URL": settings.database_url, "ASTRA_ASSETS_BUCKET": settings.assets_bucket,
            "ASTRA_SERVICE_TOKEN": TOKEN}
