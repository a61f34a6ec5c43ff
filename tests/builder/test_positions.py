"""Zones in every position a template may put them: inside table cells, two in one paragraph, run-level
content controls, a placeholder carrying its section's properties. The output keeps the zones findable,
the text around them, and passes the checks."""

from __future__ import annotations

import io
import subprocess

import docx
import pytest
from lxml import etree

from astra.builder.check import check_document, convert_to_pdf
from astra.builder.engine import build
from astra.ingest.zones import extract_maps, scan_zones
from astra.ooxml.ns import MC_NS, W_NS, W
from astra.ooxml.package import Package, write_package
from astra.samples.templates import minimal_docx

from .helpers import intent_output, run_text, zone_paragraphs

SECT = '<w:sectPr><w:pgSz w:w="11906" w:h="16838"/><w:pgMar w:top="1000" w:right="1000" w:bottom="1000" w:left="1000"/>'
TABLE = {"id": "data/t.json", "source": "data/t.json", "sheet": None, "header": ["k", "v"],
         "columns": [{"name": "k", "type": "text"}, {"name": "v", "type": "decimal"}],
         "rows": [["a", 1.5], ["b", None]], "row_count": 2}


def _build(body: str, session: dict, sidecar: dict | None = None):
    template = minimal_docx(body)
    maps = extract_maps(template, sidecar)
    out = build(template, maps.zone_map, maps.style_map, session)
    docx.Document(io.BytesIO(out.docx))
    assert check_document(out.docx, maps.zone_map, template=template).passed
    assert sorted(d.id for d in scan_zones(out.docx)) == sorted(z["id"] for z in maps.zone_map["zones"])
    return out, Package.read(out.docx).xml("word/document.xml").find(W.body)


def test_placeholders_inside_table_cells():
    body = ('<w:tbl><w:tblGrid><w:gridCol w:w="3000"/><w:gridCol w:w="3000"/></w:tblGrid><w:tr>'
            '<w:tc><w:tcPr><w:tcW w:w="3000" w:type="dxa"/></w:tcPr><w:p><w:r><w:t>{{ left }}</w:t></w:r></w:p></w:tc>'
            '<w:tc><w:p><w:r><w:t>Total: {{ right }} units</w:t></w:r></w:p></w:tc></w:tr></w:tbl>'
            '<w:p><w:r><w:t>after</w:t></w:r></w:p>')
    out, xml = _build(body, intent_output({"left": ["one", "two"], "right": ["42"]}),
                      {"version": 1, "zones": {"left": {"kind": "text"}, "right": {"kind": "text"}}})
    assert zone_paragraphs(out.docx, "left") == ["one", "two"]
    cells = xml.find(W.tbl).findall(f"{W.tr}/{W.tc}")
    assert run_text(cells[1]) == "Total: 42 units"
    assert run_text(xml.findall(W.p)[-1]) == "after"


def test_two_placeholders_in_one_paragraph():
    body = "<w:p><w:r><w:t>From {{ start }} to {{ finish }}, weather {{ weather }}.</w:t></w:r></w:p>"
    out, xml = _build(body, intent_output({"start": ["Monday"], "finish": ["Friday"]}))
    assert run_text(xml.find(W.p)) == "From Monday to Friday, weather ."
    assert [s.find(f"{W.sdtPr}/{W.tag}").get(W.val) for s in xml.find(W.p).findall(W.sdt)] == [
        "astra:start;kind=text", "astra:finish;kind=text", "astra:weather;kind=text"]


def test_run_level_content_control():
    body = ('<w:p><w:r><w:t xml:space="preserve">Inspector: </w:t></w:r><w:sdt><w:sdtPr>'
            '<w:tag w:val="astra:inspector;kind=text"/><w:showingPlcHdr/><w:text/></w:sdtPr><w:sdtContent><w:r>'
            '<w:t>Name</w:t></w:r></w:sdtContent></w:sdt><w:r><w:t xml:space="preserve"> (signed)</w:t></w:r></w:p>')
    out, xml = _build(body, intent_output({"inspector": ["Ada & Grace"]}))
    sdt = xml.find(f"{W.p}/{W.sdt}")
    assert sdt.find(f"{W.sdtPr}/{W.showingPlcHdr}") is None and sdt.find(f"{W.sdtPr}/{W.text}") is None
    assert run_text(xml.find(W.p)) == "Inspector: Ada & Grace (signed)"


def test_placeholder_carrying_the_section_break():
    body = (f'<w:p><w:pPr><w:pStyle w:val="Normal"/>{SECT}</w:sectPr></w:pPr><w:r><w:t>{{{{ readings }}}}</w:t></w:r>'
            f"</w:p><w:p><w:r><w:t>next section</w:t></w:r></w:p>"
            f"<w:p><w:r><w:t>{{{{ notes }}}}</w:t></w:r></w:p>{SECT}</w:sectPr>")  # notes: the fallback zone
    out, xml = _build(body, intent_output(tables={"readings": [TABLE]}),
                      {"version": 1, "zones": {"readings": {"kind": "table", "data": "data/*"}}})
    content = xml.find(f"{W.sdt}/{W.sdtContent}")
    assert [child.tag for child in content] == [W.tbl, W.p]  # the table, then the section's paragraph
    assert content.find(f"{W.p}/{W.pPr}/{W.sectPr}") is not None
    rows = content.find(W.tbl).findall(W.tr)
    assert [run_text(tc) for tc in rows[1].findall(W.tc)] == ["a", "1.5"]
    assert [run_text(tc) for tc in rows[2].findall(W.tc)] == ["b", ""]
    assert out.fills["readings"] == {"kind": "table", "items": 1, "rows": 2}


def test_bookmarks_around_replaced_placeholders_stay_well_placed():
    body = ('<w:p><w:pPr/><w:bookmarkStart w:id="5" w:name="intro"/><w:r><w:t>{{ intro }}</w:t></w:r>'
            '<w:bookmarkEnd w:id="5"/></w:p>'
            '<w:p><w:bookmarkStart w:id="6" w:name="data"/><w:r><w:t>{{ readings }}</w:t></w:r>'
            '<w:bookmarkEnd w:id="6"/></w:p>')
    out, xml = _build(body, intent_output({"intro": ["Hello"]}, {"readings": [TABLE]}),
                      {"version": 1, "zones": {"readings": {"kind": "table", "data": "data/*"}}})
    intro, readings = (sdt.find(W.sdtContent) for sdt in xml.findall(W.sdt))
    first = intro.find(W.p)
    assert [child.tag for child in first] == [W.pPr, W.bookmarkStart, W.r, W.bookmarkEnd]
    assert [child.tag for child in readings] == [W.bookmarkStart, W.tbl, W.bookmarkEnd]


@pytest.mark.parametrize("beside", [
    '<w:r><w:sym w:font="Wingdings" w:char="F04A"/></w:r>',
    '<w:r><w:footnoteReference w:id="1"/></w:r>',
    '<w:r><w:ptab w:relativeTo="margin" w:alignment="right" w:leader="none"/></w:r>',
    '<w:r><w:t xml:space="preserve"> </w:t><w:softHyphen/></w:r>',
    '<w:ins w:id="3" w:author="a"><w:r><w:t xml:space="preserve"> </w:t></w:r></w:ins>',
], ids=["sym", "footnote-reference", "ptab", "soft-hyphen", "tracked-insertion"])
def test_a_placeholder_beside_other_content_is_replaced_inline(beside):
    """Only blanks, properties, range markers and plain text runs let a placeholder take its whole paragraph:
    anything else in the paragraph stays, beside an inline zone."""
    out, body = _build(f"<w:p><w:r><w:t>{{{{ notes }}}}</w:t></w:r>{beside}</w:p>{SECT}</w:sectPr>",
                       intent_output({"notes": ["x"]}))
    paragraph = body.find(W.p)
    kept = etree.fromstring(f'<w:wrap xmlns:w="{W_NS}">{beside}</w:wrap>')[0]
    assert paragraph is not None and paragraph.find(W.sdt) is not None  # an inline control in the paragraph
    assert any(_shape(child) == _shape(kept) for child in paragraph)
    assert zone_paragraphs(out.docx, "notes") == ["x"]


def _shape(el) -> list:
    return [(e.tag, dict(e.attrib), (e.text or "").strip()) for e in el.iter()]


def test_a_placeholder_among_blanks_and_markers_takes_the_paragraph():
    body_xml = ('<w:p><w:pPr><w:jc w:val="center"/></w:pPr><w:proofErr w:type="spellStart"/>'
                '<w:bookmarkStart w:id="7" w:name="n"/><w:r><w:rPr><w:b/></w:rPr><w:lastRenderedPageBreak/>'
                '<w:t xml:space="preserve">  {{ notes }} </w:t></w:r><w:bookmarkEnd w:id="7"/>'
                f'<w:proofErr w:type="spellEnd"/></w:p>{SECT}</w:sectPr>')
    out, body = _build(body_xml, intent_output({"notes": ["a", "b"]}))
    assert body[0].tag == W.sdt  # a block-level control holding one paragraph per utterance
    assert zone_paragraphs(out.docx, "notes") == ["a", "b"]


@pytest.mark.parametrize("ppr", ['<w:pPr xmlns:x="urn:x"><w:jc w:val="center"/></w:pPr>',
                                 f'<w:pPr xmlns:w="{W_NS}"><w:jc w:val="center"/></w:pPr>',
                                 f'<pPr xmlns="{W_NS}"><jc val="center"/></pPr>'],
                         ids=["foreign-declaration", "w-redeclared", "default-namespace"])
def test_a_bookmark_goes_after_the_paragraph_properties_however_they_are_spelled(ppr):
    """The schema puts w:pPr first in a paragraph; a bookmark before it makes Word repair the document."""
    body_xml = (f'<w:p>{ppr}<w:bookmarkStart w:id="7" w:name="t"/><w:r><w:t>{{{{ notes }}}}</w:t></w:r>'
                '<w:bookmarkEnd w:id="7"/></w:p>')
    out, body = _build(body_xml, intent_output({"notes": ["a", "b"]}))
    first, last = body.find(W.sdt).find(W.sdtContent).findall(W.p)
    assert [child.tag for child in first] == [W.pPr, W.bookmarkStart, W.r]
    assert [child.tag for child in last] == [W.pPr, W.r, W.bookmarkEnd]
    assert first.find(f"{W.pPr}/{W.jc}") is not None
    assert zone_paragraphs(out.docx, "notes") == ["a", "b"]


_TEXT_BOX = (
    '<w:p><w:r><mc:AlternateContent><mc:Choice Requires="wps"><w:drawing><wp:anchor distT="0" distB="0" distL="0" '
    'distR="0" simplePos="0" relativeHeight="1" behindDoc="0" locked="0" layoutInCell="1" allowOverlap="1">'
    '<wp:simplePos x="0" y="0"/><wp:positionH relativeFrom="column"><wp:posOffset>0</wp:posOffset></wp:positionH>'
    '<wp:positionV relativeFrom="paragraph"><wp:posOffset>0</wp:posOffset></wp:positionV>'
    '<wp:extent cx="914400" cy="914400"/><wp:wrapNone/><wp:docPr id="1" name="Text Box 1"/><a:graphic>'
    '<a:graphicData uri="http://schemas.microsoft.com/office/word/2010/wordprocessingShape"><wps:wsp>'
    '<wps:cNvSpPr txBox="1"/><wps:spPr/><wps:txbx><w:txbxContent>{choice}</w:txbxContent></wps:txbx><wps:bodyPr/>'
    '</wps:wsp></a:graphicData></a:graphic></wp:anchor></w:drawing></mc:Choice><mc:Fallback><w:pict>'
    '<v:shape style="width:72pt;height:72pt"><v:textbox><w:txbxContent>{fallback}</w:txbxContent></v:textbox>'
    '</v:shape></w:pict></mc:Fallback></mc:AlternateContent></w:r></w:p>')


@pytest.mark.parametrize("zone", [
    "<w:p><w:r><w:t>{{ notes }}</w:t></w:r></w:p>",
    "<w:p><w:r><w:t>Notes: {{ notes }}</w:t></w:r></w:p>",
    '<w:sdt><w:sdtPr><w:tag w:val="astra:notes"/><w:id w:val="3"/></w:sdtPr><w:sdtContent><w:p><w:r>'
    '<w:t>Type here</w:t></w:r></w:p></w:sdtContent></w:sdt>',
], ids=["placeholder-paragraph", "placeholder-inline", "content-control"])
def test_a_zone_in_a_text_box_is_filled_in_both_of_its_renderings(zone):
    """Word and LibreOffice show the mc:Choice text box; a reader without DrawingML shapes shows the VML
    mc:Fallback copy. Both hold the zone's content, never the template's placeholder."""
    out, body = _build(_TEXT_BOX.format(choice=zone, fallback=zone), intent_output({"notes": ["N1", "N2"]}))
    choice, fallback = (body.find(f".//{{{MC_NS}}}{branch}//{W.txbxContent}") for branch in ("Choice", "Fallback"))
    assert run_text(choice).replace("\n", "") == run_text(fallback).replace("\n", "")
    assert "N1" in run_text(fallback) and "{{" not in run_text(body) and "Type here" not in run_text(body)
    ids = [el.get(W.val) for el in body.iter(W.id)]
    assert len(ids) == len(set(ids)) == 2  # the copy's controls have ids of their own
    assert check_document(out.docx, {"zones": []}).zones_found == ["notes"]  # the copy is no second zone


@pytest.mark.parametrize("holder", [
    '<w:hyperlink r:id="rIdLink">{runs}</w:hyperlink>',
    '<w:fldSimple w:instr=" PAGE "><w:r><w:t>7</w:t></w:r>{runs}</w:fldSimple>',
    '<w:r><w:fldChar w:fldCharType="begin"/></w:r><w:r><w:instrText xml:space="preserve"> PAGE </w:instrText></w:r>'
    '<w:r><w:fldChar w:fldCharType="separate"/></w:r><w:r><w:t>7</w:t></w:r>{runs}'
    '<w:r><w:fldChar w:fldCharType="end"/></w:r>',
    '<w:hyperlink r:id="rIdLink"><w:r><w:fldChar w:fldCharType="begin"/></w:r><w:r><w:instrText>PAGE</w:instrText>'
    '</w:r><w:r><w:fldChar w:fldCharType="separate"/></w:r>{runs}<w:r><w:fldChar w:fldCharType="end"/></w:r>'
    '</w:hyperlink>',
], ids=["hyperlink", "simple-field", "complex-field", "field-in-link"])
@pytest.mark.parametrize("runs", [
    "<w:r><w:t>see {{ notes }}</w:t></w:r>",
    '<w:r><w:t xml:space="preserve">see </w:t></w:r><w:sdt><w:sdtPr><w:tag w:val="astra:notes"/></w:sdtPr>'
    "<w:sdtContent><w:r><w:t>old</w:t></w:r></w:sdtContent></w:sdt>",
], ids=["placeholder", "content-control"])
def test_a_zone_inside_a_link_or_field_is_filled_after_it(holder, runs):
    """User content never becomes a link's text (no hyperlinks from user content) nor a field's result (lost
    when the field updates): the zone goes right after the link or field, which keeps the rest of its text."""
    template = minimal_docx(f"<w:p>{holder.format(runs=runs)}</w:p>")
    pkg = Package.read(template)
    rels = pkg.read_part("word/_rels/document.xml.rels").replace(
        b"</Relationships>", b'<Relationship Id="rIdLink" Type="http://schemas.openxmlformats.org/officeDocument/'
        b'2006/relationships/hyperlink" Target="https://example.com/" TargetMode="External"/></Relationships>')
    template = write_package([(n, rels if n == "word/_rels/document.xml.rels" else pkg.read_part(n))
                              for n in pkg.members])
    maps = extract_maps(template)
    out = build(template, maps.zone_map, maps.style_map, intent_output({"notes": ["user text"]}))
    assert check_document(out.docx, maps.zone_map, template=template).passed
    paragraph = Package.read(out.docx).xml("word/document.xml").find(f"{W.body}/{W.p}")
    sdt = paragraph[-1]  # after the link's or the field's last run
    assert sdt.tag == W.sdt and [el.tag for el in paragraph.iter(W.sdt)] == [W.sdt]
    assert run_text(sdt) == "user text" and run_text(paragraph) in ("see user text", "7see user text")


def test_a_fallback_that_does_not_pair_with_its_filled_text_box_is_dropped():
    """A fallback drawing without the text box cannot show the zone: the filled mc:Choice is left as the only
    rendering (the markup-compatibility rules make mc:Fallback optional)."""
    shape_only = _TEXT_BOX.replace("<v:textbox><w:txbxContent>{fallback}</w:txbxContent></v:textbox>", "")
    out, body = _build(shape_only.format(choice="<w:p><w:r><w:t>{{ notes }}</w:t></w:r></w:p>"),
                       intent_output({"notes": ["N1"]}))
    alternate = body.find(f".//{{{MC_NS}}}AlternateContent")
    assert [child.tag for child in alternate] == [f"{{{MC_NS}}}Choice"]
    assert zone_paragraphs(out.docx, "notes") == ["N1"]


@pytest.mark.parametrize("runs, before, after", [
    ("<w:r><w:t>{{ notes</w:t><w:tab/><w:t>}} or {{ notes }}.</w:t></w:r>", "{{ notes\t}} or ", "."),
    ("<w:r><w:t>{{ notes</w:t><w:br/><w:t>}} or {{</w:t></w:r><w:r><w:t xml:space=\"preserve\"> notes }}</w:t></w:r>",
     "{{ notes\n}} or ", ""),
    ("<w:r><w:t>{{ notes }} or {{ notes</w:t><w:tab/><w:t>}}</w:t></w:r>", "", " or {{ notes\t}}"),
], ids=["tab-before-in-its-run", "break-before-across-runs", "tab-after-in-its-run"])
def test_the_placeholder_replaced_is_the_one_the_zone_scan_found(runs, before, after):
    """Text like the placeholder but split by a tab or break is no placeholder (the grammar's separators): it stays,
    and the zone takes the place of the '{{ notes }}' the scan declared, even within the same run."""
    out, body = _build(f"<w:p>{runs}</w:p>", intent_output({"notes": ["N"]}))
    paragraph = body.find(W.p)
    sdt = paragraph.find(W.sdt)
    assert run_text(sdt) == "N"
    assert "".join(run_text(el) for el in reversed(list(sdt.itersiblings(preceding=True)))) == before
    assert "".join(run_text(el) for el in sdt.itersiblings()) == after


_BEGIN = ('<w:r><w:fldChar w:fldCharType="begin"/></w:r><w:r><w:instrText xml:space="preserve"> REF b </w:instrText>'
          '</w:r><w:r><w:fldChar w:fldCharType="separate"/></w:r>')
_END = '<w:r><w:fldChar w:fldCharType="end"/></w:r>'


@pytest.mark.parametrize("zone", [
    "<w:r><w:t>{{ x }}</w:t></w:r>",
    '<w:sdt><w:sdtPr><w:tag w:val="astra:x"/></w:sdtPr><w:sdtContent><w:r><w:t>old</w:t></w:r></w:sdtContent></w:sdt>',
], ids=["placeholder", "content-control"])
@pytest.mark.parametrize("field_after", [f"{_BEGIN}<w:r><w:t>r</w:t></w:r></w:p><w:p>{_END}",
                                         f"{_BEGIN}<w:r><w:t>r</w:t></w:r>{_END}"],
                         ids=["spanning-paragraphs", "in-its-paragraph"])
def test_a_zone_after_the_end_of_a_field_from_an_earlier_paragraph_stays_in_place(zone, field_after):
    """The end of a field begun in an earlier paragraph closes that field, not one of this paragraph: the zone after
    it is in no field and stays where it was, before the next field's begin (not moved into its instruction)."""
    body_xml = (f"<w:p>{_BEGIN}<w:r><w:t>r</w:t></w:r></w:p><w:p>{_END}<w:r><w:t xml:space=\"preserve\">then </w:t>"
                f"</w:r>{zone}{field_after}</w:p><w:p><w:r><w:t>{{{{ notes }}}}</w:t></w:r></w:p>")
    out, body = _build(body_xml, intent_output({"x": ["X"], "notes": ["N"]}))
    paragraph = body.findall(W.p)[1]
    sdt = paragraph.find(W.sdt)
    assert run_text(sdt) == "X"
    assert [el.get(W.fldCharType) for el in sdt.itersiblings(preceding=True) for el in el.iter(W.fldChar)] == ["end"]
    assert sdt.getnext().find(W.fldChar).get(W.fldCharType) == "begin"


def _libreoffice_words(docx_bytes: bytes) -> list[str]:
    """The words of the document as LibreOffice lays it out (its PDF's text layer)."""
    pdf = convert_to_pdf(docx_bytes, timeout=120)
    return subprocess.run(["pdftotext", "-", "-"], input=pdf, capture_output=True, check=True).stdout.decode().split()


_ZONE_CONTROL = ('<w:sdt><w:sdtPr><w:tag w:val="astra:notes"/></w:sdtPr><w:sdtContent><w:p><w:r><w:t>old</w:t>'
                 '</w:r></w:p></w:sdtContent></w:sdt>')


@pytest.mark.parametrize("wrapped", [
    f'<w:customXml w:uri="urn:x" w:element="e">{_ZONE_CONTROL}</w:customXml>',
    f'<mc:AlternateContent><mc:Choice Requires="w14">{_ZONE_CONTROL}</mc:Choice></mc:AlternateContent>',
], ids=["custom-xml", "mc-choice"])
def test_a_block_level_control_in_a_block_level_wrapper_is_filled_with_paragraphs(wrapped):
    """A zone control among blocks, in a block-level custom-XML element or alternate-content choice, is block-level
    as the zone scan decided: its content is paragraphs (bare runs there are invalid, and readers drop them)."""
    out, body = _build(f"<w:p><w:r><w:t>BEFORE</w:t></w:r></w:p>{wrapped}<w:p><w:r><w:t>AFTER</w:t></w:r></w:p>",
                       intent_output({"notes": ["FIRST utterance", "SECOND utterance"]}))
    content = next(body.iter(W.sdtContent))
    assert [child.tag for child in content] == [W.p, W.p]
    assert [run_text(p) for p in content] == ["FIRST utterance", "SECOND utterance"]
    assert _libreoffice_words(out.docx) == ["BEFORE", "FIRST", "utterance", "SECOND", "utterance", "AFTER"]


def test_a_zone_control_in_a_run_level_control_is_filled_with_runs():
    """A zone control inside another (non-zone) control that stands among a paragraph's runs is inline: its content
    is runs, not a paragraph inside the paragraph (which LibreOffice drops)."""
    body_xml = ('<w:p><w:r><w:t xml:space="preserve">Name: </w:t></w:r><w:sdt><w:sdtPr><w:tag w:val="company"/>'
                '</w:sdtPr><w:sdtContent><w:sdt><w:sdtPr><w:tag w:val="astra:inspector"/></w:sdtPr><w:sdtContent>'
                '<w:r><w:t>old</w:t></w:r></w:sdtContent></w:sdt></w:sdtContent></w:sdt>'
                '<w:r><w:t xml:space="preserve"> (signed)</w:t></w:r></w:p>'
                '<w:p><w:r><w:t>{{ notes }}</w:t></w:r></w:p>')
    out, body = _build(body_xml, intent_output({"inspector": ["Ada Lovelace"], "notes": ["N"]}))
    paragraph = body.find(W.p)
    assert not list(paragraph.iter(W.p))[1:]
    assert run_text(paragraph) == "Name: Ada Lovelace (signed)"
    assert _libreoffice_words(out.docx) == ["Name:", "Ada", "Lovelace", "(signed)", "N"]


_FALLBACK_FIELD_END = ('<w:r><mc:AlternateContent><mc:Choice Requires="w14"><w:t>1</w:t></mc:Choice><mc:Fallback>'
                       '<w:fldChar w:fldCharType="end"/></mc:Fallback></mc:AlternateContent></w:r>')


@pytest.mark.parametrize("begin, between", [
    ("begin", _FALLBACK_FIELD_END),
    (" Begin ", ""),
], ids=["field-end-in-a-fallback", "type-spelled-otherwise"])
def test_a_zone_in_a_field_is_counted_out_of_it_as_the_zone_scan_counts(begin, between):
    """BUILDER counts the fields around a zone as INGEST and the check do: a field character in an mc:Fallback (a
    copy of its choice) does not close the field, and the type is read without case or blanks; the zone goes after
    the field's end."""
    body_xml = (f'<w:p><w:r><w:fldChar w:fldCharType="{begin}"/></w:r><w:r><w:instrText xml:space="preserve"> PAGE '
                '</w:instrText></w:r><w:r><w:fldChar w:fldCharType="separate"/></w:r>'
                f'{between}<w:r><w:t>{{{{ notes }}}}</w:t></w:r><w:r><w:fldChar w:fldCharType="end"/></w:r></w:p>')
    out, body = _build(body_xml, intent_output({"notes": ["user text"]}))
    paragraph = body.find(W.p)
    sdt = paragraph[-1]
    assert sdt.tag == W.sdt and run_text(sdt) == "user text"
    assert sdt.getprevious().find(W.fldChar).get(W.fldCharType) == "end"
