"""The `intent_output` asset's client of CORE's IntentService (`astra serve core`, ASTRA_CORE_TARGET).

The asset classifies through the running service rather than loading a model itself, so a Dagster run and the
service answer with the same model version, and the output records the version that answered."""

from __future__ import annotations

from dagster import ConfigurableResource

from astra.core.core_client import DEFAULT_CORE_TARGET, IntentClient
from astra.grpc_auth import TlsFiles
from resources.env import env_or


class IntentServiceResource(ConfigurableResource):
    target: str = DEFAULT_CORE_TARGET
    # The service token IntentService checks; unset, calls carry none and a service that requires one refuses
    # them (UNAUTHENTICATED: a refusal of the run, never a silent skip).
    token: str | None = None
    # One Classify call carries a batch of up to 256 utterances (astra.core.intent_output.BATCH_SIZE); the first
    # call of a tenant may also download and load its model. A down service fails at once (no wait for ready).
    deadline_s: float = 60.0
    # PEM paths, as for the ingest registry: a CA makes the channel TLS; cert+key add mTLS.
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None

    @classmethod
    def from_env(cls) -> IntentServiceResource:
        return cls(target=env_or("core_target", DEFAULT_CORE_TARGET), token=env_or("service_token", None),
                   tls_ca=env_or("grpc_tls_ca", None), tls_cert=env_or("grpc_tls_cert", None),
                   tls_key=env_or("grpc_tls_key", None))

    def client(self) -> IntentClient:
        return IntentClient(self.target, self.token, TlsFiles(self.tls_cert, self.tls_key, self.tls_ca),
                            self.deadline_s)
