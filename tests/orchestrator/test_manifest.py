"""Session manifests judged by themselves and their key (no services needed)."""

from __future__ import annotations

import json

import pytest

from astra.orchestrator.manifest import MAX_MANIFEST_BYTES, ManifestRejected, manifest_session, parse_manifest

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
