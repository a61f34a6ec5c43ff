"""Zone map extraction: content controls, split placeholders, sidecar, refusals, robustness."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator
from lxml import etree

from astra.ingest.zones import (
    REFUSAL_CODES,
    TemplateMaps,
    TemplateRefused,
    extract_maps,
    load_known_intents,
    paragraph_text,
    parse_tag,
    scan_zones,
    validate_sidecar,
)
from astra.ooxml.ns import NSMAP, W_NS, W
from astra.samples.templates import minimal_docx

REPO = Path(__file__).resolve().parents[2]
SCHEMAS = REPO / "astra" / "config_svc" / "schemas"
CLINC_DOMAINS = Path("/work/shared/datasets/clinc150/domains.json")
CORPUS = Path("/work/shared/datasets/docx-corpus")


def _validator(name: str) -> Draft202012Validator:
    schema = json.loads((SCHEMAS / f"{name}.schema.json").read_text())
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


ZONE_MAP = _validator("zone_map")
STYLE_MAP = _validator("style_map")


def assert_valid(maps: TemplateMaps) -> None:
    zerr = [f"{list(e.absolute_path)}: {e.message}" for e in ZONE_MAP.iter_errors(maps.zone_map)]
    serr = [f"{list(e.absolute_path)}: {e.message}" for e in STYLE_MAP.iter_errors(maps.style_map)]
    assert not zerr, zerr
    assert not serr, serr
    ids = [z["id"] for z in maps.zone_map["zones"]]
    assert sorted(ids) == sorted(maps.style_map["zones"])
    assert maps.zone_map["fallback_zone"] in ids
    assert [z["id"] for z in maps.zone_map["zones"] if z["accepts"]["fallback"]] == [maps.zone_map["fallback_zone"]]


def extract(body: str, **kw) -> TemplateMaps:
    sidecar = kw.pop("sidecar", None)
    known = kw.pop("known_intents", None)
    maps = extract_maps(minimal_docx(body, **kw), sidecar, known)
    assert_valid(maps)
    return maps


def zones_by_id(maps: TemplateMaps) -> dict:
    return {z["id"]: z for z in maps.zone_map["zones"]}


def refused(body: str, code: str, **kw) -> TemplateRefused:
    sidecar = kw.pop("sidecar", None)
    known = kw.pop("known_intents", None)
    with pytest.raises(TemplateRefused) as info:
        extract_maps(minimal_docx(body, **kw), sidecar, known)
    assert info.value.code == code, str(info.value)
    assert info.value.code in REFUSAL_CODES
    return info.value


def sdt(
    tag: str, inner: str = "<w:p><w:r><w:t>x</w:t></w:r></w:p>", alias: str | None = None, extra_pr: str = ""
) -> str:
    alias_xml = f'<w:alias w:val="{alias}"/>' if alias is not None else ""
    return (
        f'<w:sdt><w:sdtPr>{alias_xml}<w:tag w:val="{tag}"/><w:id w:val="7"/>{extra_pr}</w:sdtPr>'
        f"<w:sdtContent>{inner}</w:sdtContent></w:sdt>"
    )


def para(text: str, ppr: str = "") -> str:
    return f"<w:p>{ppr}<w:r><w:t xml:space=\"preserve\">{text}</w:t></w:r></w:p>"


# A text zone for templates whose other zones are tables: a template needs a text or list zone as its fallback.
NOTES = para("{{ notes }}")


@pytest.fixture(scope="module")
def known() -> set[str]:
    return load_known_intents(CLINC_DOMAINS)


# --------------------------------------------------------------------------- content controls


def test_content_control_with_params():
    body = para("Intro") + sdt(
        "astra:summary;kind=text;intents=travel.book_flight,banking;domains=travel;data=data/*.csv;media=media/*.png",
        alias="Trip summary",
    )
    maps = extract(body)
    [zone] = maps.zone_map["zones"]
    assert zone == {
        "id": "summary",
        "label": "Trip summary",
        "kind": "text",
        "declared_by": "content_control",
        "location": {"part": "/word/document.xml", "block": 1, "path": "w:sdt[0]"},
        "accepts": {
            "intents": ["travel.book_flight", "banking"],
            "domains": ["travel"],
            "data": "data/*.csv",
            "media": "media/*.png",
            "fallback": True,
        },
    }
    assert maps.zone_map["fallback_zone"] == "summary"


def test_content_control_without_alias_gets_title_cased_label_and_inline_position():
    inline = (
        '<w:p><w:r><w:t xml:space="preserve">Site: </w:t></w:r>'
        '<w:sdt><w:sdtPr><w:tag w:val="astra:site_name"/></w:sdtPr>'
        "<w:sdtContent><w:r><w:t>name</w:t></w:r></w:sdtContent></w:sdt></w:p>"
    )
    maps = extract(para("a") + para("b") + inline)
    zone = zones_by_id(maps)["site_name"]
    assert zone["label"] == "Site Name"
    assert zone["location"] == {"part": "/word/document.xml", "block": 2, "path": "w:p[2]/w:sdt[0]"}
    assert zone["accepts"] == {"intents": [], "domains": [], "fallback": True}


def test_alias_whitespace_collapsed_and_truncated():
    maps = extract(sdt("astra:a", alias="  Long\t" + "x" * 300))
    label = maps.zone_map["zones"][0]["label"]
    assert label.startswith("Long x") and len(label) == 200


def test_tag_grammar():
    assert parse_tag("astra:summary") == ("summary", {})
    zid, params = parse_tag(
        " ASTRA:summary ; Kind = list ; intents = a.b , c, a.b ,, ; domains=x,y;fallback; data= data/in/*.json ;"
    )
    assert zid == "summary"
    assert params == {
        "kind": "list",
        "intents": ["a.b", "c"],
        "domains": ["x", "y"],
        "fallback": True,
        "data": "data/in/*.json",
    }
    assert parse_tag("astra:n;fallback=false")[1] == {"fallback": False}
    assert parse_tag("astra:n;fallback=yes")[1] == {"fallback": True}
    assert parse_tag("astra:n;speaker")[1] == {"speaker": True}
    assert parse_tag("astra:n;Speaker = Off;fallback")[1] == {"speaker": False, "fallback": True}


@pytest.mark.parametrize(
    "tag",
    [
        "astra:x;colour=red",  # unknown key
        "astra:x;kind=text;kind=list",  # duplicate key
        "astra:x;kind=paragraph",  # unknown kind
        "astra:x;kind",  # missing value
        "astra:x;intents=",  # empty value
        "astra:x;intents=Book_Flight",  # malformed intent
        "astra:x;intents=a.b.c",  # too many dots
        "astra:x;domains=travel.book_flight",  # intent where a domain is expected
        "astra:x;data=/etc/passwd",  # not under data/
        "astra:x;data=data/../secrets.csv",  # traversal
        "astra:x;media=data/*.png",  # media must be under media/
        "astra:x;fallback=maybe",
        "astra:x;speaker=loud",
        "astra:x;speaker;speaker=no",  # duplicate key
    ],
)
def test_invalid_tag_is_refused(tag):
    err = refused(sdt(tag), "invalid_tag")
    assert err.location == {"part": "/word/document.xml", "block": 0, "path": "w:sdt[0]"}


def test_non_astra_content_controls_are_ordinary_content():
    body = sdt("customer-field") + sdt("", alias="No tag") + '<w:sdt><w:sdtContent><w:p/></w:sdtContent></w:sdt>'
    refused(body, "no_zones")


def test_placeholder_inside_non_astra_content_control_is_a_zone():
    maps = extract(sdt("other", inner=para("{{ inner }}")))
    assert zones_by_id(maps)["inner"]["location"]["path"] == "w:sdt[0]/w:sdtContent[0]/w:p[0]"


# --------------------------------------------------------------------------- placeholders

SPLITS = {
    "two_runs": (
        '<w:p><w:r><w:t xml:space="preserve">Dear {{ sum</w:t></w:r>'
        '<w:r><w:rPr><w:b/></w:rPr><w:t xml:space="preserve">mary }}, hello</w:t></w:r></w:p>',
        2,
    ),
    "three_runs_proof_err": (
        '<w:p><w:r><w:t>{{</w:t></w:r><w:proofErr w:type="spellStart"/>'
        '<w:r><w:rPr><w:i/></w:rPr><w:t xml:space="preserve"> summ</w:t></w:r><w:proofErr w:type="spellEnd"/>'
        '<w:r><w:rPr><w:b/></w:rPr><w:t xml:space="preserve">ary }}</w:t></w:r></w:p>',
        3,
    ),
    "five_runs_split_braces_bookmarks": (
        '<w:p><w:pPr><w:jc w:val="center"/></w:pPr>'
        '<w:bookmarkStart w:id="1" w:name="b1"/>'
        '<w:r><w:rPr><w:sz w:val="30"/></w:rPr><w:t>{</w:t></w:r>'
        '<w:proofErr w:type="gramStart"/>'
        '<w:r><w:t>{</w:t></w:r>'
        '<w:bookmarkStart w:id="2" w:name="b2"/>'
        '<w:r><w:rPr><w:u w:val="single"/></w:rPr><w:t xml:space="preserve"> su</w:t></w:r>'
        '<w:proofErr w:type="gramEnd"/><w:bookmarkEnd w:id="2"/>'
        '<w:hyperlink w:anchor="x"><w:r><w:t>mmary</w:t></w:r></w:hyperlink>'
        '<w:r><w:t xml:space="preserve"> }}</w:t></w:r><w:bookmarkEnd w:id="1"/></w:p>',
        5,
    ),
}


@pytest.mark.parametrize("case", sorted(SPLITS))
def test_placeholder_split_across_runs(case):
    body, n_runs = SPLITS[case]
    body = para("Report") + body
    maps = extract(body)
    [zone] = maps.zone_map["zones"]
    assert zone["id"] == "summary"
    assert zone["declared_by"] == "placeholder"
    assert zone["kind"] == "text"
    assert zone["location"] == {"part": "/word/document.xml", "block": 1, "path": "w:p[1]"}
    [decl] = scan_zones(minimal_docx(body))
    assert len(decl.runs) == n_runs
    assert all(r.tag == f"{{{W_NS}}}r" for r in decl.runs)
    assert decl.anchor.run is decl.runs[0]


def test_split_placeholder_style_comes_from_first_run():
    body, _ = SPLITS["five_runs_split_braces_bookmarks"]
    resolved = extract(body).style_map["zones"]["summary"]["resolved"]
    assert resolved["size_pt"] == 15.0  # first run: sz 30 half-points
    assert resolved["underline"] is None  # third run's underline does not leak
    assert resolved["alignment"] == "center"


def test_several_placeholders_in_one_paragraph_in_text_order():
    body = (
        '<w:p><w:r><w:t xml:space="preserve">{{ first }} and {{ sec</w:t></w:r>'
        '<w:smartTag w:uri="u" w:element="e"><w:r><w:t>ond</w:t></w:r></w:smartTag>'
        '<w:r><w:t xml:space="preserve"> }} {{third}}</w:t></w:r></w:p>'
    )
    maps = extract(body)
    assert [z["id"] for z in maps.zone_map["zones"]] == ["first", "second", "third"]


def test_deleted_text_is_ignored_and_tabs_break_placeholders():
    tracked = (
        '<w:p><w:r><w:t>{{ ti</w:t></w:r><w:del w:id="1" w:author="a"><w:r><w:delText>XX</w:delText></w:r></w:del>'
        '<w:ins w:id="2" w:author="a"><w:r><w:t>tle }}</w:t></w:r></w:ins></w:p>'
    )
    assert [z["id"] for z in extract(tracked).zone_map["zones"]] == ["title"]
    tabbed = '<w:p><w:r><w:t>{{ ti</w:t><w:tab/><w:t>tle }}</w:t></w:r></w:p>'
    refused(tabbed, "no_zones")  # no tag either way: neither a placeholder nor a docxtpl tag spans a tab


def test_paragraph_text_is_read_as_the_grammar_says():
    """The one reader of a paragraph's text (the zone scan's, the check's, BUILDER's): each w:t of its own runs,
    empty ones too, at its offsets; a separator for a tab, a field character, a drawing and each edge of a zone
    control; deleted, moved-from and fallback text, field instructions and nested paragraphs left out."""
    xmlns = " ".join(f'xmlns:{prefix}="{uri}"' for prefix, uri in NSMAP.items())
    p = etree.fromstring(
        f'<w:p {xmlns}><w:pPr><w:rPr><w:b/></w:rPr></w:pPr><w:r><w:t>ab</w:t><w:tab/><w:t/></w:r>'
        '<w:del w:id="1" w:author="a"><w:r><w:delText>gone</w:delText></w:r></w:del>'
        '<w:moveFrom w:id="2" w:author="a"><w:r><w:t>moved</w:t></w:r></w:moveFrom>'
        '<w:r><w:fldChar w:fldCharType="begin"/><w:instrText>PAGE</w:instrText></w:r>'
        '<w:r><mc:AlternateContent><mc:Choice Requires="wps"><w:t>c</w:t></mc:Choice>'
        "<mc:Fallback><w:t>f</w:t></mc:Fallback></mc:AlternateContent></w:r>"
        + sdt("astra:z", "<w:r><w:t>zz</w:t></w:r>") + sdt("other", "<w:r><w:t>o</w:t></w:r>") +
        "<w:r><w:drawing><wps:txbx><w:txbxContent><w:p><w:r><w:t>boxed</w:t></w:r></w:p></w:txbxContent></wps:txbx>"
        "</w:drawing></w:r></w:p>")
    text, pieces = paragraph_text(p)
    assert text == "ab\x00\x00c\x00zz\x00o\x00"
    zone = p.find(W.sdt)
    assert [(piece.start, piece.end, piece.element.tag, piece.in_zone) for piece in pieces] == [
        (0, 2, W.t, False), (2, 3, W.tab, False), (3, 3, W.t, False), (3, 4, W.fldChar, False), (4, 5, W.t, False),
        (5, 6, W.sdt, False), (6, 8, W.t, True), (8, 9, W.sdt, False), (9, 10, W.t, False), (10, 11, W.drawing, False)]
    assert pieces[5].element is zone is pieces[7].element
    assert paragraph_text(p, lambda _control: False)[0] == "ab\x00\x00czzo\x00"


def test_unclosed_or_single_braces_are_not_placeholders():
    # ({% for %} and {{ x.y }} make a docxtpl template: tests/ingest/test_jinja_zones.py)
    refused(para("{ title }") + para("{{ title") + para("title }}") + para("{ { title } }") + para("{ {title}}"),
            "no_zones")


def test_placeholders_in_header_and_footer():
    header = para("Inspection report") + para("Ref: {{ report_</w:t></w:r><w:r><w:t>ref }}")
    footer = '<w:tbl><w:tr><w:tc><w:p/></w:tc></w:tr></w:tbl>' + para("{{ page_note }}")
    maps = extract(para("{{ body_text }}"), headers=[header], footers=[footer])
    zones = maps.zone_map["zones"]
    assert [z["id"] for z in zones] == ["body_text", "report_ref", "page_note"]
    by = zones_by_id(maps)
    assert by["report_ref"]["location"] == {"part": "/word/header1.xml", "block": 1, "path": "w:p[1]"}
    assert by["page_note"]["location"] == {"part": "/word/footer1.xml", "block": 1, "path": "w:p[0]"}
    assert maps.zone_map["fallback_zone"] == "body_text"  # main document wins the default rule


def test_header_content_control():
    maps = extract(para("{{ a }}"), headers=[sdt("astra:letterhead;kind=image", alias="Logo")])
    assert zones_by_id(maps)["letterhead"]["location"]["part"] == "/word/header1.xml"
    assert zones_by_id(maps)["letterhead"]["kind"] == "image"


def test_alternate_content_fallback_is_not_scanned_twice():
    textbox = '<w:txbxContent><w:p><w:r><w:t>{{ boxed }}</w:t></w:r></w:p></w:txbxContent>'
    body = (
        "<w:p><w:r><mc:AlternateContent>"
        f'<mc:Choice Requires="wps"><w:drawing><wps:txbx>{textbox}</wps:txbx></w:drawing></mc:Choice>'
        f"<mc:Fallback><w:pict><v:textbox>{textbox}</v:textbox></w:pict></mc:Fallback>"
        "</mc:AlternateContent></w:r></w:p>"
    )
    maps = extract(body)
    assert [z["id"] for z in maps.zone_map["zones"]] == ["boxed"]


# --------------------------------------------------------------------------- kinds


def _table(cells: list[list[str]], tblpr: str = "") -> str:
    rows = "".join("<w:tr>" + "".join(f"<w:tc>{c}</w:tc>" for c in row) + "</w:tr>" for row in cells)
    return f"<w:tbl><w:tblPr>{tblpr}</w:tblPr>{rows}</w:tbl>"


def test_table_zone_inferred_when_control_wraps_a_table():
    table = _table([[para("A"), para("B")], [para(""), para("")]], '<w:tblStyle w:val="Grid"/>')
    maps = extract(para("x") + sdt("astra:readings;data=data/*.csv", inner=table) + NOTES)
    zone = zones_by_id(maps)["readings"]
    assert zone["kind"] == "table"
    assert zone["accepts"]["data"] == "data/*.csv"
    assert maps.style_map["zones"]["readings"]["table_style"] == "Grid"


def test_table_zone_inferred_for_placeholder_in_a_cell():
    table = _table([[para("Point"), para("Value")], [para("{{ rows }}"), para("")]])
    maps = extract(para("x") + table + NOTES)
    zone = zones_by_id(maps)["rows"]
    assert zone["kind"] == "table"
    assert zone["location"] == {"part": "/word/document.xml", "block": 1, "path": "w:tbl[0]/w:tr[1]/w:tc[0]/w:p[0]"}


def test_table_zone_inferred_for_a_block_control_in_a_cell_text_for_an_inline_one():
    block = sdt("astra:cell_zone")
    maps = extract(_table([[block]]) + NOTES)
    zone = zones_by_id(maps)["cell_zone"]
    assert zone["kind"] == "table"
    assert zone["location"]["path"] == "w:tbl[0]/w:tr[0]/w:tc[0]/w:sdt[0]"
    # In a line of text a table cannot go: the control is a text zone, and refused when declared a table.
    inline = sdt("astra:cell_zone", inner="<w:r><w:t>v</w:t></w:r>")
    assert zones_by_id(extract(_table([[f"<w:p>{inline}</w:p>"]]) + NOTES))["cell_zone"]["kind"] == "text"
    err = refused(_table([[f"<w:p>{inline.replace('astra:cell_zone', 'astra:cell_zone;kind=table')}</w:p>"]]) + NOTES,
                  "zone_unsupported_position")
    assert "table zone inline in a line of text" in err.message
    assert err.location["path"] == "w:tbl[0]/w:tr[0]/w:tc[0]/w:p[0]/w:sdt[0]"


@pytest.mark.parametrize("level", ["row", "cell"])
def test_a_row_or_cell_level_control_is_refused(level):
    """BUILDER cannot fill a control among a table's rows or a row's cells: what the zone receives would be lost."""
    cell = "<w:tc><w:p/></w:tc>"
    if level == "row":
        table, path = f"<w:tbl><w:tblPr/>{sdt('astra:z', inner=f'<w:tr>{cell}</w:tr>')}</w:tbl>", "w:tbl[0]/w:sdt[0]"
    else:
        table, path = f"<w:tbl><w:tblPr/><w:tr>{sdt('astra:z', inner=cell)}</w:tr></w:tbl>", "w:tbl[0]/w:tr[0]/w:sdt[0]"
    err = refused(table + NOTES, "zone_unsupported_position")
    assert err.location == {"part": "/word/document.xml", "block": 0, "path": path}
    among = "a table's rows" if level == "row" else "a row's cells"
    assert f"zone 'z' is a content control among {among}: BUILDER cannot fill" in err.message


def test_explicit_kind_beats_table_inference():
    table = _table([[para("{{ ignored_kind }}")], [sdt("astra:stays_text;kind=text")]])
    maps = extract(table, sidecar={"zones": {"ignored_kind": {"kind": "text"}}})
    assert {z["id"]: z["kind"] for z in maps.zone_map["zones"]} == {"ignored_kind": "text", "stays_text": "text"}


def test_image_zone_from_picture_control():
    drawing = '<w:p><w:r><w:drawing><wp:inline><wp:docPr w:id="1" name="p"/></wp:inline></w:drawing></w:r></w:p>'
    maps = extract(sdt("astra:site_photo;media=media/*.png", inner=drawing, extra_pr="<w:picture/>") + para("{{ t }}"))
    zone = zones_by_id(maps)["site_photo"]
    assert zone["kind"] == "image"
    assert zone["accepts"]["media"] == "media/*.png"
    assert maps.zone_map["fallback_zone"] == "t"


LIST_STYLES = (
    '<w:style w:type="paragraph" w:default="1" w:styleId="Normal"><w:name w:val="Normal"/></w:style>'
    '<w:style w:type="paragraph" w:styleId="ListBullet"><w:name w:val="List Bullet"/><w:basedOn w:val="Normal"/>'
    '<w:pPr><w:numPr><w:numId w:val="1"/></w:numPr></w:pPr></w:style>'
    '<w:style w:type="paragraph" w:styleId="MyList"><w:name w:val="My List"/><w:basedOn w:val="ListBullet"/></w:style>'
)


def test_list_zone_from_direct_numbering_and_from_style():
    direct = sdt(
        "astra:direct", inner=para("a", '<w:pPr><w:numPr><w:ilvl w:val="0"/><w:numId w:val="3"/></w:numPr></w:pPr>')
    )
    styled = para("{{ styled }}", '<w:pPr><w:pStyle w:val="MyList"/></w:pPr>')
    unnumbered = para(
        "{{ unnumbered }}", '<w:pPr><w:pStyle w:val="ListBullet"/><w:numPr><w:numId w:val="0"/></w:numPr></w:pPr>'
    )
    maps = extract(direct + styled + unnumbered, styles=LIST_STYLES)
    kinds = {z["id"]: z["kind"] for z in maps.zone_map["zones"]}
    assert kinds == {"direct": "list", "styled": "list", "unnumbered": "text"}
    assert maps.zone_map["fallback_zone"] == "unnumbered"


# --------------------------------------------------------------------------- sidecar


def test_sidecar_overrides_and_completes():
    body = sdt("astra:summary;intents=travel.book_flight;domains=travel", alias="Template label") + para("{{ notes }}")
    sidecar = {
        "zones": {
            "summary": {"label": "Sidecar label", "intents": ["banking.transfer", "book_hotel"], "data": "data/x.csv"},
            "notes": {"kind": "list", "domains": [], "media": "media/*.jpg"},
        },
        "fallback_zone": "summary",
    }
    known = load_known_intents(CLINC_DOMAINS)
    maps = extract(body, sidecar=sidecar, known_intents=known)
    by = zones_by_id(maps)
    assert by["summary"]["label"] == "Sidecar label"
    assert by["summary"]["accepts"] == {
        "intents": ["banking.transfer", "book_hotel"],
        "domains": ["travel"],
        "data": "data/x.csv",
        "fallback": True,
    }
    assert by["notes"]["kind"] == "list"
    assert by["notes"]["label"] == "Notes"
    assert by["notes"]["accepts"] == {"intents": [], "domains": [], "media": "media/*.jpg", "fallback": False}
    assert maps.zone_map["fallback_zone"] == "summary"


def test_sidecar_fallback_beats_tag_flag():
    body = sdt("astra:a;fallback") + sdt("astra:b")
    assert extract(body).zone_map["fallback_zone"] == "a"
    assert extract(body, sidecar={"fallback_zone": "b"}).zone_map["fallback_zone"] == "b"


def test_a_zone_asks_for_the_speaker_by_tag_or_sidecar():
    """`speaker` is written on the zone (not in accepts) only when true; the sidecar beats the tag, and is the
    only way a placeholder can ask."""
    body = sdt("astra:minutes;speaker") + sdt("astra:summary;speaker=no") + para("{{ notes }}") + para("{{ log }}")
    by = zones_by_id(extract(body))
    assert by["minutes"]["speaker"] is True and "speaker" not in by["minutes"]["accepts"]
    assert all("speaker" not in by[z] for z in ("summary", "notes", "log"))
    sidecar = {"zones": {"minutes": {"speaker": False}, "summary": {"speaker": True}, "notes": {"speaker": True}}}
    by = zones_by_id(extract(body, sidecar=sidecar))
    assert [z for z in by if by[z].get("speaker")] == ["summary", "notes"]
    list_zone = para("{{ steps }}", '<w:pPr><w:numPr><w:ilvl w:val="0"/><w:numId w:val="1"/></w:numPr></w:pPr>')
    assert zones_by_id(extract(list_zone + NOTES, sidecar={"zones": {"steps": {"speaker": True}}}))["steps"] == {
        "id": "steps", "label": "Steps", "kind": "list", "declared_by": "placeholder",
        "location": {"part": "/word/document.xml", "block": 0, "path": "w:p[0]"},
        "accepts": {"intents": [], "domains": [], "fallback": False}, "speaker": True}


def test_speaker_on_a_table_or_image_zone_is_refused():
    err = refused(sdt("astra:readings;kind=table;speaker") + NOTES, "bad_speaker_zone")
    assert err.location == {"part": "/word/document.xml", "block": 0, "path": "w:sdt[0]"}
    assert "table zone" in err.message
    err = refused(para("{{ photo }}") + NOTES, "bad_speaker_zone",
                  sidecar={"zones": {"photo": {"kind": "image", "speaker": True}}})
    assert err.location == {"part": "sidecar", "path": "zones.photo.speaker"}
    # The final kind decides: a sidecar making a speaking text zone a table refuses it too...
    as_table = {"zones": {"readings": {"kind": "table"}}}
    refused(sdt("astra:readings;speaker") + NOTES, "bad_speaker_zone", sidecar=as_table)
    # ...and one turning the speaker off lets the table be.
    silent = {"zones": {"readings": {"speaker": False}}}
    maps = extract(sdt("astra:readings;kind=table;speaker") + NOTES, sidecar=silent)
    assert "speaker" not in zones_by_id(maps)["readings"]


def test_zone_map_schema_allows_speaker_only_on_text_and_list_zones():
    zone_map = extract(sdt("astra:minutes;speaker") + sdt("astra:readings;kind=table")).zone_map
    for kind, speaker, valid in (("text", True, True), ("list", True, True), ("table", True, False),
                                 ("image", True, False), ("table", False, True)):
        zones = [{**zone_map["zones"][0], "kind": kind, "speaker": speaker}, zone_map["zones"][1]]
        assert ZONE_MAP.is_valid({**zone_map, "zones": zones}) is valid, (kind, speaker)
    assert not ZONE_MAP.is_valid({**zone_map, "zones": [{**zone_map["zones"][0], "speaker": "yes"}]})


def test_validate_sidecar_accepts_none_and_empty():
    assert validate_sidecar(None) == {}
    assert validate_sidecar({}) == {}
    assert validate_sidecar({"version": 1, "zones": {}}) == {"version": 1, "zones": {}}


# --------------------------------------------------------------------------- fallback rule


def test_default_fallback_is_last_text_zone_of_main_document():
    body = (
        para("{{ first_text }}")
        + para("{{ second_text }}")
        + sdt("astra:items;kind=list")
        + sdt("astra:grid;kind=table")
    )
    maps = extract(body, headers=[para("{{ header_text }}")])
    assert maps.zone_map["fallback_zone"] == "second_text"


def test_default_fallback_without_text_zones():
    assert extract(sdt("astra:items;kind=list") + sdt("astra:pic;kind=image")).zone_map["fallback_zone"] == "items"
    assert extract(para("x"), headers=[para("{{ only_header }}")]).zone_map["fallback_zone"] == "only_header"


def test_a_template_without_a_text_or_list_zone_has_no_fallback():
    # Unmatched utterances would land in a table or image zone, which holds no prose.
    err = refused(sdt("astra:pic;kind=image") + sdt("astra:grid;kind=table"), "no_fallback_zone")
    assert "pic (image), grid (table)" in err.message and err.location is None


def test_fallback_refusals():
    refused(sdt("astra:a;fallback") + sdt("astra:b;fallback=true"), "multiple_fallback_zones")
    refused(sdt("astra:a;kind=image;fallback") + para("{{ t }}"), "bad_fallback_zone")
    refused(sdt("astra:a;kind=table") + para("{{ t }}"), "bad_fallback_zone", sidecar={"fallback_zone": "a"})
    # an explicit fallback=false is no flag at all
    assert extract(sdt("astra:a;fallback=false") + sdt("astra:b")).zone_map["fallback_zone"] == "b"


# --------------------------------------------------------------------------- refusals


def test_refuses_template_without_zones():
    err = refused(para("Just text"), "no_zones")
    assert isinstance(err, ValueError)
    refused("", "no_zones")


@pytest.mark.parametrize(
    "body,headers",
    [
        (sdt("astra:summary") + sdt("astra:summary"), []),
        (sdt("astra:summary") + para("{{ summary }}"), []),
        (sdt("astra:summary"), [para("{{ summary }}")]),
    ],
    ids=["two_controls", "control_and_placeholder", "control_and_header_placeholder"],
)
def test_refuses_duplicate_zone_ids(body, headers):
    err = refused(body, "duplicate_zone_id", headers=headers)
    assert "summary" in err.message
    assert err.location is not None


@pytest.mark.parametrize(
    "body,headers",
    [(para("{{ summary }} {{ summary }}"), []), (para("{{ summary }}"), [para("{{ summary }}")])],
    ids=["same_paragraph", "body_and_header"],
)
def test_a_placeholder_used_twice_is_a_docxtpl_templates_name(body, headers):
    """Only bare placeholders, one used twice: docxtpl's language reads that (tests/ingest/test_jinja_zones.py)."""
    maps = extract(body, headers=headers)
    assert maps.zone_map["language"] == "jinja"
    assert [zone["id"] for zone in maps.zone_map["zones"]] == ["summary"]


@pytest.mark.parametrize(
    "body",
    [
        sdt("astra:"),
        sdt("astra:site-photo"),
        sdt("astra:9lives"),
        sdt("astra:caf\u00e9"),
        sdt("astra:" + "a" * 65),
        para("{{ " + "a" * 65 + " }}"),
    ],
)
def test_refuses_bad_zone_id(body):
    """(``{{ 9lives }}``, ``{{ site photo }}``, ``{{ item.name }}`` are docxtpl's: tests/ingest/test_jinja_zones.py)"""
    refused(body, "bad_zone_id")


def test_zone_ids_are_jinja_identifiers_capitals_and_leading_underscore_included():
    maps = extract(sdt("astra:Summary") + para("{{ _Notes2 }}") + para("{{ clientName }}"))
    assert [(z["id"], z["label"]) for z in maps.zone_map["zones"]] == [
        ("Summary", "Summary"), ("_Notes2", "Notes2"), ("clientName", "ClientName")]
    assert set(maps.style_map["zones"]) == {"Summary", "_Notes2", "clientName"}
    sidecar = {"zones": {"Summary": {"label": "Top"}}, "fallback_zone": "_Notes2"}
    maps = extract(sdt("astra:Summary") + para("{{ _Notes2 }}"), sidecar=sidecar)
    assert maps.zone_map["fallback_zone"] == "_Notes2" and maps.zone_map["zones"][0]["label"] == "Top"


def test_longest_valid_zone_id_accepted():
    zid = "a" * 64
    assert extract(sdt(f"astra:{zid}")).zone_map["zones"][0]["id"] == zid


def test_refuses_unknown_intent(known):
    refused(sdt("astra:s;intents=travel.book_flight,travel.teleport"), "unknown_intent", known_intents=known)
    refused(sdt("astra:s;intents=banking.book_flight"), "unknown_intent", known_intents=known)  # wrong domain
    refused(sdt("astra:s;intents=teleport"), "unknown_intent", known_intents=known)
    refused(sdt("astra:s;intents=travel"), "unknown_intent", known_intents=known)  # a domain is no intent
    refused(para("{{ s }}"), "unknown_intent", known_intents=known, sidecar={"zones": {"s": {"intents": ["x.y"]}}})


def test_refuses_unknown_domain(known):
    refused(sdt("astra:s;domains=travel,space"), "unknown_domain", known_intents=known)
    refused(sdt("astra:s;domains=book_flight"), "unknown_domain", known_intents=known)  # an intent is no domain
    refused(para("{{ s }}"), "unknown_domain", known_intents=known, sidecar={"zones": {"s": {"domains": ["mars"]}}})


def test_known_bindings_pass(known):
    maps = extract(
        sdt("astra:s;intents=travel.book_flight,book_hotel,banking.pay_bill;domains=travel,banking"),
        known_intents=known,
    )
    assert maps.zone_map["zones"][0]["accepts"]["domains"] == ["travel", "banking"]
    # without known_intents nothing is checked beyond syntax
    extract(sdt("astra:s;intents=made.up;domains=nowhere"))


def test_known_intents_without_domains():
    refused(sdt("astra:s;intents=b"), "unknown_intent", known_intents={"a"})
    extract(sdt("astra:s;intents=a;domains=a"), known_intents={"a"})


def test_load_known_intents():
    known = load_known_intents(CLINC_DOMAINS)
    domains = json.loads(CLINC_DOMAINS.read_text())
    n_intents = sum(len(v) for v in domains.values())
    assert len(known) == len(domains) + 2 * n_intents
    assert {"book_flight", "travel.book_flight", "travel", "banking.pay_bill"} <= known
    assert "travel.pay_bill" not in known


def test_load_known_intents_rejects_bad_file(tmp_path):
    bad = tmp_path / "d.json"
    bad.write_text('["travel"]')
    with pytest.raises(ValueError):
        load_known_intents(bad)
    bad.write_text('{"travel": "book_flight"}')
    with pytest.raises(ValueError):
        load_known_intents(bad)


def test_refuses_sidecar_naming_unknown_zone():
    err = refused(para("{{ a }}"), "unknown_sidecar_zone", sidecar={"zones": {"ghost": {"label": "Boo"}}})
    assert err.location == {"part": "sidecar", "path": "zones.ghost"}
    refused(para("{{ a }}"), "unknown_sidecar_zone", sidecar={"fallback_zone": "ghost"})


@pytest.mark.parametrize(
    "sidecar",
    [
        [],
        "zones",
        {"zone": {}},
        {"version": 2},
        {"zones": {"a": {"colour": "red"}}},
        {"zones": {"a": {"kind": "paragraph"}}},
        {"zones": {"a": {"label": ""}}},
        {"zones": {"a": {"label": "   "}}},
        {"zones": {"a": {"label": 3}}},
        {"zones": {"a": {"intents": "travel.book_flight"}}},
        {"zones": {"a": {"intents": ["Travel"]}}},
        {"zones": {"a": {"intents": ["x", "x"]}}},
        {"zones": {"a": {"domains": ["a.b"]}}},
        {"zones": {"a": {"data": "../data/x.csv"}}},
        {"zones": {"a": {"data": "data/../../x"}}},
        {"zones": {"a": {"media": "data/x.png"}}},
        {"zones": {"a": {"media": "media/x.png\n"}}},
        {"zones": {"a": {"speaker": "yes"}}},
        {"zones": {"9a": {}}},
        {"zones": {"a\n": {}}},
        {"zones": []},
        {"fallback_zone": "Not valid"},
        {"fallback_zone": "a\n"},
    ],
)
def test_refuses_invalid_sidecar(sidecar):
    refused(para("{{ a }}"), "invalid_sidecar", sidecar=sidecar)


def test_refuses_nested_zones():
    refused(sdt("astra:outer", inner=sdt("astra:inner")), "nested_zone")
    refused(sdt("astra:outer", inner=para("{{ inner }}")), "nested_zone")
    inline = (
        '<w:p><w:sdt><w:sdtPr><w:tag w:val="astra:outer"/></w:sdtPr>'
        "<w:sdtContent><w:r><w:t>{{ inner }}</w:t></w:r></w:sdtContent></w:sdt></w:p>"
    )
    refused(inline, "nested_zone")


def test_refuses_unreadable_packages():
    for data in (b"", b"not a zip", b"PK\x03\x04garbage"):
        with pytest.raises(TemplateRefused) as info:
            extract_maps(data)
        assert info.value.code == "invalid_package"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("hello.txt", "hi")
    with pytest.raises(TemplateRefused) as info:
        extract_maps(buf.getvalue())
    assert info.value.code == "invalid_package"


def _replace_part(docx: bytes, name: str, data: bytes) -> bytes:
    src = zipfile.ZipFile(io.BytesIO(docx))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            dst.writestr(info.filename, data if info.filename == name else src.read(info.filename))
    return out.getvalue()


def test_refuses_malformed_xml_and_entities(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("TOPSECRET")
    base = minimal_docx(para("{{ a }}"))
    xxe = (
        f'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY x SYSTEM "file://{secret}">]>'
        f'<w:document xmlns:w="{W_NS}"><w:body><w:p><w:r><w:t>{{{{ a }}}} &x;</w:t></w:r></w:p></w:body></w:document>'
    ).encode()
    bomb = (
        '<?xml version="1.0"?><!DOCTYPE d [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]>'
        f'<w:document xmlns:w="{W_NS}"><w:body><w:p><w:r><w:t>&b;</w:t></w:r></w:p></w:body></w:document>'
    ).encode()
    for payload in (xxe, bomb, b"<w:document><unclosed>"):
        with pytest.raises(TemplateRefused) as info:
            extract_maps(_replace_part(base, "word/document.xml", payload))
        assert info.value.code == "invalid_package"
        assert "TOPSECRET" not in str(info.value)


def test_template_refused_shape():
    err = TemplateRefused("no_zones", "nothing here", {"part": "/word/document.xml", "block": 0})
    assert isinstance(err, ValueError)
    assert (err.code, err.message, err.location) == (
        "no_zones",
        "nothing here",
        {"part": "/word/document.xml", "block": 0},
    )
    assert str(err).startswith("no_zones: nothing here")


def test_strict_namespace_document():
    strict_w = "http://purl.oclc.org/ooxml/wordprocessingml/main"
    doc = (
        f'<w:document xmlns:w="{strict_w}"><w:body><w:p><w:r><w:t>{{{{ strict_zone }}}}</w:t></w:r></w:p>'
        '<w:sdt><w:sdtPr><w:tag w:val="astra:strict_cc;kind=list"/></w:sdtPr>'
        "<w:sdtContent><w:p/></w:sdtContent></w:sdt>"
        "</w:body></w:document>"
    ).encode()
    maps = extract_maps(_replace_part(minimal_docx(""), "word/document.xml", doc))
    assert_valid(maps)
    assert [(z["id"], z["kind"]) for z in maps.zone_map["zones"]] == [("strict_zone", "text"), ("strict_cc", "list")]


# --------------------------------------------------------------------------- robustness over a real corpus

CORPUS_FILES = sorted(CORPUS.glob("*/*.docx"))


def _inject_probe(docx: bytes) -> bytes:
    """Append a split {{ probe_zone }} paragraph to the document body."""
    zf = zipfile.ZipFile(io.BytesIO(docx))
    names = {n.lower(): n for n in zf.namelist()}
    member = names["word/document.xml"]
    root = etree.fromstring(zf.read(member), etree.XMLParser(resolve_entities=False, no_network=True))
    ns = root.tag[1:].split("}")[0]
    body = root.find(f"{{{ns}}}body")
    p = etree.Element(f"{{{ns}}}p")
    for text in ("{{ pro", "be_zo", "ne }}"):
        r = etree.SubElement(p, f"{{{ns}}}r")
        etree.SubElement(r, f"{{{ns}}}t").text = text
    sect = body.find(f"{{{ns}}}sectPr")
    if sect is not None:
        sect.addprevious(p)
    else:
        body.append(p)
    return _replace_part(docx, member, etree.tostring(root, xml_declaration=True, encoding="UTF-8", standalone=True))


def test_corpus_present():
    assert len(CORPUS_FILES) >= 40
    assert {p.parent.name for p in CORPUS_FILES} == {"python-docx", "mammoth"}


@pytest.mark.parametrize("path", CORPUS_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_corpus_never_crashes(path):
    data = path.read_bytes()
    try:
        maps = extract_maps(data)
    except TemplateRefused as exc:
        assert exc.code == "no_zones", str(exc)
    else:
        assert_valid(maps)
    probed = extract_maps(_inject_probe(data))
    assert_valid(probed)
    assert "probe_zone" in zones_by_id(probed)
