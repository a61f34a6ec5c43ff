"""Assembles the code location; nothing is defined here."""

from dagster import Definitions
from dagster_aws.s3 import S3Resource  # noqa: F401 — the type the `s3` resource key carries

from astra_assets import ingest, learn, orchestrator
from resources import ConfigStoreResource, RedisResource, StorageLayout, s3_resource

defs = Definitions(
    assets=[*ingest.assets, *orchestrator.assets, *learn.assets],
    resources={
        "s3": s3_resource(),
        "storage": StorageLayout.from_env(),
        "redis": RedisResource.from_env(),
        "config_store": ConfigStoreResource.from_env(),
    },
)
