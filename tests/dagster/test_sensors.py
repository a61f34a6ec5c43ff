"""The upload sensors under load and faults (issue 7: 1.3, 1.7, 1.12), over real services.

- one tenant's junk cannot stall another tenant's sessions, each tick is bounded, the cursor
  stays small, and refused uploads are reported once;
- a session of a tenant with no config waits (visibly) and is handed over once the config exists;
- a run that failed for a transient reason is offered again under a new run key; a refusal is not.
"""

from __future__ import annotations

import json
import uuid

import pytest
from dagster import AssetKey

from astra import uploads
from astra.orchestrator.upload import upload_session
from astra.runtime import config_service
from astra.samples import session_files
from astra.samples.templates import build_sample_template, sample_sidecar
from astra.settings import ENV, Settings
from astra.stack.processes import free_port
from astra.tenancy import SessionKey
from astra_assets.local_runner import CURSOR_KEY, tick
from sensors import reoffer
from tests.dagster.conftest import publish_sample_config
from tests.dagster.test_template_path import runs_for, upload, with_macro

pytestmark = pytest.mark.integration
SESSIONS = "session_upload_sensor"
TEMPLATES = "template_upload_sensor"


def quarantined(instance) -> list[dict]:
    records = instance.fetch_observations(AssetKey("upload_quarantine"), limit=5000).records
    return [{k: v.value for k, v in r.asset_observation.metadata.items()} for r in records]


def cursor_of(instance, sensor: str) -> str:
    return instance.run_storage.get_cursor_values({CURSOR_KEY + sensor}).get(CURSOR_KEY + sensor) or ""


def publish(tenant: str) -> None:
    publish_sample_config(tenant)  # the sample template's atoms stored: its sessions' documents build


def test_a_junk_tenant_cannot_stall_another_tenants_session(defs, dagster_instance, s3, run_settings, monkeypatch):
    budget = uploads.Budget
    monkeypatch.setattr(uploads, "Budget", lambda: budget(per_tenant=40))
    monkeypatch.setattr(uploads, "MAX_SEEN", 50)  # fewer than the junk: the cursor forgets some of it
    suffix = uuid.uuid4().hex[:8]
    junk, good = f"a-junk-{suffix}", f"z-good-{suffix}"
    publish(junk)
    publish(good)
    bucket = run_settings.uploads_bucket
    for i in range(150):
        s3.put_object(Bucket=bucket, Key=f"{junk}/sessions/s{i:03d}/v1/manifest.json", Body=b"{not json")
    absent = {"tenant": junk, "version": 1, "template": "t", "created_at": "2026-11-25T10:00:00Z",
              "audio": "audio.wav", "data": [f"data/d{i}.csv" for i in range(100)],
              "media": [f"media/m{i}.png" for i in range(100)]}
    for i in range(5):
        s3.put_object(Bucket=bucket, Key=f"{junk}/sessions/absent{i}/v1/manifest.json",
                      Body=json.dumps({**absent, "session_id": f"absent{i}"}).encode())
    session = SessionKey(good, "visit-1", 1)
    upload_session(s3, bucket, session, "field_inspection", session_files())

    first = tick(defs, dagster_instance, SESSIONS)
    assert [r.success for r in first.results] == [True]  # the good tenant's turn came in the first tick
    assert first.events_reported < 50  # the junk tenant got its share of the tick, no more
    assert len(cursor_of(dagster_instance, SESSIONS)) < 4000
    for _ in range(10):
        tick(defs, dagster_instance, SESSIONS)
    refused = [q for q in quarantined(dagster_instance) if q["key"].startswith(f"{junk}/")]
    # Each reported once, though the cursor could not remember them all (the quarantine record does).
    assert len(refused) == 155 and len({q["key"] for q in refused}) == 155
    assert sum("names files that are not uploaded" in q["reason"] for q in refused) == 5
    assert tick(defs, dagster_instance, SESSIONS).events_reported == 0
    assert len(cursor_of(dagster_instance, SESSIONS)) < 4000


def test_a_session_waits_for_its_tenants_config_then_runs(defs, dagster_instance, s3, run_settings, tenant):
    session = SessionKey(tenant, f"s-{uuid.uuid4().hex[:6]}", 1)
    upload_session(s3, run_settings.uploads_bucket, session, "field_inspection", session_files())
    waiting = tick(defs, dagster_instance, SESSIONS)
    assert waiting.results == []
    notes = [q for q in quarantined(dagster_instance) if q.get("waiting")]
    assert len(notes) == 1 and tenant in notes[0]["reason"] and "no config yet" in notes[0]["reason"]
    again = tick(defs, dagster_instance, SESSIONS)
    assert again.results == [] and again.events_reported == 0  # said once, not every tick
    assert tenant in again.skip_reason and "ingest the tenant's template first" in again.skip_reason

    publish(tenant)
    ready = tick(defs, dagster_instance, SESSIONS)
    assert [r.success for r in ready.results] == [True]
    assert ready.results[0].dagster_run.tags["astra/session"] == session.partition_key


@pytest.fixture
def no_delay(monkeypatch):
    monkeypatch.setattr(reoffer, "DELAY_SECONDS", 0.0)


def test_a_template_run_failed_by_a_redis_outage_is_offered_again(dagster_instance, s3, run_settings, tenant,
                                                                   no_delay, monkeypatch):
    from astra_assets.definitions import build_definitions

    with monkeypatch.context() as outage:
        outage.setenv(ENV["redis_url"], f"redis://127.0.0.1:{free_port()}/0")  # nothing listens there
        upload(s3, run_settings, tenant, build_sample_template(), sidecar=sample_sidecar())
        (failed,) = runs_for(tick(build_definitions(), dagster_instance, TEMPLATES), tenant)
    assert not failed.success  # tenant_config could not publish (its own retries ran out)
    defs = build_definitions()

    # Re-offered at most MAX_REOFFERS times: with none left, the sensor gives up.
    monkeypatch.setattr(reoffer, "MAX_REOFFERS", 0)
    before = cursor_of(dagster_instance, TEMPLATES)
    assert runs_for(tick(defs, dagster_instance, TEMPLATES), tenant) == []
    dagster_instance.run_storage.set_cursor_values({CURSOR_KEY + TEMPLATES: before})  # that tick never happened

    monkeypatch.setattr(reoffer, "MAX_REOFFERS", 3)
    (retried,) = runs_for(tick(defs, dagster_instance, TEMPLATES), tenant)
    assert retried.success
    tags = retried.dagster_run.tags
    assert tags["dagster/run_key"] == f"{failed.dagster_run.tags['dagster/run_key']}-retry1"
    assert tags[reoffer.REOFFER_TAG] == "1"
    assert config_service(Settings.from_env()).snapshot(tenant).version == 1
    assert runs_for(tick(defs, dagster_instance, TEMPLATES), tenant) == []  # settled: nothing more


def test_a_refused_template_is_not_offered_again(defs, dagster_instance, s3, run_settings, tenant, no_delay):
    upload(s3, run_settings, tenant, with_macro(build_sample_template()))
    (refused,) = runs_for(tick(defs, dagster_instance, TEMPLATES), tenant)
    assert not refused.success
    later = tick(defs, dagster_instance, TEMPLATES)
    assert runs_for(later, tenant) == [] and not [k for k in later.skipped_run_keys if "-retry" in k]


def test_a_session_run_failed_by_an_outage_is_offered_again_and_handed_over(
        dagster_instance, s3, run_settings, tenant, no_delay, monkeypatch):
    from astra_assets.definitions import build_definitions

    publish(tenant)
    session = SessionKey(tenant, f"s-{uuid.uuid4().hex[:6]}", 1)
    upload_session(s3, run_settings.uploads_bucket, session, "field_inspection", session_files())
    # The custody copy cannot be made: the guard bucket is unreachable (here: not there at all).
    with monkeypatch.context() as outage:
        outage.setenv(ENV["guard_bucket"], f"gone-{uuid.uuid4().hex[:8]}")
        (failed,) = tick(build_definitions(), dagster_instance, SESSIONS).results
    assert not failed.success
    (retried,) = tick(build_definitions(), dagster_instance, SESSIONS).results
    assert retried.success
    assert retried.dagster_run.tags["dagster/run_key"] == f"{failed.dagster_run.tags['dagster/run_key']}-retry1"
    assert retried.dagster_run.tags["astra/session"] == session.partition_key
    # The same assets as the failed run (a session's, not a clone's): the sensor selects per manifest.
    assert failed.dagster_run.asset_selection and \
        retried.dagster_run.asset_selection == failed.dagster_run.asset_selection
