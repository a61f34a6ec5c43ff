"""The model store over the real services: S3 (moto server), Postgres, Redis pub/sub."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis
from sqlalchemy import select

from astra.core.intent.data import DEFAULT_DATASET, Example
from astra.core.intent.encoder import Encoder, packaged_minilm
from astra.core.intent.finetune import TorchEncoder, export
from astra.core.intent.model import IntentModel
from astra.core.intent.store import BASE_TENANT, ModelIntegrityError
from astra.core.model_store import ModelRecord, ModelStore, RegistryError, channel, drain_outbox, model_prefix
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


# ---- promote / reject: the holdout gate's decision ---------------------------------------------------------------

GATE = {"passed": True, "reason": "not worse", "n": {"base": 10, "corrections": 2}}


def test_promote_makes_a_candidate_served_and_announced_once(store, tiny_models, tenant, pg_url):
    store.publish(tenant, tiny_models[0][0])
    candidate = store.publish(tenant, tiny_models[1][0], status="candidate")
    assert candidate.status == "candidate" and len(_outbox_rows(pg_url, tenant)) == 1
    promoted = store.promote(tenant, candidate.registry_version, GATE)
    assert promoted.status == "active" and promoted.metrics["gate"] == GATE
    assert store.latest(tenant) == promoted == store.record(tenant, candidate.registry_version)
    events = [row["payload"] for row in _outbox_rows(pg_url, tenant)]
    assert len(events) == 2 and promoted.event(events[1]["published_at"]) == events[1]
    assert store.promote(tenant, candidate.registry_version, {"other": 1}) == promoted  # a retried run
    assert len(_outbox_rows(pg_url, tenant)) == 2


def test_concurrent_promotions_queue_one_event(store, tiny_models, tenant, pg_url):
    candidate = store.publish(tenant, tiny_models[0][0], status="candidate")
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: store.promote(tenant, candidate.registry_version, GATE), range(4)))
    assert {r.status for r in results} == {"active"}
    assert len(_outbox_rows(pg_url, tenant)) == 1


def test_a_failed_promotion_leaves_the_candidate_unannounced(store, tiny_models, tenant, pg_url, monkeypatch):
    candidate = store.publish(tenant, tiny_models[0][0], status="candidate")

    def broken_event(self, published_at):
        raise RuntimeError("the event could not be built")

    monkeypatch.setattr(ModelRecord, "event", broken_event)
    with pytest.raises(RuntimeError):
        store.promote(tenant, candidate.registry_version, GATE)
    assert store.record(tenant, candidate.registry_version).status == "candidate"
    assert store.latest(tenant) is None and _outbox_rows(pg_url, tenant) == []


def test_reject_keeps_the_reason_and_never_serves_nor_announces(store, tiny_models, tenant, pg_url):
    current = store.publish(tenant, tiny_models[0][0])
    candidate = store.publish(tenant, tiny_models[1][0], status="candidate")
    rejected = store.reject(tenant, candidate.registry_version, "worse on base", {"passed": False})
    assert rejected.status == "rejected" and rejected.metrics["gate"] == {"passed": False, "reason": "worse on base"}
    assert store.record(tenant, candidate.registry_version) == rejected
    assert store.latest(tenant) == current and store.active(tenant, 5) == [current]
    assert store.latest_all()[tenant] == current
    assert store.reject(tenant, candidate.registry_version, "again", {}) == rejected  # the first verdict stays
    with pytest.raises(RegistryError, match="is rejected: only a candidate is promoted"):
        store.promote(tenant, candidate.registry_version, GATE)
    with pytest.raises(RegistryError, match="is active: only a candidate is rejected"):
        store.reject(tenant, current.registry_version, "too late", {})
    assert len(_outbox_rows(pg_url, tenant)) == 1 and store.latest(tenant) == current


def test_promote_and_reject_see_only_the_tenants_own_rows(store, tiny_models, tenant, pg_url):
    other = tenant + "-b"
    candidate = store.publish(other, tiny_models[0][0], status="candidate")
    for decide in (lambda: store.promote(tenant, candidate.registry_version, GATE),
                   lambda: store.reject(tenant, candidate.registry_version, "no", {})):
        with pytest.raises(RegistryError, match=f"tenant '{tenant}' has no model v1"):
            decide()
    assert store.record(tenant, candidate.registry_version) is None
    assert store.record(other, candidate.registry_version).status == "candidate"
    assert _outbox_rows(pg_url, other) == []


@pytest.mark.parametrize(("call", "message"), [
    (lambda s, t, d: s.publish(t, d, status="rejected"), "published as 'active' or 'candidate', not 'rejected'"),
    (lambda s, t, d: s.promote(t, "1", GATE), "registry version '1' is not a positive integer"),
    (lambda s, t, d: s.promote(t, True, GATE), "registry version True"),
    (lambda s, t, d: s.reject(t, 0, "why", {}), "registry version 0"),
    (lambda s, t, d: s.reject(t, 1, " ", {}), "a rejection needs a reason"),
    (lambda s, t, d: s.promote(t, 1, ["not", "a", "dict"]), "JSON object, not a list"),
    (lambda s, t, d: s.record("Bad Tenant", 1), "invalid tenant"),
])
def test_registry_changes_refuse_bad_input_and_change_nothing(store, tiny_models, tenant, pg_url, call, message):
    store.publish(tenant, tiny_models[0][0], status="candidate")
    with pytest.raises(ValueError, match=message):
        call(store, tenant, tiny_models[1][0])
    assert store.record(tenant, 1).status == "candidate" and store.record(tenant, 2) is None
    assert _outbox_rows(pg_url, tenant) == []


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


@pytest.fixture
def own_database():
    """A database of this test's own, migrated: publishing a base model there leaves the run's other tests the base
    model they published."""
    import uuid

    from tests.conftest import RUN_ID, migrated_database

    with migrated_database(f"astra_test_{RUN_ID}_{uuid.uuid4().hex[:6]}") as url:
        yield url


def _stack_env(settings, tmp_path, database_url: str | None = None) -> dict[str, str]:
    return {"ASTRA_DATABASE_URL": database_url or settings.database_url, "ASTRA_REDIS_URL": settings.redis_url,
            "ASTRA_REDIS_PREFIX": settings.redis_prefix, "ASTRA_S3_ENDPOINT_URL": settings.s3_endpoint_url,
            "ASTRA_ASSETS_BUCKET": settings.assets_bucket, "ASTRA_STATE_DIR": str(tmp_path / "state")}


def test_cli_train_publish_uploads_registers_and_announces(tiny_encoder, tiny_data, settings, s3, own_database,
                                                           redis_url, redis_prefix, tmp_path):
    tenant = BASE_TENANT  # the only model the command publishes: a tenant's goes through LEARN's gate
    store = ModelStore(make_engine(own_database), s3, settings.assets_bucket, tmp_path / "cache")
    pubsub = redis.Redis.from_url(redis_url).pubsub()
    pubsub.subscribe(channel(redis_prefix))
    pubsub.get_message(timeout=1)  # the subscribe confirmation
    res = run_cli("core", "train", "--tenant", tenant, "--data", str(tiny_data), "--base", str(tiny_encoder.path),
                  "--publish", "--json", env=_stack_env(settings, tmp_path, own_database))
    assert res.returncode == 0, res.stderr
    result = json.loads(res.stdout)
    published = result["published"]
    assert published["registry_version"] == 1 and published["announced"]
    assert published["model_version"] == result["version"] == store.latest(tenant).model_version
    key = f"models/{tenant}/{result['version']}/manifest.json"
    assert s3.get_object(Bucket=settings.assets_bucket, Key=key)["Body"].read() == \
        (tmp_path / "state" / "models" / tenant / result["version"] / "manifest.json").read_bytes()
    assert all(row["published_at"] is not None for row in _outbox_rows(own_database, tenant))
    seen = []
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not seen:
        message = pubsub.get_message(timeout=0.5)
        if message and message["type"] == "message" and json.loads(message["data"])["tenant"] == tenant:
            seen.append(json.loads(message["data"]))
    assert seen and seen[0]["model_version"] == result["version"]
    pubsub.close()


def test_cli_train_publish_refuses_a_tenants_model(settings, tiny_encoder, tiny_data, tenant, tmp_path):
    res = run_cli("core", "train", "--tenant", tenant, "--data", str(tiny_data), "--base", str(tiny_encoder.path),
                  "--publish", env=_stack_env(settings, tmp_path))
    assert res.returncode == 2 and res.stdout == ""
    assert "publishes the base model only" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "state" / "models").exists()  # refused before any training


@pytest.mark.parametrize("down", ["ASTRA_DATABASE_URL", "ASTRA_REDIS_URL", "ASTRA_S3_ENDPOINT_URL"])
def test_cli_train_publish_without_the_stack_is_one_error_line_before_training(settings, tiny_encoder, tiny_data,
                                                                                tenant, tmp_path, down):
    dead = {"ASTRA_DATABASE_URL": "postgresql://postgres@127.0.0.1:1/none", "ASTRA_REDIS_URL": "redis://127.0.0.1:1/0",
            "ASTRA_S3_ENDPOINT_URL": "http://127.0.0.1:1"}
    env = {**_stack_env(settings, tmp_path), down: dead[down]}
    res = run_cli("core", "train", "--tenant", BASE_TENANT, "--data", str(tiny_data), "--base", str(tiny_encoder.path),
                  "--publish", env=env)
    assert res.returncode != 0 and res.stdout == ""
    lines = res.stderr.strip().splitlines()
    name = {"ASTRA_DATABASE_URL": "Postgres", "ASTRA_REDIS_URL": "Redis", "ASTRA_S3_ENDPOINT_URL": "S3"}[down]
    assert len(lines) == 1 and f"cannot publish: {name} is not reachable" in lines[0], res.stderr
    assert not (tmp_path / "state" / "models").exists()  # refused before any training
