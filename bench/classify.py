"""IntentService under load: Classify latency beside a bare grpc.health Check on the same server, in one run.

Uses the stack that is up (else starts the embedded one and stops it after), so the server measured is the stack's
`astra serve core`. Publishes a saved model (default: the local base model, `.astra/models/base/LATEST`) for a
tenant of its own, so the server loads it as it would any tenant's, then for each client count runs N client
processes for T seconds of Classify (one utterance per call, CLINC150 val texts in turn), then N for T seconds of
health Check. Every client connects and warms up before a barrier; only calls started after it are timed.

    python bench/classify.py [--clients 1,4] [--seconds 10] [--batch 1] [--model DIR] [--json]

Latency is per call as the client sees it (channel, auth interceptor, serialisation, queueing in the server's
thread pool, the model). The clients run on the same 2-core machine as the server: with N > 2 they compete with it
for the CPU, which is what the p99 then shows.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CALLS = ("classify", "health")


def client(kind: str, settings, tenant: str, texts: list[str], batch: int, barrier, seconds: float,
           results) -> None:
    """One client process: warm up, wait for the others, then call in a loop for `seconds`."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from astra.core.core_client import IntentClient
    from astra.grpc_auth import TlsFiles, client_channel

    if kind == "classify":
        intents = IntentClient.from_settings(settings, deadline_s=10)
        chunks = [texts[k:k + batch] for k in range(0, len(texts) - batch + 1, batch)]

        def call(k: int) -> None:
            intents.classify(tenant, chunks[k % len(chunks)])
    else:
        tls = TlsFiles(settings.grpc_tls_cert, settings.grpc_tls_key, settings.grpc_tls_ca)
        health = health_pb2_grpc.HealthStub(client_channel(settings.core_target, tls, None))
        request = health_pb2.HealthCheckRequest()

        def call(k: int) -> None:
            health.Check(request, timeout=10)

    for k in range(20):
        call(k)
    barrier.wait()
    stop = time.time() + seconds
    latencies, errors, k = [], 0, 0
    while time.time() < stop:
        t0 = time.perf_counter()
        try:
            call(k)
            latencies.append(time.perf_counter() - t0)
        except grpc.RpcError:
            errors += 1
        k += 1
    results.put((latencies, errors))


def run(kind: str, clients: int, seconds: float, settings, tenant: str, texts: list[str], batch: int) -> dict:
    import numpy as np

    ctx = multiprocessing.get_context("spawn")  # gRPC does not survive fork
    barrier, results = ctx.Barrier(clients + 1), ctx.Queue()
    procs = [ctx.Process(target=client, args=(kind, settings, tenant, texts[n::clients], batch, barrier, seconds,
                                              results)) for n in range(clients)]
    for p in procs:
        p.start()
    barrier.wait(timeout=120)
    gathered = [results.get(timeout=seconds + 120) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    failed = [p.exitcode for p in procs if p.exitcode != 0]
    if failed:
        raise RuntimeError(f"{len(failed)} {kind} client process(es) failed (exit codes {failed})")
    ms = np.array([t for latencies, _ in gathered for t in latencies]) * 1000
    return {"call": kind, "clients": clients, "batch": batch if kind == "classify" else None, "calls": int(ms.size),
            "errors": sum(e for _, e in gathered), "per_s": round(ms.size / seconds, 1),
            "p50_ms": round(float(np.percentile(ms, 50)), 2), "p99_ms": round(float(np.percentile(ms, 99)), 2),
            "max_ms": round(float(ms.max()), 2)}


def publish(model_dir: Path, tenant: str, settings) -> str:
    """Publish the model for `tenant` and announce it; its model version."""
    import redis

    from astra import s3 as s3_lib
    from astra.core.model_store import ModelStore, drain_outbox
    from astra.db.engine import make_engine
    from astra.stack.stack import state_dir

    engine = make_engine(settings.require("database_url"))
    store = ModelStore(engine, s3_lib.client(settings), settings.assets_bucket, state_dir() / "model-cache")
    record = store.publish(tenant, model_dir)
    drain_outbox(engine, redis.Redis.from_url(settings.require("redis_url")), settings.redis_prefix)
    return record.model_version


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", default="1,4", help="client process counts, comma-separated (default 1,4)")
    parser.add_argument("--seconds", type=float, default=10.0, help="load per row (default 10)")
    parser.add_argument("--batch", type=int, default=1, help="utterances per Classify call (default 1)")
    parser.add_argument("--model", type=Path, help="saved model or tenant directory (default .astra/models/base)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    counts = [int(c) for c in args.clients.split(",")]

    from astra.core.intent.data import EVAL_SPLITS, read_dataset, split_pair
    from astra.core.intent.store import BASE_TENANT, resolve_model, tenant_dir
    from astra.settings import Settings
    from astra.stack.stack import running_stack

    try:
        model_dir = resolve_model(args.model or tenant_dir(BASE_TENANT))
    except FileNotFoundError as exc:
        print(f"bench/classify.py: {exc}", file=sys.stderr)
        return 2
    texts = [e.text for e in split_pair(read_dataset(Path(Settings().intent_catalog).parent), EVAL_SPLITS)]
    tenant = f"bench-{uuid.uuid4().hex[:6]}"
    say = (lambda m: print(m, file=sys.stderr)) if args.json else print
    with running_stack(say=lambda m: say(f"stack: {m}")):
        settings = Settings.from_env()
        target = settings.require("core_target")
        version = publish(model_dir, tenant, settings)
        say(f"model {version} ({model_dir}) published for {tenant}; IntentService at {target}")
        rows = []
        for n in counts:
            for kind in CALLS:
                rows.append(run(kind, n, args.seconds, settings, tenant, texts, args.batch))
                say(f"  {kind} x{n}: p50 {rows[-1]['p50_ms']} ms, p99 {rows[-1]['p99_ms']} ms")
    if args.json:
        print(json.dumps({"target": target, "model_version": version, "seconds": args.seconds, "rows": rows}))
        return 0
    print(f"\n{'call':<16} {'clients':>7} {'calls':>7} {'calls/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} "
          f"{'errors':>6}")
    for r in rows:
        label = f"{r['call']}" + (f" ({r['batch']} utt)" if r["batch"] else "")
        print(f"{label:<16} {r['clients']:>7} {r['calls']:>7} {r['per_s']:>8} {r['p50_ms']:>8} {r['p99_ms']:>8} "
              f"{r['max_ms']:>8} {r['errors']:>6}")
    print("\nclassify - health = the model's share of a call (same server, channel and auth)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
