"""EnvVar where the variable is set, the documented default where it is not.

Required settings (database, Redis, registry target) stay plain `EnvVar`s: Dagster then names
the missing variable. Optional ones fall back to the same defaults the engines use (Settings),
so a deployment that sets only what it needs works — e.g. real AWS S3 with no endpoint URL.
"""

import os

from dagster import EnvVar


def env_or(name: str, default):
    """`EnvVar(name)` when the variable is set (resolved at run time), else `default`."""
    if not os.environ.get(name):
        return default
    return EnvVar.int(name) if isinstance(default, int) else EnvVar(name)
