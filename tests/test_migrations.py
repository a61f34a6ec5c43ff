"""The Alembic chain builds exactly the schema the code queries, and the ledger is append-only."""

from __future__ import annotations

import uuid

import psycopg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, pool, text

from astra.db import normalize_url, upgrade
from astra.db.migrate import alembic_config
from astra.db.schema import metadata
from tests.conftest import PG_ADMIN_URL

pytestmark = pytest.mark.integration


@pytest.fixture
def fresh_db():
    name = f"astra_mig_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_migrations_match_the_schema_module(fresh_db):
    upgrade(fresh_db)
    upgrade(fresh_db)  # idempotent
    engine = create_engine(normalize_url(fresh_db), poolclass=pool.NullPool)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    # Partial indexes and triggers live only in the migration; table and column shapes must agree.
    assert [d for d in diff if d[0] not in ("add_index", "remove_index")] == []


def test_downgrade_to_base_and_back(fresh_db):
    from alembic import command

    upgrade(fresh_db)
    command.downgrade(alembic_config(fresh_db), "base")
    upgrade(fresh_db)


def test_custody_ledger_refuses_update_delete_truncate(fresh_db):
    upgrade(fresh_db)
    engine = create_engine(normalize_url(fresh_db), poolclass=pool.NullPool)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO tenants (tenant_id) VALUES ('acme')"))
        conn.execute(text(
            "INSERT INTO custody_ledger (tenant_id, seq, entry, prev_hash, entry_hash) "
            "VALUES ('acme', 1, '{}', repeat('0', 64), repeat('1', 64))"
        ))
    for stmt in ("UPDATE custody_ledger SET entry = 'x'", "DELETE FROM custody_ledger", "TRUNCATE custody_ledger"):
        with pytest.raises(Exception, match="append-only"):
            with engine.begin() as conn:
                conn.execute(text(stmt))


@pytest.mark.parametrize("slug", ["Acme", "a--b", "a_b", "a,b"])
def test_tenant_slug_is_enforced_in_the_database_too(fresh_db, slug):
    upgrade(fresh_db)
    engine = create_engine(normalize_url(fresh_db), poolclass=pool.NullPool)
    with pytest.raises(Exception, match="tenants_slug"):
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO tenants (tenant_id) VALUES (:t)"), {"t": slug})
