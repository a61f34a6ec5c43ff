"""Engine factory: SQLAlchemy 2 over psycopg 3, whatever spelling of the URL the caller has."""

from __future__ import annotations

from functools import lru_cache

from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import make_url


def normalize_url(url: str) -> str:
    """`postgresql://…` and `postgres://…` mean psycopg 3 here (SQLAlchemy would pick psycopg2)."""
    u = make_url(url.replace("postgres://", "postgresql://", 1) if url.startswith("postgres://") else url)
    if u.drivername in ("postgresql", "postgresql+psycopg2"):
        u = u.set(drivername="postgresql+psycopg")
    return u.render_as_string(hide_password=False)


@lru_cache(maxsize=16)
def make_engine(url: str) -> Engine:
    # One pool per URL per process: the config service, registry and ledger share it.
    return create_engine(normalize_url(url), pool_pre_ping=True, pool_size=5, max_overflow=10)
