"""INGEST dedup registry under open-loop load: RegisterAssets over real gRPC on loopback.

Starts the real server (`astra serve ingest` in a subprocess) against Postgres (ASTRA_DATABASE_URL
if set, else a throw-away database on 127.0.0.1:5432, dropped afterwards), then drives it from
separate load processes at a fixed rate. Sends are scheduled on a fixed timetable and latency
is measured from each call's *scheduled* send time, so a stalled server or load generator shows
up in the tail instead of slowing the offered load (no coordinated omission).

Calls carry the service token (`authorization: Bearer …`, checked by the server's interceptor): a
random one per run, given to the server and the load processes by environment.

Requests: a few tenants, 1-4 digests each, about half already registered (DUPLICATE) and half
fresh (NEW). Calls carry a 1 s deadline by default so the whole latency distribution is seen;
the fraction over 50 ms is what the orchestrator (50 ms deadline) would have failed open on.
`--deadline-ms 50` runs with the orchestrator's own deadline instead (the server then drops
calls whose client has gone before touching the database, as it would in production).
Goal: p99 <= 2 ms, fail-open < 0.1 %.

    python bench/register_assets.py [--rate 2000] [--seconds 30] [--deadline-ms 1000] [--drivers 1]
                                    [--workers 8] [--lanes 1]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FAIL_OPEN_MS = 50.0
PG_ADMIN_URL = os.environ.get("ASTRA_BENCH_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


# -- load driver (runs in its own process) ----------------------------------------------------------

def _sha() -> str:
    return uuid.uuid4().hex + uuid.uuid4().hex


def _drive(target: str, rate: float, seconds: float, warmup: float, tenants: list[str], seed: int,
           deadline_s: float) -> dict:
    """Fire calls on a fixed timetable from one thread (`.future()`: never waits for an answer),
    record each completion in gRPC's callback thread against the call's scheduled time."""
    import grpc

    from astra.grpc_auth import bearer_metadata
    from astra.protos import ingest_registry_pb2 as pb
    from astra.protos import ingest_registry_pb2_grpc as pb_grpc
    from astra.settings import ENV

    rnd = random.Random(seed)
    auth = bearer_metadata(os.environ[ENV["service_token"]])
    channel = grpc.insecure_channel(target)
    stub = pb_grpc.AssetRegistryStub(channel)
    # Known digests per tenant, registered up front: these come back DUPLICATE.
    known = {t: [_sha() for _ in range(500)] for t in tenants}
    for t, shas in known.items():
        stub.RegisterAssets(pb.RegisterAssetsRequest(
            tenant=t, assets=[pb.AssetDigest(sha256=s, size=1, media_type="application/octet-stream") for s in shas]),
            timeout=10, metadata=auth)

    def make_request() -> tuple[pb.RegisterAssetsRequest, int]:
        t = rnd.choice(tenants)
        shas = list(dict.fromkeys(rnd.choice(known[t]) if rnd.random() < 0.5 else _sha()
                                  for _ in range(rnd.randint(1, 4))))
        dups = sum(1 for sha in shas if sha in known_set[t])
        return pb.RegisterAssetsRequest(tenant=t, assets=[
            pb.AssetDigest(sha256=sha, size=rnd.randint(0, 10**9), media_type="audio/wav", name="media/file.bin")
            for sha in shas]), dups

    known_set = {t: set(v) for t, v in known.items()}
    total = int(rate * (warmup + seconds))
    first_measured = int(rate * warmup)
    requests = [make_request() for _ in range(total)]  # built before the clock starts
    # Warm the channel and the server's prepared statements (not measured).
    for req, _ in requests[:50]:
        stub.RegisterAssets(req, timeout=5, metadata=auth)

    latencies: list[float] = []
    errors: dict[str, int] = {}
    outcome = {"new": 0, "duplicate": 0, "expected_duplicate": 0}
    lock = threading.Lock()
    done = threading.Semaphore(0)
    clock = time.perf_counter

    def on_done(fut, scheduled: float, dups: int, measured: bool) -> None:
        finished = clock()
        try:
            exc = fut.exception()
            if measured:
                with lock:
                    if exc is not None:
                        errors[exc.code().name] = errors.get(exc.code().name, 0) + 1
                    else:
                        latencies.append((finished - scheduled) * 1000)
                        for st in fut.result().statuses:
                            outcome["new" if st.status == pb.AssetStatus.NEW else "duplicate"] += 1
                        outcome["expected_duplicate"] += dups
        finally:
            done.release()

    interval = 1.0 / rate
    start = clock() + 0.05
    max_lag = 0.0
    for i, (req, dups) in enumerate(requests):
        scheduled = start + i * interval
        wait = scheduled - clock()
        if wait > 0:
            time.sleep(wait)  # no spinning: on a small machine it would steal the server's CPU
        max_lag = max(max_lag, clock() - scheduled)
        fut = stub.RegisterAssets.future(req, timeout=deadline_s, metadata=auth)
        fut.add_done_callback(lambda f, s=scheduled, d=dups, m=i >= first_measured: on_done(f, s, d, m))
    send_window = clock() - (start + warmup)
    for _ in range(total):
        done.acquire(timeout=5)
    channel.close()
    return {
        "latencies_ms": latencies, "errors": errors, "outcome": outcome, "sent": total - first_measured,
        "send_window_s": send_window, "max_send_lag_ms": max_lag * 1000,
    }


def driver_main(args) -> None:
    import psutil

    tenants = args.tenants.split(",")
    proc = psutil.Process()
    cpu0 = proc.cpu_times()
    result = _drive(args.target, args.rate, args.seconds, args.warmup, tenants, args.seed, args.deadline_ms / 1000)
    cpu1 = proc.cpu_times()
    result["cpu_s"] = (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)
    sys.stdout.write(json.dumps(result))
    sys.stdout.flush()


# -- orchestration (the parent process) ---------------------------------------------------------------


def serve_argv(*args: str) -> list[str]:
    from astra.cli import main

    if any(g.name == "serve" for g in main.app.registered_groups):
        return [str(Path(sys.executable).with_name("astra")), "serve", "ingest", *args]
    return [sys.executable, "-c", "import sys; from astra.cli.serve_cmd import app; app(sys.argv[1:])", "ingest", *args]


class ThrowAwayDatabase:
    def __init__(self):
        self.name = f"astra_bench_{uuid.uuid4().hex[:8]}"
        self.url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{self.name}"

    def __enter__(self) -> str:
        import psycopg

        from astra.db import upgrade

        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.name}"')
        upgrade(self.url)
        return self.url

    def __exit__(self, *exc) -> None:
        import psycopg

        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


def postgres_cpu_s() -> float:
    import psutil

    total = 0.0
    for p in psutil.process_iter(["name"]):
        if p.info["name"] and p.info["name"].startswith("postgres"):
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except psutil.Error:
                pass
    return total


def run(args, database_url: str) -> None:
    import psutil

    from astra.settings import ENV

    env = {**os.environ, ENV["database_url"]: database_url, ENV["service_token"]: secrets.token_urlsafe(32)}
    env.pop("ASTRA_INGEST_DELAY_MS", None)
    log = tempfile.TemporaryFile(mode="w+")  # the server's stderr: a pipe nobody reads could fill and stall it
    server = subprocess.Popen(serve_argv("--port", "0", "--workers", str(args.workers), "--lanes", str(args.lanes)),
                              env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=log, text=True,
                              stdin=subprocess.DEVNULL)
    load_before = os.getloadavg()
    try:
        line = server.stdout.readline()
        if "serving on" not in line:
            server.wait(10)
            log.seek(0)
            raise RuntimeError(f"server did not start: {line!r} {log.read()[-2000:]}")
        target = line.split("serving on ")[1].split()[0]
        print(line.strip())
        run_id = uuid.uuid4().hex[:6]
        tenants = ",".join(f"bench-{run_id}-{i}" for i in range(args.tenants))
        srv_ps = psutil.Process(server.pid)
        srv_cpu0, pg_cpu0 = sum(srv_ps.cpu_times()[:2]), postgres_cpu_s()
        wall0 = time.monotonic()
        drivers = [
            subprocess.Popen([sys.executable, __file__, "--drive", target, "--rate", str(args.rate / args.drivers),
                              "--seconds", str(args.seconds), "--warmup", str(args.warmup), "--tenants", tenants,
                              "--seed", str(i), "--deadline-ms", str(args.deadline_ms)],
                             cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
            for i in range(args.drivers)
        ]
        outs = [json.loads(d.communicate()[0]) for d in drivers]
        wall = time.monotonic() - wall0
        srv_cpu, pg_cpu = sum(srv_ps.cpu_times()[:2]) - srv_cpu0, postgres_cpu_s() - pg_cpu0
    finally:
        server.terminate()
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()
    load_after = os.getloadavg()

    lat = sorted(x for o in outs for x in o["latencies_ms"])
    sent = sum(o["sent"] for o in outs)
    window = max(o["send_window_s"] for o in outs)
    errors: dict[str, int] = {}
    for o in outs:
        for k, v in o["errors"].items():
            errors[k] = errors.get(k, 0) + v
    new = sum(o["outcome"]["new"] for o in outs)
    dup = sum(o["outcome"]["duplicate"] for o in outs)
    expected_dup = sum(o["outcome"]["expected_duplicate"] for o in outs)
    over = sum(1 for x in lat if x > FAIL_OPEN_MS) + sum(errors.values())
    fail_open = over / sent if sent else float("nan")
    print(f"\nRegisterAssets, open loop, {args.drivers} load process(es), {args.tenants} tenants, 1-4 digests per call,"
          f" deadline {args.deadline_ms:g} ms,"
          f" server --workers {args.workers} --lanes {args.lanes}, {os.cpu_count()} CPUs")
    print(f"offered   {args.rate:,.0f} req/s for {args.seconds:g} s (after {args.warmup:g} s warm-up)")
    print(f"achieved  {len(lat) / window:,.0f} req/s completed ({len(lat):,} of {sent:,} sent;"
          f" errors: {errors or 'none'})")
    print(f"digests   {new:,} NEW, {dup:,} DUPLICATE ({expected_dup:,} DUPLICATE expected)")
    failed = sum(errors.values())
    print(f"latency from scheduled send time, over all {sent:,} calls sent (failed calls count as slowest):")
    for name, q in (("p50", 0.50), ("p90", 0.90), ("p99", 0.99), ("p999", 0.999)):
        i = min(sent - 1, int(q * sent))
        shown = f"{lat[i]:8.3f} ms" if i < len(lat) else f"   failed (deadline {args.deadline_ms:g} ms)"
        print(f"  {name:>5} {shown}")
    worst = f"{lat[-1]:8.3f} ms" if lat and not failed else f"   failed (deadline {args.deadline_ms:g} ms)"
    print(f"  {'max':>5} {worst}")
    print(f"over {FAIL_OPEN_MS:g} ms (would fail open): {over:,} of {sent:,} = {fail_open * 100:.4f} %")
    print(f"max send lag of the load generator: {max(o['max_send_lag_ms'] for o in outs):.2f} ms")
    load_cpu = sum(o["cpu_s"] for o in outs)
    print(f"CPU over {wall:.1f} s (% of one core): server {srv_cpu / wall * 100:.0f} %, load generator"
          f" {load_cpu / wall * 100:.0f} %, all postgres processes {pg_cpu / wall * 100:.0f} %;"
          f" machine load average {load_before[0]:.2f} before, {load_after[0]:.2f} after")
    i99 = min(sent - 1, int(0.99 * sent))
    p99 = lat[i99] if i99 < len(lat) else float("inf")
    print(f"goal p99 <= 2 ms: {'met' if p99 <= 2.0 else 'NOT met'} ({p99:.3f} ms); "
          f"goal fail-open < 0.1 %: {'met' if fail_open < 0.001 else 'NOT met'} ({fail_open * 100:.4f} %)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rate", type=float, default=2000, help="requests per second offered (total)")
    ap.add_argument("--seconds", type=float, default=30, help="measured duration")
    ap.add_argument("--warmup", type=float, default=3, help="seconds of load before measuring")
    ap.add_argument("--drivers", type=int, default=1, help="load generator processes")
    ap.add_argument("--deadline-ms", type=float, default=1000,
                    help="per-call deadline (default 1000: see the whole distribution; 50 = the orchestrator's)")
    ap.add_argument("--workers", type=int, default=8, help="server gRPC threads")
    ap.add_argument("--lanes", type=int, default=1, help="server database lanes (connections)")
    ap.add_argument("--tenants", default="4", help="number of tenants (driver mode: comma-separated slugs)")
    ap.add_argument("--drive", metavar="TARGET", help=argparse.SUPPRESS)
    ap.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.drive:
        args.target = args.drive
        driver_main(args)
        return
    args.tenants = int(args.tenants)
    from astra.settings import ENV

    if os.environ.get(ENV["database_url"]):
        run(args, os.environ[ENV["database_url"]])
    else:
        with ThrowAwayDatabase() as url:
            print(f"throw-away database {url}")
            run(args, url)


if __name__ == "__main__":
    main()
