"""`astra serve ingest` as a real process: serves, answers health, drains on SIGTERM, exits 0."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from astra.ingest.registry_server import SERVICE_NAME
from astra.orchestrator.registry_client import RegistryClient
from astra.protos import ingest_registry_pb2 as pb
from astra.stack import processes
from tests.conftest import run_cli
from tests.registry.conftest import new_digest, request, serve_ingest_argv, spawn_serve_ingest, stub

pytestmark = pytest.mark.integration


def read_serving_line(proc: subprocess.Popen, timeout: float = 20) -> str:
    box: list[str] = []
    reader = threading.Thread(target=lambda: box.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    if not box or "serving on" not in box[0]:
        proc.kill()
        raise AssertionError(f"no 'serving on' line: {box!r}; stderr: {proc.stderr.read()}")
    return box[0]


def test_serve_ingest_subprocess_health_drain_and_exit_0(ingest_env, settings, tenant):
    proc = spawn_serve_ingest({**ingest_env, "ASTRA_INGEST_DELAY_MS": "500"}, "--port", "0", "--grace", "5")
    try:
        line = read_serving_line(proc)
        target = line.split("serving on ")[1].split()[0]
        assert "test delay 500 ms" in line
        with grpc.insecure_channel(target) as ch:
            health = health_pb2_grpc.HealthStub(ch)
            for service in ("", SERVICE_NAME):
                assert health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status == \
                    health_pb2.HealthCheckResponse.SERVING
            watch = health.Watch(health_pb2.HealthCheckRequest(service=""), timeout=10)
            assert next(watch).status == health_pb2.HealthCheckResponse.SERVING

            d = new_digest()
            in_flight = stub(target).RegisterAssets.future(request(tenant, d), timeout=10)
            time.sleep(0.2)  # in the server, inside its 500 ms delay
            proc.send_signal(signal.SIGTERM)
            assert next(watch).status == health_pb2.HealthCheckResponse.NOT_SERVING
            watch.cancel()
            response = in_flight.result(timeout=10)  # drained, completed
            assert [(s.sha256, s.status) for s in response.statuses] == [(d.sha256, pb.AssetStatus.NEW)]
            assert response.statuses[0].canonical_uri.startswith(f"s3://{settings.assets_bucket}/{tenant}/blobs/")
        assert proc.wait(10) == 0
        assert "SIGTERM" in proc.stderr.read()
        # Gone: the orchestrator's client fails open, fast.
        assert RegistryClient(target).register(tenant, [d]).skipped_reason == "unavailable"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_serve_ingest_binds_ingest_target_and_stops_on_sigint(ingest_env, tenant):
    port = processes.free_port()
    proc = spawn_serve_ingest({**ingest_env, "ASTRA_INGEST_TARGET": f"127.0.0.1:{port}"})
    try:
        assert f"127.0.0.1:{port}" in read_serving_line(proc)
        first = RegistryClient(f"127.0.0.1:{port}", deadline_s=5).register(tenant, [d := new_digest()])
        again = RegistryClient(f"127.0.0.1:{port}", deadline_s=5).register(tenant, [d])
        assert first.statuses[0].is_new and not again.statuses[0].is_new
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("host", ["::1", "[::1]"])
def test_serve_ingest_binds_ipv6_loopback_either_spelling(ingest_env, tenant, host):
    """`--host '[::1]'` once built `[[::1]]:0` and exited 1."""
    proc = spawn_serve_ingest(ingest_env, "--host", host, "--port", "0")
    try:
        line = read_serving_line(proc)
        target = line.split("serving on ")[1].split()[0]
        assert target.startswith("[::1]:") and "(plaintext)" in line
        assert RegistryClient(target, deadline_s=5).register(tenant, [new_digest()]).statuses[0].is_new
    finally:
        proc.terminate()
        proc.wait(10)
    assert proc.stderr.read().count("\n") <= 2  # the stop lines; no gRPC internal log line


def test_serve_ingest_errors_exit_1_with_a_clear_message(ingest_env):
    busy = processes.free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", busy))
        s.listen()
        res = subprocess.run(serve_ingest_argv("--port", str(busy)), env={**os.environ, **ingest_env},
                             capture_output=True, text=True, timeout=30)
    assert res.returncode == 1 and res.stdout == ""
    assert f"error: cannot listen on 127.0.0.1:{busy}" in res.stderr

    no_db = subprocess.run(serve_ingest_argv("--port", "0"), env={**os.environ, "ASTRA_DATABASE_URL": ""},
                           capture_output=True, text=True, timeout=30)
    assert no_db.returncode == 1 and "ASTRA_DATABASE_URL" in no_db.stderr


def test_serve_ingest_help_through_the_console_script_once_wired():
    if serve_ingest_argv()[1:3] != ["serve", "ingest"]:
        pytest.skip("astra.cli.main does not register serve_cmd yet (the lead wires it)")
    res = run_cli("serve", "ingest", "--help")
    assert res.returncode == 0 and "--port" in res.stdout
