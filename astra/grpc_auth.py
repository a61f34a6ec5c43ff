"""Authentication of ASTRA's gRPC services: a shared service token in call metadata, over TLS beyond loopback.

Callers send `authorization: Bearer <token>` (`bearer_metadata`); servers install
`TokenAuthInterceptor`, which checks every call of every service before any handler runs (so a
service added later is covered without doing anything) and ends a call without the token with
UNAUTHENTICATED — a call to a method that does not exist too, so a caller without the token
cannot learn which methods do. The comparison is constant-time. `grpc.health.v1.Health` stays open: probes
(`astra stack status`, orchestrators' liveness checks) carry no secret, and health says nothing
about any tenant.

`check_serving_auth` is the start-up policy every `astra serve …` command applies: no token, no
server, unless the operator says `--insecure-no-auth` — and even then only on a loopback address.
Beyond loopback a server needs the token AND TLS (`check_exposure`): a bearer token sent in
clear is a token given away. The token comes from the environment (`Settings.service_token`),
never from argv, so `ps` does not show it.

TLS (`TlsFiles`, PEM paths from ASTRA_GRPC_TLS_CERT/KEY/CA): a server presents cert+key and, with
a CA, requires client certificates signed by it (mTLS). A client speaks TLS when it has the CA
that signed the server's certificate, presenting its own cert+key when set. `client_channel`
builds every client's channel, and refuses to carry a token in clear beyond loopback.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc

from astra.settings import ENV

log = logging.getLogger(__name__)

METADATA_KEY = "authorization"
SCHEME = "Bearer "
HEALTH_SERVICE = "grpc.health.v1.Health"
# Long enough that guessing is hopeless at any request rate; `astra stack up` makes 43 characters.
MIN_TOKEN_LENGTH = 16
INSECURE_FLAG = "--insecure-no-auth"
_LOG_EVERY_S = 10.0  # a caller hammering without a token must not flood the log
_TLS_NAMES = f"{ENV['grpc_tls_cert']} and {ENV['grpc_tls_key']} (PEM files)"


class ServiceAuthError(ValueError):
    """The service's authentication is misconfigured: the server must not start."""


def check_token(token: str) -> str:
    """The token, if it can be one: long enough, and printable ASCII without spaces (a metadata value)."""
    if len(token) < MIN_TOKEN_LENGTH:
        raise ServiceAuthError(f"{ENV['service_token']} is too short: use at least {MIN_TOKEN_LENGTH} random "
                               "characters (e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)")
    if not (token.isascii() and token.isprintable()) or any(c.isspace() for c in token):
        raise ServiceAuthError(f"{ENV['service_token']} must be printable ASCII without spaces")
    return token


def split_target(target: str) -> tuple[str, int]:
    """(host, port) of `host:port`, `[v6]:port` or `v6-host:port`; the host without brackets."""
    host, sep, port = target.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"invalid target {target!r}: expected host:port, e.g. 127.0.0.1:50051")
    return host.strip("[]"), int(port)


def join_target(host: str, port: int) -> str:
    """`host:port`, bracketing an IPv6 host once (`::1` and `[::1]` both give `[::1]:port`)."""
    host = host.strip("[]")
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 or `localhost`. A wildcard (0.0.0.0, ::) or any other name is not."""
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_serving_auth(host: str, token: str | None, insecure_no_auth: bool, tls: bool = False) -> None:
    """Refuse to serve without a token (unless told to), and beyond loopback without a token and TLS."""
    if token:
        check_token(token)
    elif not insecure_no_auth:
        raise ServiceAuthError(
            f"{ENV['service_token']} is not set: refusing to serve unauthenticated (set it, or pass "
            f"{INSECURE_FLAG} for a local dev run on loopback)")
    check_exposure(host, token, tls)


def check_exposure(host: str, token: str | None, tls: bool) -> None:
    """Loopback may serve plaintext (the embedded stack); any other address needs the token and TLS."""
    if is_loopback(host):
        return
    if not token:
        raise ServiceAuthError(
            f"refusing to bind {host} without credentials: {INSECURE_FLAG} serves loopback only; "
            f"set {ENV['service_token']} and TLS ({_TLS_NAMES}) to serve beyond this machine")
    if not tls:
        raise ServiceAuthError(
            f"refusing to bind {host} without TLS: the service token would cross the network in clear; "
            f"set {_TLS_NAMES}")


def bearer_metadata(token: str | None) -> tuple[tuple[str, str], ...]:
    """The call metadata that presents `token` (none when there is no token)."""
    return ((METADATA_KEY, SCHEME + token),) if token else ()


def _refuse(message: str):
    def behaviour(_request, context: grpc.ServicerContext):
        context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    return behaviour


def _refusals(message: str) -> dict[tuple[bool, bool], grpc.RpcMethodHandler]:
    """A refusing handler of each kind, keyed by (request streaming, response streaming)."""
    refuse = _refuse(message)
    return {
        (False, False): grpc.unary_unary_rpc_method_handler(refuse),
        (False, True): grpc.unary_stream_rpc_method_handler(refuse),
        (True, False): grpc.stream_unary_rpc_method_handler(refuse),
        (True, True): grpc.stream_stream_rpc_method_handler(refuse),
    }


class TokenAuthInterceptor(grpc.ServerInterceptor):
    """Lets a call through only with `authorization: Bearer <token>`; the open services need none."""

    def __init__(self, token: str, open_services: tuple[str, ...] = (HEALTH_SERVICE,)):
        self._expected = (SCHEME + check_token(token)).encode()
        self._open_prefixes = tuple(f"/{s}/" for s in open_services)
        self._missing = _refusals(f"missing service token (metadata {METADATA_KEY}: {SCHEME}<token>)")
        self._invalid = _refusals("invalid service token")
        self._last_logged = 0.0

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        method = handler_call_details.method
        if method.startswith(self._open_prefixes):
            return handler
        presented = [v for k, v in handler_call_details.invocation_metadata or () if k == METADATA_KEY]
        if len(presented) == 1 and self._matches(presented[0]):
            return handler  # None for an unknown method: UNIMPLEMENTED, told to authenticated callers only
        refusals = self._invalid if presented else self._missing
        self._log_refusal(method, "invalid" if presented else "missing")
        # An unknown method has no kind: a streaming refusal reads nothing, so it answers any caller.
        kind = (True, True) if handler is None else (handler.request_streaming, handler.response_streaming)
        return refusals[kind]

    def _matches(self, value: str | bytes) -> bool:
        presented = value if isinstance(value, bytes) else value.encode("utf-8", "replace")
        return hmac.compare_digest(presented, self._expected)

    def _log_refusal(self, method: str, what: str) -> None:
        now = time.monotonic()
        if now - self._last_logged >= _LOG_EVERY_S:
            self._last_logged = now
            log.warning("refused %s: %s service token (further refusals logged at most every %g s)",
                        method, what, _LOG_EVERY_S)


def server_interceptors(token: str | None) -> list[grpc.ServerInterceptor]:
    """What `grpc.server(interceptors=…)` needs to check `token`; nothing for an unauthenticated server."""
    return [TokenAuthInterceptor(token)] if token else []


@dataclass(frozen=True)
class TlsFiles:
    """Paths of the PEM files of gRPC's TLS; None where not set (see the module docstring)."""

    cert: str | None = None
    key: str | None = None
    ca: str | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> TlsFiles:
        environ = os.environ if environ is None else environ
        return cls(*(environ.get(ENV[name]) or None for name in ("grpc_tls_cert", "grpc_tls_key", "grpc_tls_ca")))


def _read_pem(setting: str, path: str, marker: str = "-----BEGIN ") -> bytes:
    """The file's bytes, once it looks like PEM (gRPC's own error for a bad file is a log line)."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ServiceAuthError(f"{ENV[setting]}={path}: cannot read it ({exc.strerror})") from None
    if marker.encode() not in data:
        raise ServiceAuthError(f"{ENV[setting]}={path}: not a PEM file (no {marker.strip()!r} block)")
    return data


def _identity(tls: TlsFiles) -> tuple[bytes, bytes] | None:
    """(key, cert) when both are set; neither: None; one alone is a misconfiguration."""
    if not tls.cert and not tls.key:
        return None
    if not (tls.cert and tls.key):
        raise ServiceAuthError(f"{ENV['grpc_tls_cert']} and {ENV['grpc_tls_key']} go together: set both or neither")
    key = _read_pem("grpc_tls_key", tls.key, "PRIVATE KEY-----")
    return key, _read_pem("grpc_tls_cert", tls.cert, "CERTIFICATE-----")


def server_credentials(tls: TlsFiles) -> grpc.ServerCredentials | None:
    """The server's TLS (mTLS with a CA); None when no certificate is set (plaintext)."""
    identity = _identity(tls)
    if identity is None:
        if tls.ca:
            raise ServiceAuthError(f"{ENV['grpc_tls_ca']} (client certificates) needs the server's own "
                                   f"{ENV['grpc_tls_cert']} and {ENV['grpc_tls_key']}")
        return None
    client_ca = _read_pem("grpc_tls_ca", tls.ca, "CERTIFICATE-----") if tls.ca else None
    return grpc.ssl_server_credentials([identity], root_certificates=client_ca,
                                       require_client_auth=client_ca is not None)


def channel_credentials(tls: TlsFiles) -> grpc.ChannelCredentials | None:
    """The client's TLS when it has the server's CA (and its own cert+key for mTLS); else None."""
    if not tls.ca:
        return None
    identity = _identity(tls)
    key, cert = identity if identity is not None else (None, None)
    return grpc.ssl_channel_credentials(_read_pem("grpc_tls_ca", tls.ca, "CERTIFICATE-----"), key, cert)


def check_calling_auth(target: str, token: str | None, tls: TlsFiles) -> None:
    """Refuse to carry a token in clear beyond loopback (without a CA the channel is plaintext)."""
    host, _ = split_target(target)
    if token and not tls.ca and not is_loopback(host):
        raise ServiceAuthError(f"refusing to send {ENV['service_token']} to {host} in clear: set {ENV['grpc_tls_ca']} "
                               "to the CA of the server's certificate")


def client_channel(target: str, tls: TlsFiles, token: str | None,
                   options: Sequence[tuple[str, int | str]] = ()) -> grpc.Channel:
    """A channel to `target` for calls carrying `token`: TLS when `tls` has a CA, else plaintext."""
    check_calling_auth(target, token, tls)
    credentials = channel_credentials(tls)
    if credentials is None:
        return grpc.insecure_channel(target, options=list(options))
    return grpc.secure_channel(target, credentials, options=list(options))
