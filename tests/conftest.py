"""Fixtures over the machine's real services (ARCHITECTURE §6, "tests and CI" column).

- Postgres: 127.0.0.1:5432 (trust auth); a throw-away database per test run, migrated to head.
- Redis: 127.0.0.1:6379; a key prefix per run; only keys under it are ever deleted.
- S3: moto's standalone server in a subprocess on a free loopback port.
Override the service addresses with ASTRA_TEST_PG_ADMIN_URL / ASTRA_TEST_REDIS_URL.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis

from astra.settings import Settings
from astra.stack import processes

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATASETS = ROOT.parent / "shared" / "datasets"
PG_ADMIN_URL = os.environ.get("ASTRA_TEST_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("ASTRA_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
RUN_ID = uuid.uuid4().hex[:10]


@contextlib.contextmanager
def migrated_database(name: str) -> Iterator[str]:
    """A fresh database `name`, migrated to head, as a URL; dropped on exit."""
    from astra.db import upgrade
    from astra.db.engine import make_engine

    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    try:
        upgrade(url)
        yield url
    finally:
        make_engine.cache_clear()
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A fresh database for this test run, migrated to head; dropped at the end."""
    with migrated_database(f"astra_test_{RUN_ID}") as url:
        yield url


@pytest.fixture(scope="session")
def redis_prefix() -> str:
    prefix = f"astratest-{RUN_ID}"
    yield prefix
    client = redis.Redis.from_url(REDIS_URL)
    for key in client.scan_iter(match=f"{prefix}:*", count=500):
        client.delete(key)


@pytest.fixture(scope="session")
def redis_url() -> str:
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1)
    client.ping()  # fail loudly: the machine's Redis is part of the test stack
    return REDIS_URL


@pytest.fixture(scope="session")
def moto_endpoint(tmp_path_factory) -> str:
    """moto's standalone S3 server, a real HTTP server in its own process."""
    port = processes.free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    proc = processes.spawn_detached(processes.python_module("moto.server", "-H", "127.0.0.1", "-p", str(port)), log)
    try:
        processes.wait_for_port("127.0.0.1", port, proc=proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        processes.stop_tree(proc.pid, timeout=5)
        proc.wait()


@pytest.fixture(scope="session")
def aws_credentials():
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "astra-test")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "astra-test")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")


@pytest.fixture(scope="session")
def settings(pg_url, redis_url, redis_prefix, moto_endpoint, aws_credentials) -> Settings:
    return Settings(
        database_url=pg_url,
        redis_url=redis_url,
        redis_prefix=redis_prefix,
        s3_endpoint_url=moto_endpoint,
        uploads_bucket=f"astra-uploads-{RUN_ID}",
        assets_bucket=f"astra-assets-{RUN_ID}",
        guard_bucket=f"astra-guard-{RUN_ID}",
        guard_retention_days=30,
    )


@pytest.fixture(scope="session")
def s3(settings):
    from astra import s3 as s3_lib

    client = s3_lib.client(settings)
    s3_lib.ensure_buckets(client, settings)
    return client


@pytest.fixture
def own_buckets(settings, s3) -> Settings:
    """The settings with fresh buckets of this test's own (assets versioned, guard under Object Lock)."""
    import dataclasses

    from astra import s3 as s3_lib

    suffix = uuid.uuid4().hex[:8]
    own = dataclasses.replace(settings, uploads_bucket=f"own-up-{suffix}", assets_bucket=f"own-assets-{suffix}",
                              guard_bucket=f"own-guard-{suffix}")
    s3_lib.ensure_buckets(s3, own)
    return own


@pytest.fixture(scope="session")
def registry_server(pg_url, settings):
    """INGEST's dedup registry: a real gRPC server on a free loopback port (threads of this process),
    requiring a service token that this run puts in ASTRA_SERVICE_TOKEN, as `astra stack up` does,
    so clients built from the environment present it."""
    import secrets

    from astra.ingest.registry import AssetRegistry, registry_engine
    from astra.ingest.registry_server import serve
    from astra.settings import ENV

    saved = os.environ.get(ENV["service_token"])
    token = os.environ[ENV["service_token"]] = secrets.token_urlsafe(32)
    engine = registry_engine(pg_url, pool_size=4)
    srv = serve("127.0.0.1:0", AssetRegistry(engine, settings.assets_bucket), token=token)
    yield srv
    srv.graceful_stop(0)
    engine.dispose()
    if saved is None:
        os.environ.pop(ENV["service_token"], None)
    else:
        os.environ[ENV["service_token"]] = saved


@pytest.fixture(scope="session")
def stack_env(settings, s3, registry_server) -> dict[str, str]:
    """The variables `astra stack up` would write, pointing at the test services."""
    return {
        "ASTRA_DATABASE_URL": settings.database_url,
        "ASTRA_REDIS_URL": settings.redis_url,
        "ASTRA_REDIS_PREFIX": settings.redis_prefix,
        "ASTRA_S3_ENDPOINT_URL": settings.s3_endpoint_url,
        "ASTRA_UPLOADS_BUCKET": settings.uploads_bucket,
        "ASTRA_ASSETS_BUCKET": settings.assets_bucket,
        "ASTRA_GUARD_BUCKET": settings.guard_bucket,
        "ASTRA_GUARD_RETENTION_DAYS": str(settings.guard_retention_days),
        "ASTRA_INGEST_TARGET": registry_server.target,
        "ASTRA_SERVICE_TOKEN": os.environ["ASTRA_SERVICE_TOKEN"],
        "AWS_ACCESS_KEY_ID": os.environ["AWS_ACCESS_KEY_ID"],
        "AWS_SECRET_ACCESS_KEY": os.environ["AWS_SECRET_ACCESS_KEY"],
        "AWS_DEFAULT_REGION": os.environ["AWS_DEFAULT_REGION"],
    }


@pytest.fixture
def use_stack_env(stack_env, monkeypatch):
    for k, v in stack_env.items():
        monkeypatch.setenv(k, v)
    return stack_env


@pytest.fixture
def tenant() -> str:
    """A tenant slug unique to the test, so tests never see each other's rows."""
    return f"t-{uuid.uuid4().hex[:12]}"


def run_cli(*args: str, env: dict[str, str] | None = None, input: str | None = None, timeout: float = 120):
    """Run the real `astra` console script in a subprocess, as a user would."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [str(Path(os.sys.executable).with_name("astra")), *args],
        capture_output=True, text=True, env=full_env, input=input, timeout=timeout, cwd=ROOT,
    )
