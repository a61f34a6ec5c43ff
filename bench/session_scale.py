"""10,000 sessions (issue 12 §5): does `session_upload_sensor` register each exactly once, at a cost per
tick that does not grow with the bucket?

Builds on bench/sensor_tick.py's stack: moto's standalone S3 server on loopback, ASTRA's Postgres in
a throw-away database, Redis under a throw-away prefix; every tenant gets a published config. The
Dagster instance is Postgres-backed (dagster-postgres, the deployment's storage) in a second
throw-away database on 127.0.0.1:5432 (`--instance sqlite` for a temp-dir instance instead).

Sessions are uploaded in batches (round robin over the tenants, random session ids so new keys sort
among the old ones): each session is `transcript.txt` then `manifest.json` (written last, ARCHITECTURE
§4), concurrent boto3 puts. After each batch the real sensor is evaluated (build_sensor_context with
the code location's resources, its cursor carried from tick to tick) until every session uploaded so
far has been requested and one more tick has found nothing new (that quiet tick is the steady-state
cost). What the daemon does with a tick's result is done too, outside the timing: the dynamic
partitions are added and the asset events recorded. No runs are launched; the daemon would skip a
request whose run key already has a run, so a key requested twice is counted as a duplicate.

Per tick: wall time, S3 calls by operation (a botocore `before-call` hook on the sensor's client),
keys listed, run requests (new / duplicate), partitions added, the process's RSS, cursor bytes.
At the end: exactly-once (run keys == sessions uploaded, no duplicate, the `sessions` dynamic
partition holds exactly those keys), a flatness verdict, and Dagster's own figures at that size.

    python bench/session_scale.py [--sessions 10000] [--tenants 20] [--batches 20] [--per-tick] [--csv FILE]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.sensor_tick import PG_ADMIN_URL, environment, publish_configs  # noqa: E402

SENSOR = "session_upload_sensor"
MAX_TICKS_PER_BATCH = 60

# S3 calls made by the sensor's clients, by operation; keys returned by its listings.
CALLS: Counter = Counter()
LISTED = {"keys": 0}


def _count_call(model=None, **_):
    CALLS[model.name] += 1


def _count_listed(model=None, parsed=None, **_):
    if model is not None and model.name == "ListObjectsV2" and parsed:
        LISTED["keys"] += len(parsed.get("Contents", [])) + len(parsed.get("CommonPrefixes", []))


def meter_sensor_clients() -> None:
    """Every client dagster-aws's S3Resource builds (the sensor builds one per tick) reports its calls."""
    import dagster_aws.s3.resources as s3_resources

    construct = s3_resources.construct_s3_client

    def counted(*args, **kwargs):
        client = construct(*args, **kwargs)
        client.meta.events.register("before-call.s3", _count_call)
        client.meta.events.register("after-call.s3", _count_listed)
        return client

    s3_resources.construct_s3_client = counted


def rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


@contextmanager
def dagster_instance(kind: str):
    """A real DagsterInstance: Postgres-backed in a throw-away database (dropped afterwards), or SQLite in a
    temp dir."""
    from dagster import DagsterInstance

    with tempfile.TemporaryDirectory() as home:
        if kind == "sqlite":
            with DagsterInstance.from_config(home) as instance:
                yield instance
            return
        import psycopg

        name = f"astra_bench_dagster_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        # SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3, on which dagster-postgres 0.29's
        # `NOTIFY run_events, %(notify_id)s` is a syntax error: name psycopg2 in the URL.
        url = PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg2://", 1) + f"/{name}"
        Path(home, "dagster.yaml").write_text(f"storage:\n  postgres:\n    postgres_url: \"{url}\"\n")
        try:
            with DagsterInstance.from_config(home) as instance:
                yield instance
        finally:
            with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def plan_sessions(n: int, tenants: int, seed: int = 12) -> list[tuple[str, str]]:
    """(tenant, session id) for n sessions, round robin over the tenants, ids random (new keys sort among old)."""
    rng = random.Random(seed)
    return [(f"tenant-{i % tenants:02d}", f"visit-{rng.getrandbits(48):012x}") for i in range(n)]


def partition_key(tenant: str, session: str) -> str:
    from astra.tenancy import SessionKey

    return SessionKey(tenant, session, 1).partition_key


def upload(s3, bucket: str, sessions: list[tuple[str, str]], workers: int = 16) -> None:
    """Each session's transcript, then (once every transcript of the batch is in) its manifest."""
    def put(item):
        key, body = item
        s3.put_object(Bucket=bucket, Key=key, Body=body)

    transcripts, manifests = [], []
    for tenant, session in sessions:
        prefix = f"{tenant}/sessions/{session}/v1/"
        transcripts.append((prefix + "transcript.txt", f"bench session {session} of {tenant}\n".encode()))
        manifests.append((prefix + "manifest.json", json.dumps({
            "tenant": tenant, "session_id": session, "version": 1, "template": "report",
            "created_at": "2026-12-01T03:00:00Z", "transcript": "transcript.txt", "data": [], "media": []}).encode()))
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(put, transcripts))
        list(pool.map(put, manifests))


@dataclass
class Tick:
    batch: int
    tick: int
    ms: float
    calls: dict
    listed: int
    requests: int
    new: int
    duplicates: int
    partitions_added: int
    rss_mb: float
    cursor_bytes: int
    apply_ms: float  # the daemon's share, not in `ms`: partitions added, events recorded


@dataclass
class Run:
    ticks: list[Tick] = field(default_factory=list)
    requested: Counter = field(default_factory=Counter)  # run key -> times requested
    partitions: set = field(default_factory=set)  # partition keys of the requests
    events: int = 0
    settled: list = field(default_factory=list)  # (after batch, sessions in the bucket, Tick) past the mark margin


class SensorDriver:
    """Evaluates the real sensor as the daemon would, carrying its cursor."""

    def __init__(self, instance, record_events: bool = True):
        from astra_assets.definitions import build_definitions

        self.instance = instance
        self.defs = build_definitions()
        self.sensor = self.defs.resolve_sensor_def(SENSOR)
        self.cursor: str | None = None
        self.record_events = record_events
        self.run = Run()

    def tick(self, batch: int, n: int, settled: int = 0) -> Tick:
        from dagster import build_sensor_context

        CALLS.clear()
        LISTED["keys"] = 0
        t0 = time.perf_counter()
        with build_sensor_context(instance=self.instance, cursor=self.cursor, resources=self.defs.resources,
                                  definitions=self.defs, sensor_name=SENSOR) as context:
            result = self.sensor(context)
        ms = (time.perf_counter() - t0) * 1000
        calls = dict(CALLS)
        self.cursor = result.cursor if result.cursor is not None else self.cursor
        t1 = time.perf_counter()
        added = 0
        for request in result.dynamic_partitions_requests or []:
            self.instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
            added += len(request.partition_keys)
        if self.record_events:
            for event in result.asset_events or []:
                self.instance.report_runless_asset_event(event)
        self.run.events += len(result.asset_events or [])
        apply_ms = (time.perf_counter() - t1) * 1000
        new = dups = 0
        for request in result.run_requests or []:
            if self.run.requested[request.run_key]:
                dups += 1
            else:
                new += 1
            self.run.requested[request.run_key] += 1
            self.run.partitions.add(request.partition_key)
        row = Tick(batch, n, ms, calls, LISTED["keys"], len(result.run_requests or []), new, dups, added,
                   rss_mb(), len(self.cursor or ""), apply_ms)
        if settled:
            self.run.settled.append((settled, len(self.run.partitions), row))
        else:
            self.run.ticks.append(row)
        return row


def settle(driver: SensorDriver, batch: int, out) -> None:
    """Wait until every upload is older than the scanner's mark margin, then tick until a tick judges
    nothing (every tenant's sweep has moved its mark past the uploads), and once more: the pure cost of
    a sweep over what was already seen."""
    from astra import uploads

    time.sleep(uploads.MARGIN_SECONDS + 5)
    quiet = 0
    for n in range(1, 16):
        row = driver.tick(batch, n, settled=batch)
        quiet = quiet + 1 if row.requests == 0 else 0
        out(f"settled after batch {batch}, tick {n}: {row.ms:.0f} ms, {row.calls.get('ListObjectsV2', 0)} lists, "
            f"{row.calls.get('GetObject', 0)} GETs, {row.listed} keys listed, {row.requests} requests", flush=True)
        if quiet == 2:
            break


def drive_batch(driver: SensorDriver, batch: int, expected: set[str], per_tick: bool) -> list[Tick]:
    """Ticks until every session uploaded so far is requested, then one more (the quiet tick)."""
    rows = []
    for n in range(1, MAX_TICKS_PER_BATCH + 1):
        row = driver.tick(batch, n)
        rows.append(row)
        if per_tick:
            print(f"  b{batch:02d} t{n:02d} {row.ms:8.0f} ms  calls {row.calls}  listed {row.listed:6d}  "
                  f"req {row.requests:4d} (new {row.new}, dup {row.duplicates})  parts +{row.partitions_added}  "
                  f"rss {row.rss_mb:.0f} MB  cursor {row.cursor_bytes} B  apply {row.apply_ms:.0f} ms", flush=True)
        done = expected <= set(driver.run.partitions)
        if done and row.new == 0 and n > 1:
            break
    return rows


def dagster_figures(instance, defs, keys: list[str]) -> dict:
    """Dagster's dynamic-partition calls at this size, on the instance the sensor used."""
    from dagster._core.definitions.partitions.context import partition_loading_context

    from astra_assets.partitions import sessions_partitions

    out = {}
    graph = defs.resolve_asset_graph()
    out["assets_on_sessions"] = sum(1 for k in graph.get_all_asset_keys()
                                    if graph.get(k).partitions_def == sessions_partitions)
    t0 = time.perf_counter()
    held = instance.get_dynamic_partitions(sessions_partitions.name)
    out["get_dynamic_partitions_ms"] = (time.perf_counter() - t0) * 1000
    out["sessions_partitions"] = len(held)
    t0 = time.perf_counter()
    with partition_loading_context(dynamic_partitions_store=instance):
        out["ui_count"] = sessions_partitions.get_num_partitions()
    out["get_num_partitions_ms"] = (time.perf_counter() - t0) * 1000
    sample = keys[: min(200, len(keys))]
    t0 = time.perf_counter()
    for key in sample:
        instance.has_dynamic_partition(sessions_partitions.name, key)
    out["has_dynamic_partition_ms"] = (time.perf_counter() - t0) * 1000 / max(1, len(sample))
    # add_dynamic_partitions into a throw-away definition: all at once, then batches of 500 as the sensor adds them
    probe = f"bench-probe-{uuid.uuid4().hex[:6]}"
    probe_keys = [f"probe-{i:06d}" for i in range(len(keys))]
    t0 = time.perf_counter()
    instance.add_dynamic_partitions(probe, probe_keys)
    out["add_all_ms"] = (time.perf_counter() - t0) * 1000
    more = [f"probe-more-{i:04d}" for i in range(500)]
    t0 = time.perf_counter()
    instance.add_dynamic_partitions(probe, more)
    out["add_500_more_ms"] = (time.perf_counter() - t0) * 1000
    t0 = time.perf_counter()
    instance.add_dynamic_partitions(probe, more)  # already there: Dagster skips the known ones
    out["add_500_again_ms"] = (time.perf_counter() - t0) * 1000
    out["probe_count"] = len(instance.get_dynamic_partitions(probe))  # left there: the instance is thrown away
    return out


def p50(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


def table(run: Run, objects_after: dict[int, int], sessions_after: dict[int, int]) -> list[str]:
    """One line a batch; `last` is the batch's final tick (no new run key: the steady state, duplicates included)."""
    lines = [f"{'batch':>5} {'sessions':>8} {'objects':>7} {'ticks':>5} {'ms/tick p50':>11} {'max':>6} "
             f"{'lists':>5} {'GETs':>5} {'dup req':>7} {'parts+':>6} {'last ms':>7} {'last lists':>10} "
             f"{'last listed':>11} {'last dup':>8} {'RSS MB':>6}"]
    for batch in sorted(objects_after):
        rows = [t for t in run.ticks if t.batch == batch]
        last = rows[-1]
        lines.append(
            f"{batch:>5} {sessions_after[batch]:>8} {objects_after[batch]:>7} {len(rows):>5} "
            f"{p50([t.ms for t in rows]):>11.0f} {max(t.ms for t in rows):>6.0f} "
            f"{sum(t.calls.get('ListObjectsV2', 0) for t in rows):>5} "
            f"{sum(t.calls.get('GetObject', 0) for t in rows):>5} "
            f"{sum(t.duplicates for t in rows):>7} {sum(t.partitions_added for t in rows):>6} {last.ms:>7.0f} "
            f"{last.calls.get('ListObjectsV2', 0):>10} {last.listed:>11} {last.duplicates:>8} {last.rss_mb:>6.0f}")
    return lines


def verdict(run: Run, batches: int) -> list[str]:
    """Flatness: the same new-object count (one batch) early vs late, and the cost of a tick that finds nothing."""
    k = max(1, min(3, batches // 4))
    first = [t for t in run.ticks if t.batch <= k]
    last = [t for t in run.ticks if t.batch > batches - k]

    def per(rows, f):
        return sum(f(t) for t in rows) / max(1, sum(t.new for t in rows))

    ms_f, ms_l = per(first, lambda t: t.ms), per(last, lambda t: t.ms)
    req_f, req_l = per(first, lambda t: sum(t.calls.values())), per(last, lambda t: sum(t.calls.values()))
    dup_f, dup_l = per(first, lambda t: t.duplicates), per(last, lambda t: t.duplicates)
    lines = [f"per new session, batches 1-{k} vs {batches - k + 1}-{batches}: {ms_f:.1f} -> {ms_l:.1f} ms of tick, "
             f"{req_f:.2f} -> {req_l:.2f} S3 calls, {dup_f:.2f} -> {dup_l:.2f} duplicate requests"]
    flat_judging = ms_l <= 1.5 * ms_f
    flat_sweep = True
    phases = sorted({p for p, _, _ in run.settled})
    if len(phases) >= 2:
        _, n0, a = [s for s in run.settled if s[0] == phases[0]][-1]  # the last tick of each settled phase
        _, n1, b = [s for s in run.settled if s[0] == phases[-1]][-1]
        flat_sweep = b.ms <= 1.5 * a.ms and b.calls.get("ListObjectsV2", 0) <= a.calls.get("ListObjectsV2", 0)
        lines.append(f"settled tick (nothing new, every mark past), {n0} vs {n1} sessions in the bucket: "
                     f"{a.ms:.0f} -> {b.ms:.0f} ms, {a.calls.get('ListObjectsV2', 0)} -> "
                     f"{b.calls.get('ListObjectsV2', 0)} list calls, {a.listed} -> {b.listed} keys listed, "
                     f"{a.calls.get('GetObject', 0)} -> {b.calls.get('GetObject', 0)} GETs")
    lines.append(f"VERDICT: judging {'FLAT' if flat_judging else 'NOT FLAT'} per new session; "
                 f"sweep {'FLAT' if flat_sweep else 'NOT FLAT'}"
                 + ("" if flat_sweep else ": every sweep lists every key of every tenant's sessions/ (the mark "
                    "spares reading them, not listing them)"))
    return lines


def check_exactly_once(run: Run, instance, expected: set[str]) -> list[str]:
    from astra_assets.partitions import sessions_partitions

    dup = {k: c for k, c in run.requested.items() if c > 1}
    partitions = set(instance.get_dynamic_partitions(sessions_partitions.name))
    problems = []
    if run.partitions != expected:
        problems.append(f"requested partitions != sessions: {len(expected - run.partitions)} lost, "
                        f"{len(run.partitions - expected)} unexpected")
    if len(run.requested) != len(expected):
        problems.append(f"{len(run.requested)} distinct run keys for {len(expected)} sessions")
    if dup:
        problems.append(f"{len(dup)} run keys requested more than once ({sum(dup.values()) - len(dup)} extra "
                        f"requests; the daemon would skip them as their run exists)")
    if partitions != expected:
        problems.append(f"sessions dynamic partition: {len(partitions)} keys, {len(expected - partitions)} missing, "
                        f"{len(partitions - expected)} extra")
    return problems


def bench(sessions: int, tenants: int, batches: int, instance_kind: str = "postgres", per_tick: bool = False,
          record_events: bool = True, settled: bool = False, out=print) -> dict:
    """The whole bench; returns the run, the problems found and Dagster's figures (the test uses it)."""
    with ExitStack() as stack:
        env = environment(stack)
        from astra import s3 as s3_lib
        from astra.settings import Settings

        settings = Settings.from_env()
        s3 = s3_lib.client(settings)
        s3_lib.ensure_buckets(s3, settings)
        publish_configs([f"tenant-{t:02d}" for t in range(tenants)])
        meter_sensor_clients()
        instance = stack.enter_context(dagster_instance(instance_kind))
        driver = SensorDriver(instance, record_events=record_events)
        plan = plan_sessions(sessions, tenants)
        size = -(-sessions // batches)
        expected: set[str] = set()
        objects_after, sessions_after = {}, {}
        out(f"{sessions} sessions, {tenants} tenants, {batches} batches; instance: {instance_kind}; "
            f"bucket {env['ASTRA_UPLOADS_BUCKET']}")
        for b in range(batches):
            chunk = plan[b * size:(b + 1) * size]
            if not chunk:
                break
            t0 = time.perf_counter()
            upload(s3, env["ASTRA_UPLOADS_BUCKET"], chunk)
            up_s = time.perf_counter() - t0
            expected |= {partition_key(t, s) for t, s in chunk}
            rows = drive_batch(driver, b + 1, expected, per_tick)
            objects_after[b + 1], sessions_after[b + 1] = 2 * len(expected), len(expected)
            out(f"batch {b + 1:2d}: {len(chunk)} uploaded in {up_s:.1f}s; {len(rows)} ticks, "
                f"{sum(r.new for r in rows)} new, {sum(r.duplicates for r in rows)} dup, "
                f"{sum(r.ms for r in rows) / 1000:.1f}s of ticks, "
                f"daemon apply {sum(r.apply_ms for r in rows) / 1000:.1f}s, "
                f"rss {rows[-1].rss_mb:.0f} MB", flush=True)
            if settled and b in (0, batches - 1):
                settle(driver, b + 1, out)
        run = driver.run
        problems = check_exactly_once(run, instance, expected)
        figures = dagster_figures(instance, driver.defs, sorted(expected))
        lines = table(run, objects_after, sessions_after) + verdict(run, len(objects_after))
        out("\n".join(lines))
        ok = (f"OK: {len(expected)} sessions, {len(run.requested)} run keys, "
              f"{figures['sessions_partitions']} partitions")
        out("exactly once: " + ("; ".join(problems) if problems else ok))
        out("dagster at this size: " + ", ".join(f"{k} {v:.1f}" if isinstance(v, float) else f"{k} {v}"
                                                 for k, v in figures.items()))
        return {"run": run, "problems": problems, "figures": figures, "expected": expected}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sessions", type=int, default=10_000)
    ap.add_argument("--tenants", type=int, default=20)
    ap.add_argument("--batches", type=int, default=20)
    ap.add_argument("--instance", choices=["postgres", "sqlite"], default="postgres")
    ap.add_argument("--per-tick", action="store_true", help="print every tick")
    ap.add_argument("--no-events", action="store_true", help="do not record the asset events (daemon's share)")
    ap.add_argument("--csv", help="write every tick to this CSV file")
    ap.add_argument("--settle", action="store_true",
                    help="after the first and the last batch, wait out the scanner's mark margin (~2 min) and tick "
                         "twice: the cost of sweeping only what was seen")
    args = ap.parse_args()
    result = bench(args.sessions, args.tenants, args.batches, args.instance, args.per_tick, not args.no_events,
                   args.settle)
    if args.csv:
        import csv

        with open(args.csv, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["batch", "tick", "ms", "lists", "gets", "calls", "listed", "requests", "new", "dup",
                        "partitions_added", "rss_mb", "cursor_bytes", "apply_ms"])
            for t in result["run"].ticks:
                w.writerow([t.batch, t.tick, f"{t.ms:.1f}", t.calls.get("ListObjectsV2", 0),
                            t.calls.get("GetObject", 0), sum(t.calls.values()), t.listed, t.requests, t.new,
                            t.duplicates, t.partitions_added, f"{t.rss_mb:.1f}", t.cursor_bytes, f"{t.apply_ms:.1f}"])
    # Duplicate requests are reported (the daemon skips them: the run key has a run) but fail the bench only
    # once the scanner is fixed (tests/bench's strict xfail); a lost or unexpected session always fails it.
    sys.exit(1 if [p for p in result["problems"] if "more than once" not in p] else 0)


if __name__ == "__main__":
    main()
