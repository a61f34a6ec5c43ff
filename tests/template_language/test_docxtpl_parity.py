"""ASTRA renders docxtpl templates to the text docxtpl renders (issue 11).

For every fixture (one per construct docxtpl documents, docxtpl_fixtures.py), the text of ASTRA's output
equals the text of docxtpl's output for the same JSON context: paragraphs of the body, table cells (with
their position, span, vertical merge and shading), headers, footers and footnotes, in document order.
docxtpl renders with ``autoescape=True`` (ASTRA always escapes; a fixture's ``&`` must read the same in
both) and gets ``RichText`` / ``RichTextParagraph`` where it needs objects (``{{r X}}`` / ``{{p X}}``).
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import zipfile

import docx
import pytest
from lxml import etree

from astra.builder.check import convert_to_pdf, soffice_path
from astra.template_language import JinjaTemplate, uses_jinja

from .docxtpl_fixtures import FIXTURES, document_text, render_docxtpl


def _astra(template: bytes, context: dict) -> bytes:
    return JinjaTemplate.read(template).render(context)


@pytest.mark.parametrize("name", FIXTURES)
def test_astra_renders_the_text_docxtpl_renders(name):
    template, context = FIXTURES[name]()
    assert json.loads(json.dumps(context)) == context  # a plain JSON context, as `astra build --data` reads
    expected = document_text(render_docxtpl(template, context, autoescape=True))
    # the fixture is meaningful: docxtpl rendered every tag and the text differs from the template's
    assert not [line for line in expected if any(mark in line for mark in ("{{", "{%", "{#", "%}", "}}"))]
    assert expected != document_text(template)

    rendered = _astra(template, context)
    docx.Document(io.BytesIO(rendered))  # opens with python-docx
    assert document_text(rendered) == expected


@pytest.mark.parametrize("name", FIXTURES)
def test_every_fixture_is_read_as_docxtpl_language(name):
    template, _ = FIXTURES[name]()
    assert uses_jinja(template)


def test_rendering_is_deterministic_and_every_xml_part_parses():
    template, context = FIXTURES["invoice"]()
    first, second = _astra(template, context), JinjaTemplate.read(template).render(context)
    assert first == second
    with zipfile.ZipFile(io.BytesIO(first)) as package:
        for name in package.namelist():
            if name.endswith((".xml", ".rels")):
                etree.fromstring(package.read(name))


def test_parts_without_tags_are_copied_byte_for_byte():
    template, context = FIXTURES["invoice"]()
    rendered = _astra(template, context)
    with zipfile.ZipFile(io.BytesIO(template)) as before, zipfile.ZipFile(io.BytesIO(rendered)) as after:
        for name in ("word/styles.xml", "word/settings.xml", "word/numbering.xml", "word/theme/theme1.xml"):
            assert after.read(name) == before.read(name), name


@pytest.mark.skipif(soffice_path() is None or shutil.which("pdftotext") is None,
                    reason="LibreOffice or poppler-utils is not installed (scripts/system-deps.sh)")
def test_libreoffice_lays_out_the_rich_fixture():
    """LibreOffice opens ASTRA's render of the invoice and shows its text in order (its PDF's text layer)."""
    template, context = FIXTURES["invoice"]()
    pdf = convert_to_pdf(_astra(template, context), timeout=120)
    words = subprocess.run(["pdftotext", "-layout", "-", "-"], input=pdf, capture_output=True,
                           check=True).stdout.decode()
    for text in ("ACME & CO - invoice INV-2024-042", "Bill to: Smith & Sons <Leeds>, Leeds", "Pump inspection",
                 'Call-out "urgent"', "1234.50", "Valve V3 replaced.", "Late payment: 8% a year over base rate.",
                 "Due within 30 days."):
        assert text in words, text
    assert words.index("Bill to") < words.index("Pump inspection") < words.index("Valve V3") < words.index("Late")
