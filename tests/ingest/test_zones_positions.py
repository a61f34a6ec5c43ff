"""INGEST and BUILDER's check agree on where a zone can be.

For every position here, a template INGEST accepts builds into documents that pass BUILDER's check, its
zones filled or left empty; a template INGEST refuses (``zone_unsupported_position``) is one that, accepted
as INGEST accepted it before, builds into documents the check fails: placeholder text BUILDER does not
replace (in a footnote, endnote or comment, or in an mc:Fallback BUILDER does not rewrite), a zone left
in the result of a field spanning paragraphs, which Word replaces when it updates the field, a zone holding
part of a field, or a content control (a zone's or any other) where none may stand (in a run, ruby text or
base). INGEST also refuses zones BUILDER would not fill or show: a row- or cell-level control, an inline table
zone, a zone in an mc:Choice whose mc:Fallback BUILDER removes.
"""

from __future__ import annotations

import pytest

from astra.builder.check import check_document
from astra.builder.engine import build
from astra.ingest import zones
from astra.ingest.zones import TemplateRefused, extract_maps
from astra.ooxml.ns import CT_WML, NSMAP, RT_TRANSITIONAL
from astra.ooxml.package import Package, write_package
from astra.samples.templates import minimal_docx
from tests.builder.helpers import intent_output

NOTES = "<w:p><w:r><w:t>{{ notes }}</w:t></w:r></w:p>"  # the fallback zone of every template here
X = "<w:r><w:t>{{ x }}</w:t></w:r>"
END = '<w:r><w:fldChar w:fldCharType="end"/></w:r>'
XMLNS = " ".join(f'xmlns:{prefix}="{uri}"' for prefix, uri in NSMAP.items())


def begin(name: str = "REF a") -> str:
    """A complex field's begin, instruction and separate runs: what follows until its end is its result."""
    return (f'<w:r><w:fldChar w:fldCharType="begin"/></w:r><w:r><w:instrText xml:space="preserve"> {name} '
            '</w:instrText></w:r><w:r><w:fldChar w:fldCharType="separate"/></w:r>')


def control(zone: str, inner: str, extra_pr: str = "") -> str:
    return (f'<w:sdt><w:sdtPr><w:tag w:val="astra:{zone}"/>{extra_pr}</w:sdtPr><w:sdtContent>{inner}'
            "</w:sdtContent></w:sdt>")


def text_box(choice: str, fallback: str) -> str:
    """A paragraph holding a text box as Word writes it: DrawingML in mc:Choice, its VML copy in mc:Fallback."""
    return ('<w:p><w:r><mc:AlternateContent><mc:Choice Requires="wps"><w:drawing><wps:txbx><w:txbxContent>'
            f"{choice}</w:txbxContent></wps:txbx></w:drawing></mc:Choice><mc:Fallback><w:pict><v:shape><v:textbox>"
            f"<w:txbxContent>{fallback}</w:txbxContent></v:textbox></v:shape></w:pict></mc:Fallback>"
            "</mc:AlternateContent></w:r></w:p>")


def p(*runs: str) -> str:
    return f"<w:p>{''.join(runs)}</w:p>"


def t(text: str) -> str:
    return f'<w:r><w:t xml:space="preserve">{text}</w:t></w:r>'


def with_note_part(template: bytes, kind: str, inner: str) -> bytes:
    """``template`` with a footnotes, endnotes or comments part (related from the main document) holding one
    note whose paragraph is ``inner``."""
    root = {"footnotes": "footnote", "endnotes": "endnote", "comments": "comment"}[kind]
    extra = ' w:author="t" w:initials="t"' if kind == "comments" else ""
    part = (f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?><w:{kind} {XMLNS}><w:{root} w:id="1"{extra}>'
            f"{inner}</w:{root}></w:{kind}>").encode()
    rel = (f'<Relationship Id="rIdNote" Type="{RT_TRANSITIONAL}{kind}" Target="{kind}.xml"/>'
           "</Relationships>").encode()
    override = f'<Override PartName="/word/{kind}.xml" ContentType="{CT_WML}{kind}+xml"/></Types>'.encode()
    pkg = Package.read(template)
    members = []
    for name in pkg.members:
        data = pkg.read_part(name)
        if name == "word/_rels/document.xml.rels":
            data = data.replace(b"</Relationships>", rel)
        elif name == "[Content_Types].xml":
            data = data.replace(b"</Types>", override)
        members.append((name, data))
    return write_package([*members, (f"word/{kind}.xml", part)])


def template(case: tuple) -> bytes:
    body, note = case
    docx = minimal_docx(NOTES + body)
    return with_note_part(docx, *note) if note else docx


ONE_PARAGRAPH_FIELD = ({"x": "zone_in_field"},)
ACCEPTED = {
    "field-in-one-paragraph": (p(t("see "), begin(), X, END, t(".")), None),
    "field-alone-in-one-paragraph": (p(begin(), X, END), None),
    "nested-fields-in-one-paragraph": (p(begin(), begin("PAGE"), X, END, END), None),
    "control-in-one-paragraph-field": (p(begin(), control("x", t("old")), END), None),
    "field-over-before-the-zone": (p(begin(), t("r")) + p(END, t("done")) + p(X), None),
    "field-from-before-in-a-text-box-paragraph": (text_box(p(begin(), t("r"), END), p(begin(), t("r"))) + p(X),
                                                  None),
    "text-box-in-both-renderings": (text_box(p(X), p(X)), None),
    "text-box-fallback-with-other-text": (text_box(p(X), p(t("{{ y }}"))), None),
    "text-box-fallback-beside-a-control": (text_box(control("x", p(t("old"))), p(t("{{ y }}"))), None),
    "tab-between-the-braces": (p('<w:r><w:t>{{ x</w:t><w:tab/><w:t>}}</w:t></w:r>'), None),
    "field-character-between-the-braces": (p(t("{{ x"), begin(), t(" }}"), END), None),
    "text-like-the-placeholder-before-it-in-its-run": (p('<w:r><w:t>{{ x</w:t><w:tab/><w:t>}} or {{ x }}</w:t></w:r>'),
                                                       None),
    "moved-from-text": (p('<w:moveFrom w:id="9" w:author="a" w:date="2024-01-01T00:00:00Z">' + X + "</w:moveFrom>"),
                        None),
    "comment-without-a-zone-id": ("", ("comments", p(t("{{ Not a zone }} and {{ }}")))),
    "field-from-before-ends-before-the-zone": (p(begin(), t("r")) + p(END, t(" then "), X), None),
    "field-from-before-ends-before-the-zone-another-begins-after":
        (p(begin(), t("r")) + p(END, X, begin("REF b"), t("r")) + p(END), None),
    "field-from-before-ends-before-a-field-holding-the-zone":
        (p(begin(), t("r")) + p(END, begin("REF b"), X, END, t(".")), None),
    "field-from-before-ends-after-a-field-of-its-paragraph":
        (p(begin(), t("r")) + p(begin("REF b"), t("r"), END, END, X), None),
    "two-fields-from-before-end-before-the-zone": (p(begin(), begin("REF b"), t("r")) + p(END, END, X), None),
    "control-after-a-field-from-before": (p(begin(), t("r")) + p(END, control("x", t("old")), begin("REF b"))
                                          + p(END), None),
    "placeholder-inserted": (p(t("a "), f'<w:ins w:id="7" w:author="a">{X}</w:ins>'), None),
    "placeholder-moved-to": (p(t("a "), f'<w:moveTo w:id="7" w:author="a">{X}</w:moveTo>'), None),
    "placeholder-in-a-smart-tag": (p(t("a "), f'<w:smartTag w:uri="u" w:element="e">{X}</w:smartTag>'), None),
    "placeholder-in-custom-xml": (p(t("a "), f'<w:customXml w:element="e">{X}</w:customXml>'), None),
    "placeholder-in-dir-and-bdo": (p(t("a "), f'<w:dir w:val="rtl"><w:bdo w:val="ltr">{X}</w:bdo></w:dir>'), None),
    "placeholder-in-a-control": (p(t("a "), '<w:sdt><w:sdtPr><w:tag w:val="other"/></w:sdtPr><w:sdtContent>'
                                 f"{X}</w:sdtContent></w:sdt>"), None),
    "placeholder-in-a-paragraph-choice":
        (p(t("a "), f'<mc:AlternateContent><mc:Choice Requires="wps">{X}</mc:Choice></mc:AlternateContent>'), None),
    "placeholder-in-a-choice-inserted":
        (p(t("a "), f'<w:ins w:id="7" w:author="a"><mc:AlternateContent><mc:Choice Requires="wps">{X}</mc:Choice>'
           "</mc:AlternateContent></w:ins>"), None),
    "placeholder-in-a-run-beside-an-inline-choice":
        (p('<w:r><w:t>{{ x }}</w:t><mc:AlternateContent><mc:Choice Requires="wps"><w:t>c</w:t></mc:Choice>'
           "</mc:AlternateContent></w:r>"), None),
}
REFUSED = {
    "endnote": ("", ("endnotes", p(t("see {{ x }}"))), "placeholder_left"),
    "comment": ("", ("comments", p(X)), "placeholder_left"),
    "comment-control-tagged-like-a-zone": ("", ("comments", control("notes", p(X))), "placeholder_left"),
    "text-box-fallback-only": (text_box(p(t("box")), p(X)), None, "placeholder_left"),
    "text-box-fallback-beside-a-control-showing-its-placeholder":
        (text_box(control("y", p(t("Type here")), "<w:showingPlcHdr/>"), p(X)), None, "placeholder_left"),
    "text-box-fallback-text-outside-its-boxes":
        (p('<w:r><mc:AlternateContent><mc:Choice Requires="wps"><w:t>box</w:t></mc:Choice><mc:Fallback>'
           "<w:t>{{ x }}</w:t></mc:Fallback></mc:AlternateContent></w:r>"), None, "placeholder_left"),
    "field-spans-paragraphs-zone-alone": (p(begin(), t("r")) + p(X) + p(END), None, "zone_in_field"),
    "field-spans-paragraphs-zone-inline": (p(begin(), t("r")) + p(t("a "), X, t(" b"), END), None, "zone_in_field"),
    "field-ends-in-a-later-paragraph": (p(t("a"), begin(), X) + p(END), None, "zone_in_field"),
    "field-from-before-ends-after-the-zone": (p(begin(), t("r")) + p(begin("REF b"), X, END, END), None,
                                              "zone_in_field"),
    "two-fields-from-before-one-ends-before-the-zone":
        (p(begin(), begin("REF b"), t("r")) + p(END, X, END), None, "zone_in_field"),
    "control-in-a-field-from-before": (p(begin(), t("r")) + p(t("a "), control("x", t("old")), END), None,
                                       "zone_in_field"),
    "block-control-in-a-field-spanning-paragraphs":
        (p(begin(), t("r")) + control("x", p(t("old"))) + p(END), None, "zone_in_field"),
    "text-box-in-a-field-spanning-paragraphs": (p(begin(), t("r")) + text_box(p(X), p(X)) + p(END), None,
                                                "zone_in_field"),
}


def _checks(docx: bytes, maps) -> list[set[str]]:
    """The check's finding codes for a build with every text zone filled, and for one with no content."""
    ids = [zone["id"] for zone in maps.zone_map["zones"]]
    codes = []
    for session in (intent_output({zone: [f"said for {zone}"] for zone in ids}), intent_output()):
        built = build(docx, maps.zone_map, maps.style_map, session).docx
        codes.append({f.code for f in check_document(built, maps.zone_map, template=docx).findings})
    return codes


@pytest.mark.parametrize("case", sorted(ACCEPTED))
def test_what_ingest_accepts_builds_into_documents_that_pass_the_check(case):
    docx = template(ACCEPTED[case])
    assert _checks(docx, extract_maps(docx)) == [set(), set()]


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_what_ingest_refuses_would_fail_the_check(case, monkeypatch):
    body, note, finding = REFUSED[case]
    docx = template((body, note))
    with pytest.raises(TemplateRefused) as info:
        extract_maps(docx)
    assert info.value.code == "zone_unsupported_position", str(info.value)
    assert info.value.location["part"] == (f"/word/{note[0]}.xml" if note else "/word/document.xml")
    # Accepted the way INGEST accepted it before: the check fails builds of it.
    monkeypatch.setattr(zones, "_refuse_placeholders_left", lambda pkg, decls: None)
    monkeypatch.setattr(zones, "_refuse_zones_in_fields", lambda decls: None)
    assert any(finding in codes for codes in _checks(docx, extract_maps(docx)))


def test_refusals_name_the_place_and_the_reason():
    err = _refused(template(REFUSED["comment"][:2]))
    assert err.location == {"part": "/word/comments.xml", "block": 0, "path": "w:comment[0]/w:p[0]"}
    assert "{{ x }} is text in /word/comments.xml" in err.message and "body, headers and footers" in err.message
    err = _refused(template(REFUSED["text-box-fallback-only"][:2]))
    assert err.location["path"].endswith("mc:Fallback[0]/w:pict[0]/v:shape[0]/v:textbox[0]/w:txbxContent[0]/w:p[0]")
    assert "mc:Fallback" in err.message
    err = _refused(template(REFUSED["field-ends-in-a-later-paragraph"][:2]))
    assert err.location == {"part": "/word/document.xml", "block": 1, "path": "w:p[1]"}
    assert "zone 'x' sits in a field that spans paragraphs" in err.message and "Word replaces" in err.message
    err = _refused(template(REFUSED["block-control-in-a-field-spanning-paragraphs"][:2]))
    assert err.location == {"part": "/word/document.xml", "block": 2, "path": "w:sdt[0]"}


def test_a_zone_in_a_field_from_before_is_refused_until_that_field_ends():
    """A field begun in an earlier paragraph holds the zones of this one up to its end, not after it."""
    err = _refused(template((p(begin(), t("r")) + p(t("a "), X, END), None)))
    assert err.location["path"] == "w:p[2]"
    assert "zone 'x' sits in a field begun in an earlier paragraph" in err.message
    maps = extract_maps(template((p(begin(), t("r")) + p(END, t(" then "), X), None)))
    assert [zone["id"] for zone in maps.zone_map["zones"]] == ["notes", "x"]


def _refused(docx: bytes) -> TemplateRefused:
    with pytest.raises(TemplateRefused) as info:
        extract_maps(docx)
    return info.value


def test_a_header_text_box_fallback_is_judged_like_the_body():
    header = text_box(p(t("box")), p(X))
    with pytest.raises(TemplateRefused, match="mc:Fallback") as info:
        extract_maps(minimal_docx(NOTES, headers=[header]))
    assert info.value.location["part"] == "/word/header1.xml"
    assert extract_maps(minimal_docx(NOTES, headers=[text_box(p(X), p(X))])).zone_map["fallback_zone"] == "notes"


def test_a_placeholder_in_a_note_is_refused_even_without_any_zone():
    """The stray text is the more useful refusal: the template's only placeholder sits where no zone can be."""
    with pytest.raises(TemplateRefused) as info:
        extract_maps(with_note_part(minimal_docx(p(t("Report"))), "endnotes", p(X)))
    assert info.value.code == "zone_unsupported_position"


def inline_choice(choice: str, fallback: str = "") -> str:
    """A run holding alternate content whose branches are run content: text, not paragraphs."""
    return (f'<w:r><mc:AlternateContent><mc:Choice Requires="wps">{choice}</mc:Choice>{fallback}'
            "</mc:AlternateContent></w:r>")


@pytest.mark.parametrize("runs", [
    inline_choice("<w:t>{{ x }}</w:t>"),
    inline_choice("<w:t>{{ x }}</w:t>", "<mc:Fallback><w:t>x</w:t></mc:Fallback>"),
    inline_choice("<w:t>{{ x }}</w:t>", "<mc:Fallback><w:t>{{ x }}</w:t></mc:Fallback>"),
    t("{{ ") + inline_choice("<w:t>x</w:t>") + t(" }}"),
    '<w:r><w:t>{{ x</w:t><mc:AlternateContent><mc:Choice Requires="wps"><w:t/></mc:Choice></mc:AlternateContent>'
    "<w:t> }}</w:t></w:r>",
], ids=["whole-in-the-choice", "whole-in-the-choice-with-a-fallback", "in-the-choice-and-its-fallback",
        "part-in-the-choice", "empty-text-of-the-choice-inside-it"])
def test_a_placeholder_with_text_not_directly_in_a_run_is_refused(runs):
    """BUILDER replaces the runs a placeholder spans with the zone's content control: with text of the placeholder
    in an inline mc:Choice, that control would stand in mc:AlternateContent (invalid markup) or the choice be
    removed. A placeholder in a text box (paragraphs in the choice) is in runs of its own, and accepted above."""
    err = _refused(template((p(runs), None)))
    assert err.code == "zone_unsupported_position"
    assert err.location == {"part": "/word/document.xml", "block": 1, "path": "w:p[1]"}
    assert "'{{ x }}' has text in mc:Choice, not directly in a run" in err.message


RUBY_PR = ('<w:rubyPr><w:rubyAlign w:val="center"/><w:hps w:val="10"/><w:hpsRaise w:val="18"/>'
           '<w:hpsBaseText w:val="21"/><w:lid w:val="ja-JP"/></w:rubyPr>')


def ruby(text: str, base: str) -> str:
    """A run holding ruby: ``text`` (the reading, w:rt) shown above ``base`` (w:rubyBase)."""
    return f"<w:r><w:ruby>{RUBY_PR}<w:rt>{text}</w:rt><w:rubyBase>{base}</w:rubyBase></w:ruby></w:r>"


INS = '<w:ins w:id="7" w:author="a">{}</w:ins>'
OUT_OF_PLACE = {  # the paragraph's runs; where the placeholder's run is, and its path in the paragraph
    "ruby-text": (t("Name: ") + ruby(X, t("kanji")), "w:rt", "w:r[1]/w:ruby[0]/w:rt[0]/w:r[0]"),
    "ruby-base": (t("Name: ") + ruby(t("reading"), X), "w:rubyBase", "w:r[1]/w:ruby[0]/w:rubyBase[0]/w:r[0]"),
    "part-in-ruby-base": (t("{{ ") + ruby("", t("x }}")), "w:rubyBase", "w:r[1]/w:ruby[0]/w:rubyBase[0]/w:r[0]"),
    "inserted-in-ruby-text": (t("Name: ") + ruby(INS.format(X), t("kanji")), "w:rt",
                              "w:r[1]/w:ruby[0]/w:rt[0]/w:ins[0]/w:r[0]"),
    "deleted": (t("a ") + f'<w:del w:id="7" w:author="a">{X}</w:del>', "w:del", "w:del[0]/w:r[0]"),
    "inserted-in-an-equation": (t("a ") + f"<m:oMath>{INS.format(X)}</m:oMath>", "m:oMath",
                                "m:oMath[0]/w:ins[0]/w:r[0]"),
    "choice-of-a-run": (inline_choice(X), "w:r", "w:r[0]/mc:AlternateContent[0]/mc:Choice[0]/w:r[0]"),
}


@pytest.mark.parametrize("case", sorted(OUT_OF_PLACE))
def test_a_placeholder_in_runs_where_no_content_control_can_stand_is_refused(case):
    """BUILDER puts the zone's control where the placeholder's runs were: in ruby text or base (runs only), in an
    equation, in a run, the document would be invalid; in deleted text, accepting the deletion would remove the
    zone. The runs must sit in the paragraph, through nothing but places a run-level content control may stand."""
    runs, place, path = OUT_OF_PLACE[case]
    err = _refused(template((p(runs), None)))
    assert err.code == "zone_unsupported_position"
    assert err.location == {"part": "/word/document.xml", "block": 1, "path": "w:p[1]"}
    assert f"'{{{{ x }}}}' has text in a run inside {place} ({path} of its paragraph)" in err.message


@pytest.mark.parametrize("case", ["ruby-text", "ruby-base"])
def test_a_placeholder_in_ruby_accepted_would_build_a_misplaced_control(case, monkeypatch):
    """Accepted the way INGEST accepted it before, BUILDER builds the zone's control into w:rt or w:rubyBase: the
    check fails every build of it."""
    docx = template((p(OUT_OF_PLACE[case][0]), None))
    monkeypatch.setattr(zones, "_outside_placeholder_holders", lambda run, paragraph: None)
    assert all("misplaced_control" in codes for codes in _checks(docx, extract_maps(docx)))


def test_a_malformed_note_part_is_an_invalid_package():
    docx = with_note_part(minimal_docx(NOTES), "comments", "<w:p>")
    with pytest.raises(TemplateRefused) as info:
        extract_maps(docx)
    assert info.value.code == "invalid_package"


def other_control(inner: str) -> str:
    """A content control that is no zone (ordinary content BUILDER copies as it is)."""
    return f'<w:sdt><w:sdtPr><w:tag w:val="company"/></w:sdtPr><w:sdtContent>{inner}</w:sdtContent></w:sdt>'


MISPLACED_CONTROLS = {  # the template's body after the fallback zone; where the control stands; its path
    "zone-control-in-ruby-text": (p(t("Name: "), ruby(control("x", t("a")), t("kanji"))), "w:rt",
                                  "w:p[1]/w:r[1]/w:ruby[0]/w:rt[0]/w:sdt[0]"),
    "zone-control-directly-in-a-run": (p('<w:r>' + control("x", t("a")) + "</w:r>"), "w:r", "w:p[1]/w:r[0]/w:sdt[0]"),
    "zone-control-in-a-run-choice": (p(inline_choice(control("x", t("a")))), "w:r",
                                     "w:p[1]/w:r[0]/mc:AlternateContent[0]/mc:Choice[0]/w:sdt[0]"),
    "other-control-in-ruby-base": (p(ruby(t("kana"), other_control(t("kanji")))), "w:rubyBase",
                                   "w:p[1]/w:r[0]/w:ruby[0]/w:rubyBase[0]/w:sdt[0]"),
}
WELL_PLACED_CONTROLS = {
    "zone-control-in-a-hyperlink": p(t("a "), f'<w:hyperlink w:anchor="b">{control("x", t("old"))}</w:hyperlink>'),
    "other-control-beside-ruby": p(ruby(t("kana"), t("kanji")), other_control(t("Acme"))),
    "other-control-in-an-equation": p(f"<m:oMath>{other_control('<m:r><m:t>x</m:t></m:r>')}</m:oMath>"),
    "other-control-in-a-paragraph-choice": p(f'<mc:AlternateContent><mc:Choice Requires="wps">{other_control(t("a"))}'
                                             f'</mc:Choice><mc:Fallback>{t("b")}</mc:Fallback></mc:AlternateContent>'),
}


@pytest.mark.parametrize("case", sorted(MISPLACED_CONTROLS))
def test_a_content_control_where_none_may_stand_is_refused(case, monkeypatch):
    """Any content control, a zone's or not, where ECMA-376 lets none stand: accepted, every build of the template
    fails the check's misplaced_control (one list of places, astra.ingest.zones.CONTROL_PARENTS, for both)."""
    body, place, path = MISPLACED_CONTROLS[case]
    docx = template((body, None))
    err = _refused(docx)
    assert err.code == "zone_unsupported_position"
    assert err.location == {"part": "/word/document.xml", "block": 1, "path": path}
    assert f"stands in {place}, where no content control may stand" in err.message
    monkeypatch.setattr(zones, "_refuse_misplaced_controls", lambda pkg: None)
    assert all("misplaced_control" in codes for codes in _checks(docx, extract_maps(docx)))


@pytest.mark.parametrize("case", sorted(WELL_PLACED_CONTROLS))
def test_a_content_control_where_one_may_stand_is_accepted_and_builds(case):
    docx = template((WELL_PLACED_CONTROLS[case], None))
    assert _checks(docx, extract_maps(docx)) == [set(), set()]


def test_a_misplaced_control_in_a_header_is_refused():
    header = p(ruby(t("kana"), other_control(t("kanji"))))
    err = _refused(minimal_docx(NOTES, headers=[header]))
    assert err.location == {"part": "/word/header1.xml", "block": 0,
                            "path": "w:p[0]/w:r[0]/w:ruby[0]/w:rubyBase[0]/w:sdt[0]"}
    assert "a content control stands in w:rubyBase" in err.message


def fld(kind: str) -> str:
    return f'<w:r><w:fldChar w:fldCharType="{kind}"/></w:r>'


def code(text: str) -> str:
    return f'<w:r><w:instrText xml:space="preserve">{text}</w:instrText></w:r>'


SPLIT_FIELDS = {  # a zone's control holding part of a field; what the refusal says it holds
    "begun-in-the-zone-ended-after": (p(control("x", fld("begin") + code(" PA")), code("GE "), fld("separate"),
                                        t("1"), END), "the beginning of a field that ends after it"),
    "code-in-the-zone-begun-before": (p(fld("begin"), control("x", code(" PAGE ")), fld("separate"), t("1"), END),
                                      "code of a field begun before it"),
    "ended-in-the-zone-begun-before": (p(fld("begin"), code(" PAGE "), control("x", fld("separate") + t("1") + END)),
                                       "the separator of a field begun before it"),
    "block-zone-begins-a-field-ending-after-it": (control("x", p(t("a"), fld("begin"), code(" PAGE "))) + p(END),
                                                  "the beginning of a field that ends after it"),
}
WHOLE_FIELDS = {
    "whole-field-in-an-inline-zone": p(t("page "), control("x", begin("PAGE") + t("1") + END), t(".")),
    "whole-field-in-a-block-zone": control("x", p(begin("PAGE"), t("1"), END)),
    "zone-with-a-whole-field-in-a-field-result": p(begin(), control("x", begin("PAGE") + t("1") + END), END),
}


@pytest.mark.parametrize("case", sorted(SPLIT_FIELDS))
def test_a_zone_holding_part_of_a_field_is_refused(case):
    body, what = SPLIT_FIELDS[case]
    err = _refused(template((body, None)))
    assert err.code == "zone_unsupported_position"
    assert err.location["part"] == "/word/document.xml" and err.location["path"].endswith("w:sdt[0]")
    assert f"zone 'x' holds {what}" in err.message


@pytest.mark.parametrize("case", ["begun-in-the-zone-ended-after", "code-in-the-zone-begun-before"])
def test_a_zone_holding_part_of_a_field_accepted_builds_a_field_the_template_lacks(case, monkeypatch):
    """Accepted as INGEST accepted it before, BUILDER replaces the zone's half of the field and leaves the other:
    the check fails every build for a field the template does not have."""
    docx = template((SPLIT_FIELDS[case][0], None))
    monkeypatch.setattr(zones, "_refuse_fields_across_zone_edges", lambda decls: None)
    assert all("field_not_allowed" in codes for codes in _checks(docx, extract_maps(docx)))


def test_a_block_zone_beginning_a_field_accepted_builds_a_field_end_without_its_begin(monkeypatch):
    docx = template((SPLIT_FIELDS["block-zone-begins-a-field-ending-after-it"][0], None))
    monkeypatch.setattr(zones, "_refuse_fields_across_zone_edges", lambda decls: None)
    maps = extract_maps(docx)
    built = Package.read(build(docx, maps.zone_map, maps.style_map, intent_output({"x": ["said"]})).docx)
    kinds = [el.get(f"{{{NSMAP['w']}}}fldCharType") for el in built.xml("word/document.xml").iter(
        f"{{{NSMAP['w']}}}fldChar")]
    assert kinds == ["end"]


@pytest.mark.parametrize("case", sorted(WHOLE_FIELDS))
def test_a_zone_holding_whole_fields_is_accepted_and_builds(case):
    docx = template((WHOLE_FIELDS[case], None))
    assert _checks(docx, extract_maps(docx)) == [set(), set()]


TABLE = {"id": "data/t.json", "source": "data/t.json", "sheet": None, "header": ["k", "v"],
         "columns": [{"name": "k", "type": "text"}, {"name": "v", "type": "decimal"}],
         "rows": [["a", 1.5], ["b", None]], "row_count": 2}


def cell_table(*cells: str) -> str:
    return ('<w:tbl><w:tblGrid><w:gridCol w:w="3000"/></w:tblGrid><w:tr>'
            + "".join(f"<w:tc>{cell}</w:tc>" for cell in cells) + "</w:tr></w:tbl>")


def _build_all(docx: bytes, sidecar: dict | None = None, tables: tuple = ()) -> tuple[dict, list, set[str]]:
    """Zone kinds INGEST gives, BUILDER's problems and the check's codes, every zone receiving text or a table."""
    maps = extract_maps(docx, sidecar)
    kinds = {zone["id"]: zone["kind"] for zone in maps.zone_map["zones"]}
    session = intent_output({z: ["said"] for z, kind in kinds.items() if kind != "table"},
                            {z: [dict(TABLE, id=f"data/{z}.json")] for z, kind in kinds.items() if kind == "table"})
    built = build(docx, maps.zone_map, maps.style_map, session)
    codes = {f.code for f in check_document(built.docx, maps.zone_map, template=docx).findings}
    return kinds, [problem.code for problem in built.problems], codes


@pytest.mark.parametrize("cell", [
    p(t("Total: {{ total }} units")),
    p(t("{{ total }}"), "<w:r><w:tab/></w:r>"),
    p(f'<w:hyperlink w:anchor="b">{t("{{ total }}")}</w:hyperlink>'),
    p(t("Total: "), control("total", t("old"))),
], ids=["with-text", "with-a-tab", "in-a-hyperlink", "inline-control"])
def test_an_inline_zone_in_a_cell_is_a_text_zone_and_builds(cell):
    """A zone inline in a line of text in a table is no table zone (a table cannot go there: BUILDER would drop
    every table of it); it takes what is said."""
    kinds, problems, codes = _build_all(minimal_docx(NOTES + cell_table(cell)))
    assert (kinds["total"], problems, codes) == ("text", [], set())


@pytest.mark.parametrize("cell", [
    p(t("{{ total }}")),
    p('<w:bookmarkStart w:id="1" w:name="b"/>', t(" {{ total }} "), '<w:bookmarkEnd w:id="1"/>'),
    control("total", p(t("old"))),
], ids=["placeholder-alone", "placeholder-alone-in-a-bookmark", "block-control"])
def test_a_block_zone_in_a_cell_is_a_table_zone_and_builds(cell):
    kinds, problems, codes = _build_all(minimal_docx(NOTES + cell_table(cell)))
    assert (kinds["total"], problems, codes) == ("table", [], set())


@pytest.mark.parametrize("cell", [p(t("Total: {{ total }} units")), p(t("Total: "), control("total", t("old")))],
                         ids=["placeholder", "control"])
def test_an_inline_zone_declared_a_table_is_refused(cell):
    docx = minimal_docx(NOTES + cell_table(cell))
    with pytest.raises(TemplateRefused) as info:
        extract_maps(docx, {"version": 1, "zones": {"total": {"kind": "table"}}})
    assert info.value.code == "zone_unsupported_position"
    assert info.value.location == {"part": "sidecar", "path": "zones.total.kind"}
    assert "zone 'total' is a table zone inline in a line of text" in info.value.message


def test_a_cell_level_control_is_refused_it_would_lose_every_unmatched_utterance(monkeypatch):
    """Accepted as before, a cell-level control could be the fallback zone: BUILDER leaves it unfilled, and every
    utterance no other zone takes is lost."""
    docx = minimal_docx('<w:tbl><w:tblGrid><w:gridCol w:w="3000"/></w:tblGrid><w:tr>'
                        + control("cellz", "<w:tc>" + p(t("c")) + "</w:tc>") + "</w:tr></w:tbl><w:p/>")
    sidecar = {"version": 1, "zones": {"cellz": {"kind": "text"}}}
    with pytest.raises(TemplateRefused) as info:
        extract_maps(docx, sidecar)
    assert info.value.code == "zone_unsupported_position"
    assert info.value.location["path"] == "w:tbl[0]/w:tr[0]/w:sdt[0]"
    monkeypatch.setattr(zones, "_refuse_unfilled_controls", lambda decls: None)
    maps = extract_maps(docx, sidecar)
    assert maps.zone_map["fallback_zone"] == "cellz"
    built = build(docx, maps.zone_map, maps.style_map, intent_output({"cellz": ["every unmatched utterance"]}))
    assert [problem.code for problem in built.problems] == ["zone_unsupported_position"]
    assert b"every unmatched utterance" not in Package.read(built.docx).read_part("word/document.xml")


def alternate(choice: str, fallback: str | None, requires: str = "foo") -> str:
    """Alternate content whose choice needs ``requires`` (a namespace readers may not know) and its fallback."""
    fallback_xml = f"<mc:Fallback>{fallback}</mc:Fallback>" if fallback is not None else ""
    return (f'<mc:AlternateContent xmlns:foo="urn:example:future"><mc:Choice Requires="{requires}">{choice}'
            f"</mc:Choice>{fallback_xml}</mc:AlternateContent>")


IN_A_CHOICE = {  # the body after the fallback zone, and the refused zone's path
    "placeholder-in-a-paragraph-choice": (p(alternate(t("Note: {{ x }}"), t("FALLBACK TEXT"))), "w:p[1]"),
    "block-control-in-a-choice": (alternate(control("x", p(t("old"))), p(t("FALLBACK TEXT"))) + "<w:p/>",
                                  "mc:AlternateContent[0]/mc:Choice[0]/w:sdt[0]"),
    "control-beside-a-text-box-in-a-choice": (p(alternate(control("x", t("old")) + '<w:r><w:drawing><wps:txbx>'
                                                          f"<w:txbxContent>{p(t('box'))}</w:txbxContent></wps:txbx>"
                                                          "</w:drawing></w:r>", t("FALLBACK TEXT"), "wps")),
                                              "w:p[1]/mc:AlternateContent[0]/mc:Choice[0]/w:sdt[0]"),
}


@pytest.mark.parametrize("case", sorted(IN_A_CHOICE))
def test_a_zone_in_a_choice_whose_fallback_builder_drops_is_refused(case, monkeypatch):
    """BUILDER fills the choice and removes the fallback: accepted as before, a reader that cannot use the choice
    shows nothing where the template showed the fallback. A zone in a choice with no fallback, or in a text box of
    the choice, is accepted above."""
    body, path = IN_A_CHOICE[case]
    docx = template((body, None))
    err = _refused(docx)
    assert err.code == "zone_unsupported_position"
    assert err.location["path"] == path
    assert "zone 'x' sits in an mc:Choice (Requires=" in err.message and "beside an mc:Fallback" in err.message
    monkeypatch.setattr(zones, "_refuse_zones_in_unmirrored_choices", lambda decls: None)
    maps = extract_maps(docx)
    built = build(docx, maps.zone_map, maps.style_map, intent_output({"x": ["said"], "notes": ["n"]}))
    document = Package.read(built.docx).read_part("word/document.xml")
    assert b"FALLBACK TEXT" in Package.read(docx).read_part("word/document.xml")
    assert b"FALLBACK TEXT" not in document and b"mc:Fallback" not in document


def test_a_placeholder_in_a_footnote_makes_a_docxtpl_template():
    """ASTRA's grammar fills no footnote; docxtpl's language renders footnotes, so a template of bare placeholders
    with one in a footnote is read as docxtpl's, and its builds fill the footnote."""
    docx = template(("", ("footnotes", p(X))))
    maps = extract_maps(docx)
    assert maps.zone_map["language"] == "jinja"
    assert {zone["id"] for zone in maps.zone_map["zones"]} == {"notes", "x"}
    from astra.template_language import JinjaTemplate
    rendered = Package.read(JinjaTemplate.read(docx).render({"notes": "n", "x": "in the note"}))
    assert b"in the note" in rendered.read_part("word/footnotes.xml")
