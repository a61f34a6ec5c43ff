"""Dagster resources: thin ConfigurableResources over the engines' collaborators, set by EnvVar."""

from resources.config_store import ConfigStoreResource
from resources.intent_catalog import IntentCatalogResource
from resources.redis import RedisResource
from resources.registry import IngestRegistryResource
from resources.storage import StorageLayout, s3_resource

__all__ = [
    "ConfigStoreResource",
    "IngestRegistryResource",
    "IntentCatalogResource",
    "RedisResource",
    "StorageLayout",
    "s3_resource",
]
