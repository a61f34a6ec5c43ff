"""EnvVar where the variable is set, the documented default where it is not.

Required settings (database, Redis, registry target) stay plain `EnvVar`s: Dagster then names
the missing variable. Optional ones fall back to the same defaults the engines use (Settings),
so a deployment that sets only what it needs works — e.g. real AWS S3 with no endpoint URL.
Variable names come from the one table, `astra.settings.ENV`.
"""

import os

from dagster import EnvVar

from astra.settings import ENV


def env(setting: str) -> EnvVar:
    """The required setting's variable, resolved when a run starts."""
    return EnvVar(ENV[setting])


def env_or(setting: str, default):
    """`EnvVar` of the setting when its variable is set (resolved at run time), else `default`."""
    name = ENV[setting]
    if not os.environ.get(name):
        return default
    return EnvVar.int(name) if isinstance(default, int) else EnvVar(name)
