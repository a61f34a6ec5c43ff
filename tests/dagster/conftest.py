"""A real DagsterInstance (temp dir, SQLite) over the test services, and the code location.

Each test gets its own uploads bucket: a fresh instance's sensors start with an empty cursor
and would otherwise pick up every other test's uploads.
"""

from __future__ import annotations

import dataclasses
import uuid

import pytest
from dagster import instance_for_test


@pytest.fixture
def run_settings(settings, s3, use_stack_env, monkeypatch):
    """The test stack's settings with an uploads bucket of this test's own, also in the env."""
    bucket = f"{settings.uploads_bucket}-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    monkeypatch.setenv("ASTRA_UPLOADS_BUCKET", bucket)
    return dataclasses.replace(settings, uploads_bucket=bucket)


@pytest.fixture
def dagster_instance(tmp_path):
    with instance_for_test(temp_dir=str(tmp_path)) as instance:
        yield instance


@pytest.fixture
def defs(run_settings):
    # Built after the stack env (with this test's uploads bucket) is in place: optional
    # settings are read from the environment when the definitions are built.
    from astra_assets.definitions import build_definitions

    return build_definitions()
