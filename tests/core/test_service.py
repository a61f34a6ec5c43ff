"""IntentService over the real services: gRPC on loopback, Postgres, Redis pub/sub, moto's S3 server."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
import redis
from grpc_health.v1 import health_pb2, health_pb2_grpc

from astra.core.core_client import IntentClient
from astra.core.intent.store import BASE_TENANT
from astra.core.model_store import ModelStore, drain_outbox
from astra.core.service import serve
from astra.db.engine import make_engine
from tests.conftest import ROOT
from tests.core.test_model_store import tiny_encoder, tiny_models  # noqa: F401 — fixtures

TOKEN = secrets.token_urlsafe(32)
TEXTS = ["translate good morning to spanish", "what's the weather like today"]

# Run in another process: classify in a loop, one JSON line per answer, until told version arrives + 1.5 s.
CLIENT = """
import json, sys, time
from astra.core.core_client import IntentClient
target, token, tenant, wanted = sys.argv[1:5]
client = IntentClient(target, token, deadline_s=5)
stop = time.time() + 30
while time.time() < stop:
    try:
        version = client.classify(tenant, ["transfer money to savings", "translate hi"]).model_version
        print(json.dumps({"t": time.time(), "v": version}), flush=True)
        if version == wanted:
            stop = min(stop, time.time() + 1.5)
    except Exception as exc:
        print(json.dumps({"t": time.time(), "error": repr(exc)}), flush=True)
"""


@pytest.fixture(scope="module")
def store(settings, s3, pg_url, tmp_path_factory) -> ModelStore:
    return ModelStore(make_engine(pg_url), s3, settings.assets_bucket, tmp_path_factory.mktemp("publisher-cache"))


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("service-cache")


@pytest.fixture(scope="module")
def base_model(store, tiny_models, pg_url, redis_url, redis_prefix):  # noqa: F811
    record = store.publish(BASE_TENANT, tiny_models[0][0])
    drain_outbox(make_engine(pg_url), redis.Redis.from_url(redis_url), redis_prefix)
    return record


def _start(settings, s3, pg_url, redis_url, redis_prefix, cache_dir, reconcile_s=3600.0):
    server_store = ModelStore(make_engine(pg_url), s3, settings.assets_bucket, cache_dir)
    return serve("127.0.0.1:0", server_store, redis.Redis.from_url(redis_url), redis_prefix, token=TOKEN,
                 reconcile_s=reconcile_s)


@pytest.fixture
def start(settings, s3, pg_url, redis_url, redis_prefix, cache_dir, base_model):
    servers = []

    def starter(**kwargs):
        servers.append(_start(settings, s3, pg_url, redis_url, redis_prefix, cache_dir, **kwargs))
        return servers[-1]

    yield starter
    for server in servers:
        server.stop(0)


def _publish(store, tenant, directory, pg_url, redis_url, redis_prefix, announce=True):
    record = store.publish(tenant, directory)
    if announce:
        drain_outbox(make_engine(pg_url), redis.Redis.from_url(redis_url), redis_prefix)
    return record


def _version_within(client, tenant, wanted, seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if client.classify(tenant, TEXTS).model_version == wanted:
            return True
        time.sleep(0.05)
    return False


def test_classify_requires_the_token_and_health_is_open(start, tenant):
    server = start()
    with pytest.raises(grpc.RpcError) as refused:
        IntentClient(server.target, token=None).classify(tenant, TEXTS)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.RpcError) as wrong:
        IntentClient(server.target, token="x" * 32).classify(tenant, TEXTS)
    assert wrong.value.code() == grpc.StatusCode.UNAUTHENTICATED
    answer = IntentClient(server.target, TOKEN).classify(tenant, TEXTS)
    assert [intent for intent, _ in answer.intents] == ["translate", "weather"]
    with grpc.insecure_channel(server.target) as channel:
        status = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="astra.core.v1.IntentService"), timeout=5).status
    assert status == health_pb2.HealthCheckResponse.SERVING


def test_a_tenant_without_a_model_gets_the_base_and_a_bad_tenant_is_refused(start, store, tenant):
    server = start()
    client = IntentClient(server.target, TOKEN)
    assert client.classify(tenant, TEXTS).model_version == store.latest(BASE_TENANT).model_version
    with pytest.raises(grpc.RpcError) as bad:
        client.classify("Not A Slug", TEXTS)
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert server.cache.stats()["own_models"] == 0 and server.cache.stats()["bytes"] > 0


def test_every_utterance_a_transcript_may_hold_is_classified_and_a_longer_one_refused(start, tenant):
    from astra.core.transcript import MAX_TEXT_CHARS

    client = IntentClient(start().target, TOKEN)
    longest = ("what is the weather " * MAX_TEXT_CHARS)[:MAX_TEXT_CHARS]
    assert len(client.classify(tenant, [longest]).intents) == 1
    with pytest.raises(grpc.RpcError) as refused:
        client.classify(tenant, [longest + "x"])
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT and str(MAX_TEXT_CHARS) in refused.value.details()


def test_hot_reload_while_another_process_classifies(start, store, tiny_models, tenant, pg_url, redis_url,  # noqa: F811
                                                     redis_prefix):
    (dir_a, model_a), (dir_b, model_b) = tiny_models[0], tiny_models[1]
    _publish(store, tenant, dir_a, pg_url, redis_url, redis_prefix)
    server = start()
    assert IntentClient(server.target, TOKEN).classify(tenant, TEXTS).model_version == model_a.version
    proc = subprocess.Popen([sys.executable, "-c", CLIENT, server.target, TOKEN, tenant, model_b.version],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        first = json.loads(proc.stdout.readline())  # the client is running before the publish
        assert first.get("v") == model_a.version, first
        _publish(store, tenant, dir_b, pg_url, redis_url, redis_prefix)
        published_at = time.time()
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    answers = [first] + [json.loads(line) for line in out.splitlines()]
    assert [a for a in answers if "error" in a] == [], err[-2000:]
    assert {a["v"] for a in answers} == {model_a.version, model_b.version}
    switched = min(a["t"] for a in answers if a["v"] == model_b.version)
    assert switched - published_at < 1.0
    assert all(a["v"] == model_b.version for a in answers if a["t"] >= switched)  # never back


def test_a_tampered_artifact_is_refused_and_the_old_model_keeps_serving(start, store, tiny_models, tenant,  # noqa: F811
                                                                        settings, s3, pg_url, redis_url, redis_prefix):
    (dir_a, model_a), (dir_b, _) = tiny_models[0], tiny_models[1]
    _publish(store, tenant, dir_a, pg_url, redis_url, redis_prefix)
    server = start()
    client = IntentClient(server.target, TOKEN)
    assert client.classify(tenant, TEXTS).model_version == model_a.version
    bad = _publish(store, tenant, dir_b, pg_url, redis_url, redis_prefix, announce=False)
    # The manifest (every file's sha256) no longer hashes to the registry's sha256. A damaged file is refused too
    # (test_model_store), unless the service already holds verified bytes of that sha256 in its blob cache.
    key = f"models/{tenant}/{bad.model_version}/manifest.json"
    manifest = json.loads(s3.get_object(Bucket=settings.assets_bucket, Key=key)["Body"].read())
    s3.put_object(Bucket=settings.assets_bucket, Key=key, Body=json.dumps({**manifest, "threshold": 0.0}).encode())
    drain_outbox(make_engine(pg_url), redis.Redis.from_url(redis_url), redis_prefix)
    assert not _version_within(client, tenant, bad.model_version, 2.0)
    assert client.classify(tenant, TEXTS).model_version == model_a.version
    assert "does not match the registry" in server.cache._refused[bad.sha256]


def test_an_unloadable_artifact_is_refused(start, store, tiny_models, tenant, tmp_path,  # noqa: F811
                                           pg_url, redis_url, redis_prefix):
    (dir_a, model_a), (dir_c, _) = tiny_models[0], tiny_models[2]
    _publish(store, tenant, dir_a, pg_url, redis_url, redis_prefix)
    server = start()
    client = IntentClient(server.target, TOKEN)
    assert client.classify(tenant, TEXTS).model_version == model_a.version
    unloadable = tmp_path / "unloadable"
    shutil.copytree(dir_c, unloadable)
    manifest = json.loads((unloadable / "manifest.json").read_text())
    (unloadable / "manifest.json").write_text(json.dumps({**manifest, "format": 99}))  # hashes fine, format unknown
    bad = _publish(store, tenant, unloadable, pg_url, redis_url, redis_prefix)
    assert not _version_within(client, tenant, bad.model_version, 2.0)
    assert "unknown model format" in server.cache._refused[bad.sha256]


def test_a_missed_event_is_caught_by_the_periodic_reconcile(start, store, tiny_models, tenant,  # noqa: F811
                                                            pg_url, redis_url, redis_prefix):
    (dir_a, _), (dir_b, model_b) = tiny_models[0], tiny_models[1]
    _publish(store, tenant, dir_a, pg_url, redis_url, redis_prefix)
    server = start(reconcile_s=1.0)
    client = IntentClient(server.target, TOKEN)
    client.classify(tenant, TEXTS)
    store.publish(tenant, dir_b)  # registered, never announced by the publisher
    assert _version_within(client, tenant, model_b.version, 5.0)


def test_reconcile_on_start_picks_up_a_base_published_while_down(start, store, tiny_models, tenant,  # noqa: F811
                                                                 pg_url, redis_url, redis_prefix):
    server = start()
    client = IntentClient(server.target, TOKEN)
    before = client.classify(tenant, TEXTS).model_version
    server.stop(0)
    directory, model = next((d, m) for d, m in tiny_models if m.version != before)
    _publish(store, BASE_TENANT, directory, pg_url, redis_url, redis_prefix)  # nobody listening
    restarted = start()
    assert restarted.cache.stats()["base_version"] == model.version  # loaded before the first call
    assert IntentClient(restarted.target, TOKEN).classify(tenant, TEXTS).model_version == model.version


def test_astra_serve_core_serves_and_refuses_to_start_without_a_token(stack_env, base_model, store, tenant, tmp_path):
    env = {**stack_env, "ASTRA_SERVICE_TOKEN": TOKEN, "ASTRA_STATE_DIR": str(tmp_path), "ASTRA_CORE_TARGET": ""}
    refused = subprocess.run([str(Path(sys.executable).with_name("astra")), "serve", "core", "--port", "0"],
                             env={**os.environ, **env, "ASTRA_SERVICE_TOKEN": ""}, capture_output=True, text=True,
                             timeout=120, cwd=ROOT)
    assert refused.returncode == 2 and "ASTRA_SERVICE_TOKEN is not set" in refused.stderr + refused.stdout
    proc = subprocess.Popen([str(Path(sys.executable).with_name("astra")), "serve", "core", "--port", "0"],
                            env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=ROOT)
    try:
        line = proc.stdout.readline()
        assert "serving on 127.0.0.1:" in line and "(plaintext)" in line, proc.stderr.read() if not line else line
        target = line.split("serving on ", 1)[1].split()[0]
        answer = IntentClient(target, TOKEN).classify(tenant, TEXTS)
        assert answer.model_version == store.latest(BASE_TENANT).model_version
        assert (tmp_path / "model-cache" / "base").is_dir()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        proc.kill()
