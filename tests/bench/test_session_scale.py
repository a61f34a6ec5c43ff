"""The 10k-session bench (bench/session_scale.py) at a small N: its exactly-once check, on the real stack.

Marked `scale`: excluded from the default run (pyproject addopts `-m "not scale"`); run it with
`.venv/bin/pytest -m scale tests/bench`. It starts its own moto server, throw-away Postgres databases
(ASTRA's and the Dagster instance's) and a Redis prefix, as the bench does.
"""

from __future__ import annotations

import os

import pytest

pytestmark = [pytest.mark.scale, pytest.mark.integration]

SESSIONS, TENANTS, BATCHES = 200, 20, 4


@pytest.fixture(scope="module")
def scale_run():
    from bench.session_scale import bench

    saved = dict(os.environ)  # the bench points the environment at its own stack
    try:
        yield bench(SESSIONS, TENANTS, BATCHES, instance_kind="postgres", record_events=False, out=lambda *a, **k: None)
    finally:
        os.environ.clear()
        os.environ.update(saved)


def test_every_session_is_requested_under_one_run_key_and_partition(scale_run):
    run, expected = scale_run["run"], scale_run["expected"]
    assert len(expected) == SESSIONS
    assert run.partitions == expected  # none lost, none unexpected
    assert len(run.requested) == SESSIONS  # one run key per session (a manifest's key is its content hash)
    assert {key.rsplit("-", 1)[0] for key in run.requested} == expected
    assert scale_run["figures"]["sessions_partitions"] == SESSIONS
    assert [p for p in scale_run["problems"] if "more than once" not in p] == []


def test_the_bench_measures_each_tick(scale_run):
    ticks = scale_run["run"].ticks
    assert {t.batch for t in ticks} == set(range(1, BATCHES + 1))
    assert all(t.calls.get("ListObjectsV2", 0) >= TENANTS for t in ticks)  # the botocore hook counts the sweep
    assert sum(t.calls.get("GetObject", 0) for t in ticks) >= SESSIONS  # each manifest read at least once
    assert sum(t.partitions_added for t in ticks) == SESSIONS
    assert all(t.rss_mb > 0 and t.ms > 0 for t in ticks)


def test_no_session_is_requested_twice(scale_run):
    """At MAX_SEEN = 100 the scanner forgot most of a burst and requested it again every tick (issue 12 §5)."""
    assert [k for k, n in scale_run["run"].requested.items() if n > 1] == []
