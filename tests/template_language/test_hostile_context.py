"""Hostile context values: ASTRA's render stays well-formed and shows the text; docxtpl's (its default
``autoescape=False``) does not, shown in the same test so the difference is demonstrated, not claimed.

What docxtpl does with ``&`` / ``<`` in a value (0.20.x): the body is re-read with lxml's *recovering*
parser (fix_tables), so the package opens but the text is silently mangled (``Smith & Sons`` becomes
``Smith  Sons``); a header is re-read strictly, so render raises ``XMLSyntaxError``; the footnotes part is
stored as rendered, so the saved package holds a ``word/footnotes.xml`` that does not parse.
"""

from __future__ import annotations

import io
import re
import zipfile

import docx
import pytest
from lxml import etree

from astra.template_language import JinjaTemplate, RenderError

from .docxtpl_fixtures import W, _runs, _save, _table, document_text, footnotes, render_docxtpl

CONTROL_REMOVED = "".join(chr(c) for c in range(0x20) if chr(c) not in "\t\n\r")
HOSTILE = {
    "ampersand": "Smith & Sons && Co &amp; &#x41; &nbsp;",
    "less_than": "a < b <w:t>x</w:t> </w:p><w:p>",
    "cdata_end": "x ]]> y ]]]]><![CDATA[ z",
    "quotes": "say \"hi\" and 'bye' \u201ccurly\u201d",
    "control": f"ctl[{CONTROL_REMOVED}]end",
    "surrogates": "lone \ud800 high, \udfff low, pair \U0001f600 kept",
    "long": ("0123456789 & <abc> " * 20_000),  # 400,000 characters
    "jinja_lookalike": "{{ name }} {% if x %} {# c #} {_{",
    "breaks": "line1\nline2\r\nline3\rline4\tcol",
}


def _shown(value: str) -> str:
    """What a reader should see for ``value``: characters XML cannot carry removed, CR/CRLF as a line break."""
    value = re.sub("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]", "", value)
    return value.replace("\r\n", "\n").replace("\r", "\n")


def _template() -> bytes:
    """The value in every place a docxtpl template shows one: body text, a run tag, a paragraph tag, a row
    loop's cell, a header and a footer."""
    doc = docx.Document()
    doc.sections[0].header.paragraphs[0].text = "H:{{ x }}"
    doc.sections[0].footer.paragraphs[0].text = "F:{{ x }}"
    doc.add_paragraph("B:{{ x }}:E")
    _runs(doc.add_paragraph(), "R:", ("{{r x }}", {"bold": True}))
    doc.add_paragraph("{{p x }}")
    _table(doc, [["{%tr for v in rows %}"], ["C:{{ v.cell }}"], ["{%tr endfor %}"]])
    return _save(doc)


def _plain_template() -> bytes:
    """``{{ x }}`` in the body and a header only: docxtpl takes a plain string there."""
    doc = docx.Document()
    doc.sections[0].header.paragraphs[0].text = "H:{{ x }}"
    doc.add_paragraph("B:{{ x }}:E")
    return _save(doc)


def _well_formed_parts(rendered: bytes) -> None:
    with zipfile.ZipFile(io.BytesIO(rendered)) as package:
        for name in package.namelist():
            if name.endswith((".xml", ".rels")):
                etree.fromstring(package.read(name))  # raises on a part that is not well-formed


@pytest.mark.parametrize("case", HOSTILE)
def test_astra_output_is_well_formed_and_shows_the_text(case):
    value = HOSTILE[case]
    rendered = JinjaTemplate.read(_template()).render({"x": value, "rows": [{"cell": value}]})
    _well_formed_parts(rendered)
    lines = document_text(rendered)  # opens with python-docx
    shown = _shown(value)
    body = lines[lines.index("[body]") + 1:lines.index("[header default]")]
    assert body[0] == f"p: B:{shown}:E"
    assert body[1] == f"p: R:{shown}"
    assert body[2:2 + len(shown.split("\n"))] == [f"p: {line}" for line in shown.split("\n")]
    assert body[-3:] == ["table", "  cell[0,0]", f"    p: C:{shown}"]
    assert lines[lines.index("[header default]") + 1] == f"p: H:{shown}"
    assert lines[lines.index("[footer default]") + 1] == f"p: F:{shown}"


@pytest.mark.parametrize("value", [HOSTILE["ampersand"], HOSTILE["less_than"]], ids=["ampersand", "less_than"])
def test_astra_survives_what_breaks_docxtpl(value):
    # docxtpl, the body: the package opens, but the recovering parser has dropped or cut the text
    doc = docx.Document()
    doc.add_paragraph("B:{{ x }}:E")
    body_only = _save(doc)
    mangled = document_text(render_docxtpl(body_only, {"x": value}, autoescape=False))
    assert mangled[1] != f"p: B:{value}:E"
    # docxtpl, a header: render itself fails on the XML it wrote
    with pytest.raises(etree.XMLSyntaxError):
        render_docxtpl(_plain_template(), {"x": value}, autoescape=False)
    # docxtpl, a footnote: the saved package's footnotes part does not parse
    with_footnote, context = footnotes()
    broken = render_docxtpl(with_footnote, {**context, "source": {"title": value, "year": 2024}}, autoescape=False)
    with zipfile.ZipFile(io.BytesIO(broken)) as package, pytest.raises(etree.XMLSyntaxError):
        etree.fromstring(package.read("word/footnotes.xml"))

    # ASTRA, the same three templates and values: well-formed, and the text as given
    assert document_text(JinjaTemplate.read(body_only).render({"x": value}))[1] == f"p: B:{value}:E"
    rendered = JinjaTemplate.read(_plain_template()).render({"x": value})
    _well_formed_parts(rendered)
    assert document_text(rendered)[-2:] == ["[header default]", f"p: H:{value}"]
    rendered = JinjaTemplate.read(with_footnote).render({**context, "source": {"title": value, "year": 2024}})
    _well_formed_parts(rendered)
    assert document_text(rendered)[-1] == f"p:  Source: {value} (2024)"


def test_a_cell_colour_from_the_context_cannot_break_out_of_its_attribute():
    """``{% cellbg %}`` writes the value into an attribute: only a colour is written; anything else stops the render
    with one line (a quote or ``<`` never reaches the XML)."""
    doc = docx.Document()
    _table(doc, [["{% cellbg colour %}cell"]])
    template = JinjaTemplate.read(_save(doc))
    with pytest.raises(RenderError, match="is not a colour"):
        template.render({"colour": 'FF0000" w:val="x"/><w:b/><w:shd w:fill="<&'})
    rendered = template.render({"colour": "#ff0000"})
    _well_formed_parts(rendered)
    with zipfile.ZipFile(io.BytesIO(rendered)) as package:
        body = etree.fromstring(package.read("word/document.xml"))
    assert [tc.findtext(f".//{{{W}}}t") for tc in body.iter(f"{{{W}}}tc")] == ["cell"]
    assert [shd.get(f"{{{W}}}fill") for shd in body.iter(f"{{{W}}}shd")] == ["ff0000"]
