"""Authentication of ASTRA's gRPC services: a shared service token in call metadata.

Callers send `authorization: Bearer <token>` (`bearer_metadata`); servers install
`TokenAuthInterceptor`, which checks every call of every service before any handler runs (so a
service added later is covered without doing anything) and ends a call without the token with
UNAUTHENTICATED. The comparison is constant-time. `grpc.health.v1.Health` stays open: probes
(`astra stack status`, orchestrators' liveness checks) carry no secret, and health says nothing
about any tenant.

`check_serving_auth` is the start-up policy every `astra serve …` command applies: no token, no
server, unless the operator says `--insecure-no-auth` — and even then only on a loopback address.
The token comes from the environment (`Settings.service_token`), never from argv, so `ps` does
not show it.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import time

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


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 or `localhost`. A wildcard (0.0.0.0, ::) or any other name is not."""
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_serving_auth(host: str, token: str | None, insecure_no_auth: bool) -> None:
    """Refuse to serve without a token (unless told to), and never without one beyond loopback."""
    if token:
        check_token(token)
        return
    if not insecure_no_auth:
        raise ServiceAuthError(
            f"{ENV['service_token']} is not set: refusing to serve unauthenticated (set it, or pass "
            f"{INSECURE_FLAG} for a local dev run on loopback)")
    if not is_loopback(host):
        raise ServiceAuthError(
            f"refusing to bind {host} without credentials: {INSECURE_FLAG} serves loopback only; "
            f"set {ENV['service_token']} to serve beyond this machine")


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
        if handler is None or method.startswith(self._open_prefixes):
            return handler
        presented = [v for k, v in handler_call_details.invocation_metadata or () if k == METADATA_KEY]
        if len(presented) == 1 and self._matches(presented[0]):
            return handler
        refusals = self._invalid if presented else self._missing
        self._log_refusal(method, "invalid" if presented else "missing")
        return refusals[(handler.request_streaming, handler.response_streaming)]

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
