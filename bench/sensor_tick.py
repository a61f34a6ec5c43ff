"""`session_upload_sensor` ticks over a bucket full of one tenant's junk (issue 7, item 1.3).

Builds the bucket on moto's standalone S3 server (a real HTTP server on loopback):
- several junk tenants with thousands of `manifest.json` objects that are not JSON;
- dozens of manifests, each naming 200 files (the schema's most) that were never uploaded;
- a few good sessions of a tenant with a published config, sorting after every junk tenant.
Then evaluates the sensor tick after tick (no runs are launched: only the sensor's own work; its
observations are recorded on the instance, as the daemon would) and prints, per tick, its
seconds, the cursor's size, and whether the good sessions were requested. Dagster's daemon gives a
tick 60 s: a longer tick is cancelled and its cursor lost, so the next tick starts over.

Postgres: ASTRA_DATABASE_URL if set, else a throw-away database on 127.0.0.1:5432 (dropped
afterwards). Redis: ASTRA_REDIS_URL if set, else 127.0.0.1:6379 under a throw-away prefix.

    python bench/sensor_tick.py [--junk-tenants 3] [--junk 1000] [--absent 30] [--ticks 8]
    python bench/sensor_tick.py --code-at <commit>   # the same bucket, the sensor as it was at <commit>
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PG_ADMIN_URL = os.environ.get("ASTRA_BENCH_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
SENSOR = "session_upload_sensor"
GOOD_TENANT = "zz-good"
# The files whose old versions `--code-at` puts in front of today's (the sensor and its scanner).
SENSOR_FILES = ["sensors/session_upload.py", "sensors/template_upload.py", "sensors/partitions.py", "astra/uploads.py"]


@contextmanager
def old_sensor_code(commit: str):
    """Today's packages, with the sensor files read from `commit` ahead of them on their __path__."""
    with tempfile.TemporaryDirectory() as tmp:
        for path in SENSOR_FILES:
            text = subprocess.run(["git", "-C", str(ROOT), "show", f"{commit}:{path}"], check=True,
                                  capture_output=True, text=True).stdout
            target = Path(tmp) / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
        import astra
        import sensors

        astra.__path__.insert(0, str(Path(tmp) / "astra"))
        sensors.__path__.insert(0, str(Path(tmp) / "sensors"))
        yield


@contextmanager
def moto_server():
    from astra.stack import processes

    port = processes.free_port()
    with tempfile.TemporaryDirectory() as tmp:
        proc = processes.spawn_detached(processes.python_module("moto.server", "-H", "127.0.0.1", "-p", str(port)),
                                        Path(tmp) / "moto.log")
        try:
            processes.wait_for_port("127.0.0.1", port, proc=proc)
            yield f"http://127.0.0.1:{port}"
        finally:
            processes.stop_tree(proc.pid, timeout=5)
            proc.wait()


@contextmanager
def database():
    if os.environ.get("ASTRA_DATABASE_URL"):
        yield os.environ["ASTRA_DATABASE_URL"]
        return
    import psycopg

    from astra.db import upgrade

    name = f"astra_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    try:
        upgrade(url)
        yield url
    finally:
        from astra.db.engine import make_engine

        make_engine.cache_clear()
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def environment(stack: ExitStack) -> dict[str, str]:
    tag = uuid.uuid4().hex[:8]
    env = {
        "ASTRA_S3_ENDPOINT_URL": stack.enter_context(moto_server()),
        "ASTRA_DATABASE_URL": stack.enter_context(database()),
        "ASTRA_REDIS_URL": os.environ.get("ASTRA_REDIS_URL", "redis://127.0.0.1:6379/0"),
        "ASTRA_REDIS_PREFIX": f"astrabench-{tag}",
        "ASTRA_UPLOADS_BUCKET": f"bench-uploads-{tag}",
        "ASTRA_ASSETS_BUCKET": f"bench-assets-{tag}",
        "ASTRA_GUARD_BUCKET": f"bench-guard-{tag}",
        "ASTRA_INGEST_TARGET": "127.0.0.1:1",  # never called: the bench launches no runs
        "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1",
    }
    os.environ.update(env)
    return env


def manifest(tenant: str, session: str, files: int = 0) -> bytes:
    data = [f"data/d{i}.csv" for i in range(min(files, 100))]
    media = [f"media/m{i}.png" for i in range(max(0, files - 100))]
    return json.dumps({"tenant": tenant, "session_id": session, "version": 1, "template": "report",
                       "created_at": "2026-11-25T10:00:00Z", "audio": "audio.wav", "data": data,
                       "media": media}).encode()


def fill_bucket(s3, bucket: str, junk_tenants: int, junk: int, absent: int) -> list[str]:
    """The junk, the manifests naming absent files, and the good sessions; returns the good
    sessions' partition keys."""
    from astra.samples import session_files
    from astra.tenancy import SessionKey

    puts: list[tuple[str, bytes]] = []
    for t in range(junk_tenants):
        tenant = f"junk-{t}"
        puts += [(f"{tenant}/sessions/s{i:05d}/v1/manifest.json", b"{not json") for i in range(junk)]
        puts += [(f"{tenant}/sessions/absent{i:03d}/v1/manifest.json", manifest(tenant, f"absent{i:03d}", 200))
                 for i in range(absent // junk_tenants)]
    good = []
    for i in range(3):
        prefix = f"{GOOD_TENANT}/sessions/visit-{i}/v1/"
        puts += [(prefix + path, body) for path, body in session_files().items() if path == "audio.wav"]
        puts.append((prefix + "manifest.json", manifest(GOOD_TENANT, f"visit-{i}")))
        good.append(SessionKey(GOOD_TENANT, f"visit-{i}", 1).partition_key)
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda kv: s3.put_object(Bucket=bucket, Key=kv[0], Body=kv[1]), puts))
    return good


def publish_configs(tenants: list[str]) -> None:
    """Every tenant has a config: the junk comes from configured tenants, so it is judged."""
    from astra.runtime import config_service
    from astra.settings import Settings

    zone_map = {"zones": [{"id": "notes", "label": "Notes", "kind": "text",
                           "location": {"part": "/word/document.xml", "block": 1}, "accepts": {"fallback": True}}],
                "fallback_zone": "notes"}
    style_map = {"defaults": {"font": "Calibri", "size_pt": 11}, "zones": {}}
    service = config_service(Settings.from_env())
    for tenant in tenants:
        service.publish(tenant, zone_map, style_map, "ab" * 32, "bench")


def run_ticks(ticks: int, good: list[str], interval: float) -> list[dict]:
    from dagster import DagsterInstance, build_sensor_context

    from astra_assets.definitions import build_definitions

    defs = build_definitions()
    sensor = defs.resolve_sensor_def(SENSOR)
    rows, cursor, requested = [], None, set()
    with DagsterInstance.ephemeral() as instance:
        for n in range(1, ticks + 1):
            time.sleep(interval if n > 1 else 0)
            t0 = time.perf_counter()
            with build_sensor_context(instance=instance, cursor=cursor, resources=defs.resources,
                                      definitions=defs, sensor_name=SENSOR) as context:
                result = sensor(context)
            seconds = time.perf_counter() - t0
            cursor = result.cursor if result.cursor is not None else cursor
            for event in result.asset_events or []:  # recorded, as the daemon does (not timed)
                instance.report_runless_asset_event(event)
            requested |= {r.partition_key for r in result.run_requests or []} & set(good)
            rows.append({"tick": n, "seconds": seconds, "cursor_bytes": len(cursor or ""),
                         "requests": len(result.run_requests or []), "events": len(result.asset_events or []),
                         "good_requested": len(requested)})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--junk-tenants", type=int, default=3)
    ap.add_argument("--junk", type=int, default=1000, help="junk manifests per junk tenant")
    ap.add_argument("--absent", type=int, default=30, help="manifests naming 200 absent files each (in all)")
    ap.add_argument("--ticks", type=int, default=8)
    ap.add_argument("--interval", type=float, default=0.0, help="seconds between ticks (the daemon's: 10)")
    ap.add_argument("--code-at", help="evaluate the sensor as it was at this commit")
    args = ap.parse_args()
    with ExitStack() as stack:
        if args.code_at:
            stack.enter_context(old_sensor_code(args.code_at))
        env = environment(stack)
        from astra import s3 as s3_lib
        from astra.settings import Settings

        settings = Settings.from_env()
        s3 = s3_lib.client(settings)
        s3_lib.ensure_buckets(s3, settings)
        t0 = time.perf_counter()
        good = fill_bucket(s3, env["ASTRA_UPLOADS_BUCKET"], args.junk_tenants, args.junk, args.absent)
        publish_configs([f"junk-{t}" for t in range(args.junk_tenants)] + [GOOD_TENANT])
        total = args.junk_tenants * args.junk + args.absent
        print(f"bucket: {total} junk manifests over {args.junk_tenants} tenants ({args.absent} naming 200 absent "
              f"files each), {len(good)} good sessions of {GOOD_TENANT}; built in {time.perf_counter() - t0:.1f}s")
        print(f"sensor code: {args.code_at or 'working tree'}")
        print(f"{'tick':>4} {'seconds':>8} {'cursor bytes':>13} {'requests':>9} {'events':>7} {'good requested':>15}")
        for row in run_ticks(args.ticks, good, args.interval):
            print(f"{row['tick']:>4} {row['seconds']:>8.2f} {row['cursor_bytes']:>13} {row['requests']:>9} "
                  f"{row['events']:>7} {row['good_requested']:>12}/{len(good)}")


if __name__ == "__main__":
    main()
