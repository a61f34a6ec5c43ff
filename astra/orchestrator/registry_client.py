"""The orchestrator's client of INGEST's dedup registry (ARCHITECTURE §5).

One channel per process and target, shared by every RegistryClient and thread. Each call has a
50 ms deadline by default. On DEADLINE_EXCEEDED or UNAVAILABLE the client **fails open**: it
returns no statuses and the reason, and the session goes on as if every asset were new
(materialization metadata `dedup: skipped`; a reconciliation pass registers them later). Any
other error (INVALID_ARGUMENT, INTERNAL, …) raises RegistryError: that is a bug to see, not an
outage to ride through. UNAUTHENTICATED in particular is never failed open: a client without the
registry's service token is misconfigured, and riding through would skip dedup for every session
without anyone noticing; it raises RegistryAuthError naming the setting.

Every call presents the service token (`authorization: Bearer <token>`, `astra.grpc_auth`):
the one given, else ASTRA_SERVICE_TOKEN from the environment. A token the registry could never
accept (too short, spaces, a trailing newline) raises RegistryAuthError at once. The channel
speaks TLS when given the CA of the registry's certificate (ASTRA_GRPC_TLS_CA; with
ASTRA_GRPC_TLS_CERT/KEY it presents them, mTLS); a token is never sent in clear beyond loopback.

By default calls never wait for a connection (`wait_for_ready=False`): while the registry is down a call
fails at once with UNAVAILABLE instead of sitting out its deadline, and the channel retries the
connection in the background with a short, capped backoff so a registry that comes back is used
again within about a second.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import grpc

from astra.grpc_auth import (
    ServiceAuthError,
    TlsFiles,
    bearer_metadata,
    check_calling_auth,
    check_token,
    client_channel,
)
from astra.ingest.registry import Digest, Outcome, Status
from astra.protos import ingest_registry_pb2 as pb
from astra.protos import ingest_registry_pb2_grpc as pb_grpc
from astra.settings import ENV

DEFAULT_DEADLINE_S = 0.05
SKIP_DEADLINE = "deadline exceeded"
SKIP_UNAVAILABLE = "unavailable"
_FAIL_OPEN = {grpc.StatusCode.DEADLINE_EXCEEDED: SKIP_DEADLINE, grpc.StatusCode.UNAVAILABLE: SKIP_UNAVAILABLE}
_OUTCOME = {pb.AssetStatus.NEW: Outcome.NEW, pb.AssetStatus.DUPLICATE: Outcome.DUPLICATE}

# gRPC's defaults back off reconnection from 1 s up to 120 s: after an outage the client would
# keep failing open for minutes after the registry is back. Cap it at 1 s.
CHANNEL_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    # Transparent retries only; no configured retry policy (a retry could not fit in 50 ms anyway).
    ("grpc.enable_retries", 1),
    ("grpc.max_receive_message_length", 16 * 1024 * 1024),
)

_channels: dict[tuple[int, str, TlsFiles], grpc.Channel] = {}
_channels_lock = threading.Lock()


def channel(target: str, tls: TlsFiles = TlsFiles(), token: str | None = None) -> grpc.Channel:
    """The process's one channel to `target` with `tls`, created on first use (a forked child gets its own).
    `token` is the one its calls will carry: refused for a plaintext channel beyond loopback."""
    check_calling_auth(target, token, tls)  # each time: the cached channel may have been made for no token
    key = (os.getpid(), target, tls)
    ch = _channels.get(key)
    if ch is None:
        with _channels_lock:
            ch = _channels.get(key)
            if ch is None:
                ch = _channels[key] = client_channel(target, tls, token, CHANNEL_OPTIONS)
    return ch


class RegistryError(RuntimeError):
    """The registry answered with an error that must not be ridden through (not an outage)."""

    def __init__(self, code: grpc.StatusCode, details: str):
        super().__init__(f"RegisterAssets failed: {code.name}: {details}")
        self.code = code
        self.details = details


class RegistryAuthError(RegistryError):
    """The registry refused this client's service token, or this client cannot present it safely
    (`refused=False`: checked here, before any call): a misconfiguration, never failed open."""

    def __init__(self, target: str, details: str, refused: bool = True):
        super().__init__(grpc.StatusCode.UNAUTHENTICATED, details)
        self.target = target
        self.refused = refused

    def __str__(self) -> str:
        if not self.refused:  # the details name the setting to fix
            return f"the dedup registry at {self.target} cannot be called: {self.details}"
        return (f"the dedup registry at {self.target} refused this client ({self.details}): set "
                f"{ENV['service_token']} to the registry's service token (`astra stack up` writes it to stack.env)")


@dataclass(frozen=True)
class RegisterResult:
    statuses: list[Status] | None  # one per digest, in request order; None when skipped
    skipped_reason: str | None = None  # "deadline exceeded" | "unavailable" when failed open

    @property
    def skipped(self) -> bool:
        return self.statuses is None


class RegistryClient:
    def __init__(self, target: str, deadline_s: float = DEFAULT_DEADLINE_S, wait_for_ready: bool = False,
                 token: str | None = None, tls: TlsFiles | None = None):
        """`wait_for_ready=True` is for callers off the hot path (reconciliation): a call then
        waits, within its deadline, for a registry that is coming back instead of failing at once.
        `token`: the service token; None reads ASTRA_SERVICE_TOKEN, "" sends none.
        `tls`: the TLS files; None reads ASTRA_GRPC_TLS_*. Raises RegistryAuthError for a token
        the registry could never accept, or one that would cross the network in clear."""
        if deadline_s <= 0:
            raise ValueError(f"deadline_s must be > 0, got {deadline_s}")
        self.target = target
        self.deadline_s = deadline_s
        self.wait_for_ready = wait_for_ready
        token = os.environ.get(ENV["service_token"]) if token is None else token
        try:
            self._metadata = bearer_metadata(check_token(token) if token else None)
            self._stub = pb_grpc.AssetRegistryStub(channel(target, TlsFiles.from_env() if tls is None else tls, token))
        except ServiceAuthError as exc:
            raise RegistryAuthError(target, str(exc), refused=False) from None

    def register(self, tenant: str, digests: Sequence[Digest]) -> RegisterResult:
        request = pb.RegisterAssetsRequest(
            tenant=tenant,
            assets=[pb.AssetDigest(sha256=d.sha256, size=d.size, media_type=d.media_type, name=d.name)
                    for d in digests],
        )
        try:
            response = self._stub.RegisterAssets(request, timeout=self.deadline_s, wait_for_ready=self.wait_for_ready,
                                                 metadata=self._metadata)
        except grpc.RpcError as exc:
            code = exc.code()
            if code in _FAIL_OPEN:
                return RegisterResult(None, _FAIL_OPEN[code])
            if code == grpc.StatusCode.UNAUTHENTICATED:
                raise RegistryAuthError(self.target, exc.details() or "") from None
            raise RegistryError(code, exc.details() or "") from None
        if len(response.statuses) != len(digests):
            raise RegistryError(grpc.StatusCode.INTERNAL,
                                f"{len(response.statuses)} statuses for {len(digests)} digests")
        statuses = []
        for d, s in zip(digests, response.statuses, strict=True):
            if s.sha256 != d.sha256 or s.status not in _OUTCOME:
                raise RegistryError(grpc.StatusCode.INTERNAL, f"unexpected status {s.sha256} {s.status}")
            statuses.append(Status(s.sha256, _OUTCOME[s.status], s.canonical_uri))
        return RegisterResult(statuses)
