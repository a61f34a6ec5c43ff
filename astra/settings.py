"""Settings read from the environment (ARCHITECTURE §6).

One place that knows the variable names; the Dagster resources read the same names through
EnvVar, the CLI and the engines through `Settings.from_env()`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_UPLOADS_BUCKET = "astra-uploads"
DEFAULT_ASSETS_BUCKET = "astra-assets"
DEFAULT_GUARD_BUCKET = "astra-guard"
DEFAULT_REDIS_PREFIX = "astra"
DEFAULT_RETENTION_DAYS = 365
# The intents and domains a zone may bind to: CLINC150's domain map, read in place from the
# shared datasets (never copied into the repo). ASTRA_INTENT_CATALOG points elsewhere.
DEFAULT_INTENT_CATALOG = str(Path(__file__).resolve().parents[2] / "shared" / "datasets" / "clinc150" / "domains.json")


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
    aws_region: str = "us-east-1"
    intent_catalog: str = DEFAULT_INTENT_CATALOG

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> "Settings":
        env = dict(os.environ if env is None else env)
        return cls(
            database_url=env.get("ASTRA_DATABASE_URL") or None,
            redis_url=env.get("ASTRA_REDIS_URL") or None,
            redis_prefix=env.get("ASTRA_REDIS_PREFIX") or DEFAULT_REDIS_PREFIX,
            s3_endpoint_url=env.get("ASTRA_S3_ENDPOINT_URL") or None,
            uploads_bucket=env.get("ASTRA_UPLOADS_BUCKET") or DEFAULT_UPLOADS_BUCKET,
            assets_bucket=env.get("ASTRA_ASSETS_BUCKET") or DEFAULT_ASSETS_BUCKET,
            guard_bucket=env.get("ASTRA_GUARD_BUCKET") or DEFAULT_GUARD_BUCKET,
            guard_retention_days=int(env.get("ASTRA_GUARD_RETENTION_DAYS") or DEFAULT_RETENTION_DAYS),
            ingest_target=env.get("ASTRA_INGEST_TARGET") or None,
            core_target=env.get("ASTRA_CORE_TARGET") or None,
            aws_region=env.get("AWS_DEFAULT_REGION") or "us-east-1",
            intent_catalog=env.get("ASTRA_INTENT_CATALOG") or DEFAULT_INTENT_CATALOG,
        )

    def require(self, name: str) -> str:
        value = getattr(self, name)
        if not value:
            var = "ASTRA_" + name.upper()
            raise MissingSetting(f"{var} is not set: run `astra stack up` and source .astra/stack.env, or set it")
        return value


class MissingSetting(RuntimeError):
    pass
