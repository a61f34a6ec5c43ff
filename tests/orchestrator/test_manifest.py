"""Session manifests judged by themselves and their key (no services needed)."""

from __future__ import annotations

import json

import pytest

from astra.orchestrator.manifest import (
    MAX_MANIFEST_BYTES,
    ManifestRejected,
    manifest_session,
    parse_manifest,
    validator,
)
from astra.tenancy import InvalidKey, SessionKey, validate_slug

KEY = "acme/sessions/visit-1/v1/manifest.json"
DOC = {"tenant": "acme", "session_id": "visit-1", "version": 1, "template": "report",
       "created_at": "2026-11-25T10:00:00Z", "audio": "audio.wav", "transcript": "transcript.txt",
       "data": ["data/readings.csv"], "media": ["media/site.png"], "locale": "en-US"}


def test_a_good_manifest_parses_with_its_files():
    m = parse_manifest(KEY, json.dumps(DOC).encode())
    assert m.session.partition_key == "acme--visit-1--v1"
    assert [(f.role, f.key) for f in m.files] == [
        ("audio", "acme/sessions/visit-1/v1/audio.wav"), ("transcript", "acme/sessions/visit-1/v1/transcript.txt"),
        ("data", "acme/sessions/visit-1/v1/data/readings.csv"), ("media", "acme/sessions/visit-1/v1/media/site.png")]
    assert m.audio.media_type == "audio/wav"


@pytest.mark.parametrize("change, reason", [
    ({"data": ["../secrets.csv"]}, "schema: data/0"),
    ({"media": ["media/../../x.png"]}, "schema: media/0"),
    ({"audio": "/etc/passwd"}, "schema: audio"),
    ({"version": 0}, "schema: version"),
    ({"extra": 1}, "schema"),
    ({"created_at": "yesterday"}, "schema: created_at"),
    ({"tenant": "other"}, "does not match the upload key"),
    ({"version": 2}, "does not match the upload key"),
    ({"clone_of": {"version": 1}}, "clone_of version 1 must be lower"),
])
def test_bad_manifests_say_why(change, reason):
    with pytest.raises(ManifestRejected, match=reason.replace("(", r"\(")):
        parse_manifest(KEY, json.dumps({**DOC, **change}).encode())


@pytest.mark.parametrize("key", [
    "acme/sessions/visit-1/v01/manifest.json",  # not canonical: would alias v1
    "acme/sessions/visit-1/v\u0661/manifest.json",  # an Arabic-Indic digit one
    "acme/sessions/visit-1/v0/manifest.json",
    "acme/sessions/Visit_1/v1/manifest.json",
    "ACME/sessions/visit-1/v1/manifest.json",
    "a--b/sessions/visit-1/v1/manifest.json",
    "acme/sessions/visit-1/manifest.json",
])
def test_keys_outside_the_partition_rules_are_refused(key):
    with pytest.raises(ManifestRejected):
        manifest_session(key)


@pytest.mark.parametrize("raw", [b"{not json", b"\xff\xfe", b"[" * 200_000 + b"]" * 200_000,
                                 b" " * (MAX_MANIFEST_BYTES + 1)])
def test_unreadable_manifests_are_refused_not_crashed_on(raw):
    with pytest.raises(ManifestRejected):
        parse_manifest(KEY, raw)


@pytest.mark.parametrize("key", [
    "acme/sessions/visit-1/v1/manifest.json\n",  # `$` with re.match let this through
    "acme/sessions/visit-1/v1\n/manifest.json",  # …and this one aliased v1
    "acme/sessions/visit-1/v1/manifest.json\r",
    "acme/sessions/visit-1\t/v1/manifest.json",
    "acme/sessions/visit-1/v1/manifest.json\x00",
])
def test_keys_with_control_characters_are_refused(key):
    with pytest.raises(ManifestRejected):
        manifest_session(key)


@pytest.mark.parametrize("change, where", [
    ({"audio": "audio.wav\n"}, "audio"),
    ({"transcript": "transcript.txt\n"}, "transcript"),
    ({"data": ["data/readings.csv\n"]}, "data/0"),
    ({"media": ["media/site.png", "media/a\x7f.png"]}, "media/1"),
    ({"template": "report\n"}, "template"),
    ({"template": "rep\x85ort"}, "template"),  # a C1 control (NEL)
    ({"locale": "en-US\n"}, "locale"),
])
def test_paths_with_control_characters_are_refused(change, where):
    with pytest.raises(ManifestRejected, match=f"control characters in {where}"):
        parse_manifest(KEY, json.dumps({**DOC, **change}).encode())


@pytest.mark.parametrize("change", [{"audio": "audio.wav\n"}, {"data": ["data/readings.csv\n"]}, {"tenant": "acme\n"},
                                    {"template": "report\n"}, {"locale": "en\n"}])
def test_the_published_schema_itself_refuses_a_trailing_newline(change):
    # Clients validate with the schema alone: the contract must refuse it, not only our code.
    assert list(validator().iter_errors({**DOC, **change}))


def test_a_data_only_session_is_valid_and_has_no_audio():
    doc = {k: v for k, v in DOC.items() if k != "audio"}
    m = parse_manifest(KEY, json.dumps(doc).encode())
    assert m.audio is None and [f.role for f in m.files] == ["transcript", "data", "media"]


def test_a_manifest_naming_no_file_is_refused():
    doc = {**{k: v for k, v in DOC.items() if k not in ("audio", "transcript")}, "data": [], "media": []}
    with pytest.raises(ManifestRejected, match="names no file"):
        parse_manifest(KEY, json.dumps(doc).encode())


@pytest.mark.parametrize("value", ["acme\n", "acme\r\n", "a\tb"])
def test_slugs_and_partition_keys_refuse_control_characters(value):
    with pytest.raises(InvalidKey):
        validate_slug(value)
    with pytest.raises(InvalidKey):
        SessionKey.parse(f"{value}--visit-1--v1")
    with pytest.raises(InvalidKey):
        SessionKey.parse("acme--visit-1--v1\n")


@pytest.mark.parametrize("change, where", [
    ({"created_at": "2026-11-25T10:00:00Z\n"}, "created_at"),  # the date-time format check uses `$`
    ({"clone_of": {"version": 1}, "created_at": "2026-11-25T10:00:00Z\r"}, "created_at"),
])
def test_a_control_character_in_any_string_is_refused(change, where):
    with pytest.raises(ManifestRejected, match=f"control characters in {where}"):
        parse_manifest(KEY, json.dumps({**DOC, **change}).encode())
    assert list(validator().iter_errors({**DOC, **change}))  # the published schema says so too


@pytest.mark.parametrize("key, change, where", [
    (KEY, {"version": 1.0}, "version: 1.0 is not an integer"),
    ("acme/sessions/visit-1/v2/manifest.json", {"version": 2, "clone_of": {"version": 1.0}},
     "clone_of/version: 1.0 is not an integer"),
])
def test_a_version_written_as_a_float_is_refused(key, change, where):
    with pytest.raises(ManifestRejected, match=where):
        parse_manifest(key, json.dumps({**DOC, **change}).encode())


@pytest.mark.parametrize("template", ["..", ".hidden", "demo\u202e", "de\u200bmo", "\u00a0", "a/b", "a\\b", "a b",
                                      "d\u0435mo", "x" * 121, ""])
def test_template_names_are_plain_ascii_names(template):
    with pytest.raises(ManifestRejected, match="schema: template"):
        parse_manifest(KEY, json.dumps({**DOC, "template": template}).encode())


@pytest.mark.parametrize("template", ["report", "field_inspection", "Invoice-2026.v2", "x" * 120])
def test_ordinary_template_names_are_accepted(template):
    assert parse_manifest(KEY, json.dumps({**DOC, "template": template}).encode()).document["template"] == template
