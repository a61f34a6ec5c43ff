"""A real DagsterInstance (temp dir, SQLite) over the test services, and the code location.

Each test gets its own uploads bucket: a fresh instance's sensors start with an empty cursor
and would otherwise pick up every other test's uploads.

The session sensor's runs end with `intent_output`, which classifies through IntentService: a real one
(`core_server`, gRPC on loopback with the stack's token) serves a tiny model of the sample session's intents as the
base model, and every code location built here points at it.
"""

from __future__ import annotations

import dataclasses
import json
import uuid

import pytest
import redis
from dagster import instance_for_test

from astra import s3 as s3_lib
from astra.core.intent.store import BASE_TENANT
from astra.core.model_store import ModelStore, drain_outbox
from astra.core.service import serve
from astra.db.engine import make_engine
from astra.ingest.template_ingest import ingest_template
from astra.ingest.zones import extract_maps
from astra.runtime import config_service
from astra.samples.templates import SAMPLE_TEMPLATE_NAME, build_sample_template, sample_sidecar
from astra.settings import ENV, Settings
from tests.core.test_model_store import tiny_encoder  # noqa: F401 — a fixture

# What the sample session says (astra/samples/session_transcript.txt) that the sample template's zones accept.
SAMPLE_INTENTS = ("book_flight", "transfer", "reminder", "weather")


@pytest.fixture
def run_settings(settings, s3, use_stack_env, monkeypatch):
    """The test stack's settings with an uploads bucket of this test's own, also in the env."""
    bucket = f"{settings.uploads_bucket}-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    monkeypatch.setenv("ASTRA_UPLOADS_BUCKET", bucket)
    return dataclasses.replace(settings, uploads_bucket=bucket)


@pytest.fixture
def dagster_instance(tmp_path):
    with instance_for_test(temp_dir=str(tmp_path)) as instance:
        yield instance


@pytest.fixture
def defs(run_settings):
    # Built after the stack env (with this test's uploads bucket) is in place: optional
    # settings are read from the environment when the definitions are built.
    from astra_assets.definitions import build_definitions

    return build_definitions()


@pytest.fixture(scope="session")
def sample_intents_model(tiny_encoder, tmp_path_factory):  # noqa: F811 — the fixture imported below
    """A tiny intent model that knows the sample session's intents (and out of scope): (directory, model)."""
    from astra.core.intent.data import DEFAULT_DATASET, OOS, Example
    from astra.core.intent.model import IntentModel

    data = json.loads(DEFAULT_DATASET.read_text())
    examples = [Example(text, intent) for intent in SAMPLE_INTENTS
                for text in [t for t, label in data["train"] if label == intent][:10]]
    examples += [Example(text, OOS) for text, _ in data["oos_train"][:20]]
    model = IntentModel.train(examples, tiny_encoder, tenant=BASE_TENANT)
    directory = tmp_path_factory.mktemp("sample-model") / model.version
    model.save(directory)
    return directory, model


@pytest.fixture(scope="session")
def core_server(settings, s3, pg_url, redis_url, redis_prefix, stack_env, sample_intents_model, tmp_path_factory):
    """IntentService on loopback (threads of this process) serving the sample model as the base model, with the
    stack's service token, as `astra stack up` runs it."""
    store = ModelStore(make_engine(pg_url), s3, settings.assets_bucket, tmp_path_factory.mktemp("core-publisher"))
    store.publish(BASE_TENANT, sample_intents_model[0])
    drain_outbox(make_engine(pg_url), redis.Redis.from_url(redis_url), redis_prefix)
    server = serve("127.0.0.1:0", ModelStore(make_engine(pg_url), s3, settings.assets_bucket,
                                             tmp_path_factory.mktemp("core-cache")),
                   redis.Redis.from_url(redis_url), redis_prefix, token=stack_env["ASTRA_SERVICE_TOKEN"])
    yield server
    server.stop(0)


@pytest.fixture(autouse=True)
def core_target(core_server, monkeypatch) -> str:
    """ASTRA_CORE_TARGET of every test here: a code location built by a test (the `defs` fixture or its own
    build_definitions()) classifies through the test IntentService, never whatever listens on the default port."""
    monkeypatch.setenv(ENV["core_target"], core_server.target)
    return core_server.target


def publish_sample_config(tenant: str) -> int:
    """Config v1 of `tenant` from the sample template, with the template's atoms stored as the template path stores
    them: a session handed over with it builds its document (document_binary reads the template from the atoms).
    The upload is removed again, so no template sensor sees it."""
    settings = Settings.from_env()  # the test's stack env, with its own uploads bucket (run_settings)
    s3 = s3_lib.client(settings)
    template, key = build_sample_template(), f"{tenant}/templates/{SAMPLE_TEMPLATE_NAME}.docx"
    s3.put_object(Bucket=settings.uploads_bucket, Key=key, Body=template)
    try:
        ingested = ingest_template(s3, settings.uploads_bucket, settings.assets_bucket, key)
    finally:
        s3.delete_object(Bucket=settings.uploads_bucket, Key=key)
    maps = extract_maps(template, sample_sidecar())
    return config_service(settings).publish(tenant, maps.zone_map, maps.style_map,
                                                       ingested.template_sha256, "test", SAMPLE_TEMPLATE_NAME)
