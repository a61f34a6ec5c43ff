"""A client of IntentService (`astra.core.v1.IntentService/Classify`): token and TLS as every ASTRA gRPC client."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import grpc

from astra.grpc_auth import TlsFiles, bearer_metadata, client_channel
from astra.protos import core_intent_pb2 as pb
from astra.protos import core_intent_pb2_grpc as pb_grpc
from astra.settings import Settings

DEFAULT_CORE_TARGET = "127.0.0.1:50052"
DEFAULT_DEADLINE_S = 30.0
# Worth another attempt later: the service is down or restarting, overloaded, or too slow this time.
# Any other status (a refused request, a missing model, a bad token) is an answer that a retry would repeat.
TRANSIENT_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
                             grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.ABORTED})


@dataclass(frozen=True)
class IntentAnswer:
    intent: str  # "oos" when out of scope
    domain: str | None
    confidence: float
    oos: bool


@dataclass(frozen=True)
class Classified:
    model_version: str
    answers: list[IntentAnswer]  # one per utterance, in order

    @property
    def intents(self) -> list[tuple[str, float]]:
        """(intent, confidence) per utterance, in order."""
        return [(a.intent, a.confidence) for a in self.answers]


def transient(exc: grpc.RpcError) -> bool:
    """True when the failed call may succeed if tried again later."""
    return exc.code() in TRANSIENT_CODES


class IntentClient:
    def __init__(self, target: str, token: str | None = None, tls: TlsFiles | None = None,
                 deadline_s: float = DEFAULT_DEADLINE_S):
        self.target, self.deadline_s = target, deadline_s
        self._metadata = bearer_metadata(token)
        self._channel = client_channel(target, tls or TlsFiles(), token)
        self._stub = pb_grpc.IntentServiceStub(self._channel)

    @classmethod
    def from_settings(cls, settings: Settings, deadline_s: float = DEFAULT_DEADLINE_S) -> IntentClient:
        tls = TlsFiles(settings.grpc_tls_cert, settings.grpc_tls_key, settings.grpc_tls_ca)
        return cls(settings.core_target or DEFAULT_CORE_TARGET, settings.service_token, tls, deadline_s)

    def classify(self, tenant: str, texts: Sequence[str]) -> Classified:
        request = pb.ClassifyRequest(tenant=tenant, utterances=[pb.Utterance(id=str(k), text=t)
                                                                for k, t in enumerate(texts)])
        response = self._stub.Classify(request, timeout=self.deadline_s, metadata=self._metadata)
        return Classified(response.model_version, [IntentAnswer(i.intent, i.domain or None, i.confidence, i.oos)
                                                   for i in response.intents])

    def close(self) -> None:
        self._channel.close()
