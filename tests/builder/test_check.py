"""The post-build checks: opens, no forbidden construct, every zone present; LibreOffice converts it."""

from __future__ import annotations

import pytest

from astra.builder.check import (
    PDF_MAX_ZONE_BLOCKS,
    PDF_MAX_ZONE_ROWS,
    ConversionError,
    ConversionTimeout,
    check_document,
    convert_to_pdf,
    pdf_check_copy,
    soffice_path,
)
from astra.builder.engine import build
from astra.ingest.zones import extract_maps
from astra.ooxml.ns import RT_TRANSITIONAL, W
from astra.ooxml.package import Package, write_package
from astra.samples.templates import build_sample_template, minimal_docx, sample_sidecar

from .helpers import intent_output

DOCUMENT = "word/document.xml"
RELS = "word/_rels/document.xml.rels"


@pytest.fixture(scope="module")
def sample():
    template = build_sample_template()
    maps = extract_maps(template, sample_sidecar())
    built = build(template, maps.zone_map, maps.style_map, intent_output({"notes": ["checked"]})).docx
    return template, maps.zone_map, built


def _patched(docx: bytes, member: str, old: bytes, new: bytes) -> bytes:
    pkg = Package.read(docx)
    parts = []
    for name in pkg.members:
        data = pkg.read_part(name)
        if name == member:
            assert old in data
            data = data.replace(old, new, 1)
        parts.append((name, data))
    return write_package(parts)


def _codes(report) -> set[str]:
    return {f.code for f in report.findings}


def test_built_document_passes(sample):
    template, zone_map, built = sample
    report = check_document(built, zone_map, template=template)
    assert report.passed and report.to_json()["passed"]


def test_hostile_field_refused(sample):
    template, zone_map, built = sample
    bad = _patched(built, DOCUMENT, b"<w:t xml:space=\"preserve\">checked</w:t>",
                   b'<w:fldSimple w:instr="INCLUDETEXT c:\\\\x.docx"/>')
    assert {"forbidden_construct", "field_not_allowed"} <= _codes(check_document(bad, zone_map, template=template))


def test_only_page_numpages_date_fields_beyond_the_template(sample):
    template, zone_map, built = sample
    for field, allowed in (("PAGE", True), ("NUMPAGES", True), ("DATE \\@ &quot;d MMMM yyyy&quot;", True),
                           ("TOC \\o", False), ("AUTHOR", False)):
        doc = _patched(built, DOCUMENT, b"<w:t xml:space=\"preserve\">checked</w:t>",
                       f'<w:fldSimple w:instr="{field}"/>'.encode())
        report = check_document(doc, zone_map, template=template)
        assert report.passed is allowed, (field, report.findings)


def test_fields_the_template_has_are_allowed(sample):
    template, zone_map, built = sample
    marker = b"<w:t>Summary</w:t>"
    with_toc = _patched(template, DOCUMENT, marker, marker + b'</w:r><w:fldSimple w:instr="TOC \\o"/><w:r>')
    maps = extract_maps(with_toc, sample_sidecar())
    out = build(with_toc, maps.zone_map, maps.style_map, intent_output({"notes": ["x"]})).docx
    assert check_document(out, zone_map, template=with_toc).passed
    assert _codes(check_document(out, zone_map)) == {"field_not_allowed"}  # without the template: strict


def test_external_relationships(sample):
    template, zone_map, built = sample
    link = (f'<Relationship Id="rId99" Type="{RT_TRANSITIONAL}hyperlink" Target="https://example.com/" '
            'TargetMode="External"/></Relationships>').encode()
    linked = _patched(built, RELS, b"</Relationships>", link)
    assert _codes(check_document(linked, zone_map, template=template)) == {"external_relationship"}
    linked_template = _patched(template, RELS, b"</Relationships>", link)
    assert check_document(linked, zone_map, template=linked_template).passed


def test_missing_zone_and_unreadable_document(sample):
    template, zone_map, built = sample
    gone = _patched(built, DOCUMENT, b'w:val="astra:notes;kind=text;fallback"', b'w:val="not-a-zone"')
    report = check_document(gone, zone_map, template=template)
    assert _codes(report) == {"zone_missing"} and "notes" not in report.zones_found
    assert _codes(check_document(b"PK not really", zone_map)) == {"does_not_open"}


@pytest.mark.skipif(soffice_path() is None, reason="LibreOffice is not installed (scripts/system-deps.sh)")
def test_libreoffice_converts_it(sample):
    _, _, built = sample
    assert convert_to_pdf(built).startswith(b"%PDF")
    with pytest.raises(ConversionTimeout, match="did not finish the conversion within 0.01 s"):
        convert_to_pdf(built, timeout=0.01)


LARGE_ROWS, LARGE_UTTERANCES = 5_000, 1_500


@pytest.fixture(scope="module")
def large():
    """A session document LibreOffice would take minutes on: a 5,000-row table and 1,500 utterances."""
    template = build_sample_template()
    maps = extract_maps(template, sample_sidecar())
    columns = [{"name": f"c{i}", "type": "decimal" if i % 2 else "text", "format": None} for i in range(8)]
    rows = [[n * 1.5 if i % 2 else f"row {n} & <x>" for i in range(8)] for n in range(LARGE_ROWS)]
    table = {"id": "data/x.csv", "source": "data/x.csv", "sheet": None, "header": [c["name"] for c in columns],
             "columns": columns, "rows": rows, "row_count": LARGE_ROWS}
    session = intent_output({"notes": [f"utterance {n}" for n in range(LARGE_UTTERANCES)]}, {"measurements": [table]})
    return template, maps.zone_map, build(template, maps.zone_map, maps.style_map, session).docx


def _zone_content(docx_bytes: bytes, zone: str):
    for sdt in Package.read(docx_bytes).xml(DOCUMENT).iter(W.sdt):
        if (sdt.find(f"{W.sdtPr}/{W.tag}").get(W.val) or "").startswith(f"astra:{zone};"):
            return sdt.find(W.sdtContent)
    raise AssertionError(zone)


def test_the_pdf_copy_of_a_large_document_is_cut_per_zone(large):
    template, zone_map, built = large
    copy = pdf_check_copy(built)
    assert copy.rows_left_out == LARGE_ROWS + 1 - PDF_MAX_ZONE_ROWS  # the header row counts
    assert copy.blocks_left_out == LARGE_UTTERANCES - PDF_MAX_ZONE_BLOCKS
    table = _zone_content(copy.docx, "measurements").find(W.tbl)
    assert len(table.findall(W.tr)) == PDF_MAX_ZONE_ROWS
    notes = [p for p in _zone_content(copy.docx, "notes") if p.tag == W.p]
    assert len(notes) == PDF_MAX_ZONE_BLOCKS
    assert "".join(t.text for t in notes[-1].iter(W.t)) == f"utterance {LARGE_UTTERANCES - 1}"  # the last stays
    assert check_document(copy.docx, zone_map, template=template).passed  # still a whole, valid document
    assert len(_zone_content(built, "measurements").find(W.tbl).findall(W.tr)) == LARGE_ROWS + 1  # built: whole


def test_a_document_under_the_caps_is_converted_as_it_is(sample):
    copy = pdf_check_copy(sample[2])
    assert (copy.docx, copy.rows_left_out, copy.blocks_left_out) == (sample[2], 0, 0)
    with pytest.raises(ConversionError, match="cannot be made"):
        pdf_check_copy(b"PK not a package")


@pytest.mark.skipif(soffice_path() is None, reason="LibreOffice is not installed (scripts/system-deps.sh)")
def test_libreoffice_converts_the_copy_of_a_large_document_in_seconds(large):
    assert convert_to_pdf(pdf_check_copy(large[2]).docx, timeout=60).startswith(b"%PDF")


def test_conversion_without_libreoffice(sample, monkeypatch):
    monkeypatch.setattr("astra.builder.check.shutil.which", lambda name: None)
    with pytest.raises(ConversionError, match="not installed"):
        convert_to_pdf(sample[2])


def test_a_placeholder_left_anywhere_outside_the_zones_fails(sample):
    """A zone BUILDER did not fill shows its ``{{ zone_id }}``: in a paragraph (even split over runs), in a text
    box's mc:Fallback copy. Inside a zone the same text is the user's own and passes."""
    template, zone_map, built = sample
    in_zone = _patched(built, DOCUMENT, b'<w:t xml:space="preserve">checked</w:t>',
                       b'<w:t xml:space="preserve">write {{ notes }} here</w:t>')
    assert check_document(in_zone, zone_map, template=template).passed
    split = b'<w:p><w:r><w:t>{{ sum</w:t></w:r><w:r><w:t>mary }}</w:t></w:r></w:p>'
    fallback = (b'<w:p><w:r><mc:AlternateContent><mc:Choice Requires="wps"><w:t>box</w:t></mc:Choice><mc:Fallback>'
                b'<w:pict><v:shape><v:textbox><w:txbxContent><w:p><w:r><w:t>{{notes}}</w:t></w:r></w:p>'
                b'</w:txbxContent></v:textbox></v:shape></w:pict></mc:Fallback></mc:AlternateContent></w:r></w:p>')
    for stray, where in ((split, "summary"), (fallback, "notes")):
        doc = _patched(built, DOCUMENT, b"</w:body>", stray + b"</w:body>")
        report = check_document(doc, zone_map, template=template)
        assert _codes(report) == {"placeholder_left"}, report.findings
        assert where in report.findings[0].detail


NOTES_ZONE = b'<w:sdt><w:sdtPr><w:alias w:val="Notes"/><w:tag w:val="astra:notes;kind=text;fallback"/>'


def test_only_controls_of_the_zone_map_are_zones(sample):
    """An astra: control whose id is no zone of the zone map is ordinary content: it hides no placeholder."""
    template, zone_map, built = sample
    junk = (b'<w:sdt><w:sdtPr><w:tag w:val="astra:junk"/></w:sdtPr><w:sdtContent><w:p><w:r><w:t>{{ notes }}</w:t>'
            b"</w:r></w:p></w:sdtContent></w:sdt>")
    report = check_document(_patched(built, DOCUMENT, b"<w:sectPr ", junk + b"<w:sectPr "), zone_map, template=template)
    assert _codes(report) == {"placeholder_left"} and "{{ notes }}" in report.findings[0].detail
    assert "junk" in report.zones_found  # found, yet no zone
    malformed = junk.replace(b"astra:junk", b"astra:Not A Zone")
    report = check_document(_patched(built, DOCUMENT, b"<w:sectPr ", malformed + b"<w:sectPr "), zone_map,
                            template=template)
    assert _codes(report) == {"placeholder_left"}


def _notes_control(built: bytes) -> bytes:
    body = Package.read(built).read_part(DOCUMENT)
    start = body.index(NOTES_ZONE)
    return body[start:body.index(b"</w:sdt>", start) + len(b"</w:sdt>")]


def test_a_zone_held_by_two_controls_fails_but_a_text_box_fallback_copy_does_not(sample):
    template, zone_map, built = sample
    notes = _notes_control(built)
    twice = _patched(built, DOCUMENT, b"<w:sectPr ", notes + b"<w:sectPr ")
    report = check_document(twice, zone_map, template=template)
    assert _codes(report) == {"duplicate_zone"} and "'notes' has 2" in report.findings[0].detail
    assert report.zones_found.count("notes") == 2
    copy = (b'<w:p><w:r><mc:AlternateContent><mc:Choice Requires="wps"><w:t>box</w:t></mc:Choice><mc:Fallback><w:pict>'
            b"<v:shape><v:textbox><w:txbxContent>" + notes + b"</w:txbxContent></v:textbox></v:shape></w:pict>"
            b"</mc:Fallback></mc:AlternateContent></w:r></w:p>")
    with_copy = _patched(built, DOCUMENT, b"<w:sectPr ", copy + b"<w:sectPr ")
    assert check_document(with_copy, zone_map, template=template).passed


FIELD_BEGIN = (b'<w:r><w:fldChar w:fldCharType="begin"/></w:r><w:r><w:instrText> PAGE </w:instrText></w:r>'
               b'<w:r><w:fldChar w:fldCharType="separate"/></w:r><w:r><w:t>1</w:t></w:r>')
FIELD_END = b'<w:r><w:fldChar w:fldCharType="end"/></w:r>'


def test_a_zone_inside_a_field_fails(sample):
    """Word replaces a field's result when it updates the field: a zone there would lose its content and control."""
    template, zone_map, built = sample
    notes = _notes_control(built)
    spanning = _patched(built, DOCUMENT, notes, b"<w:p>" + FIELD_BEGIN + b"</w:p>" + notes + b"<w:p>" + FIELD_END
                        + b"</w:p>")
    report = check_document(spanning, zone_map, template=template)
    assert _codes(report) == {"zone_in_field"} and "'notes'" in report.findings[0].detail
    over_before = _patched(built, DOCUMENT, notes, b"<w:p>" + FIELD_BEGIN + FIELD_END + b"</w:p>" + notes)
    assert check_document(over_before, zone_map, template=template).passed
    run_level = (b'<w:p><w:fldSimple w:instr=" PAGE "><w:sdt><w:sdtPr><w:tag w:val="astra:notes"/></w:sdtPr>'
                 b"<w:sdtContent><w:r><w:t>x</w:t></w:r></w:sdtContent></w:sdt></w:fldSimple></w:p>")
    simple = _patched(built, DOCUMENT, notes, run_level)
    assert _codes(check_document(simple, zone_map, template=template)) == {"zone_in_field"}


@pytest.mark.parametrize("text", [
    b"<w:r><w:t>{{ notes</w:t><w:tab/><w:t> }}</w:t></w:r>",  # a tab between: not a placeholder by the grammar
    b'<w:moveFrom w:id="90" w:author="a" w:date="2024-01-01T00:00:00Z"><w:r><w:t>{{ notes }}</w:t></w:r></w:moveFrom>',
    b"<w:r><w:t>{{ 9notes }} {{ }}</w:t></w:r>",  # no zone id (an id is a Jinja identifier)
], ids=["tab", "moved-from", "no-zone-id"])
def test_text_the_zone_grammar_does_not_read_as_a_placeholder_passes(sample, text):
    template, zone_map, built = sample
    doc = _patched(built, DOCUMENT, b"<w:sectPr ", b"<w:p>" + text + b"</w:p><w:sectPr ")
    assert check_document(doc, zone_map, template=template).passed


OTHER = b'<w:sdt><w:sdtPr><w:tag w:val="other"/></w:sdtPr><w:sdtContent><w:r><w:t>c</w:t></w:r></w:sdtContent></w:sdt>'
BLOCK = b'<w:sdt><w:sdtPr><w:tag w:val="other"/></w:sdtPr><w:sdtContent><w:p/></w:sdtContent></w:sdt>'
RUBY_PR = (b'<w:rubyPr><w:rubyAlign w:val="center"/><w:hps w:val="10"/><w:hpsRaise w:val="18"/>'
           b'<w:hpsBaseText w:val="21"/><w:lid w:val="ja-JP"/></w:rubyPr>')


def _ruby(rt: bytes, base: bytes) -> bytes:
    return (b"<w:p><w:r><w:ruby>" + RUBY_PR + b"<w:rt>" + rt + b"</w:rt><w:rubyBase>" + base
            + b"</w:rubyBase></w:ruby></w:r></w:p>")


def _alternate(choice: bytes, fallback: bytes = b"") -> bytes:
    return (b'<mc:AlternateContent><mc:Choice Requires="wps">' + choice + b"</mc:Choice>" + fallback
            + b"</mc:AlternateContent>")


TABLE = b'<w:tbl><w:tblGrid><w:gridCol w:w="3000"/></w:tblGrid>%s</w:tbl>'
ROW = b"<w:tr><w:tc><w:p/></w:tc></w:tr>"
CELL = b"<w:tc><w:p/></w:tc>"
CONTROL_PLACES = {  # a content control in every place ECMA-376 lets one stand
    "block": BLOCK,
    "run": b"<w:p>" + OTHER + b"</w:p>",
    "row": TABLE % (b'<w:sdt><w:sdtPr><w:tag w:val="other"/></w:sdtPr><w:sdtContent>' + ROW
                    + b"</w:sdtContent></w:sdt>"),
    "cell": TABLE % (b'<w:tr><w:sdt><w:sdtPr><w:tag w:val="other"/></w:sdtPr><w:sdtContent>' + CELL
                     + b"</w:sdtContent></w:sdt></w:tr>"),
    "in-a-cell": TABLE % (b"<w:tr><w:tc>" + BLOCK + b"</w:tc></w:tr>"),
    "in-a-control": b'<w:p><w:sdt><w:sdtPr><w:tag w:val="outer"/></w:sdtPr><w:sdtContent>' + OTHER
                    + b"</w:sdtContent></w:sdt></w:p>",
    "hyperlink": b'<w:p><w:hyperlink w:anchor="top">' + OTHER + b"</w:hyperlink></w:p>",
    "simple-field": b'<w:p><w:fldSimple w:instr=" PAGE ">' + OTHER + b"</w:fldSimple></w:p>",
    "smart-tag": b'<w:p><w:smartTag w:uri="u" w:element="e">' + OTHER + b"</w:smartTag></w:p>",
    "custom-xml": b'<w:p><w:customXml w:element="e">' + OTHER + b"</w:customXml></w:p>",
    "dir": b'<w:p><w:dir w:val="rtl">' + OTHER + b"</w:dir></w:p>",
    "inserted": b'<w:p><w:ins w:id="91" w:author="a">' + OTHER + b"</w:ins></w:p>",
    "deleted": b'<w:p><w:del w:id="92" w:author="a">' + OTHER + b"</w:del></w:p>",
    "equation": b"<w:p><m:oMath>" + OTHER + b"</m:oMath></w:p>",
    "fraction": b"<w:p><m:oMath><m:f><m:num>" + OTHER + b"</m:num><m:den><m:r><m:t>2</m:t></m:r></m:den></m:f>"
                b"</m:oMath></w:p>",
    "paragraph-choice": b"<w:p>" + _alternate(OTHER, b"<mc:Fallback>" + OTHER + b"</mc:Fallback>") + b"</w:p>",
    "block-choice": _alternate(BLOCK),
    "text-box": b'<w:p><w:r>' + _alternate(b"<w:drawing><wps:txbx><w:txbxContent>" + BLOCK
                                           + b"</w:txbxContent></wps:txbx></w:drawing>") + b"</w:r></w:p>",
}
MISPLACED = {  # (what is added, where the finding says the control stands)
    "ruby-text": (_ruby(OTHER, b"<w:r><w:t>b</w:t></w:r>"), "w:rt"),
    "ruby-base": (_ruby(b"<w:r><w:t>a</w:t></w:r>", OTHER), "w:rubyBase"),
    "in-a-run": (b"<w:p><w:r>" + OTHER + b"</w:r></w:p>", "w:r"),
    "in-alternate-content": (b"<w:p>" + _alternate(b"").replace(b"<mc:Choice", OTHER + b"<mc:Choice") + b"</w:p>",
                             "mc:AlternateContent"),
    "in-a-run-choice": (b"<w:p><w:r>" + _alternate(OTHER) + b"</w:r></w:p>", "w:r"),
    "in-a-run-fallback": (b"<w:p><w:r>" + _alternate(b"<w:t>a</w:t>", b"<mc:Fallback>" + OTHER + b"</mc:Fallback>")
                          + b"</w:r></w:p>", "w:r"),
    "equation-paragraph": (b"<w:p><m:oMathPara>" + OTHER + b"</m:oMathPara></w:p>", "m:oMathPara"),
}


@pytest.mark.parametrize("case", sorted(CONTROL_PLACES))
def test_a_content_control_where_one_may_stand_passes(sample, case):
    template, zone_map, built = sample
    doc = _patched(built, DOCUMENT, b"<w:sectPr ", CONTROL_PLACES[case] + b"<w:sectPr ")
    report = check_document(doc, zone_map, template=template)
    assert report.passed, report.findings


@pytest.mark.parametrize("case", sorted(MISPLACED))
def test_a_content_control_where_none_may_stand_fails(sample, case):
    """Invalid markup Word refuses or "repairs": ruby text and base hold runs only, a run holds no control,
    alternate content holds only its branches, whose content stands where the alternate content does."""
    template, zone_map, built = sample
    added, place = MISPLACED[case]
    doc = _patched(built, DOCUMENT, b"<w:sectPr ", added + b"<w:sectPr ")
    report = check_document(doc, zone_map, template=template)
    assert _codes(report) == {"misplaced_control"}, report.findings
    assert report.findings[0].detail.startswith(f"a content control stands in {place} in word/document.xml (w:body[0]/")


def test_a_misplaced_zone_control_is_named_in_every_story_part():
    """A zone's control in ruby text, in a header: the finding names the zone, the part and the path."""
    header = _ruby(b'<w:sdt><w:sdtPr><w:tag w:val="astra:sign"/></w:sdtPr><w:sdtContent><w:r><w:t>x</w:t></w:r>'
                   b"</w:sdtContent></w:sdt>", b"<w:r><w:t>b</w:t></w:r>").decode()
    docx = minimal_docx("<w:p><w:r><w:t>Report</w:t></w:r></w:p>", headers=[header])
    report = check_document(docx, {"zones": [{"id": "sign"}]})
    assert [f.to_json() for f in report.findings] == [{"code": "misplaced_control", "detail": (
        "the content control of zone 'sign' stands in w:rt in word/header1.xml (w:p[0]/w:r[0]/w:ruby[0]/w:rt[0]/"
        "w:sdt[0]), where no content control may stand")}]


def _as_jinja(zone_map: dict, *unmarked: dict) -> dict:
    """``zone_map`` as a docxtpl template's: every zone marked, plus ``unmarked`` zones no control holds."""
    zones = [{**zone, "declared_by": "jinja", "marked": True} for zone in zone_map["zones"]]
    return {**zone_map, "language": "jinja", "zones": zones + [{**z, "marked": False} for z in unmarked]}


def test_a_docxtpl_zone_map_needs_its_marked_zones_only_each_once(sample):
    template, zone_map, built = sample
    ghost = {"id": "Paid_flag", "kind": "flag", "label": "Paid", "declared_by": "jinja", "accepts": {}}
    jinja = _as_jinja(zone_map, ghost)
    report = check_document(built, jinja, template=template)
    assert report.passed, report.findings  # the unmarked zone has no control, and needs none
    marked = {**jinja, "zones": [*jinja["zones"][:-1], {**ghost, "marked": True}]}
    assert [(f.code, f.detail) for f in check_document(built, marked, template=template).findings] == [
        ("zone_missing", "zone 'Paid_flag' has no astra content control")]
    twice = _patched(built, DOCUMENT, b"<w:sectPr ", _notes_control(built) + b"<w:sectPr ")
    assert _codes(check_document(twice, jinja, template=template)) == {"duplicate_zone"}


def test_a_docxtpl_document_has_no_placeholders_to_leave_data_saying_one_passes(sample):
    """A docxtpl render replaces every tag of its template: ``{{ notes }}`` in the output is what the data said."""
    template, zone_map, built = sample
    said = _patched(built, DOCUMENT, b"</w:body>", b"<w:p><w:r><w:t>{{ notes }}</w:t></w:r></w:p></w:body>")
    assert _codes(check_document(said, zone_map, template=template)) == {"placeholder_left"}
    assert check_document(said, _as_jinja(zone_map), template=template).passed
    hostile = _patched(said, DOCUMENT, b"</w:body>", b'<w:p><w:fldSimple w:instr="INCLUDETEXT x"/></w:p></w:body>')
    assert "field_not_allowed" in _codes(check_document(hostile, _as_jinja(zone_map), template=template))
