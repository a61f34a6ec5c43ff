"""Assembles the code location; nothing is defined here."""

from dagster import Definitions

from astra_assets import builder, config, core, guard, ingest, learn, orchestrator
from resources import (
    ConfigStoreResource,
    HandoverResource,
    IngestRegistryResource,
    IntentCatalogResource,
    IntentServiceResource,
    ModelStoreResource,
    PostgresResource,
    RedisResource,
    StorageLayout,
    s3_resource,
)
from schedules.archival import archive_rules, archive_rules_job
from schedules.custody import custody_audit, custody_audit_job, temp_cleanup, temp_cleanup_job
from schedules.dedup import dedup_reconcile, dedup_reconcile_job
from schedules.learn import retrain_catch_up, retrain_catch_up_job
from sensors.feedback_upload import feedback_upload_sensor
from sensors.learn import learn_feedback_sensor, model_updated_publisher
from sensors.session_upload import session_upload_sensor
from sensors.template_upload import template_upload_sensor


def build_resources() -> dict:
    """One instance per system, shared by the resources built on them."""
    s3, storage = s3_resource(), StorageLayout.from_env()
    postgres, redis = PostgresResource.from_env(), RedisResource.from_env()
    config_store = ConfigStoreResource(postgres=postgres, redis=redis)
    registry = IngestRegistryResource.from_env()
    return {
        "s3": s3,
        "storage": storage,
        "postgres": postgres,
        "redis": redis,
        "config_store": config_store,
        "registry": registry,
        "handover": HandoverResource(s3=s3, storage=storage, postgres=postgres, config_store=config_store,
                                     registry=registry),
        "intent_catalog": IntentCatalogResource.from_env(),
        "intent_service": IntentServiceResource.from_env(),
        "model_store": ModelStoreResource(postgres=postgres, s3=s3, storage=storage),
    }


def build_definitions() -> Definitions:
    """The code location. Optional settings take their defaults from the environment *now*
    (resources/env.py), so a process whose environment changes builds it again."""
    return Definitions(
        assets=[*ingest.assets, *config.assets, *orchestrator.assets, *guard.assets, *core.assets, *builder.assets,
                *learn.assets],
        sensors=[template_upload_sensor, session_upload_sensor, feedback_upload_sensor, learn_feedback_sensor,
                 model_updated_publisher],
        schedules=[custody_audit, temp_cleanup, dedup_reconcile, retrain_catch_up, archive_rules],
        jobs=[custody_audit_job, temp_cleanup_job, dedup_reconcile_job, retrain_catch_up_job, archive_rules_job],
        resources=build_resources(),
    )


defs = build_definitions()
