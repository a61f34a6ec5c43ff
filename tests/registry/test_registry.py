"""AssetRegistry against the test database: NEW/DUPLICATE, per-tenant URIs, validation, races."""

from __future__ import annotations

import threading

import pytest

from astra.ingest.registry import AssetRegistry, Digest, InvalidRegistration, Outcome, canonical_uri
from tests.registry.conftest import new_digest

pytestmark = pytest.mark.integration


def test_new_then_duplicate_with_per_tenant_content_address(registry, settings, tenant):
    d = new_digest("data/readings.csv", "text/csv")
    first = registry.register(tenant, [d])
    expected = f"s3://{settings.assets_bucket}/{tenant}/blobs/sha256/{d.sha256[:2]}/{d.sha256}"
    assert [(s.sha256, s.outcome, s.canonical_uri) for s in first] == [(d.sha256, Outcome.NEW, expected)]
    assert first[0].is_new
    again = registry.register(tenant, [d])
    assert [(s.outcome, s.canonical_uri) for s in again] == [(Outcome.DUPLICATE, expected)]


def test_statuses_follow_request_order_and_repeats_in_one_request(registry, tenant):
    old, a, b = new_digest(), new_digest(), new_digest()
    registry.register(tenant, [old])
    got = registry.register(tenant, [a, old, a, b, a])
    assert [s.sha256 for s in got] == [a.sha256, old.sha256, a.sha256, b.sha256, a.sha256]
    assert [s.outcome for s in got] == [Outcome.NEW, Outcome.DUPLICATE, Outcome.DUPLICATE, Outcome.NEW,
                                        Outcome.DUPLICATE]
    assert len({s.canonical_uri for s in got if s.sha256 == a.sha256}) == 1
    assert registry.register(tenant, []) == []


def test_dedup_never_crosses_tenants(registry, tenant):
    other = tenant + "-b"
    d = new_digest("media/photo.png", "image/png")
    mine = registry.register(tenant, [d])[0]
    assert mine.is_new
    # Tenant B gets exactly what it would get for a digest nobody holds: NEW, its own URI.
    theirs = registry.register(other, [d])[0]
    fresh = registry.register(other, [new_digest()])[0]
    assert theirs.outcome is fresh.outcome is Outcome.NEW
    assert theirs.canonical_uri == canonical_uri(registry.assets_bucket, other, d.sha256)
    assert tenant not in theirs.canonical_uri.replace(other, "")
    assert registry.register(other, [d])[0].canonical_uri == theirs.canonical_uri
    assert registry.register(tenant, [d])[0].canonical_uri == mine.canonical_uri


def test_concurrent_registration_of_one_digest_yields_one_new(registry_engine_, settings, tenant):
    # A fresh registry (cold tenant cache) so the tenant row insert races too.
    registry = AssetRegistry(registry_engine_, settings.assets_bucket)
    d = new_digest()
    n = 24
    barrier = threading.Barrier(n)
    results, errors = [], []

    def worker():
        try:
            barrier.wait()
            results.append(registry.register(tenant, [d])[0])
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert not errors
    assert sorted(s.outcome.value for s in results) == ["DUPLICATE"] * (n - 1) + ["NEW"]
    assert {s.canonical_uri for s in results} == {registry.canonical_uri(tenant, d.sha256)}


@pytest.mark.parametrize(
    "tenant_, digest, fragment",
    [
        ("Acme", None, "tenant: invalid tenant 'Acme'"),
        ("a--b", None, "tenant: invalid tenant"),
        ("", None, "tenant: invalid tenant"),
        ("acme\n", None, "tenant: invalid tenant"),
        (None, Digest("AB" * 32, 1), "assets[0].sha256: must be 64 lowercase hex"),
        (None, Digest("ab" * 31, 1), "assets[0].sha256: must be 64 lowercase hex"),
        (None, Digest("ab" * 32 + "\n", 1), "assets[0].sha256: must be 64 lowercase hex"),
        (None, Digest("ab" * 32, -1), "assets[0].size: must be an integer >= 0"),
        (None, Digest("ab" * 32, 1, "text/plain", "a\x00b"), "assets[0].name: must not contain NUL"),
        (None, Digest("ab" * 32, 1, "x" * 300), "assets[0].media_type: 300 characters"),
    ],
)
def test_invalid_input_is_refused_naming_the_field(registry, tenant, tenant_, digest, fragment):
    with pytest.raises(InvalidRegistration) as err:
        registry.register(tenant if tenant_ is None else tenant_, [digest or new_digest()])
    assert fragment in str(err.value)


def test_conflicting_sizes_and_too_many_digests_are_refused(registry, tenant):
    d = new_digest()
    with pytest.raises(InvalidRegistration, match=r"assets\[1\].size: .* differs"):
        registry.register(tenant, [d, Digest(d.sha256, d.size + 1)])
    with pytest.raises(InvalidRegistration, match="at most 1000"):
        registry.register(tenant, [new_digest() for _ in range(1001)])


def test_refused_request_writes_nothing(registry, tenant):
    good = new_digest()
    with pytest.raises(InvalidRegistration):
        registry.register(tenant, [good, Digest("zz", 1)])
    assert registry.register(tenant, [good])[0].is_new


def test_digest_committed_by_another_transaction_mid_statement(registry, pg_url, tenant):
    """The insert waits for a competing transaction holding the same key; once it commits, the
    statement's snapshot cannot see that row, so the registry reads it again: DUPLICATE with the
    URI the other transaction stored."""
    import psycopg

    registry.register(tenant, [new_digest()])  # tenant row exists
    d = new_digest()
    stored = f"s3://elsewhere/{tenant}/blobs/sha256/{d.sha256[:2]}/{d.sha256}"
    with psycopg.connect(pg_url) as other:
        other.execute(
            "INSERT INTO asset_registry (tenant_id, sha256, size, media_type, name, canonical_uri) "
            "VALUES (%s, %s, %s, 'x', 'x', %s)", (tenant, d.sha256, d.size, stored))
        result = []
        t = threading.Thread(target=lambda: result.append(registry.register(tenant, [d])[0]))
        t.start()
        t.join(0.5)
        assert t.is_alive()  # blocked on the uncommitted row
        other.commit()
        t.join(10)
    assert result[0].outcome is Outcome.DUPLICATE and result[0].canonical_uri == stored


def test_register_many_is_one_statement_in_request_order(registry, tenant):
    other = tenant + "-b"
    x, y = new_digest(), new_digest()
    got = registry.register_many([(tenant, [x]), (other, [x]), (tenant, [x, y]), (other, [])])
    assert [[(s.sha256, s.outcome) for s in r] for r in got] == [
        [(x.sha256, Outcome.NEW)],
        [(x.sha256, Outcome.NEW)],
        [(x.sha256, Outcome.DUPLICATE), (y.sha256, Outcome.NEW)],
        [],
    ]
    assert got[0][0].canonical_uri == got[2][0].canonical_uri != got[1][0].canonical_uri
    with pytest.raises(InvalidRegistration):
        registry.register_many([(tenant, [new_digest()]), ("BAD", [new_digest()])])


def test_registry_statement_probes_the_primary_key_whatever_the_plan(registry, pg_url, tenant):
    """As a join the planner picks a hash join over a sequential scan of asset_registry for the
    batch (it guesses 100 rows): each call would then read the whole table. The generic plan
    (what a prepared statement ends up with) must probe the index."""
    import json

    import psycopg
    import psycopg.sql

    from astra.ingest.registry import _REGISTER_SQL

    registry.register(tenant, [new_digest() for _ in range(50)])
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("INSERT INTO asset_registry (tenant_id, sha256, size, media_type, name, canonical_uri) "
                     "SELECT %s, md5(i::text) || md5((i + 1)::text), 1, 'x', 'x', 'u' FROM generate_series(1, 20000) i",
                     (tenant,))
        conn.execute("ANALYZE asset_registry")
        conn.execute("SET plan_cache_mode = force_generic_plan")
        conn.execute("PREPARE reg(text) AS " + _REGISTER_SQL.replace("%(batch)s", "$1"))
        batch = json.dumps([{"tenant_id": tenant, "sha256": new_digest().sha256, "size": 1, "media_type": "x",
                             "name": "", "canonical_uri": "u"}])
        conn.execute("BEGIN")
        explain = psycopg.sql.SQL("EXPLAIN EXECUTE reg({})").format(psycopg.sql.Literal(batch))
        plan = "\n".join(r[0] for r in conn.execute(explain).fetchall())
        conn.execute("ROLLBACK")
    assert "Seq Scan on asset_registry" not in plan, plan
    assert "Index Scan using asset_registry_pkey" in plan, plan
