"""The Dagster resources initialize from just the required variables, with the documented defaults."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT

PROBE = """
from dagster import EnvVar
from dagster._config.field_utils import IntEnvVar
from astra_assets.definitions import defs
# An EnvVar is resolved when a run starts; show which variable it is, else the value.
show = lambda v: f"${v.env_var_name}" if isinstance(v, (EnvVar, IntEnvVar)) else str(v)
res = defs.resources
storage = res["storage"]
print(*map(show, (storage.uploads_bucket, storage.assets_bucket, storage.guard_bucket, storage.guard_retention_days)))
print(*map(show, (res["s3"].endpoint_url, res["s3"].region_name)))
print(show(res["redis"].key_prefix))
"""


def run_probe(env: dict[str, str]) -> list[str]:
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.splitlines()


def test_defaults_when_only_the_required_variables_are_set():
    import os

    base = {k: v for k, v in os.environ.items() if not k.startswith(("ASTRA_", "AWS_"))}
    env = {**base, "ASTRA_DATABASE_URL": "postgresql://x@127.0.0.1/db", "ASTRA_REDIS_URL": "redis://127.0.0.1:6379/0",
           "ASTRA_INGEST_TARGET": "127.0.0.1:50051"}
    assert run_probe(env) == ["astra-uploads astra-assets astra-guard 365", "None us-east-1", "astra"]


def test_set_variables_win():
    import os

    env = {**os.environ, "ASTRA_UPLOADS_BUCKET": "u", "ASTRA_GUARD_RETENTION_DAYS": "7",
           "ASTRA_S3_ENDPOINT_URL": "http://127.0.0.1:9", "ASTRA_REDIS_PREFIX": "p"}
    lines = run_probe(env)
    assert lines[0].split()[0] == "$ASTRA_UPLOADS_BUCKET" and lines[0].split()[3] == "$ASTRA_GUARD_RETENTION_DAYS"
    assert lines[1].split()[0] == "$ASTRA_S3_ENDPOINT_URL" and lines[2] == "$ASTRA_REDIS_PREFIX"
