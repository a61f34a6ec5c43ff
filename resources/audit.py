"""The audit's one read of Dagster: `astra.audit.MaterializationSource` over a DagsterInstance's event log.

`astra audit` (astra/cli/audit_cmd.py) is under `astra/`, which may not import Dagster (the import-linter contract of
pyproject.toml); it loads this module by name (importlib) when it runs, so the engine stays plain Python and only
this adapter knows the Dagster API: `DagsterInstance.fetch_materializations(AssetRecordsFilter(...))`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from dagster import AssetKey, AssetRecordsFilter, DagsterEventType, DagsterInstance

from astra.audit.model import CheckResult, Materialization

PAGE = 1000


def _value(value: Any) -> Any:
    return getattr(value, "value", value)  # MetadataValue.url/json/md → the plain value


def _materialization(record) -> Materialization:
    m = record.asset_materialization
    return Materialization(
        asset_key=m.asset_key.to_user_string(),
        partition=m.partition,
        run_id=record.run_id,
        timestamp=record.timestamp,
        metadata={k: _value(v) for k, v in m.metadata.items()},
        data_version=(m.tags or {}).get("dagster/data_version"),
    )


class DagsterMaterializations:
    """Read-only: the materializations an audit asks for, newest first."""

    def __init__(self, instance: DagsterInstance):
        self.instance = instance

    def _fetch(self, asset_key: str, partition: str | None, limit: int) -> list[Materialization]:
        out: list[Materialization] = []
        cursor = None
        while len(out) < limit:
            result = self.instance.fetch_materializations(
                AssetRecordsFilter(asset_key=AssetKey(asset_key),
                                   asset_partitions=[partition] if partition is not None else None),
                limit=min(PAGE, limit - len(out)), cursor=cursor)
            out += [_materialization(r) for r in result.records]
            if not result.has_more:
                break
            cursor = result.cursor
        return out

    def latest(self, asset_key: str, partition: str | None) -> Materialization | None:
        found = self._fetch(asset_key, partition, 1)
        return found[0] if found else None

    def history(self, asset_key: str, partition: str | None, limit: int = 100) -> list[Materialization]:
        return self._fetch(asset_key, partition, limit)

    def records(self, asset_key: str, limit: int = 10_000) -> list[Materialization]:
        return self._fetch(asset_key, None, limit)

    def check_results(self, run_id: str) -> list[CheckResult]:
        out = []
        for entry in self.instance.all_logs(run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION):
            ev = entry.dagster_event.event_specific_data
            out.append(CheckResult(ev.asset_key.to_user_string(), ev.check_name, bool(ev.passed),
                                   getattr(ev, "partition", None)))
        return out

    def run_status(self, run_id: str) -> str | None:
        run = self.instance.get_run_by_id(run_id) if run_id else None
        return run.status.value if run is not None else None

    def run_partition(self, run_id: str) -> str | None:
        run = self.instance.get_run_by_id(run_id) if run_id else None
        return run.tags.get("dagster/partition") if run is not None else None


@contextmanager
def open_source(dagster_home: str | None = None) -> Iterator[DagsterMaterializations]:
    """The instance of `dagster_home` (else $DAGSTER_HOME) as a MaterializationSource."""
    if dagster_home is not None:
        instance = DagsterInstance.from_config(str(dagster_home))
    elif os.environ.get("DAGSTER_HOME"):
        instance = DagsterInstance.get()
    else:
        raise RuntimeError("no Dagster instance: set DAGSTER_HOME (or start the stack: astra stack up)")
    with instance:
        yield DagsterMaterializations(instance)
