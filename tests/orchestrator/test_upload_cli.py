"""`astra session upload` through the real console script: a folder the manifest would not name
exactly is refused before anything is uploaded (exit 2, one line naming the files)."""

from __future__ import annotations

import json
import os

import pytest

from astra.samples import session_files
from tests.conftest import run_cli

pytestmark = pytest.mark.integration


def write(folder, files: dict[str, bytes]) -> None:
    for rel, body in files.items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)


def uploaded(s3, settings, tenant) -> list[str]:
    return sorted(o["Key"] for o in s3.list_objects_v2(Bucket=settings.uploads_bucket, Prefix=f"{tenant}/")
                  .get("Contents", []))


def upload(folder, tenant):
    return run_cli("session", "upload", str(folder), "-t", tenant, "-s", "visit-1", "--template", "report", "--json")


def add_escaping_symlink(folder, outside):
    (outside / "secret.csv").write_bytes(b"a,b\n")
    (folder / "data").mkdir(exist_ok=True)
    os.symlink(outside / "secret.csv", folder / "data" / "secret.csv")


def add_symlinked_folder(folder, outside):
    for path in (folder / "media").iterdir():
        path.unlink()
    (folder / "media").rmdir()
    os.symlink(folder / "data", folder / "media")  # inside the folder, but a folder would be walked twice


REFUSED = {
    "two audio files": ({"audio.ogg": b"OggS"}, None, ["audio.ogg", "audio.wav"]),
    "two transcripts": ({"transcript.vtt": b"WEBVTT\n"}, None, ["transcript.txt", "transcript.vtt"]),
    "unknown top-level file": ({"notes.md": b"# notes\n"}, None, ["notes.md"]),
    "manifest written by hand": ({"manifest.json": b"{}"}, None, ["manifest.json"]),
    "unsupported audio type": ({"audio.flac": b"fLaC"}, None, ["audio.flac"]),
    "unsupported data type": ({"data/readings.txt": b"1 2\n"}, None, ["data/readings.txt"]),
    "unsupported media type": ({"media/site.bmp": b"BM"}, None, ["media/site.bmp"]),
    "nested data file": ({"data/2026/readings.csv": b"a\n"}, None, ["data/2026/readings.csv"]),
    "hidden file": ({".DS_Store": b"\0"}, None, [".DS_Store"]),
    "newline in a name": ({"data/readings.csv\n": b"a\n"}, None, ["data/readings.csv\\n"]),
    "symlink out of the folder": ({}, add_escaping_symlink, ["data/secret.csv", "out of the folder"]),
    "symlinked folder": ({}, add_symlinked_folder, ["'media'", "link files, not folders"]),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_a_folder_the_manifest_would_not_name_is_refused_before_any_upload(case, use_stack_env, s3, settings, tenant,
                                                                         tmp_path):
    extra, arrange, named = REFUSED[case]
    folder, outside = tmp_path / "session", tmp_path / "outside"
    folder.mkdir(), outside.mkdir()
    write(folder, {**session_files(), **extra})
    if arrange:
        arrange(folder, outside)
    res = upload(folder, tenant)
    assert res.returncode == 2, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "nothing uploaded" in res.stderr
    for text in named:
        assert text in res.stderr
    assert uploaded(s3, settings, tenant) == []


def test_an_empty_folder_is_refused(use_stack_env, s3, settings, tenant, tmp_path):
    (tmp_path / "data").mkdir()
    res = upload(tmp_path, tenant)
    assert res.returncode == 2 and "no session file" in res.stderr
    assert uploaded(s3, settings, tenant) == []


def test_a_data_only_folder_and_links_inside_it_are_uploaded(use_stack_env, s3, settings, tenant, tmp_path):
    files = {k: v for k, v in session_files().items() if k != "audio.wav"}
    write(tmp_path, files)
    os.symlink(tmp_path / "data" / "readings.csv", tmp_path / "data" / "copy.csv")  # inside: fine
    res = upload(tmp_path, tenant)
    assert res.returncode == 0, res.stderr
    prefix = f"{tenant}/sessions/visit-1/v1/"
    assert json.loads(res.stdout)["files"] == ["data/copy.csv", "data/readings.csv", "media/site.png", "transcript.txt"]
    manifest = json.loads(s3.get_object(Bucket=settings.uploads_bucket, Key=prefix + "manifest.json")["Body"].read())
    assert "audio" not in manifest and manifest["data"] == ["data/copy.csv", "data/readings.csv"]
    # Every object uploaded is one the manifest names (and the manifest itself).
    assert uploaded(s3, settings, tenant) == sorted(
        [prefix + "manifest.json", prefix + "transcript.txt", prefix + "media/site.png"]
        + [prefix + p for p in manifest["data"]])
