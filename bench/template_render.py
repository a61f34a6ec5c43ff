"""docxtpl templates rendered by docxtpl and by ASTRA (astra.template_language), side by side: ms per render.

The same template bytes and JSON context go to both engines (tests/template_language/docxtpl_fixtures.py
builds them; docxtpl gets the RichText/RichTextParagraph objects it needs for ``{{r}}``/``{{p}}``). docxtpl
renders with ``autoescape=True`` (its default is off, which corrupts documents on ``&`` and ``<``), so both
produce safe documents. Each timing covers template bytes in -> .docx bytes out: docxtpl loads, renders and
saves; ASTRA is timed twice, reading the template every time (``read+render``, as docxtpl) and rendering a
template read once (``render``, as the platform does with a template it has analysed).

Cases: small = the invoice fixture (header, footer, a 3-row table loop, a paragraph loop, rich text);
table500 = a 3-column ``{%tr for %}`` table loop over 500 rows.

    python bench/template_render.py [--runs 50]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from astra.template_language import JinjaTemplate  # noqa: E402
from tests.template_language.docxtpl_fixtures import FIXTURES, render_docxtpl  # noqa: E402


def _cases() -> dict[str, tuple[bytes, dict]]:
    small = FIXTURES["invoice"]()
    table, _ = FIXTURES["table_row_for"]()
    rows = [{"desc": f"Item {i} & <part {i % 17}>", "qty": i % 9 + 1, "price": f"{(i * 7.31) % 1000:.2f}"}
            for i in range(500)]
    return {"small": small, "table500": (table, {"items": rows, "total": "123,456.00"})}


def _timings_ms(fn, runs: int) -> list[float]:
    fn()  # warm up (imports, caches)
    timings = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        timings.append((time.perf_counter() - started) * 1000)
    return timings


def _p50_p95(timings: list[float]) -> tuple[float, float]:
    return statistics.median(timings), statistics.quantiles(timings, n=20, method="inclusive")[18]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=50, help="renders per engine and case")
    args = parser.parse_args()

    results = {}
    print(f"{'case':9} {'docxtpl p50/p95 ms':>20} {'ASTRA read+render':>20} {'ASTRA render':>16} {'speedup p50':>12}")
    for name, (template, context) in _cases().items():
        analysed = JinjaTemplate.read(template)
        engines = {
            "docxtpl": lambda t=template, c=context: render_docxtpl(t, c, autoescape=True),
            "astra_read_render": lambda t=template, c=context: JinjaTemplate.read(t).render(c),
            "astra_render": lambda a=analysed, c=context: a.render(c),
        }
        r = results[name] = {engine: dict(zip(("p50_ms", "p95_ms"), (round(v, 2) for v in _p50_p95(
            _timings_ms(fn, args.runs))), strict=True)) for engine, fn in engines.items()}
        r["speedup_read_render_p50"] = round(r["docxtpl"]["p50_ms"] / r["astra_read_render"]["p50_ms"], 2)
        cells = [f"{r[e]['p50_ms']:8.2f} /{r[e]['p95_ms']:8.2f}" for e in engines]
        print(f"{name:9} {cells[0]:>20} {cells[1]:>20} {cells[2]:>16} {r['speedup_read_render_p50']:>11.2f}x",
              flush=True)
    print(json.dumps({"runs": args.runs, **results}, indent=2))


if __name__ == "__main__":
    main()
