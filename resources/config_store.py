"""CONFIG_SVC as a resource: Postgres for the truth, Redis for the read-through cache."""

from dagster import ConfigurableResource, EnvVar
from sqlalchemy import Engine

from astra.config_svc import ConfigService
from astra.db import make_engine
from astra.runtime import redis_client
from astra.settings import DEFAULT_REDIS_PREFIX, Settings
from resources.env import env_or


class ConfigStoreResource(ConfigurableResource):
    database_url: str
    redis_url: str
    redis_prefix: str = "astra"

    @classmethod
    def from_env(cls) -> "ConfigStoreResource":
        return cls(
            database_url=EnvVar("ASTRA_DATABASE_URL"),
            redis_url=EnvVar("ASTRA_REDIS_URL"),
            redis_prefix=env_or("ASTRA_REDIS_PREFIX", DEFAULT_REDIS_PREFIX),
        )

    def engine(self) -> Engine:
        return make_engine(self.database_url)

    def service(self) -> ConfigService:
        settings = Settings(database_url=self.database_url, redis_url=self.redis_url, redis_prefix=self.redis_prefix)
        return ConfigService(self.engine(), redis_client(settings), self.redis_prefix)
