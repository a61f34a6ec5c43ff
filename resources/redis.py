"""Redis (redis-py): the config cache today; the feedback stream and MODEL_UPDATED later."""

from __future__ import annotations

import redis
from dagster import ConfigurableResource

from astra.runtime import redis_client
from astra.settings import DEFAULT_REDIS_PREFIX, Settings
from resources.env import env, env_or


class RedisResource(ConfigurableResource):
    url: str
    key_prefix: str = DEFAULT_REDIS_PREFIX

    @classmethod
    def from_env(cls) -> RedisResource:
        return cls(url=env("redis_url"), key_prefix=env_or("redis_prefix", DEFAULT_REDIS_PREFIX))

    def client(self) -> redis.Redis:
        # The one client factory (short timeouts, no retry), shared with the CLI and services.
        return redis_client(Settings(redis_url=self.url, redis_prefix=self.key_prefix))
