"""LEARN's model registry as a resource: ModelStore over Postgres (model_registry, outbox) and the assets bucket."""

from __future__ import annotations

from pathlib import Path

from dagster import ConfigurableResource
from dagster_aws.s3 import S3Resource

from astra.core.model_store import ModelStore
from astra.stack.stack import state_dir
from resources.postgres import PostgresResource
from resources.storage import StorageLayout

MODEL_CACHE = "learn-model-cache"  # under the state dir: the models a run loads, by version (verified)


class ModelStoreResource(ConfigurableResource):
    postgres: PostgresResource
    s3: S3Resource
    storage: StorageLayout
    # Where fetched models are kept between runs; unset: <state dir>/learn-model-cache, read when a run starts.
    cache_dir: str | None = None

    def store(self) -> ModelStore:
        cache = Path(self.cache_dir) if self.cache_dir else state_dir() / MODEL_CACHE
        return ModelStore(self.postgres.engine(), self.s3.get_client(), self.storage.assets_bucket, cache)
