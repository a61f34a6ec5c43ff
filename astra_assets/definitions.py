"""Assembles the code location; nothing is defined here."""

from dagster import Definitions

from astra.settings import DEFAULT_INTENT_CATALOG

from astra_assets import config, guard, ingest, learn, orchestrator
from resources.env import env_or
from resources import (
    ConfigStoreResource,
    IngestRegistryResource,
    IntentCatalogResource,
    RedisResource,
    StorageLayout,
    s3_resource,
)
from schedules.custody import custody_audit, custody_audit_job, temp_cleanup, temp_cleanup_job
from schedules.dedup import dedup_reconcile, dedup_reconcile_job
from sensors.session_upload import session_upload_sensor
from sensors.template_upload import template_upload_sensor



def build_definitions() -> Definitions:
    """The code location. Optional settings take their defaults from the environment *now*
    (resources/env.py), so a process whose environment changes builds it again."""
    return Definitions(
        assets=[*ingest.assets, *config.assets, *orchestrator.assets, *guard.assets, *learn.assets],
        sensors=[template_upload_sensor, session_upload_sensor],
        schedules=[custody_audit, temp_cleanup, dedup_reconcile],
        jobs=[custody_audit_job, temp_cleanup_job, dedup_reconcile_job],
        resources={
            "s3": s3_resource(),
            "storage": StorageLayout.from_env(),
            "redis": RedisResource.from_env(),
            "config_store": ConfigStoreResource.from_env(),
            "registry": IngestRegistryResource.from_env(),
            "intent_catalog": IntentCatalogResource(path=env_or("ASTRA_INTENT_CATALOG", DEFAULT_INTENT_CATALOG)),
        },
    )


defs = build_definitions()
