"""The orchestrator's client of INGEST's dedup registry (one channel per process, 50 ms deadline)."""

from dagster import ConfigurableResource

from astra.grpc_auth import TlsFiles
from astra.orchestrator.registry_client import RegistryClient
from resources.env import env, env_or


class IngestRegistryResource(ConfigurableResource):
    target: str
    # The service token the registry checks. Unset: calls carry none, and a registry that requires
    # one refuses them (RegistryAuthError naming the variable), never a silent fail-open.
    token: str | None = None
    deadline_ms: int = 50
    # PEM paths: the CA of the registry's certificate makes the channel TLS; cert+key add mTLS.
    # Without a CA a token is sent to a loopback target only (RegistryAuthError otherwise).
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None

    @classmethod
    def from_env(cls) -> "IngestRegistryResource":
        return cls(target=env("ingest_target"), token=env_or("service_token", None),
                   tls_ca=env_or("grpc_tls_ca", None), tls_cert=env_or("grpc_tls_cert", None),
                   tls_key=env_or("grpc_tls_key", None))

    def client(self, deadline_s: float | None = None, wait_for_ready: bool = False) -> RegistryClient:
        """The hot path's client by default; reconciliation passes its longer deadline and waits for ready."""
        return RegistryClient(self.target, deadline_s=deadline_s or self.deadline_ms / 1000,
                              wait_for_ready=wait_for_ready, token=self.token or "",
                              tls=TlsFiles(self.tls_cert, self.tls_key, self.tls_ca))
