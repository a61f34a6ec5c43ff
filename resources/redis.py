"""Redis (redis-py) for events and caches."""

from __future__ import annotations

import redis
from dagster import ConfigurableResource, EnvVar

from astra.settings import DEFAULT_REDIS_PREFIX
from resources.env import env_or


class RedisResource(ConfigurableResource):
    url: str
    key_prefix: str = "astra"

    @classmethod
    def from_env(cls) -> "RedisResource":
        return cls(url=EnvVar("ASTRA_REDIS_URL"), key_prefix=env_or("ASTRA_REDIS_PREFIX", DEFAULT_REDIS_PREFIX))

    def get_client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_connect_timeout=0.5, socket_timeout=0.5)
