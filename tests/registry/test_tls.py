"""TLS of the gRPC services (issue 7, 1.9 review): beyond loopback a server needs the token AND TLS;
TLS (and mTLS) from ASTRA_GRPC_TLS_CERT/KEY/CA; a token is never sent in clear beyond loopback.
Certificates are made here: a test CA signs the server's (for 127.0.0.1) and a client's; a second,
unrelated CA stands for an attacker's."""

from __future__ import annotations

import datetime
import ipaddress
import os
import subprocess
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc

from astra.grpc_auth import (
    ServiceAuthError,
    TlsFiles,
    check_calling_auth,
    check_exposure,
    check_serving_auth,
    server_credentials,
)
from astra.ingest.registry_server import serve
from astra.orchestrator.registry_client import RegistryAuthError, RegistryClient
from astra.protos import ingest_registry_pb2 as pb
from tests.registry.conftest import AUTH, TOKEN, new_digest, request, serve_ingest_argv, spawn_serve_ingest
from tests.registry.test_auth import rows_of
from tests.registry.test_serve_cli import read_serving_line

pytestmark = pytest.mark.integration


def _key():
    return ec.generate_private_key(ec.SECP256R1())


def _cert(subject: str, key, issuer: tuple[str, object] | None = None, ca: bool = False,
          ips: tuple[str, ...] = ()) -> x509.Certificate:
    issuer_name, issuer_key = issuer or (subject, key)
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
               .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_name)]))
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ips:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _write(path: Path, cert: x509.Certificate, key=None) -> tuple[str, str | None]:
    path.with_suffix(".crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    if key is None:
        return str(path.with_suffix(".crt")), None
    path.with_suffix(".key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return str(path.with_suffix(".crt")), str(path.with_suffix(".key"))


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> dict[str, TlsFiles]:
    """TlsFiles of each role: server (no client CA), mtls_server, client (trusts the CA), mtls_client,
    rogue_client (trusts another CA), rogue_mtls_client (a client certificate of another CA)."""
    d = tmp_path_factory.mktemp("pki")
    ca_key, rogue_key = _key(), _key()
    ca_crt, _ = _write(d / "ca", _cert("astra test CA", ca_key, ca=True))
    rogue_crt, _ = _write(d / "rogue", _cert("rogue CA", rogue_key, ca=True))
    server_key, client_key, rogue_client_key = _key(), _key(), _key()
    server = _write(d / "server", _cert("registry", server_key, ("astra test CA", ca_key), ips=("127.0.0.1", "::1")),
                    server_key)
    client = _write(d / "client", _cert("orchestrator", client_key, ("astra test CA", ca_key)), client_key)
    rogue_client = _write(d / "rogue-client", _cert("intruder", rogue_client_key, ("rogue CA", rogue_key)),
                          rogue_client_key)
    return {
        "server": TlsFiles(*server),
        "mtls_server": TlsFiles(*server, ca=ca_crt),
        "client": TlsFiles(ca=ca_crt),
        "mtls_client": TlsFiles(*client, ca=ca_crt),
        "rogue_client": TlsFiles(ca=rogue_crt),
        "rogue_mtls_client": TlsFiles(*rogue_client, ca=ca_crt),
    }


@pytest.fixture
def tls_server(registry, pki):
    srv = serve("127.0.0.1:0", registry, token=TOKEN, tls=pki["server"])
    yield srv
    srv.graceful_stop(0)


def test_tls_server_and_tls_client_with_the_token_work(tls_server, pki, tenant):
    assert tls_server.tls
    client = RegistryClient(tls_server.target, deadline_s=5, token=TOKEN, tls=pki["client"])
    d = new_digest()
    assert client.register(tenant, [d]).statuses[0].is_new
    assert not client.register(tenant, [d]).statuses[0].is_new
    with pytest.raises(RegistryAuthError):  # TLS is not a credential: the token is still required
        RegistryClient(tls_server.target, deadline_s=5, token="", tls=pki["client"]).register(tenant, [d])


def test_a_plaintext_client_against_the_tls_server_fails_and_stores_nothing(tls_server, registry_engine_, tenant):
    with grpc.insecure_channel(tls_server.target) as ch:
        for call in (lambda: ch.unary_unary("/astra.ingest.v1.AssetRegistry/RegisterAssets",
                                            request_serializer=pb.RegisterAssetsRequest.SerializeToString)(
                         request(tenant, new_digest()), metadata=AUTH, timeout=5),
                     lambda: health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5)):
            with pytest.raises(grpc.RpcError) as err:
                call()
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    # The orchestrator's client sees an outage (it fails open); nothing reached the registry.
    plain = RegistryClient(tls_server.target, deadline_s=2, token=TOKEN, tls=TlsFiles())
    assert plain.register(tenant, [new_digest()]).skipped_reason == "unavailable"
    assert rows_of(registry_engine_, tenant) == (0, 0)


def test_a_client_that_does_not_trust_the_servers_ca_refuses_it(tls_server, pki, tenant, registry_engine_):
    client = RegistryClient(tls_server.target, deadline_s=2, token=TOKEN, tls=pki["rogue_client"])
    assert client.register(tenant, [new_digest()]).skipped_reason == "unavailable"
    assert rows_of(registry_engine_, tenant) == (0, 0)


def test_mtls_requires_a_client_certificate_of_the_ca(registry, pki, tenant, registry_engine_):
    srv = serve("127.0.0.1:0", registry, token=TOKEN, tls=pki["mtls_server"])
    try:
        ok = RegistryClient(srv.target, deadline_s=5, token=TOKEN, tls=pki["mtls_client"])
        assert ok.register(tenant, [new_digest()]).statuses[0].is_new
        for role in ("client", "rogue_mtls_client"):  # no certificate; one of another CA
            refused = RegistryClient(srv.target, deadline_s=2, token=TOKEN, tls=pki[role])
            assert refused.register(tenant, [new_digest()]).skipped, role
        assert rows_of(registry_engine_, tenant) == (1, 1)
    finally:
        srv.graceful_stop(0)


def test_exposure_policy_beyond_loopback_needs_the_token_and_tls():
    check_exposure("127.0.0.1", None, tls=False)  # the embedded stack: loopback plaintext
    check_exposure("::1", TOKEN, tls=False)
    check_exposure("0.0.0.0", TOKEN, tls=True)
    check_serving_auth("10.0.0.5", TOKEN, False, tls=True)
    for host, token, tls, fragment in (
        ("0.0.0.0", TOKEN, False, "refusing to bind 0.0.0.0 without TLS"),
        ("10.0.0.5", TOKEN, False, "ASTRA_GRPC_TLS_CERT and ASTRA_GRPC_TLS_KEY"),
        ("::", TOKEN, False, "without TLS"),
        ("0.0.0.0", None, True, "refusing to bind 0.0.0.0 without credentials"),
    ):
        with pytest.raises(ServiceAuthError, match=fragment):
            check_exposure(host, token, tls)
    with pytest.raises(ServiceAuthError, match="without TLS"):
        check_serving_auth("0.0.0.0", TOKEN, False)


def test_serve_refuses_a_non_loopback_bind_without_tls(registry, pki):
    with pytest.raises(ServiceAuthError, match="refusing to bind 0.0.0.0 without TLS"):
        serve("0.0.0.0:0", registry, token=TOKEN)
    with pytest.raises(ServiceAuthError, match="refusing to bind 0.0.0.0 without credentials"):
        serve("0.0.0.0:0", registry, tls=pki["server"])


def test_a_client_never_sends_the_token_in_clear_beyond_loopback(pki):
    with pytest.raises(RegistryAuthError) as err:
        RegistryClient("10.0.0.5:50051", token=TOKEN, tls=TlsFiles())
    assert "refusing to send ASTRA_SERVICE_TOKEN to 10.0.0.5 in clear" in str(err.value)
    assert "ASTRA_GRPC_TLS_CA" in str(err.value)
    # Over TLS, or without a token, or to loopback: a channel is made (nothing is sent yet).
    RegistryClient("10.0.0.5:50051", token=TOKEN, tls=pki["client"])
    RegistryClient("10.0.0.5:50051", token="", tls=TlsFiles())
    check_calling_auth("[::1]:50051", TOKEN, TlsFiles())
    # A channel cached for a token-less client is not a way around it.
    RegistryClient("10.0.0.6:50051", token="", tls=TlsFiles())
    with pytest.raises(RegistryAuthError, match="in clear"):
        RegistryClient("10.0.0.6:50051", token=TOKEN, tls=TlsFiles())


def test_the_client_reads_tls_from_the_environment(tls_server, pki, tenant, monkeypatch):
    monkeypatch.setenv("ASTRA_GRPC_TLS_CA", pki["client"].ca)
    assert RegistryClient(tls_server.target, deadline_s=5).register(tenant, [new_digest()]).statuses[0].is_new


def test_bad_tls_files_are_refused_naming_the_variable(pki, tmp_path):
    not_pem = tmp_path / "x.pem"
    not_pem.write_text("hello")
    server = pki["server"]
    for tls, fragment in (
        (TlsFiles(cert=server.cert), "ASTRA_GRPC_TLS_CERT and ASTRA_GRPC_TLS_KEY go together"),
        (TlsFiles(key=server.key), "go together"),
        (TlsFiles(ca=pki["client"].ca), "ASTRA_GRPC_TLS_CA .client certificates. needs the server's own"),
        (TlsFiles(str(tmp_path / "absent.crt"), server.key), f"ASTRA_GRPC_TLS_CERT={tmp_path}/absent.crt: cannot read"),
        (TlsFiles(server.cert, str(not_pem)), "ASTRA_GRPC_TLS_KEY=.*not a PEM file"),
        (TlsFiles(server.key, server.cert), "not a PEM file"),  # swapped
    ):
        with pytest.raises(ServiceAuthError, match=fragment):
            server_credentials(tls)
    with pytest.raises(RegistryAuthError, match="ASTRA_GRPC_TLS_CA=.*not a PEM file"):
        RegistryClient("127.0.0.1:1", token=TOKEN, tls=TlsFiles(ca=str(not_pem)))


def tls_env(tls: TlsFiles) -> dict[str, str]:
    return {"ASTRA_GRPC_TLS_CERT": tls.cert or "", "ASTRA_GRPC_TLS_KEY": tls.key or "",
            "ASTRA_GRPC_TLS_CA": tls.ca or ""}


def test_serve_ingest_over_tls(ingest_env, pki, tenant):
    proc = spawn_serve_ingest({**ingest_env, **tls_env(pki["server"])}, "--port", "0")
    try:
        line = read_serving_line(proc)
        assert "(TLS)" in line
        target = line.split("serving on ")[1].split()[0]
        tls_client = RegistryClient(target, deadline_s=5, tls=pki["client"])
        assert tls_client.register(tenant, [new_digest()]).statuses[0].is_new
        assert RegistryClient(target, deadline_s=2, tls=TlsFiles()).register(tenant, [new_digest()]).skipped
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.mark.parametrize("host, tls, fragment", [
    ("0.0.0.0", None, "refusing to bind 0.0.0.0 without TLS"),
    ("::", None, "refusing to bind :: without TLS"),
    ("0.0.0.0", "half", "go together"),
])
def test_serve_ingest_refuses_a_non_loopback_bind_without_tls(ingest_env, pki, host, tls, fragment):
    env = ingest_env | tls_env(TlsFiles(cert=pki["server"].cert) if tls == "half" else TlsFiles())
    res = subprocess.run(serve_ingest_argv("--host", host, "--port", "0"), env={**os.environ, **env},
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 2 and res.stdout == ""
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], res.stderr
