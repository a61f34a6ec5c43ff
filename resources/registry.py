"""The orchestrator's client of INGEST's dedup registry (one channel per process, 50 ms deadline)."""

from dagster import ConfigurableResource

from astra.orchestrator.registry_client import RegistryClient
from resources.env import env, env_or


class IngestRegistryResource(ConfigurableResource):
    target: str
    # The service token the registry checks. Unset: calls carry none, and a registry that requires
    # one refuses them (RegistryAuthError naming the variable), never a silent fail-open.
    token: str | None = None
    deadline_ms: int = 50

    @classmethod
    def from_env(cls) -> "IngestRegistryResource":
        return cls(target=env("ingest_target"), token=env_or("service_token", None))

    def client(self, deadline_s: float | None = None, wait_for_ready: bool = False) -> RegistryClient:
        """The hot path's client by default; reconciliation passes its longer deadline and waits for ready."""
        return RegistryClient(self.target, deadline_s=deadline_s or self.deadline_ms / 1000,
                              wait_for_ready=wait_for_ready, token=self.token or "")
