"""Assembles the code location; nothing is defined here."""

import os

from dagster import Definitions, EnvVar

from astra_assets import config, ingest, learn, orchestrator
from resources import ConfigStoreResource, IntentCatalogResource, RedisResource, StorageLayout, s3_resource
from sensors.template_upload import template_upload_sensor

defs = Definitions(
    assets=[*ingest.assets, *config.assets, *orchestrator.assets, *learn.assets],
    sensors=[template_upload_sensor],
    resources={
        "s3": s3_resource(),
        "storage": StorageLayout.from_env(),
        "redis": RedisResource.from_env(),
        "config_store": ConfigStoreResource.from_env(),
        "intent_catalog": IntentCatalogResource(path=EnvVar("ASTRA_INTENT_CATALOG"))
        if os.environ.get("ASTRA_INTENT_CATALOG")
        else IntentCatalogResource(),
    },
)
