"""INGEST atomization speed vs python-docx, over the real .docx corpus.

For every corpus document that passes the audit: ASTRA's atomize + reassemble, and python-docx's
`Document(path).save(buf)` (its load + save round trip), each timed over the same bytes. Prints
MB/s side by side and how many documents each gives back part-for-part identical (python-docx
rewrites XML, so it is not lossless). Corpus: ../shared/datasets/docx-corpus (python-docx and
mammoth test files; MIT / BSD-2-Clause), read in place.

    python bench/atomize.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

import docx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from astra.ingest.atoms import atomize, part_digests, reassemble  # noqa: E402
from astra.ingest.audit import audit  # noqa: E402

CORPUS = ROOT.parent / "shared" / "datasets" / "docx-corpus"


def astra_roundtrip(data: bytes) -> bytes:
    package = atomize(data)
    return reassemble(package.manifest, package.atoms.__getitem__)


def python_docx_roundtrip(data: bytes) -> bytes:
    buf = io.BytesIO()
    docx.Document(io.BytesIO(data)).save(buf)
    return buf.getvalue()


def timed(fn, data: bytes, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn(data)
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5, help="best of N per document")
    args = ap.parse_args()
    files = sorted(CORPUS.rglob("*.docx"))
    if not files:
        sys.exit(f"no corpus at {CORPUS}")
    total = 0
    t_astra = t_pydocx = 0.0
    lossless = {"astra": 0, "python-docx": 0}
    pydocx_failed = []
    measured = 0
    for path in files:
        data = path.read_bytes()
        if not audit(data, path.name).passed:
            continue
        try:
            pd_out = python_docx_roundtrip(data)
        except Exception as exc:  # noqa: BLE001 — a peer that cannot open a file is reported, not fatal
            pydocx_failed.append(f"{path.name}: {type(exc).__name__}")
            continue
        measured += 1
        total += len(data)
        t_astra += timed(astra_roundtrip, data, args.repeat)
        t_pydocx += timed(python_docx_roundtrip, data, args.repeat)
        original = part_digests(data)
        lossless["astra"] += part_digests(astra_roundtrip(data)) == original
        lossless["python-docx"] += part_digests(pd_out) == original
    mb = total / 1e6
    print(f"corpus: {measured} documents that pass the audit and python-docx opens, {mb:.2f} MB, best of {args.repeat}")
    print(f"{'':<32} {'ASTRA atomize+reassemble':>26} {'python-docx load+save':>23}")
    print(f"{'throughput':<32} {mb / t_astra:>21.1f} MB/s {mb / t_pydocx:>18.1f} MB/s")
    print(f"{'total time':<32} {t_astra * 1000:>23.0f} ms {t_pydocx * 1000:>20.0f} ms")
    print(
        f"{'documents back part-identical':<32} {lossless['astra']:>20}/{measured}"
        f" {lossless['python-docx']:>17}/{measured}"
    )
    print(f"speed ratio ASTRA / python-docx: {t_pydocx / t_astra:.2f}x")
    if pydocx_failed:
        print(f"python-docx could not open {len(pydocx_failed)}: {', '.join(pydocx_failed)}")


if __name__ == "__main__":
    main()
