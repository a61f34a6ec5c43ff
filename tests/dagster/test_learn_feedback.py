"""LEARN's feedback path over the real services: a session's document built by its sensor run, the user's edit of it
uploaded as feedback, `feedback_upload_sensor` → `comparison_report`: the report stored at both keys and its
labelled examples on the feedback stream; a V2 clone's feedback compared with its own binary; refusals (not a
.docx, another template, corrections that do not fit, an upload replaced since the sensor saw it: the run fails
naming why, nothing published; no document for that version or a key
that is no feedback key: quarantined before any run)."""

from __future__ import annotations

import hashlib
import json
import uuid

import pytest
import redis
from dagster import AssetKey
from docx.oxml.ns import qn

from astra.learn.feedback import stream_key
from astra.samples import session_files
from astra.samples.edits import DocumentEdit
from astra.tenancy import SessionKey
from astra_assets.local_runner import CURSOR_KEY, tick
from tests.dagster.conftest import publish_sample_config
from tests.dagster.test_document_asset import stored, upload_and_run
from tests.dagster.test_session_path import latest, quarantined

pytestmark = pytest.mark.integration
SENSOR = "feedback_upload_sensor"
FLIGHT = "I need to book a flight to Denver for next Tuesday."
REMINDER = "Remind me to call the inspector tomorrow morning."
EDITED = "Remind me to call the inspector on Friday morning."
INTRO = "Site inspection at the north pumping station."


@pytest.fixture
def configured(tenant, defs):
    publish_sample_config(tenant)
    return tenant


def built(defs, instance, s3, run_settings, tenant: str, clone_of: int | None = None,
          session: SessionKey | None = None) -> tuple[SessionKey, dict, bytes]:
    """A session version handed over and its document built by the session sensor's run: (session, the document's
    metadata, its bytes)."""
    session = session or SessionKey(tenant, f"s-{uuid.uuid4().hex[:6]}", 1)
    upload_and_run(s3, run_settings.uploads_bucket, session, session_files(), defs, instance, clone_of=clone_of)
    asset = "v2_clone_binary" if clone_of else "document_binary"
    meta = latest(instance, asset, session.partition_key)
    return session, meta, stored(s3, meta["uri"], meta["version_id"])


def demo_edit(document: bytes) -> bytes:
    """One utterance moved to another zone, one edited, one deleted."""
    edit = DocumentEdit(document)
    edit.move(FLIGHT, "notes")
    edit.set_text(REMINDER, EDITED)
    edit.delete(INTRO)
    return edit.save()


def feedback_key(session: SessionKey) -> str:
    return f"{session.tenant}/feedback/{session.session_id}/v{session.version}.docx"


def stream_examples(redis_url: str, prefix: str, session: SessionKey) -> list[dict]:
    entries = redis.Redis.from_url(redis_url, decode_responses=True).xrange(stream_key(prefix))
    return [fields for _, fields in entries if fields["session"] == session.partition_key]


def failure_of(run) -> str:
    (failure,) = [e for e in run.all_events if e.event_type_value == "STEP_FAILURE"]
    return failure.step_failure_data.user_failure_data.description


def test_feedback_is_compared_with_the_exact_binary_and_its_examples_published(
        defs, dagster_instance, s3, run_settings, configured, redis_url, redis_prefix):
    session, document, generated = built(defs, dagster_instance, s3, run_settings, configured)
    corrections = {"version": 1, "labels": [{"text": EDITED, "intent": "todo_list_update"}]}
    s3.put_object(Bucket=run_settings.uploads_bucket, Key=feedback_key(session).replace(".docx", ".corrections.json"),
                  Body=json.dumps(corrections).encode())
    s3.put_object(Bucket=run_settings.uploads_bucket, Key=feedback_key(session), Body=demo_edit(generated))

    outcome = tick(defs, dagster_instance, SENSOR)
    (run,) = outcome.results
    assert run.success
    meta = latest(dagster_instance, "comparison_report", session.partition_key)
    assert meta["document_asset"] == "document_binary" and meta["document_sha256"] == document["sha256"]
    assert (meta["model_version"], meta["config_version"]) == (document["model_version"], document["config_version"])
    assert meta["uri"] == (f"s3://{run_settings.assets_bucket}/{configured}/reports/{session.session_id}/"
                           "v1.comparison.json")
    body = stored(s3, meta["uri"], meta["version_id"])
    assert hashlib.sha256(body).hexdigest() == meta["sha256"] and stored(s3, meta["blob_uri"]) == body
    report = json.loads(body)
    assert report["document_sha256"] == document["sha256"] and report["session"] == session.partition_key
    assert {k: report["counts"][k] for k in ("moved", "edited", "deleted")} == {"moved": 1, "edited": 1,
                                                                                "deleted": 1}
    assert meta["counts"] == report["counts"] and meta["examples"] == report["counts"]["examples"] > 0
    published = stream_examples(redis_url, redis_prefix, session)
    assert len(published) == meta["examples"]
    assert {e["report_sha256"] for e in published} == {meta["sha256"]}
    assert {e["model_version"] for e in published} == {document["model_version"]}
    by_kind = {e["kind"]: e for e in published}
    assert (by_kind["edited"]["text"], by_kind["edited"]["intent"]) == (EDITED, "todo_list_update")  # labelled
    assert (by_kind["deleted"]["text"], by_kind["deleted"]["intent"]) == (INTRO, "oos")
    assert meta["corrections_key"].endswith("v1.corrections.json")

    # The same upload seen again (a sensor that lost its cursor): the same run key, no second run.
    dagster_instance.run_storage.set_cursor_values({CURSOR_KEY + SENSOR: ""})
    again = tick(defs, dagster_instance, SENSOR)
    assert again.results == [] and len(again.skipped_run_keys) == 1


def test_a_v2_clones_feedback_is_compared_with_its_own_binary(defs, dagster_instance, s3, run_settings, configured,
                                                              redis_url, redis_prefix):
    parent, parent_doc, _ = built(defs, dagster_instance, s3, run_settings, configured)
    clone, clone_doc, generated = built(defs, dagster_instance, s3, run_settings, configured, clone_of=1,
                                        session=SessionKey(configured, parent.session_id, 2))
    s3.put_object(Bucket=run_settings.uploads_bucket, Key=feedback_key(clone), Body=demo_edit(generated))
    (run,) = tick(defs, dagster_instance, SENSOR).results
    assert run.success
    meta = latest(dagster_instance, "comparison_report", clone.partition_key)
    assert meta["document_asset"] == "v2_clone_binary" and meta["document_sha256"] == clone_doc["sha256"]
    assert latest(dagster_instance, "comparison_report", parent.partition_key) == {}
    assert {e["session"] for e in stream_examples(redis_url, redis_prefix, clone)} == {clone.partition_key}


def rewrite_outside_the_zones(document: bytes) -> bytes:
    """Every paragraph outside the zones reworded: the zones are this template's, the rest is another document."""
    edit = DocumentEdit(document)
    for p in edit.doc.element.body.iter(qn("w:p")):
        if not any(a.tag == qn("w:sdt") for a in p.iterancestors()):
            for n, t in enumerate(p.iter(qn("w:t"))):
                t.text = f"quarterly budget figures unaudited committee {n}"
    return edit.save()


def test_refusals(defs, dagster_instance, s3, run_settings, configured, redis_url, redis_prefix):
    session, _, generated = built(defs, dagster_instance, s3, run_settings, configured)
    uploads = run_settings.uploads_bucket
    sidecar = feedback_key(session).replace(".docx", ".corrections.json")
    edited = demo_edit(generated)
    cases = [("not_docx", b"PK\x03\x04 this is no zip", None),
             ("other_template", rewrite_outside_the_zones(generated), None),
             ("bad_corrections", edited, b'{"version": 1, "labels": [{"text": "no such paragraph", "intent": "oos"}]}')]
    for code, body, corrections in cases:
        if corrections:
            s3.put_object(Bucket=uploads, Key=sidecar, Body=corrections)
        s3.put_object(Bucket=uploads, Key=feedback_key(session), Body=body)
        (run,) = tick(defs, dagster_instance, SENSOR).results
        assert not run.success
        assert f"feedback refused ({code})" in failure_of(run)
        assert latest(dagster_instance, "comparison_report", session.partition_key) == {}
        assert stream_examples(redis_url, redis_prefix, session) == []

    # The upload replaced after the sensor saw it: the run reads nothing else.
    seen = {"feedback_key": feedback_key(session), "etag": "0" * 32}
    stale = defs.resolve_implicit_global_asset_job_def().execute_in_process(
        instance=dagster_instance, asset_selection=[AssetKey("comparison_report")], partition_key=session.partition_key,
        run_config={"ops": {"comparison_report": {"config": seen}}}, raise_on_error=False)
    assert "removed or replaced since the sensor saw it" in failure_of(stale)

    # No document for that version (v2 never uploaded), and keys that name no session version: no run.
    refused = {f"{configured}/feedback/{session.session_id}/v2.docx": "has no document",
               f"{configured}/feedback/{session.session_id}/v0.docx": "not a feedback key",
               f"{configured}/feedback/Bad_Id/v1.docx": "invalid session id"}
    for key in refused:
        s3.put_object(Bucket=uploads, Key=key, Body=generated)
    outcome = tick(defs, dagster_instance, SENSOR)
    assert outcome.results == []
    reasons = {q["key"]: q["reason"] for q in quarantined(dagster_instance)}
    for key, said in refused.items():
        assert said in reasons[key]
    # Judged once: the uploads stay where they are, and the next tick does not read them again.
    assert tick(defs, dagster_instance, SENSOR).events_reported == 0
    assert all(s3.head_object(Bucket=uploads, Key=key) for key in refused)
