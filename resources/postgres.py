"""Postgres: the one database of ARCHITECTURE §4 (config versions, registries, ledger, outbox)."""

from dagster import ConfigurableResource
from sqlalchemy import Engine

from astra.db import make_engine
from resources.env import env


class PostgresResource(ConfigurableResource):
    url: str

    @classmethod
    def from_env(cls) -> "PostgresResource":
        return cls(url=env("database_url"))

    def engine(self) -> Engine:
        return make_engine(self.url)  # cached per URL: one pool per process
