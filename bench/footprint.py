"""Resident memory of the whole embedded stack with the Dagster UI up (`astra dev`).

Starts `astra dev` on a fresh state dir (embedded Postgres, moto, and Redis as `stack up` picks
it), waits for the UI, then sums RSS and PSS over every process: the astra dev tree (dagster dev,
webserver, daemon, code servers) and the stack's servers. Goal: under 1.5 GB. Stops it all after.

    python bench/footprint.py
"""

from __future__ import annotations

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


def main() -> None:
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
        time.sleep(10)  # let the daemon's first sensor ticks and the code server settle
        stack = json.loads((state / "stack.json").read_text())
        groups = {"astra dev (dagster dev, webserver, daemon, code servers)": tree(proc.pid)}
        for name, part in stack.items():
            if part.get("pid"):
                groups[f"{name}: {part['source']}"] = tree(part["pid"])
            else:
                groups[f"{name}: {part['source']} (not started here, not counted)"] = []
        print(f"UI up after {up_s:.1f}s on 127.0.0.1:{port}\n")
        print(f"{'part':<62} {'procs':>5} {'RSS MB':>9} {'PSS MB':>9}")
        total_rss = total_pss = 0
        for label, procs in groups.items():
            rss = sum(mem(p)[0] for p in procs)
            pss = sum(mem(p)[1] for p in procs)
            total_rss += rss
            total_pss += pss
            print(f"{label:<62} {len(procs):>5} {rss / 2**20:>9.0f} {pss / 2**20:>9.0f}")
        print(f"{'total':<62} {'':>5} {total_rss / 2**20:>9.0f} {total_pss / 2**20:>9.0f}")
        goal = "met" if total_rss < 1536 * 2**20 else "NOT met"
        print(f"\ngoal < 1536 MB: {goal} (RSS sum; PSS counts shared pages once)")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        subprocess.run([astra, "stack", "down"], env=env, cwd=ROOT, capture_output=True)


if __name__ == "__main__":
    main()
