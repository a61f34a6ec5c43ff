"""A real DagsterInstance (temp dir, SQLite) over the test services, and the code location."""

from __future__ import annotations

import pytest
from dagster import instance_for_test


@pytest.fixture
def dagster_instance(tmp_path):
    with instance_for_test(temp_dir=str(tmp_path)) as instance:
        yield instance


@pytest.fixture
def defs(use_stack_env):
    # EnvVar-configured resources read the environment when a run starts, so the
    # stack env must be in place first (use_stack_env).
    from astra_assets.definitions import defs

    return defs
