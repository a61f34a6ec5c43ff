"""Re-offer an upload whose run failed for a transient reason (issue 7, 1.7).

A run key is spent once its run exists, so a run that failed to an outage (Redis down while
publishing, S3 throttling past the asset's own retries, a crashed run worker) would leave its
upload unprocessed for good. Each tick, the upload sensors look at their runs that FAILED since
the last look and offer each one again, with the same config and tags, under the run key
`<first run key>-retry<n>`: at most `MAX_REOFFERS` times, the n-th no sooner than
`DELAY_SECONDS * 2**(n-1)` after the failed run ended.

What counts as a refusal (never re-offered): a step that raised `dagster.Failure` which its
retry policy did not retry — `Failure(allow_retries=False)`, or any `Failure` from an asset
without a retry policy. In the event log that is a STEP_FAILURE carrying user failure data whose
error is the `Failure` itself (a Failure retried until exhausted shows `RetryRequestedFromPolicy`
instead). Everything else is transient: an exception that escaped the asset, a resource that did
not start, a retryable `Failure` retried until exhausted, a run that died with no step failure.
A CANCELED run is someone's decision and is not re-offered.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

from dagster import DagsterEventType, DagsterRunStatus, RunRequest, RunsFilter, SensorEvaluationContext

REOFFER_TAG = "astra/reoffer"  # n: this run is the n-th re-offer of its upload
FIRST_RUN_KEY_TAG = "astra/first_run_key"
MAX_REOFFERS = 3
DELAY_SECONDS = 60.0
RUNS_PER_TICK = 50


def refused(context: SensorEvaluationContext, run_id: str) -> bool:
    records = context.instance.get_records_for_run(run_id, of_type=DagsterEventType.STEP_FAILURE).records
    for record in records:
        data = record.event_log_entry.dagster_event.step_failure_data
        if data.user_failure_data is not None and data.error is not None and data.error.cls_name == "Failure":
            return True
    return False


def _timestamp(value) -> float:
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()
    return float(value or 0.0)


def _request(record, n: int) -> RunRequest:
    run = record.dagster_run
    first = run.tags.get(FIRST_RUN_KEY_TAG) or run.tags["dagster/run_key"]
    tags = {k: v for k, v in run.tags.items() if k.startswith("astra/")}
    run_config = {k: v for k, v in (run.run_config or {}).items() if k != "loggers"}
    # The same assets (and checks) as the failed run: a sensor may select per request (a clone's run builds
    # v2_clone_binary, not the transcript); None means the sensor's own selection, as in the first run.
    assets = sorted(run.asset_selection, key=lambda k: k.to_user_string()) if run.asset_selection else None
    checks = sorted(run.asset_check_selection, key=str) if run.asset_check_selection is not None else None
    return RunRequest(run_key=f"{first}-retry{n}", partition_key=run.tags.get("dagster/partition"),
                      run_config=run_config, tags={**tags, REOFFER_TAG: str(n), FIRST_RUN_KEY_TAG: first},
                      asset_selection=assets, asset_check_keys=checks)


def reoffers(context: SensorEvaluationContext, state: dict) -> tuple[list[RunRequest], dict]:
    """Run requests re-offering this sensor's transiently failed runs; and the state to keep
    (`after`: runs updated before it were dealt with; one waiting for its delay holds it back)."""
    after = float(state.get("after", 0.0))
    records = context.instance.get_run_records(
        RunsFilter(statuses=[DagsterRunStatus.FAILURE], tags={"dagster/sensor_name": context.sensor_name},
                   updated_after=datetime.fromtimestamp(after, tz=UTC)),
        limit=RUNS_PER_TICK, order_by="update_timestamp", ascending=True,
    )
    requests, held, newest = [], [], after
    for record in records:
        updated = _timestamp(record.update_timestamp)
        newest = max(newest, updated)
        verdict = _verdict(context, record, updated)
        if verdict == "wait":
            held.append(updated)
        elif isinstance(verdict, RunRequest):
            requests.append(verdict)
    return requests, {"after": min(held) - 1e-3 if held else newest}


def _verdict(context: SensorEvaluationContext, record, updated: float) -> RunRequest | str | None:
    """A re-offer, "wait" (its delay has not passed), or None (a refusal, or no re-offers left)."""
    run = record.dagster_run
    if "dagster/run_key" not in run.tags:
        return None
    n = int(run.tags.get(REOFFER_TAG, 0)) + 1
    if n > MAX_REOFFERS:
        context.log.warning(f"run {run.run_id} failed; its upload was offered {n} times: giving up")
        return None
    if refused(context, run.run_id):
        return None
    if time.time() < _timestamp(record.end_time or updated) + DELAY_SECONDS * 2 ** (n - 1):
        return "wait"
    context.log.info(f"run {run.run_id} failed for a transient reason: offering its upload again (re-offer {n})")
    return _request(record, n)
