"""The `intent_output` asset over the real services: the session sensor's run hands a session over, transcribes it
and binds it — utterances classified by a real IntentService on loopback, the CSV typed and bound to the table zone,
all by the zone map of the config version the handover pinned. Bad data is reported in the output, a request the
service refuses fails once, and the service down is retried before the run fails."""

from __future__ import annotations

import copy
import hashlib
import json
import uuid

import pytest
from dagster import AssetKey

from astra.core.binding import DEFAULT_LOW_CONFIDENCE
from astra.core.core_client import IntentClient
from astra.ingest.zones import extract_maps
from astra.orchestrator.upload import upload_session
from astra.runtime import config_service
from astra.samples import session_files
from astra.samples.templates import build_sample_template, sample_sidecar
from astra.settings import ENV, Settings
from astra.stack.processes import free_port
from astra.tenancy import SessionKey
from astra_assets.local_runner import tick
from tests.dagster.test_session_path import SENSOR, latest

pytestmark = pytest.mark.integration
TRANSFER = "Please transfer two hundred dollars from checking to savings to pay the contractor."
FLIGHT = "I need to book a flight to Denver for next Tuesday."


def sample_maps() -> tuple[dict, dict]:
    maps = extract_maps(build_sample_template(), sample_sidecar())
    return copy.deepcopy(maps.zone_map), copy.deepcopy(maps.style_map)


@pytest.fixture
def sample_tenant(tenant, defs) -> str:
    """A tenant whose config is the sample template's: text zones by intent/domain, data/*.csv to `measurements`."""
    config_service(Settings.from_env()).publish(tenant, *sample_maps(), "cd" * 32, "test")
    return tenant


def run_session(s3, bucket, tenant, files, defs, instance, locale=None, expect_success=True) -> SessionKey:
    """Upload, then one sensor tick: its run hands over, transcribes and makes the intent output. Judged by the
    intent_output step (later steps of the run, building the document, are tested where they are built)."""
    session = SessionKey(tenant, f"s-{uuid.uuid4().hex[:6]}", 1)
    upload_session(s3, bucket, session, "field_inspection", files, locale=locale)
    outcome = tick(defs, instance, SENSOR)
    assert len(outcome.results) == 1
    assert outcome.results[0].is_node_success("intent_output") == expect_success
    return session


def materialize(defs, instance, session: SessionKey):
    job = defs.resolve_implicit_global_asset_job_def()
    return job.execute_in_process(instance=instance, asset_selection=[AssetKey("intent_output")],
                                  partition_key=session.partition_key, raise_on_error=False)


def events(result, kind: str) -> list:
    return [e for e in result.all_events if e.event_type_value == kind]


def said(error) -> str:
    """The error's message and those of its causes (an exhausted retry policy wraps the last failure)."""
    return error.message + (said(error.cause) if error.cause else "")


def stored(s3, uri: str) -> tuple[dict, str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    return json.loads(body), hashlib.sha256(body).hexdigest()


def by_text(document: dict) -> dict[str, dict]:
    return {u["text"]: u for u in document["utterances"]}


def test_the_sensor_run_binds_the_sample_session_to_the_pinned_zones(defs, dagster_instance, s3, run_settings,
                                                                     sample_tenant, core_server, stack_env):
    session = run_session(s3, run_settings.uploads_bucket, sample_tenant, session_files(), defs, dagster_instance)
    meta = latest(dagster_instance, "intent_output", session.partition_key)
    document, sha256 = stored(s3, meta["uri"])
    assert sha256 == meta["sha256"] and meta["uri"].endswith(f"/{sample_tenant}/blobs/sha256/{sha256[:2]}/{sha256}")
    # The version recorded is the one the running service answers with.
    served = IntentClient(core_server.target, stack_env["ASTRA_SERVICE_TOKEN"]).classify(sample_tenant, ["hi"])
    assert meta["model_version"] == document["model_version"] == served.model_version
    assert meta["config_version"] == document["config_version"] == 1
    assert document["transcript_sha256"] == latest(dagster_instance, "transcript", session.partition_key)["sha256"]

    utterances = by_text(document)
    assert len(utterances) == meta["utterances"] == 5
    assert (utterances[TRANSFER]["intent"], utterances[TRANSFER]["domain"]) == ("transfer", "banking")
    assert (utterances[FLIGHT]["intent"], utterances[FLIGHT]["domain"]) == ("book_flight", "travel")
    assert utterances[TRANSFER]["zone"] == utterances[FLIGHT]["zone"] == "summary"
    for u in document["utterances"]:  # every other one where the sample map's rules put it, flagged accordingly
        expected = "notes" if u["oos"] else {"banking": "summary", "travel": "summary", "home": "action_items"}.get(
            u["domain"], "notes")
        assert u["zone"] == expected, u
        assert ("out_of_scope" in u["flags"]) == u["oos"]
        assert ("low_confidence" in u["flags"]) == (u["confidence"] < DEFAULT_LOW_CONFIDENCE)
    assert meta["per_zone"] == document["counts"]["per_zone"]
    assert sum(meta["per_zone"].values()) == 5 and meta["per_zone"]["summary"] >= 2
    assert meta["out_of_scope"] == sum(u["oos"] for u in document["utterances"]) >= 1  # the service's oos flag

    # The CSV, typed, in the table zone its pattern names.
    assert meta["tables"] == {"data/readings.csv": "measurements"} and meta["data_problems"] == []
    (table,) = document["tables"]
    types = {c["name"]: c["type"] for c in table["columns"]}
    assert types == {"sensor": "text", "location": "text", "pressure_kpa": "decimal", "temperature_c": "decimal",
                     "recorded_at": "datetime"}
    assert table["row_count"] == 3 and table["rows"][0][2] == 412.5
    assert meta["locale_supported"] is True

    # Materialized again: the same output, the same blob, the same data version.
    assert materialize(defs, dagster_instance, session).success
    assert latest(dagster_instance, "intent_output", session.partition_key)["sha256"] == sha256


def test_the_pinned_config_version_is_used_after_a_newer_one_is_published(defs, dagster_instance, s3, run_settings,
                                                                          sample_tenant):
    files = {"transcript.txt": TRANSFER.encode()}
    pinned = run_session(s3, run_settings.uploads_bucket, sample_tenant, files, defs, dagster_instance)
    # Version 2 moves banking from the summary to the action items.
    zone_map, style_map = sample_maps()
    zones = {z["id"]: z for z in zone_map["zones"]}
    zones["summary"]["accepts"] = {"intents": [], "domains": ["travel"], "fallback": False}
    zones["action_items"]["accepts"]["domains"].append("banking")
    assert config_service(Settings.from_env()).publish(sample_tenant, zone_map, style_map, "ef" * 32, "test") == 2

    assert materialize(defs, dagster_instance, pinned).success
    meta = latest(dagster_instance, "intent_output", pinned.partition_key)
    assert meta["config_version"] == 1
    assert by_text(stored(s3, meta["uri"])[0])[TRANSFER]["zone"] == "summary"
    # A session handed over now pins version 2, and the same words go where version 2 says.
    later = run_session(s3, run_settings.uploads_bucket, sample_tenant, files, defs, dagster_instance)
    meta = latest(dagster_instance, "intent_output", later.partition_key)
    assert meta["config_version"] == 2
    assert by_text(stored(s3, meta["uri"])[0])[TRANSFER]["zone"] == "action_items"


def test_bad_data_files_are_reported_in_the_output_not_a_crash(defs, dagster_instance, s3, run_settings,
                                                               sample_tenant):
    files = {**session_files(), "data/ragged.csv": b"a,b\n1,2\n3,4,5\n", "data/readings.json": b"{not json"}
    session = run_session(s3, run_settings.uploads_bucket, sample_tenant, files, defs, dagster_instance)
    meta = latest(dagster_instance, "intent_output", session.partition_key)
    problems = {p["source"]: (p["reason"], p["zone"]) for p in meta["data_problems"]}
    # The zone a refused file would have filled is named (the JSON matches no table zone of the sample map).
    assert problems == {"data/ragged.csv": ("ragged_row", "measurements"), "data/readings.json": ("malformed", None)}
    assert meta["tables"] == {"data/readings.csv": "measurements"}
    document, _ = stored(s3, meta["uri"])
    assert document["counts"]["data_problems"] == 2 and len(document["utterances"]) == 5


def test_a_locale_the_models_do_not_cover_is_flagged_not_misclassified(defs, dagster_instance, s3, run_settings,
                                                                       sample_tenant):
    files = {"transcript.txt": TRANSFER.encode()}
    session = run_session(s3, run_settings.uploads_bucket, sample_tenant, files, defs, dagster_instance,
                          locale="fr-FR")
    meta = latest(dagster_instance, "intent_output", session.partition_key)
    assert meta["locale"] == "fr-FR" and meta["locale_supported"] is False
    document, _ = stored(s3, meta["uri"])
    assert document["flags"] == ["locale_unsupported"]
    (u,) = document["utterances"]
    assert u["zone"] == "notes" and "locale_unsupported" in u["flags"] and u["intent"] == "transfer"


def test_a_session_with_no_utterances_and_no_data_gets_an_empty_output(defs, dagster_instance, s3, run_settings,
                                                                       sample_tenant):
    files = {"media/site.png": session_files()["media/site.png"]}
    session = run_session(s3, run_settings.uploads_bucket, sample_tenant, files, defs, dagster_instance)
    meta = latest(dagster_instance, "intent_output", session.partition_key)
    assert meta["utterances"] == 0 and meta["model_version"] == "none (no utterances)"
    assert meta["tables"] == {} and meta["data_problems"] == [] and set(meta["per_zone"].values()) == {0}
    document, _ = stored(s3, meta["uri"])
    assert document["utterances"] == [] and document["tables"] == [] and document["config_version"] == 1


def test_a_request_the_service_refuses_fails_once_naming_why(defs, dagster_instance, s3, run_settings, sample_tenant,
                                                             monkeypatch):
    session = run_session(s3, run_settings.uploads_bucket, sample_tenant, {"transcript.txt": TRANSFER.encode()},
                          defs, dagster_instance)
    # A token the service does not know: refused (UNAUTHENTICATED), which no retry can change.
    monkeypatch.setenv(ENV["service_token"], "not-the-service-token-" + "x" * 16)
    result = materialize(defs, dagster_instance, session)
    (failure,) = events(result, "STEP_FAILURE")
    assert events(result, "STEP_UP_FOR_RETRY") == []
    assert "UNAUTHENTICATED" in said(failure.event_specific_data.error)


def test_the_service_down_is_retried_then_fails_and_a_later_run_succeeds(defs, dagster_instance, s3, run_settings,
                                                                         sample_tenant, core_target, monkeypatch):
    session = run_session(s3, run_settings.uploads_bucket, sample_tenant, {"transcript.txt": TRANSFER.encode()},
                          defs, dagster_instance)
    # The resource reads ASTRA_CORE_TARGET when a run starts: nothing listens there now.
    monkeypatch.setenv(ENV["core_target"], f"127.0.0.1:{free_port()}")
    result = materialize(defs, dagster_instance, session)
    assert not result.success
    assert len(events(result, "STEP_UP_FOR_RETRY")) == 3  # the asset's retry policy, spent
    (failure,) = events(result, "STEP_FAILURE")
    assert "intent service at 127.0.0.1:" in said(failure.event_specific_data.error)
    assert "UNAVAILABLE" in said(failure.event_specific_data.error)
    # The service back: the next run succeeds.
    monkeypatch.setenv(ENV["core_target"], core_target)
    assert materialize(defs, dagster_instance, session).success
