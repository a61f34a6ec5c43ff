"""The audit's tests run on sessions the platform built: the Dagster fixtures of tests/dagster (a real instance,
the code location, IntentService on loopback over the test Postgres, Redis and moto) are reused as they are."""

from tests.core.test_model_store import tiny_encoder  # noqa: F401 — fixtures, registered by import
from tests.dagster.conftest import (  # noqa: F401
    core_server,
    core_target,
    dagster_instance,
    defs,
    run_settings,
    sample_intents_model,
)
from tests.dagster.test_document_asset import template_tenant  # noqa: F401
