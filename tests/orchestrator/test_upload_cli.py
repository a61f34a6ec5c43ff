"""`astra session upload` through the real console script: a folder the manifest would not name
exactly is refused before anything is uploaded (exit 2, one line naming the files)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

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


# -- a used version, bad ids, large files, S3 faults -----------------------------------------------


def manifest_of(s3, settings, tenant, version: int = 1) -> bytes:
    key = f"{tenant}/sessions/visit-1/v{version}/manifest.json"
    return s3.get_object(Bucket=settings.uploads_bucket, Key=key)["Body"].read()


def test_a_second_upload_into_a_used_version_is_refused(use_stack_env, s3, settings, tenant, tmp_path):
    first, again = tmp_path / "first", tmp_path / "again"
    write(first, session_files())
    write(again, {"audio.ogg": b"a different recording"})
    assert upload(first, tenant).returncode == 0
    before, manifest = uploaded(s3, settings, tenant), manifest_of(s3, settings, tenant)
    res = upload(again, tenant)
    assert res.returncode == 2, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "nothing uploaded" in res.stderr
    assert "session versions are immutable: upload it as v2" in res.stderr
    assert uploaded(s3, settings, tenant) == before and manifest_of(s3, settings, tenant) == manifest
    assert run_cli("session", "upload", str(again), "-t", tenant, "-s", "visit-1", "-v", "2",
                   "--template", "report").returncode == 0  # the next version is free


def test_a_version_already_handed_over_is_refused(use_stack_env, s3, settings, configured_tenant, handover, tmp_path):
    from astra.orchestrator.handover import hand_over

    write(tmp_path, session_files())
    args = ("session", "upload", str(tmp_path), "-t", configured_tenant, "-s", "visit-1", "--template",
            "field_inspection")
    assert run_cli(*args).returncode == 0
    hand_over(handover, f"{configured_tenant}/sessions/visit-1/v1/manifest.json")
    assert uploaded(s3, settings, configured_tenant) == []  # the folder is empty again: only the record says "used"
    res = run_cli(*args)
    assert res.returncode == 2 and "was already handed over" in res.stderr and "upload it as v2" in res.stderr
    assert uploaded(s3, settings, configured_tenant) == []
    clone = run_cli(*args, "-v", "3", "--clone-of", "2")
    assert clone.returncode == 2 and f"{configured_tenant}--visit-1--v2 was never handed over" in clone.stderr
    assert run_cli(*args, "-v", "2", "--clone-of", "1").returncode == 0


@pytest.mark.parametrize("option, value", [("-s", "s x"), ("-s", "visit-1\n"), ("-t", "Acme"), ("-t", "a--b")])
def test_a_bad_session_id_or_tenant_is_refused_with_exit_2(option, value, use_stack_env, tmp_path):
    write(tmp_path, session_files())
    args = {"-t": "acme", "-s": "visit-1", option: value}
    res = run_cli("session", "upload", str(tmp_path), "-t", args["-t"], "-s", args["-s"], "--template", "report")
    assert res.returncode == 2, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "nothing uploaded" in res.stderr


def peak_rss_mib(*args: str) -> tuple[int, subprocess.CompletedProcess]:
    """Run `astra` in a child of a small Python and return the child's peak RSS (MiB) and result."""
    probe = ("import json, resource, subprocess, sys\n"
             "res = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
             "print(json.dumps([resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, res.returncode, "
             "res.stdout, res.stderr]))\n")
    astra = str(Path(sys.executable).with_name("astra"))
    out = subprocess.run([sys.executable, "-c", probe, astra, *args], capture_output=True, text=True, timeout=300)
    rss_kib, code, stdout, stderr = json.loads(out.stdout)
    return rss_kib // 1024, subprocess.CompletedProcess(args, code, stdout, stderr)


def test_a_large_recording_is_streamed_not_read_into_memory(use_stack_env, s3, settings, tenant, tmp_path):
    size = 256 << 20
    with open(tmp_path / "audio.wav", "wb") as f:  # not sparse: the upload reads real pages
        block = os.urandom(1 << 20)
        for _ in range(size >> 20):
            f.write(block)
    rss, res = peak_rss_mib("session", "upload", str(tmp_path), "-t", tenant, "-s", "visit-1", "--template", "report")
    assert res.returncode == 0, res.stderr
    head = s3.head_object(Bucket=settings.uploads_bucket, Key=f"{tenant}/sessions/visit-1/v1/audio.wav")
    assert head["ContentLength"] == size
    assert rss < 256, f"peak RSS {rss} MiB: the {size >> 20} MiB file was held in memory"


def test_an_s3_fault_part_way_deletes_what_this_run_uploaded(use_stack_env, s3, settings, tenant, tmp_path,
                                                            moto_endpoint):
    from tests.orchestrator.faulty_s3 import Faults, faulty_s3

    write(tmp_path, session_files())  # audio.wav, data/readings.csv, media/site.png, transcript.txt (in that order)
    with faulty_s3(moto_endpoint, Faults(fail_put_number=3)) as endpoint:
        res = run_cli("session", "upload", str(tmp_path), "-t", tenant, "-s", "visit-1", "--template", "report",
                      env={"ASTRA_S3_ENDPOINT_URL": endpoint})
    assert res.returncode == 1, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert "upload failed at" in res.stderr and "AccessDenied" in res.stderr
    assert "the 2 files uploaded before it were deleted again: nothing is left" in res.stderr
    assert uploaded(s3, settings, tenant) == []


def test_when_the_clean_up_fails_too_the_error_names_what_is_left(use_stack_env, s3, settings, tenant, tmp_path,
                                                                 moto_endpoint):
    from tests.orchestrator.faulty_s3 import Faults, faulty_s3

    write(tmp_path, session_files())
    with faulty_s3(moto_endpoint, Faults(fail_put_number=3, fail_deletes=True)) as endpoint:
        res = run_cli("session", "upload", str(tmp_path), "-t", tenant, "-s", "visit-1", "--template", "report",
                      env={"ASTRA_S3_ENDPOINT_URL": endpoint})
    assert res.returncode == 1 and len(res.stderr.strip().splitlines()) == 1
    left = uploaded(s3, settings, tenant)
    assert len(left) == 2 and not any(k.endswith("manifest.json") for k in left)
    assert "left behind" in res.stderr and all(k in res.stderr for k in left)
