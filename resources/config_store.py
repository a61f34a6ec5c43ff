"""CONFIG_SVC as a resource: Postgres for the truth, Redis for the read-through cache."""

from dagster import ConfigurableResource

from astra.config_svc import ConfigService
from resources.postgres import PostgresResource
from resources.redis import RedisResource


class ConfigStoreResource(ConfigurableResource):
    postgres: PostgresResource
    redis: RedisResource

    def service(self) -> ConfigService:
        return ConfigService(self.postgres.engine(), self.redis.client(), self.redis.key_prefix)
