"""Postgres access shared by the engines: one schema, one migration chain, one engine factory."""

from astra.db.engine import make_engine, normalize_url
from astra.db.migrate import upgrade

__all__ = ["make_engine", "normalize_url", "upgrade"]
