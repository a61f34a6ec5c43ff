"""astra.core.intent_output over moto's S3 server: data files from their durable copies (refusals reported, never
raised), one model version per output, the transcript read back by its hash, the output stored content-addressed.

`classify` is the engine's input (in the asset it is IntentService's Classify, tested in tests/dagster); here it is
a plain function, so the batching and version rules can be driven exactly."""

from __future__ import annotations

import hashlib
import uuid

import pytest

from astra.canonical import canonical_json
from astra.core.core_client import Classified, IntentAnswer
from astra.core.data import Limits
from astra.core.intent_output import (
    IntentServiceMismatch,
    TranscriptUnavailable,
    build_intent_output,
    classify_utterances,
    load_transcript,
    read_session_data,
)
from astra.core.transcribe import store_document
from astra.ingest.store import BlobStore, blob_uri
from tests.config_svc.maps import ZONE_MAP

CSV = b"sensor,pressure_kpa\nP-1,412.5\nP-2,398.1\n"
TABLE_MAP = {**ZONE_MAP, "zones": [*ZONE_MAP["zones"], {
    "id": "readings", "label": "Readings", "kind": "table", "location": {"part": "/word/document.xml", "block": 6},
    "accepts": {"data": "data/*.csv"}}]}


def data_file(s3, bucket: str, tenant: str, path: str, body: bytes, stored: bytes | None = None) -> dict:
    """A handover record's entry for `path`, its durable copy holding `stored` (default: the bytes themselves)."""
    sha256 = hashlib.sha256(body).hexdigest()
    copy = body if stored is None else stored
    s3.put_object(Bucket=bucket, Key=BlobStore(s3, bucket, tenant).key(sha256), Body=copy)
    return {"role": "data", "path": path, "sha256": sha256, "size": len(body),
            "blob_uri": blob_uri(bucket, tenant, sha256)}


def record_of(tenant: str, files: list[dict], locale: str | None = None) -> dict:
    manifest = {"tenant": tenant, "session_id": "s1", "version": 1, **({"locale": locale} if locale else {})}
    return {"session": {"tenant": tenant, "session_id": "s1", "version": 1, "partition_key": f"{tenant}--s1--v1"},
            "manifest": {"document": manifest}, "config_version": 7, "files": files}


class Service:
    """Answers every text by a rule, with the model version of the moment; counts the calls."""

    def __init__(self, *versions: str):
        self.versions, self.calls = list(versions), []

    def __call__(self, texts):
        self.calls.append(list(texts))
        version = self.versions[min(len(self.calls), len(self.versions)) - 1]
        return Classified(version, [IntentAnswer("transfer", "banking", 0.9, False) if "money" in t
                                    else IntentAnswer("oos", None, 0.8, True) for t in texts])


def utterances(n: int) -> list[dict]:
    return [{"id": f"u{k}", "text": f"send money {k}" if k % 2 else "hello", "start": float(k), "end": k + 0.5}
            for k in range(n)]


def test_data_files_become_tables_and_every_refusal_a_problem(s3, settings, tenant):
    bucket = settings.assets_bucket
    files = [data_file(s3, bucket, tenant, "data/readings.csv", CSV),
             data_file(s3, bucket, tenant, "data/big.csv", b"x" * 200),
             data_file(s3, bucket, tenant, "data/damaged.csv", CSV + b"P-3,1\n", stored=b"other bytes"),
             data_file(s3, bucket, tenant, "data/ragged.csv", b"a,b\n1,2,3\n"),
             {"role": "media", "path": "media/site.png", "sha256": "0" * 64, "size": 3, "blob_uri": "s3://x/y"}]
    data = read_session_data(s3, record_of(tenant, files), Limits(max_bytes=100))
    assert [t.id for t in data.tables] == ["data/readings.csv"]
    assert [c.type for c in data.tables[0].columns] == ["text", "decimal"]
    assert [(p.source, p.reason) for p in data.problems] == [
        ("data/big.csv", "too_large"), ("data/damaged.csv", "damaged_copy"), ("data/ragged.csv", "ragged_row")]
    assert "does not hold the handed-over bytes" in data.problems[1].detail


def test_one_model_version_classifies_every_batch():
    service = Service("m1")
    classified, version = classify_utterances(utterances(5), service, batch_size=2)
    assert version == "m1" and [len(c) for c in service.calls] == [2, 2, 1]
    assert [(u.id, u.intent, u.oos) for u in classified[:2]] == [("u0", "oos", True), ("u1", "transfer", False)]
    assert classified[1].start == 1.0 and classified[1].domain == "banking"


def test_a_model_swap_between_batches_classifies_the_session_again():
    service = Service("m1", "m2", "m2", "m2")  # swapped after the first call
    _, version = classify_utterances(utterances(3), service, batch_size=2)
    assert version == "m2" and len(service.calls) == 4  # 2 calls, then all again with m2
    with pytest.raises(IntentServiceMismatch, match="changed while"):
        classify_utterances(utterances(3), Service("m1", "m2", "m3", "m4"), batch_size=2)


def test_an_answer_that_does_not_fit_the_request_is_refused():
    def short(texts):
        return Classified("m1", [IntentAnswer("oos", None, 0.5, True)])

    with pytest.raises(IntentServiceMismatch, match="answered 1 of 3"):
        classify_utterances(utterances(3), short)


def test_no_utterances_asks_no_model():
    service = Service("m1")
    assert classify_utterances([], service) == ([], None) and service.calls == []


def test_the_output_binds_records_and_is_stored_content_addressed(s3, settings, tenant):
    bucket = settings.assets_bucket
    transcript = store_document(s3, bucket, tenant, {"utterances": utterances(2)})
    assert load_transcript(s3, bucket, tenant, transcript.sha256) == transcript.document
    record = record_of(tenant, [data_file(s3, bucket, tenant, "data/readings.csv", CSV)], locale="en-GB")
    document = build_intent_output(s3, record, transcript.document, TABLE_MAP, Service("m1"), transcript.sha256)
    assert (document["model_version"], document["config_version"], document["locale"]) == ("m1", 7, "en-GB")
    assert document["session"] == f"{tenant}--s1--v1" and document["transcript_sha256"] == transcript.sha256
    assert [(u["id"], u["zone"]) for u in document["utterances"]] == [("u0", "notes"), ("u1", "summary")]
    assert document["tables"][0]["zone"] == "readings"
    stored = store_document(s3, bucket, tenant, document)
    body = s3.get_object(Bucket=bucket, Key=stored.uri.split("/", 3)[3])["Body"].read()
    assert body == canonical_json(document) and hashlib.sha256(body).hexdigest() == stored.sha256 and stored.written
    assert not store_document(s3, bucket, tenant, document).written  # same output, same blob


def test_a_transcript_missing_or_damaged_is_named(s3, settings, tenant):
    bucket = settings.assets_bucket
    missing = hashlib.sha256(uuid.uuid4().bytes).hexdigest()
    with pytest.raises(TranscriptUnavailable, match="is missing"):
        load_transcript(s3, bucket, tenant, missing)
    s3.put_object(Bucket=bucket, Key=BlobStore(s3, bucket, tenant).key(missing), Body=b"{}")
    with pytest.raises(TranscriptUnavailable, match="does not hold"):
        load_transcript(s3, bucket, tenant, missing)
