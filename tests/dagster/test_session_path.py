"""The session path end to end: manifest last → sensor → session_handover → custody_audio (+ check)."""

from __future__ import annotations

import json
import uuid

import pytest
from dagster import AssetKey, AssetRecordsFilter

from astra.orchestrator.upload import upload_session
from astra.samples import session_files
from astra.tenancy import SessionKey
from astra_assets.local_runner import tick
from tests.dagster.conftest import publish_sample_config

pytestmark = pytest.mark.integration
SENSOR = "session_upload_sensor"
# The run ends with the session's document built (document_binary) and its blocking checks.
DOCUMENT_CHECKS_PASSED = {"document_opens": True, "every_zone_present": True, "no_forbidden_construct": True}


@pytest.fixture
def configured(tenant, defs):
    publish_sample_config(tenant)  # the sample template's atoms stored: its sessions' documents build
    return tenant


def latest(instance, key: str, partition: str) -> dict:
    records = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=AssetKey(key), asset_partitions=[partition]), limit=1).records
    return {k: v.value for k, v in records[0].asset_materialization.metadata.items()} if records else {}


def quarantined(instance) -> list[dict]:
    records = instance.fetch_observations(AssetKey("upload_quarantine"), limit=1000).records
    return [{k: v.value for k, v in r.asset_observation.metadata.items()} for r in records]


def keys_under(s3, bucket, prefix) -> list[str]:
    return [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])]


def test_a_session_is_handed_over_and_its_audio_held(defs, dagster_instance, s3, run_settings, configured):
    session = SessionKey(configured, f"s-{uuid.uuid4().hex[:6]}", 1)
    upload_session(s3, run_settings.uploads_bucket, session, "field_inspection", session_files())
    outcome = tick(defs, dagster_instance, SENSOR)
    assert len(outcome.results) == 1 and outcome.results[0].success
    assert dagster_instance.has_dynamic_partition("sessions", session.partition_key)
    meta = latest(dagster_instance, "session_handover", session.partition_key)
    assert meta["dedup"] == "registered" and meta["config_version"] == 1 and meta["temp_deleted"] == 5
    custody = latest(dagster_instance, "custody_audio", session.partition_key)
    assert custody["retention"].startswith("COMPLIANCE until")
    checks = {e.check_name: e.passed for e in outcome.results[0].get_asset_check_evaluations()}
    assert checks == {"custody_verified": True, **DOCUMENT_CHECKS_PASSED}
    assert keys_under(s3, run_settings.uploads_bucket, f"{configured}/sessions/") == []
    # The same run reads what was said, with no manual step (the sensor's selection includes it).
    spoken = latest(dagster_instance, "transcript", session.partition_key)
    assert spoken["source"] == "manifest" and spoken["utterances"] > 0

    # The same manifest bytes again (uploaded anew after the clean-up): same run key, no run.
    record_key = meta["uri"].split("/", 3)[3]
    manifest = json.loads(s3.get_object(Bucket=run_settings.assets_bucket, Key=record_key)["Body"].read())["manifest"]
    prefix = f"{configured}/sessions/{session.session_id}/v1/"
    for path, body in session_files().items():
        s3.put_object(Bucket=run_settings.uploads_bucket, Key=prefix + path, Body=body)
    s3.put_object(Bucket=run_settings.uploads_bucket, Key=prefix + "manifest.json",
                  Body=json.dumps(manifest["document"], indent=2, sort_keys=True).encode())
    assert tick(defs, dagster_instance, SENSOR).results == []  # the cursor knows these bytes
    # Even a sensor that lost its cursor does not run it twice: the run key is the same.
    from astra_assets.local_runner import CURSOR_KEY

    dagster_instance.run_storage.set_cursor_values({CURSOR_KEY + SENSOR: ""})
    again = tick(defs, dagster_instance, SENSOR)
    assert again.results == [] and len(again.skipped_run_keys) == 1


@pytest.mark.parametrize("case", ["not_json", "schema", "missing_file", "bad_ids", "key_mismatch"])
def test_bad_manifests_are_quarantined_and_left_untouched(case, defs, dagster_instance, s3, run_settings, configured):
    sid = f"s-{uuid.uuid4().hex[:6]}"
    tenant_in_key, sid_in_key = configured, sid
    doc = {"tenant": configured, "session_id": sid, "version": 1, "template": "t", "created_at": "2026-11-25T10:00:00Z",
           "audio": "audio.wav", "data": [], "media": []}
    raw = json.dumps(doc).encode()
    if case == "not_json":
        raw = b"{not json"
    elif case == "schema":
        raw = json.dumps({**doc, "data": ["../../etc/passwd"]}).encode()
    elif case == "missing_file":
        raw = json.dumps({**doc, "media": ["media/never-uploaded.png"]}).encode()
    elif case == "bad_ids":
        sid_in_key = "Session_ONE"
        raw = json.dumps({**doc, "session_id": sid_in_key}).encode()
    elif case == "key_mismatch":
        raw = json.dumps({**doc, "version": 2}).encode()
    prefix = f"{tenant_in_key}/sessions/{sid_in_key}/v1/"
    s3.put_object(Bucket=run_settings.uploads_bucket, Key=prefix + "audio.wav", Body=session_files()["audio.wav"])
    s3.put_object(Bucket=run_settings.uploads_bucket, Key=prefix + "manifest.json", Body=raw)
    outcome = tick(defs, dagster_instance, SENSOR)
    assert outcome.results == []
    records = [q for q in quarantined(dagster_instance) if q["key"] == prefix + "manifest.json"]
    assert len(records) == 1 and records[0]["reason"]
    left = sorted(keys_under(s3, run_settings.uploads_bucket, prefix))
    assert left == [prefix + "audio.wav", prefix + "manifest.json"]
    assert tick(defs, dagster_instance, SENSOR).events_reported == 0  # reported once, not every tick


def test_registry_down_completes_with_dedup_skipped_then_reconciles(defs, dagster_instance, s3, run_settings,
                                                                    configured, monkeypatch, stack_env):
    from astra.stack.processes import free_port

    monkeypatch.setenv("ASTRA_INGEST_TARGET", f"127.0.0.1:{free_port()}")
    session = SessionKey(configured, f"s-{uuid.uuid4().hex[:6]}", 1)
    upload_session(s3, run_settings.uploads_bucket, session, "field_inspection", session_files())
    outcome = tick(defs, dagster_instance, SENSOR)
    assert outcome.results[0].success
    assert latest(dagster_instance, "session_handover", session.partition_key)["dedup"] == "skipped (unavailable)"

    monkeypatch.setenv("ASTRA_INGEST_TARGET", stack_env["ASTRA_INGEST_TARGET"])
    from astra.db import make_engine
    from astra.orchestrator.reconcile import pending_count

    assert pending_count(make_engine(run_settings.database_url), configured) == 1
    result = defs.resolve_job_def("dedup_reconcile_job").execute_in_process(instance=dagster_instance)
    assert result.success
    assert pending_count(make_engine(run_settings.database_url), configured) == 0


def test_custody_audit_job(defs, dagster_instance, s3, run_settings, configured):
    session = SessionKey(configured, f"s-{uuid.uuid4().hex[:6]}", 1)
    upload_session(s3, run_settings.uploads_bucket, session, "field_inspection", session_files())
    assert tick(defs, dagster_instance, SENSOR).results[0].success
    job = defs.resolve_job_def("custody_audit_job")
    run_config = {"ops": {"verify_custody": {"config": {"tenant": configured}}}}
    assert job.execute_in_process(instance=dagster_instance, run_config=run_config).success
    # Tamper with the ledger as a superuser would: the audit run fails and says why.
    from sqlalchemy import text

    from astra.db import make_engine

    with make_engine(run_settings.database_url).begin() as conn:
        conn.execute(text("ALTER TABLE custody_ledger DISABLE TRIGGER USER"))
        conn.execute(text("UPDATE custody_ledger SET entry = replace(entry, '\"size\":', '\"size\": ') "
                          "WHERE tenant_id = :t"),
                     {"t": configured})
        conn.execute(text("ALTER TABLE custody_ledger ENABLE TRIGGER USER"))
    failed = job.execute_in_process(instance=dagster_instance, run_config=run_config, raise_on_error=False)
    assert not failed.success


def test_a_data_only_session_is_handed_over_and_custody_says_none(defs, dagster_instance, s3, run_settings, configured):
    from sqlalchemy import func, select

    from astra.db import make_engine
    from astra.db.schema import custody_ledger
    from astra.orchestrator.handover import load_record

    session = SessionKey(configured, f"s-{uuid.uuid4().hex[:6]}", 1)
    files = {k: v for k, v in session_files().items() if k != "audio.wav"}
    upload_session(s3, run_settings.uploads_bucket, session, "field_inspection", files)
    outcome = tick(defs, dagster_instance, SENSOR)
    assert len(outcome.results) == 1 and outcome.results[0].success
    handover = latest(dagster_instance, "session_handover", session.partition_key)
    assert handover["custody"].startswith("none") and handover["temp_deleted"] == 4
    custody = latest(dagster_instance, "custody_audio", session.partition_key)
    assert custody["audio"] == "none" and custody["custody"].startswith("none")
    checks = {e.check_name: e.passed for e in outcome.results[0].get_asset_check_evaluations()}
    assert checks == {"custody_verified": True, **DOCUMENT_CHECKS_PASSED}
    assert load_record(s3, run_settings.assets_bucket, session)["custody"] is None
    with make_engine(run_settings.database_url).connect() as conn:
        assert conn.execute(select(func.count()).select_from(custody_ledger)
                            .where(custody_ledger.c.tenant_id == configured)).scalar_one() == 0
    assert keys_under(s3, run_settings.uploads_bucket, f"{configured}/sessions/") == []


def test_a_reupload_of_a_handed_over_version_fails_with_one_instruction(defs, dagster_instance, s3, run_settings,
                                                                        configured):
    session = SessionKey(configured, f"s-{uuid.uuid4().hex[:6]}", 1)
    upload_session(s3, run_settings.uploads_bucket, session, "field_inspection", session_files())
    assert tick(defs, dagster_instance, SENSOR).results[0].success
    # Another client writes a new recording into the sealed v1 (our CLI refuses to).
    upload_session(s3, run_settings.uploads_bucket, session, "field_inspection", {"audio.ogg": b"again"})
    outcome = tick(defs, dagster_instance, SENSOR)
    assert len(outcome.results) == 1 and not outcome.results[0].success
    failures = [e.event_specific_data.error.message for e in outcome.results[0].all_events
                if e.event_type_value == "STEP_FAILURE"]
    assert len(failures) == 1
    assert failures[0].count("upload it as v2") == 1 and "upload the session again" not in failures[0]
    assert sorted(keys_under(s3, run_settings.uploads_bucket, session.upload_prefix)) == [
        session.upload_prefix + "audio.ogg", session.upload_prefix + "manifest.json"]  # kept, nothing lost
