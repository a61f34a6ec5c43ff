"""A session's transcript: parsed from an uploaded transcript.txt / .vtt / .json, or built from speech recognition,
as a list of Utterance and one JSON-able document.

Every refusal is a TranscriptError whose message is one line naming the file and the problem. transcript.json is
validated against the published schema `astra/core/schemas/transcript.schema.json`, then for what a schema cannot
say (end >= start, unique ids).
"""

from __future__ import annotations

import io
import json
import re
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path

import webvtt
from jsonschema import Draft202012Validator
from webvtt.errors import MalformedCaptionError, MalformedFileError

from astra.core.asr import RecognizedUtterance

SCHEMA_PATH = Path(__file__).with_name("schemas") / "transcript.schema.json"
FORMATS = (".txt", ".vtt", ".json")
MAX_BYTES = 5_000_000
MAX_UTTERANCES = 20_000
MAX_TEXT_CHARS = 5_000
MAX_SPEAKER_CHARS = 64  # transcript.schema.json's speaker maxLength: a WebVTT voice is held to it too
DOCUMENT_VERSION = 1

# Abbreviations whose period does not end a sentence (lowercase, without the period).
_ABBREVIATIONS = {"mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "vs", "etc", "e.g", "i.e", "approx", "no", "inc",
                  "ltd", "co", "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec"}
_SENTENCE_END = re.compile(r"[.!?]+[\"')\]]*(?=\s)")


class TranscriptError(ValueError):
    def __init__(self, path: str | Path, problem: str):
        super().__init__(f"{Path(path).name}: {problem}")
        self.path = str(path)
        self.problem = problem


@dataclass(frozen=True)
class Utterance:
    id: str
    speaker: str | None
    start: float | None
    end: float | None
    text: str
    confidence: float | None = None

    def to_json(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "confidence" or v is not None}


def split_sentences(text: str) -> list[str]:
    """Sentences of plain text: a line break or a ., ! or ? followed by a blank ends one, except after a known
    abbreviation or a single letter (initials)."""
    out = []
    for line in text.splitlines():
        start = 0
        for match in _SENTENCE_END.finditer(line):
            before = line[start:match.start()].split()
            last = before[-1].lower().rstrip(".") if before else ""
            if match.group().startswith(".") and (last in _ABBREVIATIONS or len(last) == 1 and last.isalpha()):
                continue
            out.append(line[start:match.end()])
            start = match.end()
        out.append(line[start:])
    return [" ".join(s.split()) for s in out if s.strip()]


def _read_text(path: Path, data: bytes | None) -> str:
    if data is None:
        if not path.is_file():
            raise TranscriptError(path, "no such file")
        if path.stat().st_size > MAX_BYTES:
            raise TranscriptError(path, f"larger than {MAX_BYTES} bytes")
        data = path.read_bytes()
    if len(data) > MAX_BYTES:
        raise TranscriptError(path, f"larger than {MAX_BYTES} bytes")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise TranscriptError(path, f"not UTF-8 text (byte {exc.start})") from None
    if "\x00" in text:
        raise TranscriptError(path, "not text (NUL byte)")
    if not text.strip():
        raise TranscriptError(path, "empty transcript")
    return text


def _checked(path: Path, utterances: list[Utterance]) -> list[Utterance]:
    if not utterances:
        raise TranscriptError(path, "no utterance with text")
    if len(utterances) > MAX_UTTERANCES:
        raise TranscriptError(path, f"{len(utterances)} utterances, over the cap of {MAX_UTTERANCES}")
    for u in utterances:
        if len(u.text) > MAX_TEXT_CHARS:
            raise TranscriptError(path, f"utterance {u.id} has {len(u.text)} characters, over {MAX_TEXT_CHARS}")
    return utterances


def parse_txt(path: Path, data: bytes | None = None) -> list[Utterance]:
    sentences = split_sentences(_read_text(path, data))
    return _checked(path, [Utterance(f"s{i}", None, None, None, s) for i, s in enumerate(sentences, 1)])


def _vtt_seconds(stamp: str) -> float:
    parts = [float(p) for p in stamp.split(":")]
    return sum(p * 60**i for i, p in enumerate(reversed(parts)))


def parse_vtt(path: Path, data: bytes | None = None) -> list[Utterance]:
    text = _read_text(path, data)
    try:
        captions = list(webvtt.from_buffer(io.StringIO(text), strict=True))
    except (MalformedFileError, MalformedCaptionError) as exc:
        raise TranscriptError(path, f"not valid WebVTT ({str(exc).splitlines()[0] if str(exc) else 'malformed'})") \
            from None
    out = []
    for i, caption in enumerate(captions, 1):
        start, end = _vtt_seconds(caption.start), _vtt_seconds(caption.end)
        if end < start:
            raise TranscriptError(path, f"cue {i} ends ({caption.end}) before it starts ({caption.start})")
        words = " ".join(caption.text.split())
        if caption.voice and len(caption.voice) > MAX_SPEAKER_CHARS:
            raise TranscriptError(path, f"cue {i} names a voice of {len(caption.voice)} characters, over "
                                  f"{MAX_SPEAKER_CHARS}")
        if words:
            out.append(Utterance(caption.identifier or f"c{i}", caption.voice, start, end, words))
    return _checked(path, out)


@cache
def schema_validator() -> Draft202012Validator:
    schema = json.loads(SCHEMA_PATH.read_text())
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def _schema_problem(document: object) -> str | None:
    errors = sorted(schema_validator().iter_errors(document), key=lambda e: (len(e.absolute_path), e.message))
    if not errors:
        return None
    err = errors[-1]
    where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err.absolute_path) or "(top)"
    # jsonschema's message quotes the whole instance; for a long one, name the rule instead.
    message = err.message if len(err.message) <= 160 else f"fails {err.validator} {err.validator_value}"
    return f"schema: {where}: {message}"


def _refuse_constant(name: str) -> float:
    # json accepts NaN and Infinity, which are not JSON: NaN passes every numeric bound of the schema.
    raise ValueError(f"{name} is not a JSON number")


def parse_json(path: Path, data: bytes | None = None) -> list[Utterance]:
    text = _read_text(path, data)
    try:
        document = json.loads(text, parse_constant=_refuse_constant)
    except json.JSONDecodeError as exc:
        raise TranscriptError(path, f"not JSON (line {exc.lineno} column {exc.colno}: {exc.msg})") from None
    except ValueError as exc:  # NaN/Infinity, or an integer of more digits than Python converts
        raise TranscriptError(path, f"not JSON ({str(exc).split(';')[0]})") from None
    except RecursionError:
        raise TranscriptError(path, "not JSON (nested too deep)") from None
    try:
        problem = _schema_problem(document)
    except RecursionError:  # a value nested just under the parser's limit, in a schema error's message
        raise TranscriptError(path, "nested too deep") from None
    if problem:
        raise TranscriptError(path, problem)
    seen: set[str] = set()
    out = []
    for row in document["utterances"]:
        if row["id"] in seen:
            raise TranscriptError(path, f"utterance id {row['id']!r} is not unique")
        seen.add(row["id"])
        if row["end"] < row["start"]:
            raise TranscriptError(path, f"utterance {row['id']} ends ({row['end']}) before it starts ({row['start']})")
        out.append(Utterance(row["id"], row.get("speaker"), float(row["start"]), float(row["end"]),
                             " ".join(row["text"].split())))
    return _checked(path, out)


_PARSERS = {".txt": parse_txt, ".vtt": parse_vtt, ".json": parse_json}


def parse_transcript(path: str | Path, data: bytes | None = None) -> list[Utterance]:
    """The utterances of an uploaded transcript; the format is chosen by the file's suffix (.txt, .vtt, .json).
    `data` gives the bytes when they are not on disk (e.g. read from S3); `path` then only names the file."""
    path = Path(path)
    parser = _PARSERS.get(path.suffix.lower())
    if parser is None:
        raise TranscriptError(path, f"unsupported transcript type {path.suffix or '(none)'}; accepted: "
                              + ", ".join(FORMATS))
    return parser(path, data)


def from_recognition(recognized: Sequence[RecognizedUtterance]) -> list[Utterance]:
    return [Utterance(r.id, None, r.start, r.end, r.text, r.confidence) for r in recognized]


def _confidence_summary(utterances: Sequence[Utterance]) -> dict | None:
    values = [u.confidence for u in utterances if u.confidence is not None]
    if not values:
        return None
    return {"mean": round(statistics.fmean(values), 4), "min": round(min(values), 4),
            "median": round(statistics.median(values), 4)}


def transcript_document(utterances: Sequence[Utterance], *, source: str, origin: str,
                        duration_seconds: float | None = None, asr_model_sha256: str | None = None,
                        lm_sha256: str | None = None) -> dict:
    """The JSON-able transcript: `source` is "manifest" or "asr", `origin` the file it came from."""
    if source not in ("manifest", "asr"):
        raise ValueError(f"source must be 'manifest' or 'asr', not {source!r}")
    ends = [u.end for u in utterances if u.end is not None]
    return {"version": DOCUMENT_VERSION, "source": source, "origin": origin,
            "duration_seconds": duration_seconds if duration_seconds is not None else (max(ends) if ends else None),
            "utterance_count": len(utterances), "confidence": _confidence_summary(utterances),
            "asr_model_sha256": asr_model_sha256, "lm_sha256": lm_sha256,
            "utterances": [u.to_json() for u in utterances]}
