"""CONFIG_SVC against the machine's Postgres and Redis."""

from __future__ import annotations

import json
import threading

import pytest
import redis
from sqlalchemy import event, func, select

from astra.config_svc import ConfigCacheUnavailable, ConfigService, InvalidConfig, TenantNotFound, VersionNotFound
from astra.db import make_engine
from astra.db.schema import tenant_config_versions
from astra.tenancy import InvalidKey
from tests.config_svc.maps import SHA, maps

pytestmark = pytest.mark.integration


@pytest.fixture
def svc(pg_url, redis_url, redis_prefix) -> ConfigService:
    return ConfigService(make_engine(pg_url), redis.Redis.from_url(redis_url), redis_prefix)


def count_versions(pg_url, tenant) -> int:
    with make_engine(pg_url).connect() as conn:
        return conn.execute(
            select(func.count()).select_from(tenant_config_versions).where(tenant_config_versions.c.tenant_id == tenant)
        ).scalar_one()


def test_versions_count_up_and_read_back_through_the_cache(svc, tenant):
    assert svc.publish(tenant, *maps("first"), SHA, "run-1") == 1
    assert svc.publish(tenant, *maps("second"), SHA, "run-2") == 2
    snap = svc.snapshot(tenant)
    assert snap.version == 2 and snap.zone_map["zones"][0]["label"] == "second"
    cached = svc.redis.hgetall(svc.cache_key(tenant))
    assert cached[b"version"] == b"2"
    assert svc.snapshot(tenant, version=1).zone_map["zones"][0]["label"] == "first"
    assert [h["version"] for h in svc.history(tenant)] == [1, 2]


def test_cache_hit_serves_without_postgres(svc, tenant, pg_url, redis_prefix):
    svc.publish(tenant, *maps(), SHA, "run")
    statements: list[str] = []
    engine = make_engine(pg_url)
    listener = lambda conn, cursor, stmt, *a: statements.append(stmt)  # noqa: E731
    event.listen(engine, "before_cursor_execute", listener)
    try:
        assert svc.snapshot(tenant).version == 1
    finally:
        event.remove(engine, "before_cursor_execute", listener)
    assert statements == []


def test_invalid_config_names_the_field_and_writes_nothing(svc, tenant, pg_url):
    zm, sm = maps()
    zm["zones"][0]["kind"] = "paragraph"
    with pytest.raises(InvalidConfig) as err:
        svc.publish(tenant, zm, sm, SHA, "run")
    assert "zone_map.zones[0].kind" in str(err.value)
    zm, sm = maps()
    zm["fallback_zone"] = "missing"
    with pytest.raises(InvalidConfig, match="zone_map.fallback_zone"):
        svc.publish(tenant, zm, sm, SHA, "run")
    with pytest.raises(InvalidConfig, match="template_sha256"):
        svc.publish(tenant, *maps(), "not-a-sha", "run")
    assert count_versions(pg_url, tenant) == 0
    with pytest.raises(TenantNotFound):
        svc.snapshot(tenant)


@pytest.mark.parametrize("kind", ["table", "image"])
def test_a_fallback_zone_that_cannot_take_utterances_is_refused_and_nothing_written(svc, tenant, pg_url, kind):
    zm, sm = maps()
    zm["zones"][1]["kind"] = kind
    with pytest.raises(InvalidConfig) as err:
        svc.publish(tenant, zm, sm, SHA, "run")
    assert err.value.problems == [f"zone_map.fallback_zone: 'notes' is a {kind} zone; the fallback zone receives "
                                  "utterances and must be a text or list zone"]
    assert count_versions(pg_url, tenant) == 0
    zm["zones"][1]["kind"] = "list"
    assert svc.publish(tenant, zm, sm, SHA, "run") == 1


def test_concurrent_publishers_get_gap_free_versions(svc, tenant, pg_url):
    results: list[int] = []
    errors: list[BaseException] = []

    def publisher(n: int) -> None:
        try:
            for i in range(5):
                results.append(svc.publish(tenant, *maps(f"w{n}-{i}"), SHA, f"run-{n}"))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=publisher, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(results) == list(range(1, 41))
    assert svc.snapshot(tenant).version == 40


def test_a_slow_reader_cannot_put_an_older_version_back_in_the_cache(svc, tenant):
    svc.publish(tenant, *maps("old"), SHA, "run")
    stale = svc.snapshot(tenant)  # a reader that loaded v1 and is about to cache it...
    svc.publish(tenant, *maps("new"), SHA, "run")
    svc._cache_put(stale)  # ...writes it after the publish returned
    assert svc.snapshot(tenant).version == 2


def test_redis_down_is_served_from_postgres(pg_url, tenant, caplog, svc):
    svc.publish(tenant, *maps(), SHA, "run")
    from astra.runtime import redis_client
    from astra.settings import Settings
    from astra.stack.processes import free_port

    dead = redis_client(Settings(redis_url=f"redis://127.0.0.1:{free_port()}/0"))
    down = ConfigService(make_engine(pg_url), dead, "astratest-dead")
    assert down.snapshot(tenant).version == 1
    assert "reading" in caplog.text and "Postgres" in caplog.text
    # Reads are never an error; a publish is, because a cache it cannot reserve could keep
    # serving the older version once Redis is back. It writes nothing.
    with pytest.raises(ConfigCacheUnavailable, match="nothing was written"):
        down.publish(tenant, *maps("while down"), SHA, "run")
    assert count_versions(pg_url, tenant) == 1


def test_a_lost_cache_write_after_commit_never_serves_the_older_version(svc, tenant, pg_url, redis_url, redis_prefix,
                                                                          monkeypatch):
    other_reader = ConfigService(make_engine(pg_url), redis.Redis.from_url(redis_url), redis_prefix)
    svc.publish(tenant, *maps("v1"), SHA, "run")
    assert other_reader.snapshot(tenant).version == 1  # v1 is cached

    def timeout(*_a, **_k):
        raise redis.TimeoutError("Redis did not answer in time")

    monkeypatch.setattr(svc, "_cas", timeout)  # the write after commit is lost
    assert svc.publish(tenant, *maps("v2"), SHA, "run") == 2
    monkeypatch.undo()
    assert other_reader.snapshot(tenant).version == 2  # the reservation turned v1 into a miss
    assert other_reader.redis.hget(other_reader.cache_key(tenant), "version") == b"2"


def test_readers_holding_an_older_version_cannot_fill_a_reservation(svc, tenant):
    svc.publish(tenant, *maps("v1"), SHA, "run")
    stale = svc.snapshot(tenant)
    svc._cache_reserve(tenant, 2)  # a publish of v2 in flight
    svc._cache_put(stale)  # a reader that loaded v1 before
    assert svc.redis.hget(svc.cache_key(tenant), "snapshot") is None


def test_unknown_tenant_and_version(svc, tenant):
    with pytest.raises(TenantNotFound, match=tenant):
        svc.snapshot(tenant)
    with pytest.raises(TenantNotFound):
        svc.history(tenant)
    svc.publish(tenant, *maps(), SHA, "run")
    with pytest.raises(VersionNotFound):
        svc.snapshot(tenant, version=7)


def test_a_tenant_cannot_read_another_tenants_config(svc, tenant):
    other = tenant + "-b"
    svc.publish(other, *maps("secret of b"), SHA, "run")
    # Tenant A has nothing: neither its latest nor B's version 1 may leak through.
    with pytest.raises(TenantNotFound):
        svc.snapshot(tenant)
    with pytest.raises(TenantNotFound):
        svc.snapshot(tenant, version=1)
    svc.publish(tenant, *maps("a's own"), SHA, "run")
    assert svc.snapshot(tenant).zone_map["zones"][0]["label"] == "a's own"
    assert svc.snapshot(other).zone_map["zones"][0]["label"] == "secret of b"


def test_every_query_filters_by_tenant(svc, tenant, pg_url):
    statements: list[str] = []
    engine = make_engine(pg_url)
    listener = lambda conn, cursor, stmt, *a: statements.append(stmt)  # noqa: E731
    event.listen(engine, "before_cursor_execute", listener)
    try:
        svc.publish(tenant, *maps(), SHA, "run")
        svc.redis.delete(svc.cache_key(tenant))
        svc.snapshot(tenant)
        svc.snapshot(tenant, version=1)
        svc.history(tenant)
        with pytest.raises(VersionNotFound):
            svc.snapshot(tenant, version=9)
    finally:
        event.remove(engine, "before_cursor_execute", listener)
    table_statements = [s for s in statements if "tenant" in s.lower() or "FROM" in s]
    assert table_statements, "no SQL was captured"
    for stmt in statements:
        if stmt.strip().upper().startswith(("SELECT 1", "SELECT PG_", "SHOW", "BEGIN", "COMMIT", "ROLLBACK")):
            continue
        assert "tenant_id" in stmt, f"query without tenant: {stmt}"


@pytest.mark.parametrize("bad", ["Acme", "a--b", "", "-a", "a_b", "a,b", "x" * 64, "acme\n", "acme-"])
def test_bad_tenant_slugs_are_refused(svc, bad):
    with pytest.raises(InvalidKey):
        svc.snapshot(bad)
    with pytest.raises(InvalidKey):
        svc.publish(bad, *maps(), SHA, "run")


@pytest.mark.parametrize("entry", [
    {"snapshot": b"{not json"},
    {"snapshot": b"[1, 2]"},
    {"snapshot": b'{"tenant": "x"}'},
    {"version": b"7"},  # the hash's version disagrees with the snapshot's
], ids=["unparseable", "not-an-object", "missing-fields", "version-mismatch"])
def test_a_bad_cache_entry_is_a_miss_served_from_postgres(svc, tenant, entry):
    svc.publish(tenant, *maps("truth"), SHA, "run")
    key = svc.cache_key(tenant)
    svc.redis.hset(key, mapping=entry)
    snap = svc.snapshot(tenant)
    assert snap.version == 1 and snap.zone_map["zones"][0]["label"] == "truth"
    # The bad entry was dropped and refilled from Postgres.
    cached = svc.redis.hgetall(key)
    assert cached[b"version"] == b"1" and b"truth" in cached[b"snapshot"]


def test_another_tenants_snapshot_under_a_tenants_key_is_not_served(svc, tenant):
    other = f"{tenant}-other"
    svc.publish(tenant, *maps("mine"), SHA, "run")
    svc.publish(other, *maps("theirs"), SHA, "run")
    svc.snapshot(other)  # fills the other tenant's entry
    theirs = svc.redis.hget(svc.cache_key(other), "snapshot")
    svc.redis.hset(svc.cache_key(tenant), mapping={"version": 1, "snapshot": theirs})
    snap = svc.snapshot(tenant)
    assert snap.tenant == tenant and snap.zone_map["zones"][0]["label"] == "mine"


def test_config_show_survives_a_bad_cache_entry(use_stack_env, svc, tenant):
    from tests.conftest import run_cli

    svc.publish(tenant, *maps("truth"), SHA, "run")
    svc.redis.hset(svc.cache_key(tenant), "snapshot", b"\xff garbage")
    out = run_cli("config", "show", "--tenant", tenant)
    assert out.returncode == 0, out.stderr
    assert "truth" in out.stdout


def test_a_snapshot_whose_maps_do_not_validate_is_not_served(svc, tenant):
    svc.publish(tenant, *maps("truth"), SHA, "run")
    good = json.loads(svc.redis.hget(svc.cache_key(tenant), "snapshot") or svc.snapshot(tenant).to_json())
    bad = {**good, "zone_map": {"zones": "junk", "fallback_zone": 7}}
    svc.redis.hset(svc.cache_key(tenant), mapping={"version": 1, "snapshot": json.dumps(bad)})
    assert svc.snapshot(tenant).zone_map["zones"][0]["label"] == "truth"


@pytest.mark.parametrize("plant", ["higher-version", "junk-version", "wrong-type"])
def test_publishing_displaces_whatever_the_cache_holds(svc, tenant, plant):
    svc.publish(tenant, *maps("first"), SHA, "run")
    key = svc.cache_key(tenant)
    if plant == "higher-version":  # e.g. left by a database restored from an older backup
        foreign = {**json.loads(svc.snapshot(tenant).to_json()), "version": 99}
        svc.redis.hset(key, mapping={"version": 99, "snapshot": json.dumps(foreign)})
    elif plant == "junk-version":
        svc.redis.delete(key)
        svc.redis.hset(key, "version", "junk")
    else:
        svc.redis.delete(key)
        svc.redis.set(key, "not a hash")
    assert svc.publish(tenant, *maps("second"), SHA, "run") == 2
    snap = svc.snapshot(tenant)
    assert snap.version == 2 and snap.zone_map["zones"][0]["label"] == "second"
    assert svc.redis.hget(key, "version") == b"2"


def test_a_key_of_the_wrong_type_is_a_miss_and_is_cleared(svc, tenant):
    svc.publish(tenant, *maps("truth"), SHA, "run")
    svc.redis.delete(svc.cache_key(tenant))
    svc.redis.set(svc.cache_key(tenant), "junk")
    assert svc.snapshot(tenant).zone_map["zones"][0]["label"] == "truth"
    assert svc.redis.type(svc.cache_key(tenant)) in (b"hash", b"none")
    assert svc._cache_usable()  # junk under one key does not switch the cache off for everyone
