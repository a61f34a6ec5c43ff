"""The orchestrator's client of INGEST's dedup registry (one channel per process, 50 ms deadline)."""

from dagster import ConfigurableResource, EnvVar

from astra.orchestrator.registry_client import RegistryClient


class IngestRegistryResource(ConfigurableResource):
    target: str
    deadline_ms: int = 50

    @classmethod
    def from_env(cls) -> "IngestRegistryResource":
        return cls(target=EnvVar("ASTRA_INGEST_TARGET"))

    def client(self) -> RegistryClient:
        return RegistryClient(self.target, deadline_s=self.deadline_ms / 1000)
