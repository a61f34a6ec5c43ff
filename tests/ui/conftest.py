"""One `astra dev` (webserver + daemon over the test services) and one headless Chromium for every UI check.

The browser is Debian's Chromium (`apt-get install chromium`, scripts/system-deps.sh) driven by the Python
`playwright` package with `executable_path`: Playwright's own browser download is never used. Without
/usr/bin/chromium (a machine where it cannot be installed) the checks skip, saying so.

Screenshots go to $ASTRA_TEST_ARTIFACTS/ui (default tests/artifacts/ui, ignored by git), kept after the run.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from astra.stack import processes
from tests.conftest import ROOT, run_cli
from tests.core.test_model_store import tiny_encoder  # noqa: F401 — fixtures the IntentService below needs
from tests.dagster.conftest import core_server, sample_intents_model  # noqa: F401

CHROMIUM = os.environ.get("ASTRA_CHROMIUM", "/usr/bin/chromium")
# Headless on a machine with no display, no GPU and a closed network: without the background-networking flags
# Chromium keeps calling home (updates, sync, safe browsing) and floods the network with refused connections.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
NO_CHROMIUM = (f"no Chromium at {CHROMIUM}: `apt-get install chromium` (scripts/system-deps.sh) could not install it "
               "on this machine")
ARTIFACTS = Path(os.environ.get("ASTRA_TEST_ARTIFACTS", ROOT / "tests" / "artifacts")) / "ui"


def graphql(port: int, query: str, variables: dict | None = None) -> dict:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/graphql",
                                 data=json.dumps({"query": query, "variables": variables or {}}).encode(),
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def wait_for(what: str, check, timeout: float = 180, every: float = 2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@dataclass
class DevUI:
    port: int
    env: dict[str, str]
    tenant: str
    workdir: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture(scope="module")
def dev_ui(stack_env, s3, core_server, tmp_path_factory):  # noqa: F811
    """`astra dev` on a free port over the test services, with an uploads bucket and a tenant of its own
    (the daemon's sensors scan every tenant of the bucket). Stopped with SIGTERM at the end, as Ctrl-C does."""
    workdir = tmp_path_factory.mktemp("ui")
    bucket = f"{stack_env['ASTRA_UPLOADS_BUCKET']}-ui-{uuid.uuid4().hex[:6]}"
    s3.create_bucket(Bucket=bucket)
    env_vars = {**stack_env, "ASTRA_UPLOADS_BUCKET": bucket, "ASTRA_STATE_DIR": str(workdir / "state"),
                "ASTRA_CORE_TARGET": core_server.target}
    port = processes.free_port()
    astra = str(Path(os.sys.executable).with_name("astra"))
    log = open(workdir / "astra-dev.log", "w")  # noqa: SIM115 — closed below
    proc = subprocess.Popen([astra, "dev", "--port", str(port)], env={**os.environ, **env_vars}, cwd=ROOT,
                            stdout=log, stderr=subprocess.STDOUT, text=True)

    def ready():
        if proc.poll() is not None:
            raise AssertionError(f"astra dev exited {proc.returncode}: {(workdir / 'astra-dev.log').read_text()}")
        try:
            return graphql(port, "{ assetNodes { id } }")["data"]["assetNodes"]
        except OSError:
            return None

    try:
        wait_for("the Dagster UI", ready, timeout=150)
        yield DevUI(port, env_vars, f"t-ui-{uuid.uuid4().hex[:8]}", workdir)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        finally:
            log.close()


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.skip(NO_CHROMIUM)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="module")
def artifacts() -> Path:
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    ARTIFACTS.mkdir(parents=True)
    return ARTIFACTS


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1600, "height": 1000})
    context.set_default_timeout(30_000)
    # The "Join the Dagster community" dialog a local webserver shows a new browser once: dismissed, as a user
    # who clicked Skip (Dagster keeps that in localStorage), so it covers nothing the checks look at.
    context.add_init_script("window.localStorage.setItem('communityNux', '1')")
    pg = context.new_page()
    yield pg
    context.close()


RUNS = "{ runsOrError { ... on Runs { results { runId status tags { key value } } } } }"


def finished_runs(port: int, **tags: str) -> list[dict]:
    results = graphql(port, RUNS)["data"]["runsOrError"]["results"]
    runs = [{"runId": r["runId"], "status": r["status"], **{t["key"]: t["value"] for t in r["tags"]}} for r in results]
    return [r for r in runs if all(r.get(k) == v for k, v in tags.items())
            and r["status"] in ("SUCCESS", "FAILURE", "CANCELED")]


@pytest.fixture(scope="module")
def uploaded(dev_ui, s3):
    """The uploads, each through the path a user's client takes, and the runs the sensors made of them."""
    from astra.samples import session_files
    from astra.samples.templates import build_sample_template, sample_sidecar

    d, tenant, port = dev_ui.workdir, dev_ui.tenant, dev_ui.port
    (d / "report.docx").write_bytes(build_sample_template())
    (d / "report.zones.json").write_text(json.dumps(sample_sidecar()))
    up = run_cli("ingest", "template", "-t", tenant, str(d / "report.docx"), "--sidecar", str(d / "report.zones.json"),
                 env=dev_ui.env)
    assert up.returncode == 0, up.stderr
    template_run = wait_for("the template run", lambda: finished_runs(port, **{"astra/tenant": tenant}))[0]

    for rel, body in session_files().items():  # audio, transcript (read as given: no ASR), CSV, photo
        (d / "session" / rel).parent.mkdir(parents=True, exist_ok=True)
        (d / "session" / rel).write_bytes(body)
    up = run_cli("session", "upload", str(d / "session"), "-t", tenant, "-s", "visit-1", "--template", "report",
                 env=dev_ui.env)
    assert up.returncode == 0, up.stderr
    refused = f"{tenant}/sessions/broken-1/v1/manifest.json"
    s3.put_object(Bucket=dev_ui.env["ASTRA_UPLOADS_BUCKET"], Key=refused, Body=b"{not json")
    partition = f"{tenant}--visit-1--v1"
    session_run = wait_for("the session run", lambda: finished_runs(port, **{"astra/session": partition}),
                           timeout=240)[0]
    return {"template_run": template_run, "session_run": session_run, "partition": partition, "refused": refused}
