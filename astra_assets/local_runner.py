"""Drive one sensor tick and its runs in this process, against a real DagsterInstance.

What the daemon does, minus the daemon: `make demo` and the tests use it to show the sensor and
assets working end to end without starting `dagster dev`. It keeps the daemon's rules that
matter here: the sensor's cursor is stored on the instance, dynamic partitions are added, asset
events are reported, and a run_key already used by the sensor does not run again.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dagster import DagsterInstance, Definitions, RunConfig, RunsFilter, build_sensor_context
from dagster._core.execution.execute_in_process_result import ExecuteInProcessResult

CURSOR_KEY = "astra/local_runner/cursor/"


@dataclass
class Tick:
    sensor: str
    skip_reason: str | None = None
    results: list[ExecuteInProcessResult] = field(default_factory=list)
    skipped_run_keys: list[str] = field(default_factory=list)
    events_reported: int = 0


def _cursor(instance: DagsterInstance, sensor: str) -> str | None:
    values = instance.run_storage.get_cursor_values({CURSOR_KEY + sensor})
    return values.get(CURSOR_KEY + sensor)


def tick(defs: Definitions, instance: DagsterInstance, sensor_name: str, log_level: str = "INFO") -> Tick:
    sensor = defs.resolve_sensor_def(sensor_name)
    resources = defs.resources or {}
    # A context manager: resources built on other resources (config_store on postgres and redis)
    # are opened and closed with it.
    with build_sensor_context(
        instance=instance, cursor=_cursor(instance, sensor_name), resources=resources, definitions=defs,
        sensor_name=sensor_name,
    ) as context:
        outcome = sensor(context)
    out = Tick(sensor_name)
    if outcome is None:
        return out
    if getattr(outcome, "skip_reason", None):
        out.skip_reason = str(outcome.skip_reason.skip_message)
    if outcome.cursor is not None:
        instance.run_storage.set_cursor_values({CURSOR_KEY + sensor_name: outcome.cursor})
    for request in outcome.dynamic_partitions_requests or []:
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
    for event in outcome.asset_events or []:
        instance.report_runless_asset_event(event)
        out.events_reported += 1
    for request in outcome.run_requests or []:
        tags = {**(request.tags or {}), "dagster/sensor_name": sensor_name}
        if request.run_key:
            tags["dagster/run_key"] = request.run_key
            done = instance.get_runs(RunsFilter(tags={"dagster/sensor_name": sensor_name,
                                                      "dagster/run_key": request.run_key}))
            if done:  # as the daemon does: a run key the sensor used never runs again
                out.skipped_run_keys.append(request.run_key)
                continue
        selection = request.asset_selection or list(sensor.asset_selection.resolve(defs.resolve_asset_graph()))
        job = defs.resolve_implicit_job_def_def_for_assets(selection)
        config = request.run_config
        run_config = config.to_config_dict() if isinstance(config, RunConfig) else dict(config or {})
        run_config["loggers"] = {"console": {"config": {"log_level": log_level}}}
        out.results.append(job.execute_in_process(
            run_config=run_config,
            instance=instance,
            partition_key=request.partition_key,
            tags=tags,
            asset_selection=selection,
            raise_on_error=False,
        ))
    return out
