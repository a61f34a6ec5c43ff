"""`astra dev`: the Dagster UI lists the asset specs; SIGTERM takes every child process down."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

from astra.stack import processes
from tests.conftest import ROOT

pytestmark = pytest.mark.integration


def graphql(port: int, query: str) -> dict:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/graphql", data=json.dumps({"query": query}).encode(),
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def test_dev_serves_the_ui_and_stops_every_child(stack_env, tmp_path):
    port = processes.free_port()
    env = {**os.environ, **stack_env, "ASTRA_STATE_DIR": str(tmp_path / "state")}
    astra = str(Path(os.sys.executable).with_name("astra"))
    proc = subprocess.Popen([astra, "dev", "--port", str(port)], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        nodes = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                nodes = graphql(port, "{ assetNodes { assetKey { path } } }")["data"]["assetNodes"]
                if nodes:
                    break
            except OSError:
                pass
            time.sleep(1)
        assert nodes, "the Dagster UI did not come up"
        keys = {"/".join(n["assetKey"]["path"]) for n in nodes}
        assert {"template_upload", "template_atoms", "tenant_config", "session_upload", "feedback_upload"} <= keys
        children = psutil.Process(proc.pid).children(recursive=True)
        assert len(children) >= 3  # dagster dev, webserver, daemon, code server
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert "all dagster processes gone" in out
    assert not [c.pid for c in children if processes.alive(c.pid)]
