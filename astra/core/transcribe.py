"""A handed-over session's transcript: from the manifest's transcript when it names one, else from speech
recognition of its audio with the in-domain language model, else (a data-only session) an empty transcript.

The inputs are the durable copies the handover record lists (`blob_uri`, checked against the recorded sha256);
the output is the transcript document as canonical JSON, stored content-addressed in the tenant's blobs
(`store_document`, which stores the intent output too).
Every refusal of a session file is a TranscriptError or AudioError whose message names the file.
"""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass
from pathlib import Path

from botocore.exceptions import ClientError

from astra.canonical import canonical_json
from astra.core.asr import Recognizer
from astra.core.audio import DEFAULT_MAX_SECONDS, load_pcm
from astra.core.lm import LanguageModel, build_language_model, clinc150_sentences
from astra.core.transcript import MAX_BYTES, TranscriptError, from_recognition, parse_transcript, transcript_document
from astra.ingest.store import BlobStore, blob_uri
from astra.s3 import is_missing

# The training utterances sit beside the intent catalog (domains.json) in the CLINC150 dataset folder.
TRAINING_FILE = "clinc150_full_train_val.json"
TRAINING_SPLIT = "train"
LM_CACHE = "lm-cache"  # the in-domain LMs built, under the state dir (shared by the asset and `astra build`)
_STREAM_CHUNK = 1 << 20


class SessionFileError(RuntimeError):
    """A durable copy the handover record names is missing or does not hold the recorded bytes."""


@dataclass(frozen=True)
class LanguageModelSource:
    """Where the in-domain LM's training sentences come from, and where built models are cached."""

    sentences_path: Path
    cache_dir: Path

    @classmethod
    def beside_catalog(cls, intent_catalog: str | Path, cache_dir: str | Path) -> LanguageModelSource:
        return cls(Path(intent_catalog).resolve().parent / TRAINING_FILE, Path(cache_dir))

    def build(self) -> LanguageModel:
        return build_language_model(clinc150_sentences(self.sentences_path, TRAINING_SPLIT), self.cache_dir)


def session_file(record: dict, role: str) -> dict | None:
    """The record's file of this role (audio, transcript), or None."""
    return next((f for f in record["files"] if f["role"] == role), None)


def choose_source(record: dict) -> tuple[str, dict | None]:
    """("manifest", transcript file), ("asr", audio file) or ("none", None) for a data-only session."""
    transcript = session_file(record, "transcript")
    if transcript is not None:
        return "manifest", transcript
    audio = session_file(record, "audio")
    return ("asr", audio) if audio is not None else ("none", None)


def transcribe(s3, record: dict, lm_source: LanguageModelSource,
               max_audio_seconds: float = DEFAULT_MAX_SECONDS) -> dict:
    """The session's transcript document, from the source `choose_source` picks."""
    source, f = choose_source(record)
    if source == "manifest":
        return from_manifest(s3, f)
    if source == "asr":
        return from_audio(s3, f, lm_source, max_audio_seconds)
    return empty_document()


def from_manifest(s3, f: dict) -> dict:
    if f["size"] > MAX_BYTES:  # refused before it is read into memory
        raise TranscriptError(f["path"], f"larger than {MAX_BYTES} bytes")
    utterances = parse_transcript(f["path"], data=read_blob(s3, f))
    return {**transcript_document(utterances, source="manifest", origin=f["path"]), "origin_sha256": f["sha256"]}


def from_audio(s3, f: dict, lm_source: LanguageModelSource, max_audio_seconds: float) -> dict:
    with tempfile.TemporaryDirectory(prefix="astra-asr-") as tmp:
        # Named as in the session: the converter's errors name the file, and its suffix says the format.
        local = Path(tmp) / Path(f["path"]).name
        download_blob(s3, f, local)
        document = recognize_file(local, f["path"], lm_source, max_audio_seconds)
    return {**document, "origin_sha256": f["sha256"]}


def recognize_file(path: Path, origin: str, lm_source: LanguageModelSource,
                   max_audio_seconds: float = DEFAULT_MAX_SECONDS) -> dict:
    """The transcript document of a local audio file: converted, cut at silences, decoded with the in-domain LM."""
    pcm = load_pcm(path, max_audio_seconds)
    recognizer = Recognizer(lm_source.build())
    return transcript_document(from_recognition(recognizer.recognize(pcm.data)), source="asr", origin=origin,
                               duration_seconds=round(pcm.duration_seconds, 3),
                               asr_model_sha256=recognizer.asr_model_sha256, lm_sha256=recognizer.lm_sha256)


def empty_document() -> dict:
    # transcript_document takes only the sources that have a file; its keys are kept, source and origin said.
    return {**transcript_document([], source="manifest", origin=""), "source": "none", "origin": None,
            "origin_sha256": None}


def _bucket_key(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key


def _get_body(s3, f: dict):
    bucket, key = _bucket_key(f["blob_uri"])
    try:
        return s3.get_object(Bucket=bucket, Key=key)["Body"]
    except ClientError as exc:
        if is_missing(exc):
            raise SessionFileError(f"{f['path']}: its durable copy {f['blob_uri']} is missing") from exc
        raise


def _checked(f: dict, sha256: str) -> None:
    if sha256 != f["sha256"]:
        raise SessionFileError(f"{f['path']}: its durable copy {f['blob_uri']} does not hold the handed-over bytes "
                               f"(sha256 {sha256[:12]}…, recorded {f['sha256'][:12]}…)")


def read_blob(s3, f: dict) -> bytes:
    data = _get_body(s3, f).read()
    _checked(f, hashlib.sha256(data).hexdigest())
    return data


def download_blob(s3, f: dict, dest: Path) -> None:
    """Stream the durable copy to `dest` (a recording is never held in memory), checking its sha256."""
    digest = hashlib.sha256()
    body = _get_body(s3, f)
    with open(dest, "wb") as out:
        for chunk in iter(lambda: body.read(_STREAM_CHUNK), b""):
            digest.update(chunk)
            out.write(chunk)
    _checked(f, digest.hexdigest())


@dataclass(frozen=True)
class StoredJson:
    """A session's JSON document (its transcript, its intent output) as stored in the tenant's blobs."""

    document: dict
    uri: str
    sha256: str
    written: bool  # False: the same document was stored already


def store_document(s3, bucket: str, tenant: str, document: dict) -> StoredJson:
    """A session's JSON document (its transcript, its intent output) as canonical JSON in the tenant's
    content-addressed blobs, written once: the same document, the same blob."""
    body = canonical_json(document)
    sha256 = hashlib.sha256(body).hexdigest()
    written = BlobStore(s3, bucket, tenant).put_once(sha256, body)
    return StoredJson(document, blob_uri(bucket, tenant, sha256), sha256, written)
