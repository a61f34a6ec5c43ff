"""Dagster resources: thin ConfigurableResources named for the systems they reach, set by EnvVar."""

from resources.config_store import ConfigStoreResource
from resources.core import IntentServiceResource
from resources.handover import HandoverResource
from resources.intent_catalog import IntentCatalogResource
from resources.learn import ModelStoreResource
from resources.postgres import PostgresResource
from resources.redis import RedisResource
from resources.registry import IngestRegistryResource
from resources.storage import StorageLayout, s3_resource

__all__ = [
    "ConfigStoreResource",
    "HandoverResource",
    "IngestRegistryResource",
    "IntentCatalogResource",
    "IntentServiceResource",
    "ModelStoreResource",
    "PostgresResource",
    "RedisResource",
    "StorageLayout",
    "s3_resource",
]
