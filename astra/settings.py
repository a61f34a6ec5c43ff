"""Settings read from the environment (ARCHITECTURE §6): the one table of ASTRA_* names.

`ENV` maps each setting to its variable. The engines and the CLI read them through
`Settings.from_env()`, the Dagster resources through `EnvVar(ENV[...])`; no other file spells a
variable name.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, fields
from pathlib import Path

DEFAULT_UPLOADS_BUCKET = "astra-uploads"
DEFAULT_ASSETS_BUCKET = "astra-assets"
DEFAULT_GUARD_BUCKET = "astra-guard"
DEFAULT_REDIS_PREFIX = "astra"
DEFAULT_RETENTION_DAYS = 365
# The floor for custody retention (COMPLIANCE mode only). Below it a misconfiguration (1, 0, a
# negative number) would put the lock date in the past or so near that the audio could be deleted
# before anyone audits it. 30 days covers a monthly audit cycle; legal holds are usually longer.
MIN_RETENTION_DAYS = 30
# And a ceiling: a century. Beyond it the lock date overflows what S3 and datetime can carry, and
# a typo (3650000) would lock the audio for good.
MAX_RETENTION_DAYS = 36500
# The intents and domains a zone may bind to: CLINC150's domain map, read in place from the
# shared datasets (never copied into the repo). ASTRA_INTENT_CATALOG points elsewhere.
DEFAULT_INTENT_CATALOG = str(Path(__file__).resolve().parents[2] / "shared" / "datasets" / "clinc150" / "domains.json")

# setting -> environment variable. The one place these names are written.
ENV: dict[str, str] = {
    "database_url": "ASTRA_DATABASE_URL",
    "redis_url": "ASTRA_REDIS_URL",
    "redis_prefix": "ASTRA_REDIS_PREFIX",
    "s3_endpoint_url": "ASTRA_S3_ENDPOINT_URL",
    "uploads_bucket": "ASTRA_UPLOADS_BUCKET",
    "assets_bucket": "ASTRA_ASSETS_BUCKET",
    "guard_bucket": "ASTRA_GUARD_BUCKET",
    "guard_retention_days": "ASTRA_GUARD_RETENTION_DAYS",
    "ingest_target": "ASTRA_INGEST_TARGET",
    "core_target": "ASTRA_CORE_TARGET",
    # The shared secret gRPC callers present (metadata `authorization: Bearer <token>`).
    "service_token": "ASTRA_SERVICE_TOKEN",
    # TLS of the gRPC services (PEM file paths). A server presents cert+key and, given a CA, requires
    # client certificates it signed (mTLS); a client uses TLS when given the CA that signed the server's.
    "grpc_tls_cert": "ASTRA_GRPC_TLS_CERT",
    "grpc_tls_key": "ASTRA_GRPC_TLS_KEY",
    "grpc_tls_ca": "ASTRA_GRPC_TLS_CA",
    "aws_region": "AWS_DEFAULT_REGION",
    "intent_catalog": "ASTRA_INTENT_CATALOG",
    # Process-level knobs of the embedded stack and the services (not fields of Settings).
    "state_dir": "ASTRA_STATE_DIR",
    "stack_root": "ASTRA_STACK_ROOT",
    "stack_machine_redis": "ASTRA_STACK_MACHINE_REDIS",
    "ingest_delay_ms": "ASTRA_INGEST_DELAY_MS",
    # Intra-op threads of the intent encoder (ONNX Runtime); 1 by default: a service runs several workers.
    "intent_threads": "ASTRA_INTENT_THREADS",
    # How many new corrections a tenant needs before the retrain catch-up schedule retrains it (astra/learn/backlog.py).
    "retrain_min_corrections": "ASTRA_RETRAIN_MIN_CORRECTIONS",
}


class MissingSetting(RuntimeError):
    pass


class InvalidSetting(ValueError):
    pass


def check_retention_days(days: int) -> int:
    """Refuse a custody retention below the floor (a weakened chain of custody) or past the ceiling."""
    if isinstance(days, bool) or not isinstance(days, int):
        raise InvalidSetting(f"{ENV['guard_retention_days']}={days!r}: a whole number of days is required")
    if days > MAX_RETENTION_DAYS:
        raise InvalidSetting(
            f"{ENV['guard_retention_days']}={days}: custody retention is at most {MAX_RETENTION_DAYS} days (a century)"
        )
    if days < MIN_RETENTION_DAYS:
        raise InvalidSetting(
            f"{ENV['guard_retention_days']}={days}: custody retention must be at least {MIN_RETENTION_DAYS} days "
            "(COMPLIANCE mode); refusing to weaken the chain of custody"
        )
    return days


@dataclass(frozen=True)
class Settings:
    database_url: str | None = None
    redis_url: str | None = None
    redis_prefix: str = DEFAULT_REDIS_PREFIX
    s3_endpoint_url: str | None = None
    uploads_bucket: str = DEFAULT_UPLOADS_BUCKET
    assets_bucket: str = DEFAULT_ASSETS_BUCKET
    guard_bucket: str = DEFAULT_GUARD_BUCKET
    guard_retention_days: int = DEFAULT_RETENTION_DAYS
    ingest_target: str | None = None
    core_target: str | None = None
    service_token: str | None = None
    grpc_tls_cert: str | None = None
    grpc_tls_key: str | None = None
    grpc_tls_ca: str | None = None
    aws_region: str = "us-east-1"
    intent_catalog: str = DEFAULT_INTENT_CATALOG

    def __post_init__(self) -> None:
        check_retention_days(self.guard_retention_days)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if env is None else env)
        values: dict = {}
        for f in fields(cls):
            raw = env.get(ENV[f.name]) or None
            if raw is None:
                continue  # the dataclass default
            if f.name == "guard_retention_days":
                if not re.fullmatch(r"-?[0-9]{1,12}", raw.strip()):  # ASCII digits only: not "3_0", "1e3", "٣٠"
                    raise InvalidSetting(f"{ENV[f.name]}={raw!r} is not a whole number of days")
                values[f.name] = int(raw)
            else:
                values[f.name] = raw
        return cls(**values)

    def require(self, name: str) -> str:
        value = getattr(self, name)
        if not value:
            raise MissingSetting(f"{ENV[name]} is not set: run `astra stack up` and source .astra/stack.env, or set it")
        return value
