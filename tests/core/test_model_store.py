"""The model store over the real services: S3 (moto server), Postgres, Redis pub/sub."""

from __future__ import annotations

import json
import time

import pytest
import redis
from sqlalchemy import select

from astra.core.intent.data import DEFAULT_DATASET, Example
from astra.core.intent.encoder import Encoder, packaged_minilm
from astra.core.intent.finetune import TorchEncoder, export
from astra.core.intent.model import IntentModel
from astra.core.intent.store import BASE_TENANT, ModelIntegrityError
from astra.core.model_store import ModelStore, channel, drain_outbox, model_prefix
from astra.db.engine import make_engine
from astra.db.schema import model_registry, outbox
from tests.conftest import run_cli

INTENTS = ("translate", "transfer", "weather")


def tiny_examples(per_intent: int, intents=INTENTS, offset: int = 0) -> list[Example]:
    data = json.loads(DEFAULT_DATASET.read_text())
    rows = {i: [t for t, label in data["train"] if label == i] for i in intents}
    return [Example(t, i) for i in intents for t in rows[i][offset:offset + per_intent]]


@pytest.fixture(scope="session")
def tiny_encoder(tmp_path_factory) -> Encoder:
    """The packaged MiniLM cut to one layer and exported as served (int8 ONNX): real weights, a fraction of the cost."""
    return export(TorchEncoder.load(packaged_minilm(), layers=1), tmp_path_factory.mktemp("enc") / "base-encoder")


@pytest.fixture(scope="session")
def tiny_models(tiny_encoder, tmp_path_factory):
    """Three saved models with different versions: (directory, model) each."""
    saved = []
    for k, intents in enumerate([INTENTS, INTENTS[:2], ("alarm", "pay_bill")]):
        model = IntentModel.train(tiny_examples(8, intents, offset=k), tiny_encoder, tenant="t")
        directory = tmp_path_factory.mktemp("model") / model.version
        model.save(directory)
        saved.append((directory, model))
    assert len({m.version for _, m in saved}) == 3
    return saved


@pytest.fixture
def store(settings, s3, pg_url, tmp_path) -> ModelStore:
    return ModelStore(make_engine(pg_url), s3, settings.assets_bucket, tmp_path / "cache")


def _outbox_rows(pg_url, tenant):
    with make_engine(pg_url).connect() as conn:
        return conn.execute(select(outbox).where(outbox.c.tenant_id == tenant, outbox.c.topic == "model.updated")
                            .order_by(outbox.c.id)).mappings().all()


def test_publish_uploads_registers_and_queues_the_event(store, tiny_models, tenant, settings, s3, pg_url):
    (dir_a, model_a), (dir_b, model_b), _ = tiny_models
    first = store.publish(tenant, dir_a)
    second = store.publish(tenant, dir_b)
    assert (first.registry_version, second.registry_version) == (1, 2)
    assert first.uri == f"s3://{settings.assets_bucket}/{model_prefix(tenant, model_a.version)}"
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=settings.assets_bucket,
                                                 Prefix=f"models/{tenant}/{model_a.version}/")["Contents"]}
    assert f"models/{tenant}/{model_a.version}/manifest.json" in keys
    assert f"models/{tenant}/{model_a.version}/encoder/model.onnx" in keys
    assert store.latest(tenant) == second and second.model_version == model_b.version
    assert store.latest_all()[tenant] == second
    events = [row["payload"] for row in _outbox_rows(pg_url, tenant)]
    assert [e["model_version"] for e in events] == [model_a.version, model_b.version]
    assert set(events[0]) == {"event", "tenant", "model_version", "uri", "sha256", "published_at"}
    assert events[1]["event"] == "MODEL_UPDATED" and events[1]["sha256"] == second.sha256


def test_unknown_tenant_has_no_model_and_base_is_a_tenant_like_any(store, tiny_models, tenant):
    assert store.latest(tenant) is None
    record = store.publish(BASE_TENANT, tiny_models[0][0])
    assert store.latest(BASE_TENANT) == record and record.uri.endswith(f"/models/base/{record.model_version}/")


def test_a_candidate_is_registered_but_neither_latest_nor_announced(store, tiny_models, tenant, pg_url):
    store.publish(tenant, tiny_models[0][0])
    store.publish(tenant, tiny_models[1][0], status="candidate")
    assert store.latest(tenant).registry_version == 1
    assert len(_outbox_rows(pg_url, tenant)) == 1


def test_fetch_verifies_and_loads(store, tiny_models, tenant):
    directory, model = tiny_models[0]
    record = store.publish(tenant, directory)
    path = store.fetch(record)
    loaded = IntentModel.load(path)
    assert loaded.version == model.version
    assert [p.intent for p in loaded.classify(["translate hello to french"])] == \
        [p.intent for p in model.classify(["translate hello to french"])]
    assert store.fetch(record) == path  # cached: no download


def test_fetch_refuses_a_tampered_file_and_keeps_nothing(store, tiny_models, tenant, settings, s3):
    record = store.publish(tenant, tiny_models[0][0])
    key = f"models/{tenant}/{record.model_version}/head.json"
    s3.put_object(Bucket=settings.assets_bucket, Key=key, Body=b'{"labels": ["evil"]}')
    with pytest.raises(ModelIntegrityError, match="head.json does not match"):
        store.fetch(record)
    assert not (store.cache_dir / tenant / record.model_version).exists()


def test_fetch_refuses_a_manifest_that_is_not_the_registered_one(store, tiny_models, tenant, settings, s3):
    record = store.publish(tenant, tiny_models[0][0])
    key = f"models/{tenant}/{record.model_version}/manifest.json"
    manifest = json.loads(s3.get_object(Bucket=settings.assets_bucket, Key=key)["Body"].read())
    manifest["threshold"] = 0.99
    s3.put_object(Bucket=settings.assets_bucket, Key=key, Body=json.dumps(manifest).encode())
    with pytest.raises(ModelIntegrityError, match="registry's sha256"):
        store.fetch(record)


def test_drain_publishes_to_the_channel_and_marks_rows(store, tiny_models, tenant, pg_url, redis_url, redis_prefix):
    record = store.publish(tenant, tiny_models[0][0])
    client = redis.Redis.from_url(redis_url)
    pubsub = client.pubsub()
    pubsub.subscribe(channel(redis_prefix))
    pubsub.get_message(timeout=1)  # the subscribe confirmation
    assert drain_outbox(make_engine(pg_url), client, redis_prefix) >= 1
    seen = []
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not any(e.get("tenant") == tenant for e in seen):
        message = pubsub.get_message(timeout=0.5)
        if message and message["type"] == "message":
            seen.append(json.loads(message["data"]))
    assert record.event(seen[-1]["published_at"]) in seen
    assert all(row["published_at"] is not None for row in _outbox_rows(pg_url, tenant))
    pubsub.close()


def test_a_redis_outage_loses_no_event(store, tiny_models, tenant, pg_url, redis_url, redis_prefix):
    drain_outbox(make_engine(pg_url), redis.Redis.from_url(redis_url), redis_prefix)  # earlier tests' events
    store.publish(tenant, tiny_models[0][0])
    dead = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)
    assert drain_outbox(make_engine(pg_url), dead, redis_prefix) == 0
    rows = _outbox_rows(pg_url, tenant)
    assert rows[0]["published_at"] is None and rows[0]["attempts"] == 1
    assert drain_outbox(make_engine(pg_url), redis.Redis.from_url(redis_url), redis_prefix) >= 1
    assert _outbox_rows(pg_url, tenant)[0]["published_at"] is not None


def test_registry_versions_are_per_tenant(store, tiny_models, tenant, pg_url):
    other = tenant + "-b"
    store.publish(tenant, tiny_models[0][0])
    assert store.publish(other, tiny_models[0][0]).registry_version == 1
    with make_engine(pg_url).connect() as conn:
        rows = conn.execute(select(model_registry.c.version).where(model_registry.c.tenant_id == tenant)).all()
    assert [r.version for r in rows] == [1]


# ---- `astra core train --publish` -------------------------------------------------------------------------------


@pytest.fixture
def tiny_data(tmp_path):
    """A CLINC150-layout file: three intents, train and val rows."""
    path = tmp_path / "tiny.json"
    train, val = tiny_examples(8), tiny_examples(3, offset=8)
    path.write_text(json.dumps({"train": [[e.text, e.intent] for e in train], "oos_train": [],
                                "val": [[e.text, e.intent] for e in val], "oos_val": []}))
    return path


def _stack_env(settings, tmp_path) -> dict[str, str]:
    return {"ASTRA_DATABASE_URL": settings.database_url, "ASTRA_REDIS_URL": settings.redis_url,
            "ASTRA_REDIS_PREFIX": settings.redis_prefix, "ASTRA_S3_ENDPOINT_URL": settings.s3_endpoint_url,
            "ASTRA_ASSETS_BUCKET": settings.assets_bucket, "ASTRA_STATE_DIR": str(tmp_path / "state")}


def test_cli_train_publish_uploads_registers_and_announces(store, tiny_encoder, tiny_data, tenant, settings, s3,
                                                           pg_url, redis_url, redis_prefix, tmp_path):
    pubsub = redis.Redis.from_url(redis_url).pubsub()
    pubsub.subscribe(channel(redis_prefix))
    pubsub.get_message(timeout=1)  # the subscribe confirmation
    res = run_cli("core", "train", "--tenant", tenant, "--data", str(tiny_data), "--base", str(tiny_encoder.path),
                  "--publish", "--json", env=_stack_env(settings, tmp_path))
    assert res.returncode == 0, res.stderr
    result = json.loads(res.stdout)
    published = result["published"]
    assert published["registry_version"] == 1 and published["announced"]
    assert published["model_version"] == result["version"] == store.latest(tenant).model_version
    key = f"models/{tenant}/{result['version']}/manifest.json"
    assert s3.get_object(Bucket=settings.assets_bucket, Key=key)["Body"].read() == \
        (tmp_path / "state" / "models" / tenant / result["version"] / "manifest.json").read_bytes()
    assert all(row["published_at"] is not None for row in _outbox_rows(pg_url, tenant))
    seen = []
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not seen:
        message = pubsub.get_message(timeout=0.5)
        if message and message["type"] == "message" and json.loads(message["data"])["tenant"] == tenant:
            seen.append(json.loads(message["data"]))
    assert seen and seen[0]["model_version"] == result["version"]
    pubsub.close()


@pytest.mark.parametrize("down", ["ASTRA_DATABASE_URL", "ASTRA_REDIS_URL", "ASTRA_S3_ENDPOINT_URL"])
def test_cli_train_publish_without_the_stack_is_one_error_line_before_training(settings, tiny_encoder, tiny_data,
                                                                                tenant, tmp_path, down):
    dead = {"ASTRA_DATABASE_URL": "postgresql://postgres@127.0.0.1:1/none", "ASTRA_REDIS_URL": "redis://127.0.0.1:1/0",
            "ASTRA_S3_ENDPOINT_URL": "http://127.0.0.1:1"}
    env = {**_stack_env(settings, tmp_path), down: dead[down]}
    res = run_cli("core", "train", "--tenant", tenant, "--data", str(tiny_data), "--base", str(tiny_encoder.path),
                  "--publish", env=env)
    assert res.returncode != 0 and res.stdout == ""
    lines = res.stderr.strip().splitlines()
    name = {"ASTRA_DATABASE_URL": "Postgres", "ASTRA_REDIS_URL": "Redis", "ASTRA_S3_ENDPOINT_URL": "S3"}[down]
    assert len(lines) == 1 and f"cannot publish: {name} is not reachable" in lines[0], res.stderr
    assert not (tmp_path / "state" / "models").exists()  # refused before any training
