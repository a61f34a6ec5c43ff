"""The service token (issue 7, 1.9): every gRPC call but health needs `authorization: Bearer <token>`;
`astra serve ingest` refuses to start without one (or beyond loopback when told --insecure-no-auth)."""

from __future__ import annotations

import os
import subprocess
from concurrent import futures

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy import func, select

from astra.db.schema import asset_registry, tenants
from astra.grpc_auth import (
    ServiceAuthError,
    bearer_metadata,
    check_serving_auth,
    is_loopback,
    server_interceptors,
)
from astra.ingest.registry_server import SERVICE_NAME, serve
from astra.orchestrator.registry_client import RegistryAuthError, RegistryClient
from astra.protos import core_intent_pb2, core_intent_pb2_grpc
from astra.protos import ingest_registry_pb2 as pb
from tests.registry.conftest import TOKEN, new_digest, request, serve_ingest_argv, spawn_serve_ingest, stub
from tests.registry.test_serve_cli import read_serving_line

pytestmark = pytest.mark.integration

WRONG = [
    bearer_metadata("x" * len(TOKEN)),  # another token
    (("authorization", TOKEN),),  # no scheme
    (("authorization", f"Bearer {TOKEN}x"),),  # a longer token that starts with the right one
    (("authorization", f"Bearer {TOKEN[:-1]}"),),  # a prefix of it
    (("authorization", f"Bearer {TOKEN}"), ("authorization", "Bearer nope")),  # two, one wrong
]


def rows_of(engine, tenant: str) -> tuple[int, int]:
    with engine.connect() as conn:
        held = conn.execute(select(func.count()).select_from(asset_registry)
                            .where(asset_registry.c.tenant_id == tenant)).scalar_one()
        known = conn.execute(select(func.count()).select_from(tenants)
                             .where(tenants.c.tenant_id == tenant)).scalar_one()
    return held, known


def test_no_token_is_unauthenticated_and_nothing_is_stored(server, registry_engine_, tenant):
    d = new_digest()
    with pytest.raises(grpc.RpcError) as err:
        stub(server.target, metadata=()).RegisterAssets(request(tenant, d), timeout=5)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "missing service token" in err.value.details()
    assert rows_of(registry_engine_, tenant) == (0, 0)
    # The refused call stored nothing: with the token the digest is still NEW.
    ok = stub(server.target).RegisterAssets(request(tenant, d), timeout=5)
    assert [s.status for s in ok.statuses] == [pb.AssetStatus.NEW]
    assert rows_of(registry_engine_, tenant) == (1, 1)


@pytest.mark.parametrize("metadata", WRONG)
def test_a_wrong_token_is_unauthenticated_and_learns_nothing(server, registry_engine_, tenant, metadata):
    d = new_digest()
    assert stub(server.target).RegisterAssets(request(tenant, d), timeout=5).statuses[0].status == pb.AssetStatus.NEW
    with pytest.raises(grpc.RpcError) as err:
        stub(server.target, metadata=metadata).RegisterAssets(request(tenant, d, new_digest()), timeout=5)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert err.value.details() == "invalid service token"  # no DUPLICATE, no canonical URI
    assert rows_of(registry_engine_, tenant) == (1, 1)


def test_health_answers_without_a_token(server):
    with grpc.insecure_channel(server.target) as ch:
        health = health_pb2_grpc.HealthStub(ch)
        for service in ("", SERVICE_NAME):
            assert health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status == \
                health_pb2.HealthCheckResponse.SERVING


@pytest.mark.parametrize("token", [TOKEN + "\n", TOKEN + " ", "short", "é" * 20],
                         ids=["trailing-newline", "trailing-space", "short", "non-ascii"])
def test_client_refuses_a_token_the_registry_could_never_accept(server, tenant, token, monkeypatch):
    """A trailing newline once reached gRPC as "Invalid metadata" (RegistryError INTERNAL)."""
    with pytest.raises(RegistryAuthError) as err:
        RegistryClient(server.target, deadline_s=2, token=token)
    assert "ASTRA_SERVICE_TOKEN" in str(err.value) and server.target in str(err.value)
    monkeypatch.setenv("ASTRA_SERVICE_TOKEN", token)
    with pytest.raises(RegistryAuthError, match="ASTRA_SERVICE_TOKEN"):
        RegistryClient(server.target, deadline_s=2)


@pytest.mark.parametrize("token", ["", "y" * 43])
def test_client_refused_raises_a_clear_error_and_never_fails_open(server, tenant, token):
    client = RegistryClient(server.target, deadline_s=2, token=token)
    with pytest.raises(RegistryAuthError) as err:
        client.register(tenant, [new_digest()])
    assert err.value.code == grpc.StatusCode.UNAUTHENTICATED
    assert "ASTRA_SERVICE_TOKEN" in str(err.value) and server.target in str(err.value)


def test_client_reads_the_token_from_the_environment(server, tenant, monkeypatch):
    assert RegistryClient(server.target, deadline_s=2).register(tenant, [new_digest()]).statuses[0].is_new
    monkeypatch.setenv("ASTRA_SERVICE_TOKEN", "z" * 40)
    with pytest.raises(RegistryAuthError):
        RegistryClient(server.target, deadline_s=2).register(tenant, [new_digest()])


def echo(request, _context):
    return request


def echo_stream(requests, _context):
    yield from requests


def test_every_method_of_every_service_is_covered():
    """The interceptor, not each servicer, checks the token: CORE's IntentService and methods of
    every streaming kind get it without doing anything."""
    server = grpc.server(futures.ThreadPoolExecutor(2), interceptors=server_interceptors(TOKEN))
    core_intent_pb2_grpc.add_IntentServiceServicer_to_server(core_intent_pb2_grpc.IntentServiceServicer(), server)
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("test.Echo", {
        "Unary": grpc.unary_unary_rpc_method_handler(echo),
        "ServerStream": grpc.unary_stream_rpc_method_handler(lambda r, c: iter([r, r])),
        "ClientStream": grpc.stream_unary_rpc_method_handler(lambda rs, c: b"".join(rs)),
        "BidiStream": grpc.stream_stream_rpc_method_handler(echo_stream),
    })])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            calls = {
                "Unary": lambda md: ch.unary_unary("/test.Echo/Unary")(b"a", metadata=md, timeout=5),
                "ServerStream": lambda md: list(ch.unary_stream("/test.Echo/ServerStream")(b"a", metadata=md,
                                                                                           timeout=5)),
                "ClientStream": lambda md: ch.stream_unary("/test.Echo/ClientStream")(iter([b"a", b"b"]), metadata=md,
                                                                                      timeout=5),
                "BidiStream": lambda md: list(ch.stream_stream("/test.Echo/BidiStream")(iter([b"a"]), metadata=md,
                                                                                       timeout=5)),
            }
            expected = {"Unary": b"a", "ServerStream": [b"a", b"a"], "ClientStream": b"ab", "BidiStream": [b"a"]}
            for name, call in calls.items():
                assert call(bearer_metadata(TOKEN)) == expected[name]
                for md in ((), WRONG[0]):
                    with pytest.raises(grpc.RpcError) as err:
                        call(md)
                    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED, name
            classify = core_intent_pb2_grpc.IntentServiceStub(ch).Classify
            with pytest.raises(grpc.RpcError) as err:
                classify(core_intent_pb2.ClassifyRequest(tenant="t"), timeout=5)
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
            with pytest.raises(grpc.RpcError) as err:  # through to the (unimplemented) servicer
                classify(core_intent_pb2.ClassifyRequest(tenant="t"), metadata=bearer_metadata(TOKEN), timeout=5)
            assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
    finally:
        server.stop(0)


UNKNOWN_METHODS = ["/astra.ingest.v1.AssetRegistry/Nope",
                   "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
                   "/no.such.Service/Method", "//astra.ingest.v1.AssetRegistry/RegisterAssets"]


@pytest.mark.parametrize("method", UNKNOWN_METHODS)
def test_unknown_methods_are_unauthenticated_without_the_token(server, method):
    """Without the token a caller learns nothing about which methods exist; with it, UNIMPLEMENTED."""
    with grpc.insecure_channel(server.target) as ch:
        calls = (lambda md: ch.unary_unary(method)(b"", metadata=md, timeout=5),
                 lambda md: list(ch.stream_stream(method)(iter([b"", b""]), metadata=md, timeout=5)))
        for call in calls:
            for md in ((), WRONG[0]):
                with pytest.raises(grpc.RpcError) as err:
                    call(md)
                assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
            with pytest.raises(grpc.RpcError) as err:
                call(bearer_metadata(TOKEN))
            assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
        with pytest.raises(grpc.RpcError) as err:  # health stays open, unknown methods included
            ch.unary_unary("/grpc.health.v1.Health/Nope")(b"", timeout=5)
        assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_serving_policy():
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "[::]", "", "10.0.0.5", "registry.internal"))
    check_serving_auth("0.0.0.0", TOKEN, False, tls=True)  # with the token and TLS any address is allowed
    check_serving_auth("127.0.0.1", None, True)
    for host, token, insecure, fragment in (
        ("127.0.0.1", None, False, "ASTRA_SERVICE_TOKEN is not set"),
        ("0.0.0.0", None, True, "refusing to bind 0.0.0.0 without credentials"),
        ("10.0.0.5", "", True, "refusing to bind 10.0.0.5 without credentials"),
        ("127.0.0.1", "short", False, "too short"),
        ("127.0.0.1", "a" * 20 + " b", False, "printable ASCII without spaces"),
    ):
        with pytest.raises(ServiceAuthError, match=fragment):
            check_serving_auth(host, token, insecure)


def test_an_open_server_binds_loopback_only(registry):
    with pytest.raises(ServiceAuthError, match="refusing to bind 0.0.0.0"):
        serve("0.0.0.0:0", registry)


def run_serve(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if k != "ASTRA_SERVICE_TOKEN"} | env
    return subprocess.run(serve_ingest_argv(*args), env=full, capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize("token, args, fragment", [
    (None, ("--port", "0"), "ASTRA_SERVICE_TOKEN is not set: refusing to serve unauthenticated"),
    (None, ("--host", "0.0.0.0", "--port", "0"), "ASTRA_SERVICE_TOKEN is not set"),
    (None, ("--host", "0.0.0.0", "--port", "0", "--insecure-no-auth"), "refusing to bind 0.0.0.0 without credentials"),
    ("", ("--host", "10.1.2.3", "--port", "0", "--insecure-no-auth"), "refusing to bind 10.1.2.3 without credentials"),
    ("tiny", ("--port", "0"), "ASTRA_SERVICE_TOKEN is too short"),
])
def test_serve_ingest_refuses_to_start_without_credentials(ingest_env, token, args, fragment):
    env = {k: v for k, v in ingest_env.items() if k != "ASTRA_SERVICE_TOKEN"}
    if token is not None:
        env["ASTRA_SERVICE_TOKEN"] = token
    res = run_serve(env, *args)
    assert res.returncode == 2 and res.stdout == ""
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], res.stderr


def test_serve_ingest_insecure_no_auth_serves_loopback_without_a_token(ingest_env, tenant):
    env = {k: v for k, v in ingest_env.items() if k != "ASTRA_SERVICE_TOKEN"}
    proc = spawn_serve_ingest({**env, "ASTRA_SERVICE_TOKEN": ""}, "--port", "0", "--insecure-no-auth")
    try:
        line = read_serving_line(proc)
        assert "WITHOUT AUTHENTICATION (--insecure-no-auth)" in line
        target = line.split("serving on ")[1].split()[0]
        assert target.startswith("127.0.0.1:")
        assert RegistryClient(target, deadline_s=5, token="").register(tenant, [new_digest()]).statuses[0].is_new
    finally:
        proc.terminate()
        proc.wait(10)


def test_serve_ingest_with_a_token_refuses_calls_without_it(ingest_env, tenant):
    proc = spawn_serve_ingest(ingest_env, "--port", "0")
    try:
        line = read_serving_line(proc)
        assert "WITHOUT AUTHENTICATION" not in line
        target = line.split("serving on ")[1].split()[0]
        with pytest.raises(RegistryAuthError):
            RegistryClient(target, deadline_s=5, token="").register(tenant, [new_digest()])
        assert RegistryClient(target, deadline_s=5, token=TOKEN).register(tenant, [new_digest()]).statuses[0].is_new
        with open(f"/proc/{proc.pid}/cmdline", "rb") as f:
            assert TOKEN.encode() not in f.read()  # given by the environment, not argv
    finally:
        proc.terminate()
        proc.wait(10)
