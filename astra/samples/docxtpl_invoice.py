"""A template a tenant already has, written for docxtpl: an invoice (issue 11's sample, shown by ``make demo``).

It mixes what real docxtpl templates write: a header with a filter, a footer with ``{% if %}/{% else %}``, a
dotted name split across runs, ``{{r }}`` rich text, a ``{%tr for %}`` row loop with ``format``, ``default`` and
``{% cellbg %}``, a ``sum`` over the rows, a ``{%p if %}`` around a ``{%p for %}`` bullet list, and ``{{p }}``
paragraphs. :func:`invoice_context` is a JSON context for it holding ``&``, ``<`` and quotes.

A fixture builder, not engine code (python-docx writes it, as a tenant's Word would).
``python -m astra.samples.docxtpl_invoice DIR`` writes ``invoice.docx`` and ``invoice.json`` into DIR.
"""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import docx


def build_invoice_template() -> bytes:
    doc = docx.Document()
    doc.sections[0].header.paragraphs[0].text = "{{ company|upper }} - invoice {{ ref }}"
    doc.sections[0].footer.paragraphs[0].text = "{% if paid %}Paid, thank you.{% else %}Due within 30 days.{% endif %}"
    doc.add_paragraph("Invoice {{ ref }}", style="Title")
    add_runs(doc.add_paragraph(), "Bill to: ", ("{{ client.na", {"bold": True}), "me }}", ", {{ client.city }}")
    add_runs(doc.add_paragraph(), "Contact: ", ("{{r contact }}", {"italic": True}))
    rows = [["Description", "Qty", "Price", "Status"],
            ["{%tr for item in items %}", "", "", ""],
            ["{{ item.desc }}", "{{ item.qty }}", '{{ "%.2f"|format(item.price) }}',
             "{% cellbg item.colour %}{{ item.status|default('-') }}"],
            ["{%tr endfor %}", "", "", ""],
            ["Total", "{{ items|sum(attribute='qty') }}", '{{ "%.2f"|format(total) }}', ""]]
    table = doc.add_table(rows=len(rows), cols=4)
    table.style = doc.styles["Table Grid"]
    for r, cells in enumerate(rows):
        for c, text in enumerate(cells):
            table.rows[r].cells[c].text = text
    doc.add_paragraph("{%p if notes %}")
    doc.add_paragraph("Notes", style="Heading 1")
    doc.add_paragraph("{%p for n in notes %}")
    doc.add_paragraph("{{ n }}", style="List Bullet")
    doc.add_paragraph("{%p endfor %}")
    doc.add_paragraph("{%p endif %}")
    doc.add_paragraph("{{p terms }}")
    out = io.BytesIO()
    doc.save(out)
    return out.getvalue()


def invoice_context() -> dict:
    return {
        "company": "Acme & Co", "ref": "INV-2024-042", "paid": False, "total": 1234.5,
        "client": {"name": "Smith & Sons <Leeds>", "city": "Leeds"}, "contact": "Ada Lovelace, +44 113 496 0000",
        "items": [{"desc": "Pump inspection", "qty": 1, "price": 450.0, "status": "done", "colour": "C6EFCE"},
                  {"desc": "Seal kit", "qty": 3, "price": 28.5, "colour": "FFEB9C"},
                  {"desc": "Call-out \"urgent\"", "qty": 2, "price": 349.0, "status": "billed", "colour": "FFC7CE"}],
        "notes": ["Valve V3 replaced.", "Next visit in May."],
        "terms": "Payment by bank transfer.\nLate payment: 8% a year over base rate."}


def add_runs(paragraph, *pieces):
    """Write each piece as its own run: a str, or (text, {"bold": True, "italic": True, "underline": True})."""
    for piece in pieces:
        text, fmt = (piece, {}) if isinstance(piece, str) else piece
        run = paragraph.add_run(text)
        for attribute, value in fmt.items():
            setattr(run, attribute, value)
    return paragraph


if __name__ == "__main__":
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else ".")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "invoice.docx").write_bytes(build_invoice_template())
    (folder / "invoice.json").write_text(json.dumps(invoice_context(), indent=2, ensure_ascii=False))
