"""A template is not lost to a transient fault: tenant_config retries while Redis is down."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time

import pytest
from dagster import DagsterEventType, EventRecordsFilter

from astra.runtime import config_service
from astra.samples.templates import build_sample_template, sample_sidecar
from astra.settings import Settings
from astra.stack import processes
from astra_assets.local_runner import tick
from tests.dagster.test_template_path import SENSOR, runs_for, upload

pytestmark = pytest.mark.integration


@pytest.fixture
def late_redis(tmp_path, monkeypatch, dagster_instance, run_settings):
    """A real Redis that is down until a step of a run has failed and waits for its retry."""
    port = processes.free_port()
    monkeypatch.setenv("ASTRA_REDIS_URL", f"redis://127.0.0.1:{port}/0")
    started: list[subprocess.Popen] = []

    def start_later():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not dagster_instance.get_event_records(
                EventRecordsFilter(event_type=DagsterEventType.STEP_UP_FOR_RETRY), limit=1):
            time.sleep(0.2)
        started.append(subprocess.Popen(
            [shutil.which("redis-server"), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(tmp_path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

    thread = threading.Thread(target=start_later, daemon=True)
    thread.start()
    yield port
    thread.join()
    for proc in started:
        proc.terminate()
        proc.wait(10)


def test_tenant_config_retries_while_redis_is_down(late_redis, dagster_instance, s3, run_settings, tenant):
    from astra_assets.definitions import build_definitions

    defs = build_definitions()  # after the Redis URL points at the late Redis
    upload(s3, run_settings, tenant, build_sample_template(), sidecar=sample_sidecar())
    runs = runs_for(tick(defs, dagster_instance, SENSOR), tenant)
    assert len(runs) == 1 and runs[0].success
    retried = [e for e in runs[0].all_events if e.event_type == DagsterEventType.STEP_UP_FOR_RETRY]
    assert retried and all(e.step_key == "tenant_config" for e in retried)
    snap = config_service(Settings.from_env()).snapshot(tenant)
    assert snap.version == 1
