"""BUILDER throughput: documents/s of ASTRA's builder beside docxtpl on the same content, side by side.

Two equivalent templates are generated with python-docx (same styles, same sections): ASTRA's with
``{{ zone }}`` placeholders and a sidecar giving the kinds, docxtpl's with the Jinja loops it needs
(``{%p for %}`` paragraphs, ``{%tr for %}`` table rows, an ``InlineImage``). docxtpl renders with
``autoescape=True`` (its default is off, which corrupts documents on ``&`` and ``<``), so both
produce safe documents. Each timing covers template bytes in -> .docx bytes out.

Sessions: small = 10 utterances + the sample readings (3 rows) + one photo; large = 2,000
utterances + a 5,000-row, 5-column table + one photo. Goal: ASTRA >= 3x docxtpl's documents/s on
both, and byte-identical ASTRA output across reruns.

    python bench/build.py [--seconds 3] [--large-runs 3]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from astra.builder.engine import build, clear_template_cache  # noqa: E402
from astra.core.data import read_tables  # noqa: E402
from astra.ingest.zones import extract_maps  # noqa: E402

SAMPLES = ROOT / "astra" / "samples"
ZONES = ("summary", "action_items", "notes")
SIDECAR = {"version": 1, "zones": {"measurements": {"kind": "table", "data": "data/*.csv"},
                                   "site_photo": {"kind": "image", "media": "media/*.png"},
                                   "notes": {"kind": "text"}}, "fallback_zone": "notes"}


def _template(jinja: bool) -> bytes:
    import docx

    doc = docx.Document()
    header = doc.sections[0].header.paragraphs[0]
    header.text = "Field inspection report - ref. {{ report_ref }}"
    doc.add_paragraph("{{ title }}", style="Title")
    for zone, style in (("summary", "Normal"), ("action_items", "List Bullet")):
        doc.add_heading(zone.replace("_", " ").capitalize(), level=1)
        _zone_paragraphs(doc, zone, style, jinja)
    doc.add_heading("Measurements", level=1)
    if jinja:
        table = doc.add_table(rows=4, cols=5)
        table.style = doc.styles["Table Grid"]
        for i, cell in enumerate(table.rows[0].cells):
            cell.text = f"{{{{ header[{i}] }}}}"
        table.rows[1].cells[0].text = "{%tr for r in rows %}"
        for i, cell in enumerate(table.rows[2].cells):
            cell.text = f"{{{{ r[{i}] }}}}"
        table.rows[3].cells[0].text = "{%tr endfor %}"
    else:
        doc.add_paragraph("{{ measurements }}")
    doc.add_heading("Site photo", level=1)
    doc.add_paragraph("{{ site_photo }}")
    doc.add_heading("Notes", level=1)
    _zone_paragraphs(doc, "notes", "Normal", jinja)
    out = io.BytesIO()
    doc.save(out)
    return out.getvalue()


def _zone_paragraphs(doc, zone: str, style: str, jinja: bool) -> None:
    if jinja:
        doc.add_paragraph(f"{{%p for u in {zone} %}}")
        doc.add_paragraph("{{ u }}", style=style)
        doc.add_paragraph("{%p endfor %}")
    else:
        doc.add_paragraph(f"{{{{ {zone} }}}}", style=style)


def _session(utterances: int, rows: int) -> tuple[dict[str, list[str]], dict]:
    """Utterance texts per zone (with the characters docxtpl users trip on) and the table."""
    texts = {zone: [] for zone in ZONES}
    for i in range(utterances):
        zone = ZONES[i % 3]
        texts[zone].append(f"Reading {i}: pressure at P-{100 + i % 50} is fine & the valve <V{i % 7}> was checked.")
    if rows <= 3:
        table = read_tables([("data/readings.csv", (SAMPLES / "readings.csv").read_bytes())]).tables[0].to_json()
    else:
        lines = ["sensor,location,pressure_kpa,temperature_c,recorded_at"]
        lines += [f"P-{i:05d},line {i % 40},{400 + (i % 250) / 10},{10 + (i % 30) / 10},2026-11-{1 + i % 28:02d}"
                  for i in range(rows)]
        table = read_tables([("data/readings.csv", "\n".join(lines).encode())]).tables[0].to_json()
    return texts, table


def _intent_output(texts: dict[str, list[str]], table: dict) -> dict:
    utterances, zones = [], []
    for zone in ("title", "report_ref", *ZONES):
        ids = []
        for text in ([f"Inspection {zone}"] if zone in ("title", "report_ref") else texts[zone]):
            utterances.append({"id": f"u{len(utterances)}", "text": text, "speaker": None})
            ids.append(utterances[-1]["id"])
        zones.append({"id": zone, "utterances": ids, "tables": []})
    zones.append({"id": "measurements", "utterances": [], "tables": [table["id"]]})
    return {"locale": "en-GB", "utterances": utterances, "tables": [{**table, "zone": "measurements"}],
            "zones": zones}


def _rate(fn, *, seconds: float, min_runs: int) -> tuple[float, bytes]:
    fn()  # warm up (imports, caches)
    runs, started, last = 0, time.perf_counter(), b""
    while runs < min_runs or time.perf_counter() - started < seconds:
        last = fn()
        runs += 1
    return runs / (time.perf_counter() - started), last


def _measure(astra_template: bytes, jinja_template: bytes, maps, photo_path: Path, utterances: int, rows: int,
             *, seconds: float, runs: int) -> dict:
    from docx.shared import Mm
    from docxtpl import DocxTemplate, InlineImage

    texts, table = _session(utterances, rows)
    intent_output = _intent_output(texts, table)
    media = {"media/site.png": photo_path.read_bytes()}

    def astra() -> bytes:
        return build(astra_template, maps.zone_map, maps.style_map, intent_output, media).docx

    def astra_cold() -> bytes:  # the template read afresh every time, as for a tenant's first session
        clear_template_cache()
        return astra()

    def docxtpl() -> bytes:
        tpl = DocxTemplate(io.BytesIO(jinja_template))
        context = {"title": "Inspection title", "report_ref": "Inspection report_ref", **texts,
                   "header": table["header"],
                   "rows": [[c["text"] if isinstance(c, dict) else c for c in r] for r in table["rows"]],
                   "site_photo": InlineImage(tpl, str(photo_path), width=Mm(60))}
        tpl.render(context, autoescape=True)
        out = io.BytesIO()
        tpl.save(out)
        return out.getvalue()

    astra_rate, first = _rate(astra, seconds=seconds, min_runs=runs)
    cold_rate, _ = _rate(astra_cold, seconds=seconds, min_runs=runs)
    docxtpl_rate, _ = _rate(docxtpl, seconds=seconds, min_runs=runs)
    rerun = astra()
    return {
        "utterances": utterances, "table_rows": rows,
        "astra_docs_per_s": round(astra_rate, 2), "astra_cold_docs_per_s": round(cold_rate, 2),
        "docxtpl_docs_per_s": round(docxtpl_rate, 2), "speedup": round(astra_rate / docxtpl_rate, 2),
        "speedup_cold": round(cold_rate / docxtpl_rate, 2),
        "astra_bytes": len(first), "astra_sha256": hashlib.sha256(first).hexdigest(),
        "byte_identical_rerun": rerun == first,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="time per small-session measurement")
    parser.add_argument("--large-runs", type=int, default=3)
    args = parser.parse_args()

    astra_template, jinja_template = _template(jinja=False), _template(jinja=True)
    maps = extract_maps(astra_template, SIDECAR)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        photo_path = Path(tmp) / "site.png"
        photo_path.write_bytes((SAMPLES / "site.png").read_bytes())
        for name, (utterances, rows) in {"small": (10, 3), "large": (2000, 5000)}.items():
            small = name == "small"
            r = results[name] = _measure(astra_template, jinja_template, maps, photo_path, utterances, rows,
                                         seconds=args.seconds if small else 0.0, runs=3 if small else args.large_runs)
            print(f"{name:5}  ASTRA {r['astra_docs_per_s']:8.2f} docs/s (cold {r['astra_cold_docs_per_s']:.2f})  "
                  f"docxtpl {r['docxtpl_docs_per_s']:.2f} docs/s  x{r['speedup']:.2f} (cold x{r['speedup_cold']:.2f})  "
                  f"rerun identical: {r['byte_identical_rerun']}", flush=True)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
