"""Resident memory of the whole embedded stack with the Dagster UI up (`astra dev`).

Starts `astra dev` on a fresh state dir (embedded Postgres, moto, and Redis as `stack up` picks
it; the stack's `astra serve ingest` and `astra serve core`), waits for the UI, publishes the
local base model (`.astra/models/base/LATEST`, or --model) and has the intent service answer with
it, so the core server is counted holding a model as it does in use. Then sums RSS and PSS over
every process: the astra dev tree (dagster dev, webserver, daemon, code servers) and the stack's
servers. Goal: under 1.5 GB. Stops it all after.

    python bench/footprint.py [--model DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from astra.stack import processes  # noqa: E402


def tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def mem(p: psutil.Process) -> tuple[int, int]:
    try:
        info = p.memory_full_info()
        return info.rss, getattr(info, "pss", info.rss)
    except psutil.Error:
        return 0, 0


def read_env_file(path: Path) -> dict[str, str]:
    pairs = (line[len("export "):].split("=", 1) for line in path.read_text().splitlines()
             if line.startswith("export ") and "=" in line)
    return {k: v.strip("'") for k, v in pairs}


def serve_base_model(model_dir: Path, state: Path) -> str:
    """Publish `model_dir` as the base model in the stack under `state`, and wait until its intent
    service answers with it. Returns the model version."""
    import redis

    from astra import s3 as s3_lib
    from astra.core.core_client import IntentClient
    from astra.core.intent.store import BASE_TENANT
    from astra.core.model_store import ModelStore, drain_outbox
    from astra.db.engine import make_engine
    from astra.settings import Settings

    values = read_env_file(state / "stack.env")
    os.environ.update(values)  # the sandbox's S3 credentials, for boto3
    settings = Settings.from_env(values)
    engine = make_engine(settings.require("database_url"))
    record = ModelStore(engine, s3_lib.client(settings), settings.assets_bucket, state / "publisher-cache").publish(
        BASE_TENANT, model_dir)
    drain_outbox(engine, redis.Redis.from_url(settings.require("redis_url")), settings.redis_prefix)
    client = IntentClient.from_settings(settings)
    deadline = time.monotonic() + 120
    while client.classify("footprint", ["what's the weather like today"]).model_version != record.model_version:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the intent service did not serve model {record.model_version} within 120 s")
        time.sleep(0.5)
    client.close()
    return record.model_version


def loads_torch(procs: list[psutil.Process]) -> bool:
    """Some process of the group has torch's shared library mapped."""
    for p in procs:
        try:
            if any("libtorch" in m.path for m in p.memory_maps(grouped=True)):
                return True
        except psutil.Error:
            pass
    return False


def main() -> None:
    from astra.core.intent.store import BASE_TENANT, resolve_model, tenant_dir

    parser = argparse.ArgumentParser(description="RSS of the embedded stack with the Dagster UI up")
    parser.add_argument("--model", type=Path, help="saved model or tenant directory (default .astra/models/base)")
    args = parser.parse_args()
    try:
        model_dir = resolve_model(args.model or tenant_dir(BASE_TENANT))
    except FileNotFoundError as exc:
        model_dir = None
        print(f"{exc}: the core server is counted without a model")
    state = Path(tempfile.mkdtemp(prefix="astra-footprint-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASTRA_")}
    env["ASTRA_STATE_DIR"] = str(state)
    port = processes.free_port()
    astra = str(Path(sys.executable).with_name("astra"))
    proc = subprocess.Popen([astra, "dev", "--port", str(port)], env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        t0 = time.monotonic()
        while time.monotonic() - t0 < 180:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=2)
                break
            except OSError:
                time.sleep(1)
        up_s = time.monotonic() - t0
        if model_dir is not None:
            version = serve_base_model(model_dir, state)
            print(f"base model {version} ({model_dir}) published; the intent service answers with it")
        time.sleep(10)  # let the daemon's first sensor ticks and the code server settle
        stack = json.loads((state / "stack.json").read_text())
        groups = {}
        for name, part in stack.items():
            if part.get("pid"):
                groups[f"{name}: {part['source']}"] = tree(part["pid"])
            else:
                groups[f"{name}: {part['source']} (not started here, not counted)"] = []
        # `astra dev` started the stack's services, so they are its children too: each is counted once, in its part.
        in_parts = {p.pid for procs in groups.values() for p in procs}
        groups = {"astra dev (dagster dev, webserver, daemon, code servers)":
                  [p for p in tree(proc.pid) if p.pid not in in_parts], **groups}
        print(f"UI up after {up_s:.1f}s on 127.0.0.1:{port}\n")
        print(f"{'part':<62} {'procs':>5} {'RSS MB':>9} {'PSS MB':>9}")
        total_rss = total_pss = 0
        for label, procs in groups.items():
            rss = sum(mem(p)[0] for p in procs)
            pss = sum(mem(p)[1] for p in procs)
            total_rss += rss
            total_pss += pss
            torch = " (torch loaded)" if loads_torch(procs) else ""
            print(f"{label + torch:<62} {len(procs):>5} {rss / 2**20:>9.0f} {pss / 2**20:>9.0f}")
        print(f"{'total':<62} {'':>5} {total_rss / 2**20:>9.0f} {total_pss / 2**20:>9.0f}")
        goal = "met" if total_rss < 1536 * 2**20 else "NOT met"
        print(f"\ngoal < 1536 MB: {goal} (RSS sum; PSS counts shared pages once)")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        subprocess.run([astra, "stack", "down"], env=env, cwd=ROOT, capture_output=True)


if __name__ == "__main__":
    main()
