"""The CLI behaves like a Unix tool: one error line, details with --verbose, exit 0 only on success."""

from __future__ import annotations

import json

import pytest
import typer

from astra.cli.common import errors, fail
from tests.config_svc.maps import SHA, STYLE_MAP, ZONE_MAP
from tests.conftest import run_cli

pytestmark = pytest.mark.integration


def test_config_commands_round_trip(use_stack_env, tenant, tmp_path):
    (tmp_path / "zm.json").write_text(json.dumps(ZONE_MAP))
    (tmp_path / "sm.json").write_text(json.dumps(STYLE_MAP))
    for expected in (1, 2):
        res = run_cli("config", "publish", "-t", tenant, "--zone-map", str(tmp_path / "zm.json"),
                      "--style-map", str(tmp_path / "sm.json"), "--template-sha256", SHA, "--json")
        assert res.returncode == 0, res.stderr
        assert json.loads(res.stdout)["version"] == expected
    show = run_cli("config", "show", "-t", tenant)
    assert show.returncode == 0 and json.loads(show.stdout)["version"] == 2
    old = run_cli("config", "show", "-t", tenant, "--version", "1")
    assert json.loads(old.stdout)["version"] == 1
    hist = run_cli("config", "history", "-t", tenant, "--json")
    assert [h["version"] for h in json.loads(hist.stdout)] == [1, 2]


def test_errors_are_one_line_with_details_on_verbose(use_stack_env, tenant, tmp_path):
    res = run_cli("config", "show", "-t", tenant)
    assert res.returncode == 1
    assert res.stdout == ""
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and tenant in lines[0]
    verbose = run_cli("--verbose", "config", "show", "-t", tenant)
    assert verbose.returncode == 1 and "Traceback" in verbose.stderr

    (tmp_path / "bad.json").write_text("{not json")
    bad = run_cli("config", "publish", "-t", tenant, "--zone-map", str(tmp_path / "bad.json"),
                  "--style-map", str(tmp_path / "bad.json"), "--template-sha256", SHA)
    assert bad.returncode == 1 and "not valid JSON" in bad.stderr


def test_missing_settings_say_what_to_do(tmp_path, monkeypatch):
    res = run_cli("config", "show", "-t", "acme", env={"ASTRA_DATABASE_URL": ""})
    assert res.returncode == 1 and "ASTRA_DATABASE_URL" in res.stderr and "stack up" in res.stderr


@pytest.mark.parametrize("text", ["cannot write /tmp/w[/x]/out.docx", "zone [bold]title[/bold] is [red]"])
def test_error_lines_are_plain_text_not_markup(capsys, text):
    """Every command's error line (errors() and fail()) holds file names and the user's words as they are: a path
    with ``[/x]`` in it once crashed the error line with a MarkupError traceback, ``[bold]`` would vanish."""
    with pytest.raises(typer.Exit) as raised, errors():
        raise OSError(text)
    assert raised.value.exit_code == 1
    assert capsys.readouterr().err == f"error: {text}  (details: astra --verbose …)\n"
    fail(text, 2)
    assert capsys.readouterr().err == f"error: {text}\n"


def test_usage_errors_exit_2():
    res = run_cli("config", "show")
    assert res.returncode == 2


def test_session_upload_writes_the_manifest_last(use_stack_env, s3, settings, tenant, tmp_path):
    from astra.samples import session_files

    for rel, body in session_files().items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(body)
    res = run_cli("session", "upload", str(tmp_path), "-t", tenant, "-s", "visit-1", "--template", "report", "--json")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["partition_key"] == f"{tenant}--visit-1--v1"
    objs = s3.list_objects_v2(Bucket=settings.uploads_bucket, Prefix=f"{tenant}/sessions/visit-1/v1/")["Contents"]
    newest = max(objs, key=lambda o: (o["LastModified"], o["Key"].endswith("manifest.json")))
    assert newest["Key"].endswith("manifest.json") and len(objs) == 5
    bad = run_cli("session", "upload", str(tmp_path), "-t", tenant, "-s", "Visit_1", "--template", "report")
    assert bad.returncode == 2 and "invalid session id" in bad.stderr  # a refusal, like every bad input
