"""The `transcript` asset over the real services: a session handed over by the sensor, then its transcript
materialized from the manifest's transcript, from speech recognition of its audio, or empty (data only); a bad
or damaged session file fails the run, once, naming the file. A session not handed over is refused, once, by each
asset made from its handover record (transcript, intent output, document), saying what it cannot make yet."""

from __future__ import annotations

import hashlib
import json
import uuid

import pytest
from dagster import AssetKey

from astra.core.transcript import parse_transcript
from astra.orchestrator.handover import load_record
from astra.orchestrator.upload import upload_session
from astra.samples import session_files
from astra.settings import ENV
from astra.tenancy import SessionKey
from astra_assets.local_runner import tick
from tests.dagster import test_session_path as session_path

pytestmark = pytest.mark.integration
SENSOR, latest = session_path.SENSOR, session_path.latest
configured = session_path.configured  # the tenant with a published config: a fixture


@pytest.fixture(scope="session")
def lm_state_dir(tmp_path_factory):
    """One state dir for the test session: the in-domain LM is built once and then read from its cache."""
    return tmp_path_factory.mktemp("state")


@pytest.fixture(autouse=True)
def own_state_dir(lm_state_dir, monkeypatch):
    monkeypatch.setenv(ENV["state_dir"], str(lm_state_dir))


def handed_over(s3, bucket: str, tenant: str, files: dict[str, bytes], defs, instance) -> SessionKey:
    session = SessionKey(tenant, f"s-{uuid.uuid4().hex[:6]}", 1)
    upload_session(s3, bucket, session, "field_inspection", files)
    outcome = tick(defs, instance, SENSOR)
    # The sensor's run hands over and then transcribes; a bad transcript fails only its own step.
    assert len(outcome.results) == 1 and outcome.results[0].is_node_success("session_handover")
    return session


def materialize_transcript(defs, instance, session: SessionKey):
    job = defs.resolve_implicit_global_asset_job_def()
    return job.execute_in_process(instance=instance, asset_selection=[AssetKey("transcript")],
                                  partition_key=session.partition_key, raise_on_error=False)


def failures(result) -> list[str]:
    return [e.event_specific_data.error.message for e in result.all_events if e.event_type_value == "STEP_FAILURE"]


def stored(s3, uri: str) -> tuple[dict, str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    return json.loads(body), hashlib.sha256(body).hexdigest()


def test_the_manifest_transcript_is_parsed_and_stored_content_addressed(defs, dagster_instance, s3, run_settings,
                                                                         configured):
    files = session_files()
    session = handed_over(s3, run_settings.uploads_bucket, configured, files, defs, dagster_instance)
    assert materialize_transcript(defs, dagster_instance, session).success
    meta = latest(dagster_instance, "transcript", session.partition_key)
    expected = parse_transcript("transcript.txt", data=files["transcript.txt"])
    assert meta["source"] == "manifest" and meta["origin"] == "transcript.txt"
    assert meta["utterances"] == len(expected) == 5
    assert meta["lm_sha256"] == meta["asr_model_sha256"] == "n/a"
    document, sha256 = stored(s3, meta["uri"])
    assert sha256 == meta["sha256"] and meta["uri"].endswith(f"/{configured}/blobs/sha256/{sha256[:2]}/{sha256}")
    assert [u["text"] for u in document["utterances"]] == [u.text for u in expected]
    assert document["origin_sha256"] == hashlib.sha256(files["transcript.txt"]).hexdigest()
    # Materialized again: the same document, the same blob, the same data version.
    assert materialize_transcript(defs, dagster_instance, session).success
    assert latest(dagster_instance, "transcript", session.partition_key)["sha256"] == sha256


def test_audio_only_goes_through_speech_recognition_with_the_in_domain_lm(defs, dagster_instance, s3, run_settings,
                                                                          configured, lm_state_dir):
    files = {k: v for k, v in session_files().items() if k != "transcript.txt"}
    session = handed_over(s3, run_settings.uploads_bucket, configured, files, defs, dagster_instance)
    assert materialize_transcript(defs, dagster_instance, session).success
    meta = latest(dagster_instance, "transcript", session.partition_key)
    assert meta["source"] == "asr" and meta["origin"] == "audio.wav"
    assert meta["utterances"] == 5  # the sample's five sentences, cut at the speaker's pauses
    built = {p.parent.name for p in (lm_state_dir / "lm-cache").glob("*/lm.arpa")}
    assert built == {meta["lm_sha256"]}  # the in-domain LM, not pocketsphinx's default
    assert len(meta["asr_model_sha256"]) == 64 and 22 < meta["duration_s"] < 24
    assert 0 <= meta["confidence"]["min"] <= meta["confidence"]["mean"] <= 1 and meta["confidence"]["mean"] > 0.4
    document, _ = stored(s3, meta["uri"])
    words = " ".join(u["text"] for u in document["utterances"])
    assert "two hundred dollars" in words and all(u["end"] > u["start"] for u in document["utterances"])


def test_a_data_only_session_has_an_empty_transcript(defs, dagster_instance, s3, run_settings, configured):
    files = {k: v for k, v in session_files().items() if k.startswith("data/")}
    session = handed_over(s3, run_settings.uploads_bucket, configured, files, defs, dagster_instance)
    assert materialize_transcript(defs, dagster_instance, session).success
    meta = latest(dagster_instance, "transcript", session.partition_key)
    assert (meta["source"], meta["utterances"], meta["origin"]) == ("none", 0, "none")
    assert stored(s3, meta["uri"])[0]["utterances"] == []


@pytest.mark.parametrize(("path", "body", "said"), [
    ("transcript.json", b"{not json", "transcript.json: not JSON"),
    ("transcript.txt", b"\xff\xfe broken", "transcript.txt: not UTF-8 text"),
    ("audio.wav", b"RIFF but not audio at all", "audio.wav: not audio"),
])
def test_a_bad_session_file_fails_the_run_once_naming_the_file(path, body, said, defs, dagster_instance, s3,
                                                               run_settings, configured):
    session = handed_over(s3, run_settings.uploads_bucket, configured, {path: body}, defs, dagster_instance)
    result = materialize_transcript(defs, dagster_instance, session)
    assert not result.success
    assert len(failures(result)) == 1 and said in failures(result)[0]  # refused, not retried
    assert latest(dagster_instance, "transcript", session.partition_key) == {}


def test_a_damaged_durable_copy_fails_the_run_naming_the_file(defs, dagster_instance, s3, run_settings, configured):
    session = handed_over(s3, run_settings.uploads_bucket, configured, session_files(), defs, dagster_instance)
    record = load_record(s3, run_settings.assets_bucket, session)
    blob = next(f["blob_uri"] for f in record["files"] if f["role"] == "transcript")
    s3.put_object(Bucket=run_settings.assets_bucket, Key=blob.split("/", 3)[3], Body=b"Not what was handed over.")
    result = materialize_transcript(defs, dagster_instance, session)
    assert not result.success
    assert "transcript.txt: its durable copy" in failures(result)[0] and "does not hold" in failures(result)[0]


@pytest.mark.parametrize(("asset", "product"), [
    ("transcript", "transcript"),
    ("intent_output", "intent output"),
    ("document_binary", "document"),
    ("v2_clone_binary", "document"),
])
def test_a_session_not_handed_over_is_refused_once_by_each_session_asset(asset, product, defs, dagster_instance,
                                                                         configured):
    session = SessionKey(configured, f"s-{uuid.uuid4().hex[:6]}", 1)
    dagster_instance.add_dynamic_partitions("sessions", [session.partition_key])
    result = defs.resolve_implicit_global_asset_job_def().execute_in_process(
        instance=dagster_instance, asset_selection=[AssetKey(asset)], partition_key=session.partition_key,
        raise_on_error=False)
    assert not result.success
    assert not [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    (failure,) = failures(result)
    assert f"{session.partition_key} has not been handed over: no {product} before the handover" in failure
    assert latest(dagster_instance, asset, session.partition_key) == {}
