"""`astra dev`: the Dagster UI lists the asset specs, the daemon's sensors run the template and
session paths on their own, and SIGTERM takes every child process down."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request
import uuid
from pathlib import Path

import psutil
import pytest

from astra.stack import processes
from tests.conftest import ROOT, run_cli
from tests.core.test_model_store import tiny_encoder  # noqa: F401 — fixtures the IntentService below needs
from tests.dagster.conftest import core_server, sample_intents_model  # noqa: F401

pytestmark = pytest.mark.integration


def graphql(port: int, query: str) -> dict:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/graphql", data=json.dumps({"query": query}).encode(),
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def wait_for(what: str, check, timeout: float = 150):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(2)
    raise AssertionError(f"timed out waiting for {what}")


def runs(port: int) -> list[dict]:
    data = graphql(port, "{ runsOrError { ... on Runs { results { status tags { key value } } } } }")
    return [{"status": r["status"], **{t["key"]: t["value"] for t in r["tags"]}}
            for r in data["data"]["runsOrError"]["results"]]


def test_dev_serves_the_ui_runs_the_sensors_and_stops_every_child(stack_env, s3, tenant, tmp_path,
                                                                 core_server):  # noqa: F811

    # A bucket of its own: the daemon's sensors scan every tenant in the uploads bucket.
    bucket = f"{stack_env['ASTRA_UPLOADS_BUCKET']}-dev-{uuid.uuid4().hex[:6]}"
    s3.create_bucket(Bucket=bucket)
    # The session run ends with intent_output, which classifies through IntentService (as `astra stack up` runs it).
    env_vars = {**stack_env, "ASTRA_UPLOADS_BUCKET": bucket, "ASTRA_STATE_DIR": str(tmp_path / "state"),
                "ASTRA_CORE_TARGET": core_server.target}
    port = processes.free_port()
    astra = str(Path(os.sys.executable).with_name("astra"))
    proc = subprocess.Popen([astra, "dev", "--port", str(port)], env={**os.environ, **env_vars}, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        def asset_keys():
            try:
                nodes = graphql(port, "{ assetNodes { assetKey { path } } }")["data"]["assetNodes"]
            except OSError:
                return None
            return {"/".join(n["assetKey"]["path"]) for n in nodes}

        keys = wait_for("the Dagster UI", asset_keys, timeout=120)
        assert {"template_upload", "template_atoms", "tenant_config", "session_upload", "session_handover",
                "custody_audio", "transcript", "intent_output", "feedback_upload"} <= keys
        children = psutil.Process(proc.pid).children(recursive=True)
        assert len(children) >= 3  # dagster dev, webserver, daemon, code server

        # The daemon's template sensor turns an upload into a config version by itself.
        from astra.samples.templates import build_sample_template, sample_sidecar

        (tmp_path / "report.docx").write_bytes(build_sample_template())
        (tmp_path / "report.zones.json").write_text(json.dumps(sample_sidecar()))
        up = run_cli("ingest", "template", "-t", tenant, str(tmp_path / "report.docx"),
                     "--sidecar", str(tmp_path / "report.zones.json"), env=env_vars)
        assert up.returncode == 0, up.stderr
        done = wait_for("the template run", lambda: [r for r in runs(port) if r.get("astra/tenant") == tenant
                                                     and r["status"] in ("SUCCESS", "FAILURE")])
        assert done[0]["status"] == "SUCCESS" and done[0]["dagster/sensor_name"] == "template_upload_sensor"

        # And its session sensor hands a session over, audio into custody.
        from astra.samples import session_files

        for rel, body in session_files().items():
            (tmp_path / "session" / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / "session" / rel).write_bytes(body)
        up = run_cli("session", "upload", str(tmp_path / "session"), "-t", tenant, "-s", "visit-1",
                     "--template", "report", env=env_vars)
        assert up.returncode == 0, up.stderr
        handed = wait_for("the handover run", lambda: [r for r in runs(port)
                                                       if r.get("astra/session") == f"{tenant}--visit-1--v1"
                                                       and r["status"] in ("SUCCESS", "FAILURE")])
        assert handed[0]["status"] == "SUCCESS"
        verify = run_cli("guard", "verify", "--tenant", tenant, "--json", env=env_vars)
        assert verify.returncode == 0 and json.loads(verify.stdout)["entries"] == 1
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert "all dagster processes gone" in out
    assert not [c.pid for c in children if processes.alive(c.pid)]
