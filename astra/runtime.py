"""Build the engines' collaborators from Settings: the CLI's and the services' wiring.

The Dagster resources build the same objects from the same variables (through EnvVar)."""

from __future__ import annotations

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from astra.config_svc import ConfigService
from astra.db import make_engine
from astra.settings import Settings


def redis_client(settings: Settings) -> redis.Redis | None:
    if not settings.redis_url:
        return None
    # Short timeouts: the cache must fail fast to Postgres, never hang a reader.
    return redis.Redis.from_url(
        settings.redis_url, socket_connect_timeout=0.5, socket_timeout=0.5, retry=Retry(NoBackoff(), 0)
    )


def config_service(settings: Settings) -> ConfigService:
    return ConfigService(make_engine(settings.require("database_url")), redis_client(settings), settings.redis_prefix)
