"""An audit as one self-contained HTML file an auditor can archive: inline CSS, the lineage as inline SVG drawn here,
no script, no external asset; the JSON report inside too (no URL is fetched when it is opened)."""

from __future__ import annotations

import html
import json
from datetime import UTC, datetime

from astra.audit.model import AuditReport, Hop

BOX_W, BOX_H, GAP_Y, GAP_X, PAD = 260, 46, 22, 60, 16
OK, BAD = "#1b7f3b", "#b3261e"


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _column(report: AuditReport, x: int) -> tuple[list[str], int]:
    """The SVG of one report's hops as a column of boxes joined by arrows; (elements, height)."""
    parts = [f'<text x="{x}" y="{PAD + 12}" font-size="13" font-weight="bold">{_e(report.partition)}</text>']
    y0 = PAD + 24
    for i, hop in enumerate(report.hops):
        y = y0 + i * (BOX_H + GAP_Y)
        colour = OK if hop.ok else BAD
        mark = "✓" if hop.ok else "✗"
        sub = hop.subject if hop.ok else "failed: " + ", ".join(c.name for c in hop.failures)
        sub = sub if len(sub) <= 44 else sub[:43] + "…"
        parts.append(
            f'<g><title>{_e(hop.title)}: {_e(hop.subject)}</title>'
            f'<rect x="{x}" y="{y}" width="{BOX_W}" height="{BOX_H}" rx="6" fill="#fff" stroke="{colour}" '
            f'stroke-width="2"/>'
            f'<text x="{x + 10}" y="{y + 19}" font-size="13" fill="{colour}" font-weight="bold">{mark} '
            f'{_e(hop.title)}</text>'
            f'<text x="{x + 10}" y="{y + 36}" font-size="10" fill="#444">{_e(sub)}</text></g>')
        if i:
            ay = y - GAP_Y
            parts.append(f'<line x1="{x + BOX_W // 2}" y1="{ay}" x2="{x + BOX_W // 2}" y2="{y - 4}" stroke="#555" '
                         'stroke-width="1.5" marker-end="url(#arrow)"/>')
    height = y0 + len(report.hops) * (BOX_H + GAP_Y)
    return parts, height


def lineage_svg(report: AuditReport) -> str:
    """The chain drawn top to bottom (document → … → manifest), a V2 clone's parent beside it, linked from the
    clone's `parent version` hop."""
    parts, height = _column(report, PAD)
    width = PAD * 2 + BOX_W
    if report.parent is not None:
        px = PAD + BOX_W + GAP_X
        more, h2 = _column(report.parent, px)
        parts += more
        height, width = max(height, h2), px + BOX_W + PAD
        idx = next((i for i, h in enumerate(report.hops) if h.id == "parent"), 0)
        y = PAD + 24 + idx * (BOX_H + GAP_Y) + BOX_H // 2
        parts.append(f'<line x1="{PAD + BOX_W}" y1="{y}" x2="{px - 4}" y2="{PAD + 24 + BOX_H // 2}" stroke="#555" '
                     'stroke-width="1.5" stroke-dasharray="4 3" marker-end="url(#arrow)"/>')
    return (f'<svg xmlns="http://www.w3.org/2000/svg" role="img" aria-label="lineage" width="{width}" '
            f'height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif">'
            '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" '
            'orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#555"/></marker></defs>'
            + "".join(parts) + "</svg>")


def _hop_rows(hop: Hop) -> str:
    rows = []
    for c in hop.checks or []:
        cls = "ok" if c.ok else "bad"
        mark = "✓" if c.ok else "✗"
        rows.append(f'<tr class="{cls}"><td>{mark}</td><td>{_e(c.name)}</td><td>{_e(c.detail)}</td></tr>')
    if not hop.checks:
        rows.append('<tr class="bad"><td>✗</td><td>verified</td><td>nothing could be checked</td></tr>')
    facts = "".join(f"<dt>{_e(k)}</dt><dd>{_e(json.dumps(v, default=str) if not isinstance(v, str) else v)}</dd>"
                    for k, v in hop.facts.items())
    return (f'<section><h3 class="{"ok" if hop.ok else "bad"}">{"✓" if hop.ok else "✗"} {_e(hop.title)}</h3>'
            f'<p class="subject">{_e(hop.subject)}</p><table>{"".join(rows)}</table>'
            f'{f"<dl>{facts}</dl>" if facts else ""}</section>')


def _report_body(report: AuditReport) -> str:
    body = f"<h2>{_e(report.partition)} — {_e(report.asset)}</h2>" + "".join(_hop_rows(h) for h in report.hops)
    if report.parent is not None:
        body += f'<div class="parent">{_report_body(report.parent)}</div>'
    return body


def render_html(report: AuditReport, generated_at: datetime | None = None) -> str:
    when = (generated_at or datetime.now(UTC)).isoformat(timespec="seconds")
    verdict = "every hop verified" if report.ok else f"{len(report.failure_lines())} check(s) failed"
    failures = "".join(f"<li>{_e(line)}</li>" for line in report.failure_lines())
    as_json = json.dumps(report.to_dict(), sort_keys=True, indent=1, default=str)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>ASTRA audit {_e(report.partition)}</title>
<style>
body{{font-family:sans-serif;margin:2em;color:#222;max-width:1100px}}
h1 .ok,h3.ok,.ok td:first-child{{color:{OK}}} h1 .bad,h3.bad,.bad td:first-child{{color:{BAD}}}
table{{border-collapse:collapse;width:100%;font-size:13px}} td{{border-bottom:1px solid #ddd;padding:3px 6px;
vertical-align:top}} td:nth-child(2){{white-space:nowrap;font-weight:bold}} tr.bad td{{background:#fdecea}}
.subject{{font-family:monospace;font-size:12px;color:#555;word-break:break-all}}
dl{{display:grid;grid-template-columns:max-content auto;gap:2px 12px;font-size:12px}}
dt{{color:#555}} dd{{margin:0;font-family:monospace;word-break:break-all}}
.parent{{border-left:4px solid #ccc;padding-left:1em;margin-top:2em}}
</style></head><body>
<h1>ASTRA audit: <span class="{"ok" if report.ok else "bad"}">{_e(verdict)}</span></h1>
<p>Asked: <code>{_e(report.target)}</code> · document of <code>{_e(report.partition)}</code>
({_e(report.asset)}) · generated {_e(when)}</p>
{f"<h2>Failed</h2><ul>{failures}</ul>" if failures else ""}
<h2>Lineage</h2>
{lineage_svg(report)}
{_report_body(report)}
<details><summary>The report as JSON</summary><pre id="audit-json">{_e(as_json)}</pre></details>
</body></html>
"""
