"""The Dagster code location: loads, validates, and every asset spec is pinned by a snapshot.

A change to an asset's key, group, partitioning, dependencies or checks must be deliberate:
regenerate with `ASTRA_UPDATE_SNAPSHOTS=1 pytest tests/test_definitions.py` and review the diff.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

SNAPSHOT = Path(__file__).with_name("snapshots") / "asset_specs.json"


def describe(defs) -> dict:
    graph = defs.resolve_asset_graph()
    specs = {}
    for key in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string()):
        node = graph.get(key)
        specs[key.to_user_string()] = {
            "group": node.group_name,
            "partitions": getattr(node.partitions_def, "name", None),
            "deps": sorted(k.to_user_string() for k in node.parent_keys),
            "materializable": node.is_materializable,
            "checks": sorted(c.name for c in node.check_keys),
        }
    return {
        "assets": specs,
        "sensors": sorted(s.name for s in defs.sensors or []),
        "schedules": sorted(s.name for s in defs.schedules or []),
        "resources": sorted(defs.resources or {}),
    }


def test_asset_specs_match_the_snapshot():
    from astra_assets.definitions import defs

    current = describe(defs)
    if os.environ.get("ASTRA_UPDATE_SNAPSHOTS"):
        SNAPSHOT.write_text(json.dumps(current, indent=2, sort_keys=True) + "\n")
    assert current == json.loads(SNAPSHOT.read_text())


def test_partition_keys_follow_the_key_rules():
    from astra_assets.partitions import sessions_partitions, tenants_partitions

    assert (tenants_partitions.name, sessions_partitions.name) == ("tenants", "sessions")


def test_dagster_validates_the_workspace(tmp_path):
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path)}
    res = subprocess.run(
        [sys.executable, "-m", "dagster", "definitions", "validate", "-w", "workspace.yaml"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=180,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Validation successful" in res.stdout + res.stderr


@pytest.mark.parametrize("yaml_path", ["dagster.yaml", "deploy/dagster.yaml"])
def test_instances_queue_template_runs_one_per_tenant(yaml_path, tmp_path, monkeypatch):
    from dagster._core.instance.config import dagster_instance_config

    (tmp_path / "dagster.yaml").write_text((ROOT / yaml_path).read_text())
    config, _ = dagster_instance_config(str(tmp_path))
    limits = config["run_queue"]["tag_concurrency_limits"]
    assert {"key": "astra/template-tenant", "value": {"applyLimitPerUniqueValue": True}, "limit": 1} in limits
