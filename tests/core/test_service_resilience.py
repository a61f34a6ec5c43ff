"""IntentService and the model store when things go wrong: S3 failing for a while, a bad newest artifact, no base
model, a damaged local copy, a flood of model-less tenants, hostile registry rows. Real services throughout (gRPC on
loopback, Postgres, Redis, moto's S3 server); S3 calls are counted with botocore's own event hooks."""

from __future__ import annotations

import hashlib
import json
import shutil
import time
import uuid

import grpc
import pytest
import redis
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy import insert, update

from astra import s3 as s3_lib
from astra.core.core_client import IntentClient, transient
from astra.core.intent.model import IntentModel
from astra.core.intent.store import BASE_TENANT, ModelIntegrityError, file_sha256
from astra.core.model_store import ModelRecord, ModelStore
from astra.core.service import MAX_REQUEST_CHARS, MAX_TEXT_CHARS, SERVICE_NAME, ModelCache, ModelFetchFailed, serve
from astra.db.engine import make_engine
from astra.db.schema import model_registry, tenants
from astra.stack.stack import _grpc_serving
from tests.core.test_model_store import tiny_encoder, tiny_models  # noqa: F401 — fixtures
from tests.core.test_service import TEXTS, TOKEN, _publish, base_model, store  # noqa: F401 — fixtures

SERVING, NOT_SERVING = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING


class S3Calls:
    """Counts one operation of a real boto3 client (botocore's event hooks), per key."""

    def __init__(self, client, operation: str = "GetObject"):
        self.keys: list[str] = []
        client.meta.events.register(f"before-parameter-build.s3.{operation}", self._seen)

    def _seen(self, params, **_):
        self.keys.append(params["Key"])

    def of(self, key: str) -> int:
        return sum(k == key for k in self.keys)


@pytest.fixture
def server_store(settings, pg_url, tmp_path):
    """The service's own store: its own S3 client (calls counted) and an empty local cache."""
    client = s3_lib.client(settings)
    served = ModelStore(make_engine(pg_url), client, settings.assets_bucket, tmp_path / "service-cache")
    served.calls = S3Calls(client)
    return served


@pytest.fixture
def start(server_store, redis_url, redis_prefix, base_model):  # noqa: F811
    servers = []

    def starter(reconcile_s=3600.0, **kwargs):
        servers.append(serve("127.0.0.1:0", server_store, redis.Redis.from_url(redis_url), redis_prefix, token=TOKEN,
                             reconcile_s=reconcile_s, **kwargs))
        return servers[-1]

    yield starter
    for server in servers:
        server.stop(0)


class Hidden:
    """An S3 object taken away for a while (a transient 404, an outage seen by one key) and put back."""

    def __init__(self, s3, bucket: str, key: str):
        self.s3, self.bucket, self.key = s3, bucket, key
        self.body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        s3.delete_object(Bucket=bucket, Key=key)

    def restore(self) -> None:
        self.s3.put_object(Bucket=self.bucket, Key=self.key, Body=self.body)


def _manifest_key(record: ModelRecord) -> str:
    return f"models/{record.tenant}/{record.model_version}/manifest.json"


def _unloadable(directory, tmp_path, model_format: int = 99):
    """A copy of a saved model whose manifest hashes fine but names an unknown format."""
    copy = tmp_path / f"unloadable-{uuid.uuid4().hex[:6]}"
    shutil.copytree(directory, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    (copy / "manifest.json").write_text(json.dumps({**manifest, "format": model_format}))
    return copy


def _health(target: str, service: str) -> int:
    with grpc.insecure_channel(target) as channel:
        return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service),
                                                         timeout=5).status


def _within(seconds: float, check) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return False


def _classify_code(client: IntentClient, tenant: str) -> grpc.StatusCode:
    try:
        client.classify(tenant, TEXTS)
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


# ---- 1. a failure to fetch is retried, with a backoff; only a bad artifact is refused for good -------------------


def test_a_model_that_failed_to_arrive_is_served_once_s3_is_back(start, store, server_store, tiny_models, tenant,  # noqa: F811
                                                                 settings, s3, pg_url, redis_url, redis_prefix):
    (dir_a, model_a), (dir_b, model_b) = tiny_models[0], tiny_models[1]
    _publish(store, tenant, dir_a, pg_url, redis_url, redis_prefix)
    server = start(reconcile_s=0.5)
    client = IntentClient(server.target, TOKEN)
    assert client.classify(tenant, TEXTS).model_version == model_a.version
    newer = _publish(store, tenant, dir_b, pg_url, redis_url, redis_prefix, announce=False)
    hidden = Hidden(s3, settings.assets_bucket, _manifest_key(newer))
    try:
        server.cache.refresh(tenant, newer)  # what the MODEL_UPDATED does: the fetch fails (NoSuchKey)
        for _ in range(50):  # a storm of requests meanwhile: the model in place answers, S3 is left alone
            assert client.classify(tenant, TEXTS).model_version == model_a.version
        assert server_store.calls.of(_manifest_key(newer)) <= 2
    finally:
        hidden.restore()
    assert _within(8.0, lambda: client.classify(tenant, TEXTS).model_version == model_b.version)
    assert newer.sha256 not in server.cache._refused


def test_a_first_load_during_an_s3_failure_is_unavailable_then_served(start, store, server_store, tiny_models,  # noqa: F811
                                                                      tenant, settings, s3, pg_url, redis_url,
                                                                      redis_prefix):
    directory, model = tiny_models[0]
    record = _publish(store, tenant, directory, pg_url, redis_url, redis_prefix)
    server = start()
    client = IntentClient(server.target, TOKEN)
    hidden = Hidden(s3, settings.assets_bucket, _manifest_key(record))
    try:
        with pytest.raises(grpc.RpcError) as first:
            client.classify(tenant, TEXTS)
        assert first.value.code() == grpc.StatusCode.UNAVAILABLE and transient(first.value), first.value.details()
        assert all(_classify_code(client, tenant) == grpc.StatusCode.UNAVAILABLE for _ in range(30))
        assert server_store.calls.of(_manifest_key(record)) <= 2  # the backoff, not one download per request
    finally:
        hidden.restore()
    assert _within(5.0, lambda: _classify_code(client, tenant) == grpc.StatusCode.OK)
    assert client.classify(tenant, TEXTS).model_version == model.version


def test_a_disk_error_while_fetching_is_retried_not_refused(base_model, server_store, tiny_models, store,  # noqa: F811
                                                             tenant):
    record = store.publish(tenant, tiny_models[0][0])
    cache = ModelCache(server_store)
    blocker = server_store.cache_dir / tenant
    blocker.parent.mkdir(parents=True, exist_ok=True)
    blocker.write_text("a file where the tenant's directory goes: mkdir fails with an OSError")
    with pytest.raises(ModelFetchFailed, match="could not be fetched"):
        cache.get(tenant)
    assert record.sha256 not in cache._refused
    blocker.unlink()
    assert _within(3.0, lambda: _loads(cache, tenant) == tiny_models[0][1].version)


def _loads(cache: ModelCache, tenant: str) -> str | None:
    try:
        return cache.get(tenant).model.version
    except ModelFetchFailed:  # not yet: the backoff
        return None


def test_a_bad_artifact_is_refused_for_good_and_answers_failed_precondition(start, store, tiny_models, tenant,  # noqa: F811
                                                                            tmp_path, server_store):
    record = store.publish(tenant, _unloadable(tiny_models[2][0], tmp_path))
    client = IntentClient(start().target, TOKEN)
    assert _classify_code(client, tenant) == grpc.StatusCode.FAILED_PRECONDITION
    fetched = server_store.calls.of(_manifest_key(record))
    assert fetched <= 2  # once, or twice when the copy linked a blob already here (the shared encoder)
    assert {_classify_code(client, tenant) for _ in range(5)} == {grpc.StatusCode.FAILED_PRECONDITION}
    assert server_store.calls.of(_manifest_key(record)) == fetched  # refused for good: never fetched again


# ---- 2. a refused newest model: the newest one that loads serves -------------------------------------------------


def test_a_refused_newest_model_falls_back_to_the_newest_that_loads_after_a_restart(start, store, tiny_models,  # noqa: F811
                                                                                     tenant, tmp_path, caplog):
    (dir_a, _), (dir_b, model_b), (dir_c, _) = tiny_models
    store.publish(tenant, dir_a)
    store.publish(tenant, dir_b)
    store.publish(tenant, _unloadable(dir_c, tmp_path, 98))
    store.publish(tenant, _unloadable(dir_c, tmp_path, 99))  # same keys: row 3's manifest no longer hashes right
    server = start()  # a fresh process (or the tenant evicted): the newest two rows are bad
    assert IntentClient(server.target, TOKEN).classify(tenant, TEXTS).model_version == model_b.version
    assert "its newest active model that loads (2 newer refused)" in caplog.text
    server.cache.reconcile()  # the registry still names the bad one newest: no flapping, nothing reloaded
    assert server.cache.get(tenant).model.version == model_b.version


def test_a_refused_newest_base_falls_back_at_start(start, store, tiny_models, tmp_path, pg_url, base_model):  # noqa: F811
    good = store.latest(BASE_TENANT)
    bad = store.publish(BASE_TENANT, _unloadable(tiny_models[2][0], tmp_path))
    try:
        server = start()
        assert server.cache.stats()["base_version"] == good.model_version
        assert _health(server.target, SERVICE_NAME) == SERVING
        assert IntentClient(server.target, TOKEN).classify(f"t-{uuid.uuid4().hex[:8]}", TEXTS).model_version == \
            good.model_version
    finally:  # the bad base must not outlive this test (the base is every tenant's)
        with make_engine(pg_url).begin() as conn:
            conn.execute(update(model_registry).where(model_registry.c.tenant_id == BASE_TENANT,
                                                      model_registry.c.version == bad.registry_version)
                         .values(status="retired"))


# ---- 3. health: IntentService is SERVING only with a base model; the stack's probe ("") regardless -------------


def test_intent_service_health_follows_the_base_model_and_the_stack_probe_does_not(start, store, settings, s3,  # noqa: F811
                                                                                  tenant):
    base = store.latest(BASE_TENANT)
    hidden = Hidden(s3, settings.assets_bucket, _manifest_key(base))
    try:
        server = start(reconcile_s=0.5)  # an empty local cache: the base cannot be fetched
        assert server.cache.stats()["base_version"] is None
        assert _health(server.target, SERVICE_NAME) == NOT_SERVING
        assert _health(server.target, "") == SERVING and _grpc_serving(server.target)  # `astra up` still succeeds
        assert _classify_code(IntentClient(server.target, TOKEN), tenant) == grpc.StatusCode.UNAVAILABLE
    finally:
        hidden.restore()
    assert _within(8.0, lambda: _health(server.target, SERVICE_NAME) == SERVING)  # the reloader loaded it
    assert IntentClient(server.target, TOKEN).classify(tenant, TEXTS).model_version == base.model_version


def test_without_any_loadable_base_intent_service_is_not_serving(base_model, settings, pg_url, tmp_path, tenant):  # noqa: F811
    wrong = ModelStore(make_engine(pg_url), s3_lib.client(settings), settings.assets_bucket + "-typo", tmp_path)
    server = serve("127.0.0.1:0", wrong, None, token=TOKEN)  # every registry uri names another bucket: refused
    try:
        assert _health(server.target, SERVICE_NAME) == NOT_SERVING and _health(server.target, "") == SERVING
        assert _classify_code(IntentClient(server.target, TOKEN), tenant) == grpc.StatusCode.FAILED_PRECONDITION
    finally:
        server.stop(0)


# ---- 4. a damaged local copy is deleted and downloaded again ----------------------------------------------------


def _flip_last_byte(path, *, in_place: bool) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    if in_place:  # the inode every hard link shares: the blob is damaged too
        path.write_bytes(bytes(data))
    else:  # a new file under the name: the blob stays intact
        path.unlink()
        path.write_bytes(bytes(data))


@pytest.mark.parametrize("in_place", [False, True], ids=["file-replaced", "blob-damaged"])
def test_a_damaged_local_copy_is_downloaded_again(start, store, server_store, tiny_models, tenant, in_place):  # noqa: F811
    directory, model = tiny_models[1]
    record = store.publish(tenant, directory)
    server = start()
    assert IntentClient(server.target, TOKEN).classify(tenant, TEXTS).model_version == model.version
    server.stop(0)
    damaged = server_store.cache_dir / tenant / model.version / "arrays" / "bias.npy"
    sha = json.loads((damaged.parents[1] / "manifest.json").read_text())["files"]["arrays/bias.npy"]
    _flip_last_byte(damaged, in_place=in_place)
    server = start()
    assert IntentClient(server.target, TOKEN).classify(tenant, TEXTS).model_version == model.version
    assert file_sha256(damaged) == sha and file_sha256(server_store.cache_dir / "blobs" / sha) == sha
    key = f"models/{tenant}/{model.version}/arrays/bias.npy"
    assert server_store.calls.of(key) == (2 if in_place else 1)  # an intact blob is linked, not downloaded
    assert record.sha256 not in server.cache._refused


def test_fresh_bytes_that_fail_are_refused_without_a_second_download(server_store, store, tiny_models, tenant,  # noqa: F811
                                                                     tmp_path):
    record = store.publish(tenant, _unloadable(tiny_models[0][0], tmp_path))
    with pytest.raises(ModelIntegrityError, match="unknown model format"):
        server_store.load(record, IntentModel.load)
    assert server_store.calls.of(_manifest_key(record)) == 1


# ---- 5. tenants the base serves never evict a model; the cache is bounded by bytes too ---------------------------


def test_model_less_tenants_do_not_evict_own_models(base_model, server_store, store, tiny_models):  # noqa: F811
    owners = [f"t-{uuid.uuid4().hex[:10]}" for _ in range(3)]
    for owner, (directory, _) in zip(owners, tiny_models, strict=True):
        store.publish(owner, directory)
    cache = ModelCache(server_store, max_tenants=2)
    cache.reconcile()
    cache.get(owners[0])
    cache.get(owners[1])
    for _ in range(25):
        assert cache.get(f"junk-{uuid.uuid4().hex[:8]}").record.tenant == BASE_TENANT
    assert cache.stats()["own_models"] == 2 and cache.stats()["base_served"] == 25
    assert set(owners[:2]) <= set(cache.tenants())
    cache.get(owners[0])  # a use: owners[1] is now the least recently used
    cache.get(owners[2])
    assert owners[1] not in cache.tenants() and {owners[0], owners[2]} <= set(cache.tenants())


def test_own_models_are_bounded_by_bytes(base_model, server_store, store, tiny_models):  # noqa: F811
    owners = [f"t-{uuid.uuid4().hex[:10]}" for _ in range(3)]
    for owner, (directory, _) in zip(owners, tiny_models, strict=True):
        store.publish(owner, directory)
    sizes = [ModelCache(server_store).get(owner).footprint for owner in owners]
    cache = ModelCache(server_store, max_tenants=10, max_bytes=sizes[0] + sizes[1])
    cache.get(owners[0])
    cache.get(owners[1])
    assert cache.stats()["own_models"] == 2 and cache.stats()["own_bytes"] == sizes[0] + sizes[1]
    cache.get(owners[2])  # over the byte bound: the least recently used go
    assert cache.stats()["own_bytes"] <= sizes[0] + sizes[1] and owners[0] not in cache.tenants()
    alone = ModelCache(server_store, max_bytes=1)  # a model alone over the bound still serves
    assert alone.get(owners[0]).record.tenant == owners[0] and alone.get(owners[1]).record.tenant == owners[1]
    assert alone.stats()["own_models"] == 1


# ---- 6. hostile registry rows and manifests; a cap on text per call ---------------------------------------------


def test_a_row_pointing_at_another_tenants_model_is_refused(start, store, tiny_models, tenant, pg_url):  # noqa: F811
    victim = store.publish(f"v-{uuid.uuid4().hex[:8]}", tiny_models[0][0])
    with make_engine(pg_url).begin() as conn:
        conn.execute(insert(tenants).values(tenant_id=tenant))
        conn.execute(insert(model_registry).values(tenant_id=tenant, version=1, uri=victim.uri, sha256=victim.sha256,
                                                   metrics={"model_version": victim.model_version}, status="active"))
    with pytest.raises(grpc.RpcError) as refused:
        IntentClient(start().target, TOKEN).classify(tenant, TEXTS)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "is not s3://" in refused.value.details() and f"/models/{tenant}/" in refused.value.details()


def test_a_manifest_digest_that_is_not_hex_is_refused_before_naming_a_blob(server_store, store, tiny_models,  # noqa: F811
                                                                            tenant, settings, s3, pg_url):
    model_version = "0123456789abcdef"
    manifest = json.dumps({"version": model_version, "format": 1,
                           "files": {"head.json": "../../../escaped"}}).encode()
    prefix = f"models/{tenant}/{model_version}/"
    s3.put_object(Bucket=settings.assets_bucket, Key=prefix + "manifest.json", Body=manifest)
    s3.put_object(Bucket=settings.assets_bucket, Key=prefix + "head.json", Body=b"{}")
    sha = hashlib.sha256(manifest).hexdigest()
    record = ModelRecord(tenant, 1, model_version, f"s3://{settings.assets_bucket}/{prefix}", sha, {})
    with pytest.raises(ModelIntegrityError, match="invalid sha256"):
        server_store.fetch(record)
    assert server_store.calls.of(prefix + "head.json") == 0  # refused before any blob path was built


def test_text_per_call_is_capped(start, tenant):
    client = IntentClient(start().target, TOKEN, deadline_s=60)
    whole = MAX_REQUEST_CHARS // MAX_TEXT_CHARS
    longest = ("what is the weather " * MAX_TEXT_CHARS)[:MAX_TEXT_CHARS]
    assert len(client.classify(tenant, [longest] * whole).intents) == whole  # what intent_output may send
    with pytest.raises(grpc.RpcError) as refused:
        client.classify(tenant, [longest] * whole + ["x"])
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert str(MAX_REQUEST_CHARS) in refused.value.details()
