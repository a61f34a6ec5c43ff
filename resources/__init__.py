"""Dagster resources: thin ConfigurableResources over the engines' collaborators, set by EnvVar."""

from resources.config_store import ConfigStoreResource
from resources.redis import RedisResource
from resources.storage import StorageLayout, s3_resource

__all__ = ["ConfigStoreResource", "RedisResource", "StorageLayout", "s3_resource"]
