"""The intent engine on CLINC150: latency, size and memory as served, full head retrain, update from corrections.

Loads a saved model (default .astra/models/base, from `astra core train`), then:
  - classifies val + oos_val one utterance at a time on ONE intra-op thread: in-scope accuracy, OOS recall, p50/p99
    (wall and thread CPU);
  - reports the artifact's size on disk and the process RSS before loading, after loading and after serving, and what
    one more model on the same encoder adds (the same artifact loaded again: a tenant's model over the shared encoder)
    — all measured before anything imports torch (serving does not; the bench checks it);
  - retrains the head from scratch on train + oos_train (embeddings cached by the base model: the "full retrain" of
    a tenant whose base encoder exists) and times it (torch's L-BFGS is imported here: training only);
  - updates it with N corrections (val rows, so unseen texts: they must be encoded) and times it.

    python bench/intent.py [--model DIR] [--corrections 300]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from astra.core.intent import store  # noqa: E402
from astra.core.intent.data import DEFAULT_DATASET, evaluation_examples, training_examples  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", type=Path, default=store.tenant_dir(store.BASE_TENANT))
    parser.add_argument("--corrections", type=int, default=300)
    args = parser.parse_args()
    from astra.core.intent.metrics import score
    from astra.core.intent.model import IntentModel

    def rss() -> int:
        return psutil.Process().memory_info().rss

    rss_before = rss()  # numpy, onnxruntime, tokenizers imported: the model alone from here
    path = store.resolve_model(args.model)
    start = time.perf_counter()
    model = IntentModel.load(path, threads=1)
    load_seconds = time.perf_counter() - start
    rss_loaded = rss()
    held_out = evaluation_examples(DEFAULT_DATASET)

    model.classify([held_out[0].text])
    predicted, elapsed, cpu = [], [], []
    for example in held_out:
        wall, thread = time.perf_counter(), time.thread_time()
        predicted.append(model.classify([example.text])[0].intent)
        elapsed.append((time.perf_counter() - wall) * 1000)
        cpu.append((time.thread_time() - thread) * 1000)
    rss_serving = rss()
    second = IntentModel.load(path, threads=1)
    second.classify([held_out[0].text])
    assert second.encoder is model.encoder
    rss_second_model = rss() - rss_serving
    torch_for_serving = "torch" in sys.modules
    figures = score(predicted, [e.intent for e in held_out])

    start = time.perf_counter()
    retrained = IntentModel.train(training_examples(), model, threshold=model.threshold)
    retrain_seconds = time.perf_counter() - start

    rng = np.random.RandomState(0)
    corrections = [held_out[i] for i in rng.choice(len(held_out), args.corrections, replace=False)]
    start = time.perf_counter()
    updated = retrained.update(corrections)
    update_seconds = time.perf_counter() - start
    assert set(retrained.head.labels) <= set(updated.head.labels)

    size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    print(json.dumps({
        "model_version": model.version, "encoder": model.encoder.meta, **figures,
        "p50_ms": round(float(np.percentile(elapsed, 50)), 2), "p99_ms": round(float(np.percentile(elapsed, 99)), 2),
        "cpu_p50_ms": round(float(np.percentile(cpu, 50)), 2), "cpu_p99_ms": round(float(np.percentile(cpu, 99)), 2),
        "head_retrain_seconds": round(retrain_seconds, 2), "update_seconds": round(update_seconds, 2),
        "corrections": args.corrections, "load_seconds": round(load_seconds, 2),
        "disk_mb": round(size / 1e6, 1), "rss_model_mb": round((rss_loaded - rss_before) / 1e6, 1),
        "rss_serving_mb": round(rss_serving / 1e6, 1), "rss_another_model_mb": round(rss_second_model / 1e6, 1),
        "torch_imported_for_serving": torch_for_serving,
        "rss_after_training_mb": round(rss() / 1e6, 1),
        "load_avg_1m": round(psutil.getloadavg()[0], 2),
    }, indent=1))


if __name__ == "__main__":
    main()
