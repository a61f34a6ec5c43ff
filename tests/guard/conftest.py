"""GUARD fixtures: the real Postgres and moto server of tests/conftest.py, plus tamper helpers.

Tampering is done as a superuser would: plain SQL with the append-only triggers disabled for the
length of one transaction (ALTER TABLE … DISABLE TRIGGER USER … ENABLE TRIGGER USER).
"""

from __future__ import annotations

import hashlib
import os
import uuid

import pytest
from sqlalchemy import text

from astra.db import make_engine
from astra.guard import CustodyLedger, take_custody

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def engine(settings):
    return make_engine(settings.database_url)


@pytest.fixture
def ledger(engine) -> CustodyLedger:
    return CustodyLedger(engine)


def superuser_sql(engine, *statements: tuple[str, dict] | str, table: str = "custody_ledger") -> None:
    """Run statements with the table's user triggers off, in one transaction."""
    with engine.begin() as conn:
        conn.execute(text(f"ALTER TABLE {table} DISABLE TRIGGER USER"))
        for stmt in statements:
            sql, params = (stmt, {}) if isinstance(stmt, str) else stmt
            conn.execute(text(sql), params)
        conn.execute(text(f"ALTER TABLE {table} ENABLE TRIGGER USER"))


def upload_audio(s3, settings, tenant: str, session_id: str, version: int = 1, data: bytes | None = None,
                 ext: str = "wav") -> tuple[str, str, bytes]:
    """A temporary upload as a client writes it; returns (key, sha256 hex, bytes)."""
    data = data if data is not None else b"RIFF" + os.urandom(2048)
    key = f"{tenant}/sessions/{session_id}/v{version}/audio.{ext}"
    s3.put_object(Bucket=settings.uploads_bucket, Key=key, Body=data)
    return key, hashlib.sha256(data).hexdigest(), data


def custody_n(engine, s3, settings, tenant: str, n: int):
    """n sessions of a tenant put under custody; returns [(record, ledger entry)]."""
    out = []
    for i in range(n):
        session = f"s{i}-{uuid.uuid4().hex[:6]}"
        key, sha, _ = upload_audio(s3, settings, tenant, session)
        out.append(take_custody(engine, s3, settings, tenant, session, 1, settings.uploads_bucket, key, sha, "wav"))
    return out


def rows(engine, tenant: str) -> list:
    with engine.connect() as conn:
        return conn.execute(
            text("SELECT seq, entry, prev_hash, entry_hash, entry_key, recorded_at FROM custody_ledger "
                 "WHERE tenant_id = :t ORDER BY seq"),
            {"t": tenant},
        ).all()
