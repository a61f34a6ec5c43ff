"""CONFIG_SVC read latency: `snapshot()` through the Redis cache vs straight from Postgres.

Runs on the stack in the environment (ASTRA_* set), else on the embedded stack (started and
stopped here). Prints p50/p99/p999 of both paths side by side, and their ratio. Goal: cached p99 <= 1 ms.

    python bench/config_read.py [--reads 10000]
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid

from astra.config_svc import ConfigService
from astra.db import make_engine
from astra.runtime import redis_client
from astra.settings import Settings
from astra.stack.stack import running_stack

ZONE_MAP = {
    "zones": [
        {"id": f"zone_{i}", "label": f"Zone {i}", "kind": "text",
         "location": {"part": "/word/document.xml", "block": i}, "accepts": {"domains": ["travel"]}}
        for i in range(12)
    ],
    "fallback_zone": "zone_0",
}
STYLE_MAP = {"defaults": {"font": "Calibri", "size_pt": 11},
             "zones": {f"zone_{i}": {"paragraph_style": "Normal", "run_style": None, "table_style": None,
                                     "resolved": {"font": "Calibri", "size_pt": 11}} for i in range(12)}}


def pct(samples: list[float], q: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, int(q * len(s)))]


def measure(fn, n: int) -> list[float]:
    for _ in range(200):  # warm-up: pools, prepared plans
        fn()
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1000)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reads", type=int, default=10_000)
    args = ap.parse_args()
    with running_stack(say=print):
        settings = Settings.from_env()
        engine = make_engine(settings.require("database_url"))
        cached = ConfigService(engine, redis_client(settings), settings.redis_prefix)
        uncached = ConfigService(engine, None, settings.redis_prefix)
        tenant = f"bench-{uuid.uuid4().hex[:8]}"
        cached.publish(tenant, ZONE_MAP, STYLE_MAP, "ab" * 32, "bench")
        cached.publish(tenant, ZONE_MAP, STYLE_MAP, "cd" * 32, "bench")
        hot = measure(lambda: cached.snapshot(tenant), args.reads)
        cold = measure(lambda: uncached.snapshot(tenant), args.reads)
        pg_kind = "embedded" if "host=/" in settings.database_url else settings.database_url.split("@")[-1]
        print(f"\nsnapshot() over {args.reads} reads each (12 zones; Postgres {pg_kind}, Redis {settings.redis_url})")
        print(f"{'':>10} {'cached (Redis)':>16} {'uncached (Postgres)':>20} {'ratio':>8}")
        for name, q in (("p50", 0.50), ("p99", 0.99), ("p999", 0.999)):
            h, c = pct(hot, q), pct(cold, q)
            print(f"{name:>10} {h:>13.3f} ms {c:>17.3f} ms {c / h:>7.1f}x")
        print(f"{'mean':>10} {statistics.mean(hot):>13.3f} ms {statistics.mean(cold):>17.3f} ms")
        print(f"goal cached p99 <= 1 ms: {'met' if pct(hot, 0.99) <= 1.0 else 'NOT met'}")


if __name__ == "__main__":
    main()
