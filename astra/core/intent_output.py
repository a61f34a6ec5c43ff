"""A handed-over session's intent output: its transcript's utterances classified by IntentService and bound, with
the tables of its ``data/`` files, to the zones of the config version the handover pinned (``astra.core.binding``).

Inputs are what earlier steps made durable: the handover record (the pinned config version, the manifest's locale
and the durable copies of the data files), the transcript document, and the zone map of the pinned version.
``classify`` is IntentService's Classify for the session's tenant; every utterance of one output is classified by
one model version, and that version is recorded in the output.

Data files are never a reason to fail: a file over the size cap is refused before it is read, a durable copy that
is missing or does not hold the handed-over bytes is refused too, and whatever ``astra.core.data`` refuses
(malformed, too many rows, macros, ...) is a ``data_problems`` entry of the output with the zone it would have filled.

The output is stored as the transcript is: canonical JSON, content-addressed in the tenant's blobs
(``transcribe.store_document``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence

from astra.core.binding import ClassifiedUtterance, bind
from astra.core.core_client import Classified
from astra.core.data import DataProblem, DataSet, Limits, read_tables
from astra.core.transcribe import SessionFileError, read_blob
from astra.ingest.store import BlobStore, blob_uri

# Utterances per Classify call: well under the service's per-call cap (2,000), and a batch the service answers
# within the client's deadline even on a cold model.
BATCH_SIZE = 256
DATA_ROLE = "data"

Classify = Callable[[Sequence[str]], Classified]


class IntentServiceMismatch(RuntimeError):
    """The service's answer does not fit the request (another count of answers, no model version), or the model
    changed between the batches of one session twice in a row. Worth another attempt: nothing was stored."""


class TranscriptUnavailable(LookupError):
    """The transcript the session's materialization names is not in the tenant's blobs as it was stored."""


def load_transcript(s3, bucket: str, tenant: str, sha256: str) -> dict:
    """The transcript document stored content-addressed under the tenant (``transcribe.store_document``)."""
    try:
        body = BlobStore(s3, bucket, tenant).get(sha256)
    except KeyError:
        raise TranscriptUnavailable(f"the transcript {blob_uri(bucket, tenant, sha256)} is missing") from None
    if hashlib.sha256(body).hexdigest() != sha256:
        raise TranscriptUnavailable(f"the transcript {blob_uri(bucket, tenant, sha256)} does not hold the bytes "
                                    "that were stored")
    return json.loads(body)


def session_locale(record: dict) -> str | None:
    """The locale the manifest declares, if any (the handover record keeps the manifest document)."""
    return record["manifest"]["document"].get("locale")


def read_session_data(s3, record: dict, limits: Limits = Limits()) -> DataSet:
    """Tables and problems of every ``data/`` file the handover record lists, from its durable copy."""
    files, refused = [], []
    for f in sorted((f for f in record["files"] if f["role"] == DATA_ROLE), key=lambda f: f["path"]):
        if f["size"] > limits.max_bytes:  # refused before it is read into memory
            too_large = f"{f['size']} bytes, over the {limits.max_bytes}-byte cap"
            refused.append(DataProblem(f["path"], "too_large", too_large))
            continue
        try:
            files.append((f["path"], read_blob(s3, f)))
        except SessionFileError as exc:
            refused.append(DataProblem(f["path"], "damaged_copy", str(exc)))
    data = read_tables(files, limits)
    data.problems = sorted([*refused, *data.problems], key=lambda p: (p.source, p.sheet or ""))
    return data


def classify_utterances(utterances: Sequence[dict], classify: Classify,
                        batch_size: int = BATCH_SIZE) -> tuple[list[ClassifiedUtterance], str | None]:
    """The transcript's utterances with their intents, and the one model version that classified them all
    (None when there is nothing to classify: no model was asked)."""
    if not utterances:
        return [], None
    texts = [u["text"] for u in utterances]
    answers, version = _classify_with_one_model(texts, classify, batch_size)
    classified = [ClassifiedUtterance.from_json({**u, "intent": a.intent, "domain": a.domain,
                                                 "confidence": a.confidence, "oos": a.oos})
                  for u, a in zip(utterances, answers, strict=True)]
    return classified, version


def _classify_with_one_model(texts: list[str], classify: Classify, batch_size: int) -> tuple[list, str]:
    # A hot reload between two batches would mix two models in one output: the whole session is classified
    # again, once (reloads are rare; two in the few seconds of one session are a reason to try later).
    for _ in range(2):
        answers, versions = [], set()
        for start in range(0, len(texts), batch_size):
            batch = texts[start:start + batch_size]
            result = classify(batch)
            if len(result.answers) != len(batch) or not result.model_version:
                raise IntentServiceMismatch(f"the intent service answered {len(result.answers)} of {len(batch)} "
                                            f"utterances with model version {result.model_version!r}")
            answers.extend(result.answers)
            versions.add(result.model_version)
        if len(versions) == 1:
            return answers, versions.pop()
    raise IntentServiceMismatch(f"the intent model changed while the session was classified ({sorted(versions)})")


def build_intent_output(s3, record: dict, transcript: dict, zone_map: dict, classify: Classify,
                        transcript_sha256: str, limits: Limits = Limits()) -> dict:
    """The intent output document of a handed-over session (``binding.bind`` plus where it came from)."""
    utterances, model_version = classify_utterances(transcript["utterances"], classify)
    document = bind(zone_map, utterances, read_session_data(s3, record, limits), locale=session_locale(record),
                    model_version=model_version, config_version=record["config_version"])
    return {**document, "session": record["session"]["partition_key"], "transcript_sha256": transcript_sha256}
