"""Transcript parsing: the three uploaded formats, their refusals, and the transcript document."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from astra.canonical import canonical_json
from astra.core.asr import RecognizedUtterance
from astra.core.transcript import (
    MAX_SPEAKER_CHARS,
    MAX_TEXT_CHARS,
    TranscriptError,
    from_recognition,
    parse_transcript,
    schema_validator,
    split_sentences,
    transcript_document,
)

VTT = """WEBVTT

intro
00:00:01.250 --> 00:00:03.500
<v Alice>Transfer one hundred dollars
to my savings account.

00:01:04.000 --> 00:01:05.750
What is my balance?
"""


def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def good_json(**changes) -> dict:
    rows = [{"id": "u1", "speaker": "agent", "start": 0.0, "end": 1.5, "text": "Hello there."},
            {"id": "u2", "start": 1.5, "end": 4.0, "text": "Transfer  $100\nto savings."}]
    rows[0].update(changes)
    return {"utterances": rows}


def test_sentence_splitting_keeps_abbreviations_initials_and_decimals():
    text = "Dr. Smith paid $3.50 today. Is that right? Yes!\nNew line without stop\n\nJ. R. R. Tolkien wrote it."
    assert split_sentences(text) == ["Dr. Smith paid $3.50 today.", "Is that right?", "Yes!",
                                     "New line without stop", "J. R. R. Tolkien wrote it."]


def test_txt_becomes_sentences_without_times(tmp_path):
    utterances = parse_transcript(write(tmp_path, "transcript.txt", "\ufeffFirst one. Second one?\n"))
    assert [(u.id, u.text, u.start, u.end) for u in utterances] == [("s1", "First one.", None, None),
                                                                     ("s2", "Second one?", None, None)]


def test_vtt_cues_keep_times_voice_and_identifier(tmp_path):
    first, second = parse_transcript(write(tmp_path, "transcript.vtt", VTT))
    assert (first.id, first.speaker, first.start, first.end) == ("intro", "Alice", 1.25, 3.5)
    assert first.text == "Transfer one hundred dollars to my savings account."
    assert (second.id, second.speaker, second.start, second.end) == ("c2", None, 64.0, 65.75)


def test_json_is_parsed_with_whitespace_normalised(tmp_path):
    utterances = parse_transcript(write(tmp_path, "transcript.json", json.dumps(good_json())))
    assert [(u.id, u.speaker, u.start, u.end, u.text) for u in utterances] == [
        ("u1", "agent", 0.0, 1.5, "Hello there."), ("u2", None, 1.5, 4.0, "Transfer $100 to savings.")]


@pytest.mark.parametrize("name, content, problem", [
    ("transcript.txt", "", "empty transcript"),
    ("transcript.txt", " \n\t\n", "empty transcript"),
    ("transcript.txt", b"\xff\xfe\x00bad", "not UTF-8"),
    ("transcript.txt", "a\x00b", "NUL byte"),
    ("transcript.vtt", "00:00:01.000 --> 00:00:02.000\nno header\n", "not valid WebVTT"),
    ("transcript.vtt", "WEBVTT\n\n00:00:01.000 --> garbage\nhello\n", "not valid WebVTT"),
    ("transcript.vtt", "WEBVTT\n\n00:00:05.000 --> 00:00:02.000\nhello\n", "cue 1 ends"),
    ("transcript.vtt", "WEBVTT\n\n00:00:01.000 --> 00:00:02.000\n\n", "no utterance with text"),
    ("transcript.json", "{not json", "not JSON (line 1"),
    ("transcript.json", "[]", "schema: (top)"),
    ("transcript.json", '{"utterances": []}', "schema: .utterances"),
    ("transcript.pdf", "x", "unsupported transcript type .pdf"),
])
def test_bad_files_are_refused_with_one_line_naming_the_file(tmp_path, name, content, problem):
    with pytest.raises(TranscriptError) as caught:
        parse_transcript(write(tmp_path, name, content))
    message = str(caught.value)
    assert message.startswith(f"{name}: ") and problem in message and "\n" not in message


@pytest.mark.parametrize("changes, problem", [
    ({"start": -1}, "utterances[0].start"),
    ({"end": "2"}, "utterances[0].end"),
    ({"text": "   "}, "utterances[0].text"),
    ({"text": "x" * (MAX_TEXT_CHARS + 1)}, "utterances[0].text"),
    ({"id": "bad id!"}, "utterances[0].id"),
    ({"extra": 1}, "Additional properties"),
    ({"speaker": 7}, "utterances[0].speaker"),
    ({"start": 3.0, "end": 2.0}, "utterance u1 ends (2.0) before it starts (3.0)"),
    ({"id": "u2"}, "utterance id 'u2' is not unique"),
])
def test_json_refusals(tmp_path, changes, problem):
    with pytest.raises(TranscriptError, match="^transcript.json: ") as caught:
        parse_transcript(write(tmp_path, "transcript.json", json.dumps(good_json(**changes))))
    assert problem in str(caught.value)


@pytest.mark.parametrize("number, problem", [
    ("NaN", "not JSON (NaN is not a JSON number)"),  # NaN passes the schema's minimum and maximum
    ("Infinity", "not JSON (Infinity is not a JSON number)"),
    ("-Infinity", "not JSON (-Infinity is not a JSON number)"),
    ("1e400", "schema: .utterances[0].end: inf is greater than the maximum of 86400"),
    ("1" * 5000, "not JSON (Exceeds the limit (4300 digits) for integer string conversion"),
])
def test_json_numbers_that_are_not_finite_are_refused(number, problem):
    text = '{"utterances": [{"id": "u1", "start": 0, "end": ' + number + ', "text": "hi"}]}'
    with pytest.raises(TranscriptError) as caught:
        parse_transcript("transcript.json", text.encode())
    assert str(caught.value).startswith(f"transcript.json: {problem}")


def test_deeply_nested_json_is_refused_not_a_recursion_error():
    with pytest.raises(TranscriptError, match=r"^transcript.json: not JSON \(nested too deep\)$"):
        parse_transcript("transcript.json", b"[" * 100_000 + b"]" * 100_000)
    # Just under the parser's limit the document parses, and the schema's error message would recurse instead.
    limit = sys.getrecursionlimit()
    for depth in range(limit - 150, limit + 10, 2):
        text = '{"utterances": [{"id": "u1", "start": 0, "end": 1, "text": ' + "[" * depth + "]" * depth + "}]}"
        with pytest.raises(TranscriptError, match=r"^transcript.json: (schema: .utterances\[0\].text: fails type "
                                                  r"string|.*nested too deep\)?)$"):
            parse_transcript("transcript.json", text.encode())


def test_the_stored_document_refuses_nan():
    assert canonical_json({"b": 1.5, "a": "é"}) == '{"a":"é","b":1.5}'.encode()
    with pytest.raises(ValueError, match="not JSON compliant"):
        canonical_json({"duration_seconds": float("nan")})


def test_json_caps_the_number_of_utterances(tmp_path):
    rows = [{"id": f"u{i}", "start": 0, "end": 0, "text": "x"} for i in range(20_001)]
    with pytest.raises(TranscriptError, match=r"^transcript.json: schema: .utterances: fails maxItems 20000$"):
        parse_transcript(write(tmp_path, "transcript.json", json.dumps({"utterances": rows})))


def test_oversized_file_is_refused_before_reading(tmp_path):
    path = write(tmp_path, "transcript.txt", "a. " * 2_000_000)
    with pytest.raises(TranscriptError, match="larger than"):
        parse_transcript(path)


def test_bytes_from_elsewhere_are_parsed_under_the_given_name():
    utterances = parse_transcript("sessions/s1/transcript.vtt", VTT.encode())
    assert len(utterances) == 2
    with pytest.raises(TranscriptError, match="^transcript.vtt: empty transcript"):
        parse_transcript("sessions/s1/transcript.vtt", b"")


def test_published_schema_is_valid_and_accepts_the_example():
    assert not list(schema_validator().iter_errors(good_json()))


def test_document_from_manifest_and_from_recognition(tmp_path):
    utterances = parse_transcript(write(tmp_path, "transcript.vtt", VTT))
    document = transcript_document(utterances, source="manifest", origin="transcript.vtt")
    assert document["utterance_count"] == 2 and document["duration_seconds"] == 65.75
    assert document["confidence"] is None and "confidence" not in document["utterances"][0]
    assert json.loads(json.dumps(document)) == document

    recognized = [RecognizedUtterance("u1", 0.5, 2.0, "hello", 0.8, "a" * 64, "b" * 64),
                  RecognizedUtterance("u2", 3.0, 4.0, "bye", 0.4, "a" * 64, "b" * 64)]
    document = transcript_document(from_recognition(recognized), source="asr", origin="audio.wav",
                                   duration_seconds=4.2, asr_model_sha256="a" * 64, lm_sha256="b" * 64)
    assert document["confidence"] == {"mean": 0.6, "min": 0.4, "median": 0.6}
    assert document["utterances"][1] == {"id": "u2", "speaker": None, "start": 3.0, "end": 4.0, "text": "bye",
                                         "confidence": 0.4}
    with pytest.raises(ValueError, match="source must be"):
        transcript_document([], source="guess", origin="x")


def test_a_vtt_voice_is_held_to_the_speaker_cap_of_json_transcripts(tmp_path):
    """A voice name is the utterance's speaker, as JSON's "speaker" is: over 64 characters is refused alike."""
    schema = schema_validator().schema
    assert schema["properties"]["utterances"]["items"]["properties"]["speaker"]["maxLength"] == MAX_SPEAKER_CHARS
    cue = "WEBVTT\n\n00:00:01.000 --> 00:00:02.000\n<v {}>hello\n"
    assert parse_transcript(write(tmp_path, "ok.vtt", cue.format("A" * MAX_SPEAKER_CHARS)))[0].speaker == "A" * 64
    with pytest.raises(TranscriptError) as caught:
        parse_transcript(write(tmp_path, "long.vtt", cue.format("A" * (MAX_SPEAKER_CHARS + 1))))
    assert str(caught.value) == "long.vtt: cue 1 names a voice of 65 characters, over 64"
