"""docxtpl templates built in code, one per construct docxtpl documents, and the tools to compare renders.

Every fixture is a function returning ``(template bytes, context)``: a .docx made with python-docx (the
runs written one by one where the split matters) and a plain JSON context. :data:`FIXTURES` lists them
by name. The reference for each construct is docxtpl's README/docs and its ``template.py`` (patch_xml).

* :func:`render_docxtpl` renders a fixture with docxtpl itself. docxtpl needs objects where ASTRA takes
  plain values: a top-level name shown with ``{{r X}}`` gets ``RichText(X)`` (one run, no properties of
  its own), one shown with ``{{p X}}`` gets a ``RichTextParagraph`` with one ``RichText`` paragraph per
  line of the string (ASTRA's rule for a string in ``{{p}}``). Plain strings are left alone: docxtpl
  turns ``\\n`` and ``\\t`` in rendered text into ``w:br`` / ``w:tab`` itself (resolve_listing).
* :func:`document_text` is the text both renders are compared on: body, headers, footers and
  footnotes in document order, table cells with their position and the cell properties docxtpl's
  merge/colour tags write (gridSpan, vMerge, shading fill). No whitespace is collapsed: both engines
  write text as ``w:t``, and a difference in spaces is a difference a reader sees.
"""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Callable

import docx
from docx.opc.constants import RELATIONSHIP_TYPE as RT
from docx.opc.packuri import PackURI
from docx.opc.part import Part
from lxml import etree

from astra.samples.docxtpl_invoice import add_runs as _runs
from astra.samples.docxtpl_invoice import build_invoice_template, invoice_context

W = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"
R_NS = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
MC = "http://schemas.openxmlformats.org/markup-compatibility/2006"
CT_FOOTNOTES = "application/vnd.openxmlformats-officedocument.wordprocessingml.footnotes+xml"

Fixture = tuple[bytes, dict]


# --- building -------------------------------------------------------------------------------------

def _save(document) -> bytes:
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def _table(document, rows: list[list[str]]):
    """A "Table Grid" table holding ``rows`` (each cell one run)."""
    table = document.add_table(rows=len(rows), cols=max(len(r) for r in rows))
    table.style = document.styles["Table Grid"]
    for r, cells in enumerate(rows):
        for c, text in enumerate(cells):
            table.rows[r].cells[c].text = text
    return table


def expression() -> Fixture:
    doc = docx.Document()
    doc.add_paragraph("Dear {{ name }},")
    doc.add_paragraph("You ordered {{ qty }} items at {{ price }} each: {{ qty * price }} in all.")
    doc.add_paragraph('{{ "literal" }} and {{ 7 // 2 }} and {{ name ~ "!" }}')
    return _save(doc), {"name": "Ada Lovelace", "qty": 3, "price": 12.5}


def dotted_and_indexed() -> Fixture:
    doc = docx.Document()
    doc.add_paragraph("{{ client.name }} lives at {{ client.address.street }}, {{ client['city'] }}.")
    doc.add_paragraph("First tag: {{ tags[0] }}; last tag: {{ tags[-1] }}; second line: {{ client.lines[1] }}.")
    return _save(doc), {"client": {"name": "Smith & Sons", "city": "Leeds", "lines": ["a", "b"],
                                   "address": {"street": "1 Mill Lane"}},
                        "tags": ["red", "green", "blue"]}


def filters() -> Fixture:
    doc = docx.Document()
    doc.add_paragraph('Note: {{ missing|default("none given") }} / {{ empty|default("n/a", true) }}')
    doc.add_paragraph("{{ name|upper }} {{ name|lower }} {{ name|title }} {{ name|capitalize }}")
    doc.add_paragraph('{{ tags|join(", ") }} ({{ tags|length }} tags, first {{ tags|first }}, last {{ tags|last }})')
    doc.add_paragraph('{{ price|round(1) }} {{ price|round(0, "floor") }} {{ "%.2f"|format(price) }} '
                      '{{ "%d items"|format(count) }}')
    doc.add_paragraph('{{ name|replace("a", "4") }} {{ count|int + 1 }} {{ tags|sort|join("/") }} '
                      '{{ name|trim|truncate(9, true, "...") }}')
    return _save(doc), {"name": "ada lovelace", "empty": "", "tags": ["red", "green", "blue"],
                        "price": 3.14159, "count": 41}


def inline_if_for() -> Fixture:
    doc = docx.Document()
    doc.add_paragraph("Status: {% if paid %}paid{% else %}due{% endif %}. "
                      "{% if amount > 100 %}Large order.{% endif %}")
    doc.add_paragraph("Items: {% for t in tags %}{{ t }}{% if not loop.last %}, {% endif %}{% endfor %}.")
    doc.add_paragraph("{% for i in range(3) %}[{{ loop.index }}]{% endfor %}")
    return _save(doc), {"paid": False, "amount": 250, "tags": ["one", "two", "three"]}


def paragraph_if() -> Fixture:
    doc = docx.Document()
    doc.add_paragraph("Before")
    doc.add_paragraph("{%p if show %}")
    doc.add_paragraph("Shown when show is true.")
    doc.add_paragraph("Second shown paragraph.", style="List Bullet")
    doc.add_paragraph("{%p endif %}")
    doc.add_paragraph("{%p if hide %}")
    doc.add_paragraph("Hidden paragraph.")
    doc.add_paragraph("{%p else %}")
    doc.add_paragraph("The else branch.")
    doc.add_paragraph("{%p endif %}")
    doc.add_paragraph("After")
    return _save(doc), {"show": True, "hide": False}


def paragraph_for() -> Fixture:
    doc = docx.Document()
    doc.add_paragraph("Action items:")
    doc.add_paragraph("{%p for item in items %}")
    doc.add_paragraph("{{ loop.index }}. {{ item }}", style="List Bullet")
    doc.add_paragraph("{%p endfor %}")
    doc.add_paragraph("{%p for item in nothing %}")
    doc.add_paragraph("never shown {{ item }}")
    doc.add_paragraph("{%p endfor %}")
    doc.add_paragraph("End of list.")
    return _save(doc), {"items": ["Call the client", "Send the quote", "Book the site visit"], "nothing": []}


def table_row_for() -> Fixture:
    doc = docx.Document()
    doc.add_paragraph("Invoice")
    _table(doc, [["Description", "Qty", "Price"],
                 ["{%tr for item in items %}", "", ""],
                 ["{{ item.desc }}", "{{ item.qty }}", "{{ item.price }}"],
                 ["{%tr endfor %}", "", ""],
                 ["Total", "", "{{ total }}"]])
    return _save(doc), {"items": [{"desc": "Python interpreters", "qty": 2, "price": "FREE"},
                                  {"desc": "Django projects", "qty": 5403, "price": "FREE"},
                                  {"desc": "Guido", "qty": 1, "price": "100,000,000.00"}],
                        "total": "100,000,000.00"}


def table_column_for() -> Fixture:
    doc = docx.Document()
    _table(doc, [["Label", "{%tc for col in col_labels %}", "{{ col }}", "{%tc endfor %}"],
                 ["{%tr for item in rows %}", "", "", ""],
                 ["{{ item.label }}", "{%tc for v in item.cols %}", "{{ v }}", "{%tc endfor %}"],
                 ["{%tr endfor %}", "", "", ""]])
    return _save(doc), {"col_labels": ["fruit", "vegetable", "stone"],
                        "rows": [{"label": "yellow", "cols": ["banana", "capsicum", "pyrite"]},
                                 {"label": "red", "cols": ["apple", "tomato", "cinnabar"]}]}


def run_if() -> Fixture:
    doc = docx.Document()
    _runs(doc.add_paragraph(), "Customer {{ name }}", "{%r if vip %}", (" (VIP)", {"bold": True}),
          "{%r endif %}", "{%r if banned %}", " (banned)", "{%r endif %}", ".")
    return _save(doc), {"name": "Ada", "vip": True, "banned": False}


def rich_run() -> Fixture:
    doc = docx.Document()
    _runs(doc.add_paragraph(), "Note: ", ("{{r note }}", {"bold": True}), " (end)")
    _runs(doc.add_paragraph(), ("{{r multi }}", {"italic": True}))
    return _save(doc), {"note": "check the valve", "multi": "first line\nsecond\tline"}


def rich_paragraph() -> Fixture:
    doc = docx.Document()
    doc.add_paragraph("Summary:")
    doc.add_paragraph("{{p summary }}", style="List Bullet")
    doc.add_paragraph("Done.")
    return _save(doc), {"summary": "The pump was inspected.\nThe seal was replaced.\nNo leak remains."}


def whitespace_control() -> Fixture:
    """docxtpl's documented example: tags alone on their lines, merged with the lines around them."""
    doc = docx.Document()
    for line in ("My house is located", "{%- if living_in_town -%}", " in urban area", "{%- else -%}",
                 " in countryside", "{%- endif -%}", " and I love it."):
        doc.add_paragraph(line)
    doc.add_paragraph("Next paragraph.")
    return _save(doc), {"living_in_town": True}


def comments() -> Fixture:
    doc = docx.Document()
    doc.add_paragraph("Visible{# an inline comment #} text.")
    doc.add_paragraph("{#p a paragraph comment: this paragraph goes #}")
    doc.add_paragraph("Kept paragraph.")
    _table(doc, [["A", "B"], ["{#tr a row comment #}", ""], ["{{ a }}", "{{ b }}"]])
    return _save(doc), {"a": "alpha", "b": "beta"}


def nested_loops() -> Fixture:
    doc = docx.Document()
    doc.add_paragraph("{%p for g in groups %}")
    doc.add_paragraph("Group {{ g.name }}:", style="Heading 2")
    doc.add_paragraph("{%p for m in g.members %}")
    doc.add_paragraph("{{ g.name }}.{{ loop.index }} {{ m }}", style="List Bullet")
    doc.add_paragraph("{%p endfor %}")
    doc.add_paragraph("{%p endfor %}")
    doc.add_paragraph("{% for row in grid %}[{% for v in row %}{{ v }}{% if not loop.last %},{% endif %}"
                      "{% endfor %}]{% endfor %}")
    _table(doc, [["Team", "Members"],
                 ["{%tr for g in groups %}", ""],
                 ["{{ g.name }}", "{% for m in g.members %}{{ m }}{% if not loop.last %}; {% endif %}{% endfor %}"],
                 ["{%tr endfor %}", ""]])
    return _save(doc), {"groups": [{"name": "A", "members": ["Ann", "Al"]}, {"name": "B", "members": ["Bo"]}],
                        "grid": [[1, 2], [3, 4, 5]]}


def split_runs() -> Fixture:
    """Tags as Word leaves them after editing: split across runs with different formatting."""
    doc = docx.Document()
    _runs(doc.add_paragraph(), "Hello ", ("{{ na", {"bold": True}), ("me }}", {"italic": True}), "!")
    _runs(doc.add_paragraph(), "{", "{ city }}, ", "{{ country }", "}.")
    _runs(doc.add_paragraph(), "{", "% if ok %}yes{% endif %", "}", " / ", "{%", " if not ok %}no{% endif %}")
    _runs(doc.add_paragraph(), ("{{ gr", {"underline": True}), "eeting|up", ("per }}", {"bold": True}))
    return _save(doc), {"name": "Ada", "city": "Leeds", "country": "UK", "ok": True, "greeting": "hi"}


def headers_footers() -> Fixture:
    doc = docx.Document()
    section = doc.sections[0]
    section.header.paragraphs[0].text = "Ref {{ ref }} - {{ company|upper }}"
    section.footer.paragraphs[0].text = "{% if confidential %}Confidential{% endif %} {{ company }}"
    doc.add_paragraph("Body for {{ company }}.")
    return _save(doc), {"ref": "INV-042", "company": "Acme Ltd", "confidential": True}


def footnotes() -> Fixture:
    """python-docx has no footnote API: the footnotes part and the reference run are written here. The body's
    ``{{ claim }}`` alone would read as ASTRA's zone grammar: the footnote's dotted names make it docxtpl's."""
    doc = docx.Document()
    paragraph = _runs(doc.add_paragraph(), "The claim {{ claim }}")
    paragraph._p.append(etree.fromstring(
        f'<w:r xmlns:w="{W}"><w:rPr><w:vertAlign w:val="superscript"/></w:rPr><w:footnoteReference w:id="1"/></w:r>'))
    _runs(paragraph, ".")
    footnotes_xml = (
        f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n<w:footnotes xmlns:w="{W}">'
        '<w:footnote w:type="separator" w:id="-1"><w:p><w:r><w:separator/></w:r></w:p></w:footnote>'
        '<w:footnote w:type="continuationSeparator" w:id="0"><w:p><w:r><w:continuationSeparator/></w:r></w:p>'
        '</w:footnote><w:footnote w:id="1"><w:p><w:r><w:rPr><w:vertAlign w:val="superscript"/></w:rPr>'
        '<w:footnoteRef/></w:r><w:r><w:t xml:space="preserve"> Source: {{ source.title }} ({{ source.year }})</w:t>'
        '</w:r></w:p></w:footnote></w:footnotes>')
    part = Part(PackURI("/word/footnotes.xml"), CT_FOOTNOTES, footnotes_xml.encode(), doc.part.package)
    doc.part.relate_to(part, RT.FOOTNOTES)
    return _save(doc), {"claim": "holds", "source": {"title": "the field survey", "year": 2024}}


def table_cells() -> Fixture:
    doc = docx.Document()
    _table(doc, [["Name", "{{ name }}"],
                 ["Paid", "{% if paid %}yes{% else %}no{% endif %}"],
                 ["Tags", '{{ tags|join(", ") }}']])
    return _save(doc), {"name": "Ada", "paid": True, "tags": ["x", "y"]}


def vertical_merge() -> Fixture:
    doc = docx.Document()
    _table(doc, [["Category", "Description", "Qty"],
                 ["{%tr for i in items %}", "", ""],
                 ["{% vm %}{{ category }}", "{{ i.desc }}", "{{ i.qty }}"],
                 ["{%tr endfor %}", "", ""]])
    return _save(doc), {"category": "Book", "items": [{"desc": "Python", "qty": 2}, {"desc": "Django", "qty": 5},
                                                      {"desc": "Guido", "qty": 1}]}


def horizontal_merge() -> Fixture:
    doc = docx.Document()
    _table(doc, [["First", "{%tc for x in subs %}", "{% hm %}Merged header", "{%tc endfor %}"],
                 ["", "{%tc for x in subs %}", "Sub {{ x }}", "{%tc endfor %}"]])
    return _save(doc), {"subs": [1, 2, 3]}


def cell_background() -> Fixture:
    doc = docx.Document()
    _table(doc, [["Date", "Type"],
                 ["{%tr for a in alerts %}", ""],
                 ["{{ a.date }}", "{% cellbg a.bg %}{{ a.type }}"],
                 ["{%tr endfor %}", ""]])
    return _save(doc), {"alerts": [{"date": "2015-03-10", "type": "CRITICAL", "bg": "FF0000"},
                                   {"date": "2015-03-11", "type": "WARNING", "bg": "FFDD00"}]}


def column_span() -> Fixture:
    doc = docx.Document()
    table = _table(doc, [["Colour", "{% colspan labels|count %}Type of thing", "", ""],
                         ["Colour", "{%tc for col in labels %}", "{{ col }}", "{%tc endfor %}"]])
    header = table.rows[0].cells
    merged = header[1].merge(header[3])  # one cell over the three loop columns, as in docxtpl's dynamic_table
    for extra in merged.paragraphs[1:]:  # merge() keeps the merged cells' empty paragraphs
        merged._tc.remove(extra._p)
    return _save(doc), {"labels": ["fruit", "vegetable", "stone"]}


def invoice() -> Fixture:
    """Many constructs in one document, as a real template mixes them: the sample ``make demo`` shows."""
    return build_invoice_template(), invoice_context()


FIXTURES: dict[str, Callable[[], Fixture]] = {f.__name__: f for f in (
    expression, dotted_and_indexed, filters, inline_if_for, paragraph_if, paragraph_for, table_row_for,
    table_column_for, run_if, rich_run, rich_paragraph, whitespace_control, comments, nested_loops, split_runs,
    headers_footers, footnotes, table_cells, vertical_merge, horizontal_merge, cell_background, column_span, invoice)}


# --- rendering with docxtpl -----------------------------------------------------------------------

_RICH_TAG = re.compile(r"\{\{\s*([rp])\s+([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


def _template_text(template: bytes) -> str:
    """All the w:t text of the template's XML parts, runs joined (a split tag reads whole)."""
    with zipfile.ZipFile(io.BytesIO(template)) as package:
        return "".join(t.text or "" for name in package.namelist() if name.endswith(".xml")
                       for t in etree.fromstring(package.read(name)).iter(f"{{{W}}}t"))


def docxtpl_context(template, template_bytes: bytes, context: dict) -> dict:
    """``context`` as docxtpl needs it for ``template``: RichText for ``{{r X}}``, RichTextParagraph for ``{{p X}}``."""
    from docxtpl import RichText, RichTextParagraph

    mapped = dict(context)
    for form, name in _RICH_TAG.findall(_template_text(template_bytes)):
        if name not in context or not isinstance(context[name], str):
            continue
        if form == "r":
            mapped[name] = RichText(context[name])
        else:
            paragraphs = RichTextParagraph()
            for line in context[name].split("\n"):
                paragraphs.add(RichText(line))
            mapped[name] = paragraphs
    return mapped


def render_docxtpl(template: bytes, context: dict, *, autoescape: bool) -> bytes:
    """docxtpl's render of ``template`` with ``context`` (mapped by :func:`docxtpl_context`)."""
    from docxtpl import DocxTemplate

    tpl = DocxTemplate(io.BytesIO(template))
    tpl.render(docxtpl_context(tpl, template, context), autoescape=autoescape)
    out = io.BytesIO()
    tpl.save(out)
    return out.getvalue()


# --- reading a render's text ----------------------------------------------------------------------

_NAMESPACES = {"w": W, "r": R_NS, "mc": MC}


def _q(tag: str) -> str:
    """Clark notation of a prefixed name: ``w:p`` -> ``{...main}p``."""
    prefix, local = tag.split(":")
    return "{" + _NAMESPACES[prefix] + "}" + local


_BLOCK_WRAPPERS = {_q("w:sdt"), _q("w:sdtContent"), _q("w:customXml"), _q("w:ins"), _q("w:smartTag")}


def _paragraph_text(p) -> str:
    """The paragraph's text as a reader sees it: w:t, w:tab as \\t, w:br/w:cr as \\n, w:footnoteReference as
    [^id]; nothing under mc:Fallback (a copy of mc:Choice) and no nested text-box paragraph."""
    parts = []
    for el in p.iter(_q("w:t"), _q("w:tab"), _q("w:br"), _q("w:cr"), _q("w:noBreakHyphen"),
                     _q("w:footnoteReference")):
        if any(a.tag in (_q("mc:Fallback"), _q("w:txbxContent")) for a in el.iterancestors()):
            continue
        if el.tag == _q("w:t"):
            parts.append(el.text or "")
        elif el.tag == _q("w:tab"):
            parts.append("\t")
        elif el.tag == _q("w:noBreakHyphen"):
            parts.append("-")
        elif el.tag == _q("w:footnoteReference"):
            parts.append(f"[^{el.get(_q('w:id'))}]")
        else:
            parts.append("\n")
    return "".join(parts)


def _cell_label(tc, r: int, c: int) -> str:
    props = []
    tc_pr = tc.find(_q("w:tcPr"))
    if tc_pr is not None:
        for tag, name, attr in (("w:gridSpan", "span", "w:val"), ("w:vMerge", "vmerge", "w:val"),
                                ("w:shd", "fill", "w:fill")):
            el = tc_pr.find(_q(tag))
            if el is not None:
                props.append(f"{name}={el.get(_q(attr), 'continue' if name == 'vmerge' else '')}")
    return f"cell[{r},{c}]" + (f"({','.join(props)})" if props else "")


def _children(parent, tag: str):
    """``parent``'s children named ``tag``, looking through content controls and other wrappers (a row or
    cell may stand in a content control)."""
    for child in parent:
        if child.tag == tag:
            yield child
        elif child.tag in _BLOCK_WRAPPERS:
            yield from _children(child, tag)


def _blocks(container, indent: str, lines: list[str]) -> None:
    for child in container:
        if child.tag == _q("w:p"):
            lines.append(f"{indent}p: {_paragraph_text(child)}")
        elif child.tag == _q("w:tbl"):
            lines.append(f"{indent}table")
            for r, tr in enumerate(_children(child, _q("w:tr"))):
                for c, tc in enumerate(_children(tr, _q("w:tc"))):
                    lines.append(f"{indent}  {_cell_label(tc, r, c)}")
                    _blocks(tc, indent + "    ", lines)
        elif child.tag in _BLOCK_WRAPPERS:
            _blocks(child, indent, lines)


def document_text(rendered: bytes) -> list[str]:
    """The render's text, one line per paragraph, in document order: the body (table cells nested under
    their table with position and merge/shading properties), then each header and footer in the order the
    sections reference them, then the footnotes. Opens with python-docx, so an unreadable package raises."""
    document = docx.Document(io.BytesIO(rendered))
    part = document.part
    lines = ["[body]"]
    _blocks(document.element.body, "", lines)
    seen = set()
    for sect_pr in document.element.body.iter(_q("w:sectPr")):
        for ref in sect_pr:
            if ref.tag not in (_q("w:headerReference"), _q("w:footerReference")):
                continue
            story = part.related_parts[ref.get(_q("r:id"))]
            if story.partname in seen:
                continue
            seen.add(story.partname)
            lines.append(f"[{etree.QName(ref).localname[:6]} {ref.get(_q('w:type'))}]")
            _blocks(etree.fromstring(story.blob), "", lines)
    for rel in part.rels.values():
        if rel.reltype == RT.FOOTNOTES and not rel.is_external:
            for note in etree.fromstring(rel.target_part.blob).iterchildren(_q("w:footnote")):
                if note.get(_q("w:type")) in (None, "normal"):
                    lines.append(f"[footnote {note.get(_q('w:id'))}]")
                    _blocks(note, "", lines)
    return lines
