"""astra.template_language on templates built with python-docx: what is refused at read (code, tag, location),
the zones a template declares (kind, fields, marked), and what a render writes (escaping, caps, bytes kept,
fresh ids for repeated drawings and content controls)."""

from __future__ import annotations

import io
import re
import zipfile

import docx
import pytest
from lxml import etree
from PIL import Image

from astra.template_language import JinjaTemplate, RenderCaps, RenderError, TemplateLanguageError

from .docxtpl_fixtures import W, _runs, _save, _table

WP = "http://schemas.openxmlformats.org/drawingml/2006/wordprocessingDrawing"
DOCUMENT = "word/document.xml"


def _part(docx_bytes: bytes, name: str = DOCUMENT) -> bytes:
    with zipfile.ZipFile(io.BytesIO(docx_bytes)) as package:
        return package.read(name)


def _parts(docx_bytes: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(docx_bytes)) as package:
        return {name: package.read(name) for name in package.namelist()}


def _with_part(docx_bytes: bytes, name: str, data: bytes) -> bytes:
    """The package with part ``name`` replaced by ``data`` (to write XML python-docx would not)."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(docx_bytes)) as source, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target:
        for item in source.infolist():
            target.writestr(item, data if item.filename == name else source.read(item.filename))
    return out.getvalue()


def _one_paragraph(text: str) -> bytes:
    doc = docx.Document()
    doc.add_paragraph(text)
    return _save(doc)


def _render_body(text: str, context: dict, caps: RenderCaps = RenderCaps()) -> etree._Element:
    return etree.fromstring(_part(JinjaTemplate.read(_one_paragraph(text)).render(context, caps)))


def _png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (4, 4), (200, 30, 30)).save(out, format="PNG")
    return out.getvalue()


# --------------------------------------------------------------------------- refusals at read

REFUSED = [
    ("{{ x|safe }}", "jinja_forbidden", "{{ x|safe }}"),
    ("{{ x.__class__ }}", "jinja_forbidden", "{{ x.__class__ }}"),
    ("{{ x['__class__'] }}", "jinja_forbidden", "{{ x['__class__'] }}"),
    ("{% for i in range(n) %}{% endfor %}", "jinja_forbidden", "{% for i in range(n) %}"),
    ("{{ range(100000) }}", "jinja_forbidden", "{{ range(100000) }}"),
    ("{% import 'other.docx' as other %}", "jinja_forbidden", "{% import 'other.docx' as other %}"),
    ("{% from 'other.docx' import thing %}", "jinja_forbidden", "{% from 'other.docx' import thing %}"),
    ("{% include 'other.docx' %}", "jinja_forbidden", "{% include 'other.docx' %}"),
    ("{% extends 'base.docx' %}", "jinja_forbidden", "{% extends 'base.docx' %}"),
    ("{% macro m() %}x{% endmacro %}", "jinja_forbidden", "{% macro m() %}"),
    ("{% with loop = x %}{{ loop.index }}{% endwith %}", "jinja_forbidden", "{% with loop = x %}"),
    ("{% set range = x %}", "jinja_forbidden", "{% set range = x %}"),
    ("{% for _x in xs %}{% endfor %}", "jinja_forbidden", "{% for _x in xs %}"),
    ("{% call m() %}x{% endcall %}", "jinja_forbidden", "{% call m() %}"),
    ("{% block b %}x{% endblock %}", "jinja_forbidden", "{% block b %}"),
    ("{% filter upper %}a{% endfilter %}", "jinja_forbidden", "{% filter upper %}"),
    ("{% autoescape false %}{{ x }}{% endautoescape %}", "jinja_forbidden", "{% autoescape false %}"),
    ("{{ 2**8 }}", "jinja_forbidden", "{{ 2**8 }}"),
    ("{% for i in x recursive %}{{ loop(i.children) }}{% endfor %}", "jinja_forbidden",
     "{% for i in x recursive %}"),
    ("{{ x.items() }}", "jinja_forbidden", "{{ x.items() }}"),
    ("{{ lipsum() }}", "jinja_forbidden", "{{ lipsum() }}"),
    ("{{ x|shout }}", "jinja_forbidden", "{{ x|shout }}"),
    ("{% if x is shouting %}y{% endif %}", "jinja_forbidden", "{% if x is shouting %}"),
    ("{{ _astra_raw }}", "jinja_forbidden", "{{ _astra_raw }}"),
    ("{{ x ", "jinja_syntax", "{{ x"),
    ("{% if x %}open", "jinja_syntax", "{% if x %}"),
    ("{% endif %}", "jinja_syntax", "{% endif %}"),
    ("{% if x %}{% for y in z %}{% endif %}{% endfor %}", "jinja_syntax", "{% endif %}"),
]


@pytest.mark.parametrize(("tag", "code", "written"), REFUSED, ids=[case[0] for case in REFUSED])
def test_a_construct_outside_the_allow_list_is_refused_at_read_naming_its_tag_and_place(tag, code, written):
    doc = docx.Document()
    doc.add_paragraph("Introduction")
    doc.add_paragraph(f"Before {tag} after")
    with pytest.raises(TemplateLanguageError) as refused:
        JinjaTemplate.read(_save(doc))
    assert refused.value.code == code
    assert written in refused.value.message
    assert refused.value.location == {"part": "/word/document.xml", "block": 1, "path": "w:p[1]"}


def test_a_refusal_in_a_header_or_a_table_cell_names_that_part_and_path():
    doc = docx.Document()
    doc.sections[0].header.paragraphs[0].text = "Ref {{ ref.__class__ }}"
    doc.add_paragraph("{{ body.text }}")
    with pytest.raises(TemplateLanguageError) as refused:
        JinjaTemplate.read(_save(doc))
    assert refused.value.code == "jinja_forbidden"
    assert "{{ ref.__class__ }}" in refused.value.message
    assert refused.value.location == {"part": "/word/header1.xml", "block": 0, "path": "w:p[0]"}

    doc = docx.Document()
    doc.add_paragraph("Table:")
    _table(doc, [["a", "b"], ["c", "{{ 3 ** 3 }}"]])
    with pytest.raises(TemplateLanguageError) as refused:
        JinjaTemplate.read(_save(doc))
    assert refused.value.code == "jinja_forbidden"
    assert refused.value.location == {"part": "/word/document.xml", "block": 1,
                                      "path": "w:tbl[0]/w:tr[1]/w:tc[1]/w:p[0]"}


def test_a_docxtpl_template_with_an_astra_content_control_is_refused_as_mixed():
    doc = docx.Document()
    doc.add_paragraph("{% if urgent %}Urgent{% endif %}")
    doc.element.body.insert(1, etree.fromstring(
        f'<w:sdt xmlns:w="{W}"><w:sdtPr><w:tag w:val="astra:summary;kind=text"/><w:id w:val="7"/></w:sdtPr>'
        '<w:sdtContent><w:p><w:r><w:t>Summary here</w:t></w:r></w:p></w:sdtContent></w:sdt>'))
    with pytest.raises(TemplateLanguageError) as refused:
        JinjaTemplate.read(_save(doc))
    assert refused.value.code == "mixed_template_languages"
    assert "astra:summary;kind=text" in refused.value.message


# --------------------------------------------------------------------------- zones


def _field_result_paragraph(doc, text: str) -> None:
    """A paragraph whose complex field (PAGE) shows ``text`` as its result."""
    paragraph = doc.add_paragraph("Page ")._p
    for run in ('<w:fldChar w:fldCharType="begin"/>', '<w:instrText xml:space="preserve"> PAGE </w:instrText>',
                '<w:fldChar w:fldCharType="separate"/>', f'<w:t xml:space="preserve">{text}</w:t>',
                '<w:fldChar w:fldCharType="end"/>'):
        paragraph.append(etree.fromstring(f'<w:r xmlns:w="{W}">{run}</w:r>'))


def _zones_template() -> bytes:
    doc = docx.Document()
    doc.add_paragraph("Dear {{ Client_Name }}, about {{ title }}:")
    doc.add_paragraph("{{p summary }}")
    doc.add_paragraph("{%p for a in actions %}")
    doc.add_paragraph("{{ a.owner }} by {{ a['due'] }}")
    doc.add_paragraph("{%p endfor %}")
    _table(doc, [["What", "Qty"], ["{%tr for r in Rows %}", ""], ["{{ r.desc }}", "{{ r.qty }}"],
                 ["{%tr endfor %}", ""]])
    doc.add_paragraph("{{ client.name }}, {{ client.city }}")
    doc.add_paragraph("{% if urgent %}URGENT: {{ in_if }}{% endif %}")
    doc.add_paragraph("Tags: {% for t in tags %}{{ t }} {{ in_loop }}{% endfor %}")
    doc.add_paragraph("Again: {{ title }}")
    paragraph = doc.add_paragraph("See ")._p
    paragraph.append(etree.fromstring(
        f'<w:hyperlink xmlns:w="{W}" w:anchor="top"><w:r><w:t>{{{{ linked }}}}</w:t></w:r></w:hyperlink>'))
    _field_result_paragraph(doc, "{{ in_field }}")
    return _save(doc)


def test_zones_kinds_fields_and_marks():
    zones = {zone.id: zone for zone in JinjaTemplate.read(_zones_template()).zones}
    assert [(z.id, z.kind, z.fields, z.marked) for z in zones.values()] == [
        ("Client_Name", "text", (), True),  # a bare {{ X }} at the top; capitals kept
        ("title", "text", (), True),
        ("summary", "text", (), True),  # {{p X}}
        ("actions", "list", ("owner", "due"), True),  # a {%p for %} ... {%p endfor %} pair
        ("Rows", "table", ("desc", "qty"), True),  # a row loop's table
        ("client", "record", ("name", "city"), False),
        ("urgent", "flag", (), False),
        ("in_if", "text", (), False),  # inside {% if %}
        ("tags", "list", (), False),  # an inline loop
        ("in_loop", "text", (), False),  # inside an inline loop
        ("linked", "text", (), False),  # in a hyperlink
        ("in_field", "text", (), False),  # in a complex field's result
    ]
    assert zones["Client_Name"].location == {"part": "/word/document.xml", "block": 0, "path": "w:p[0]"}
    assert zones["Rows"].location == {"part": "/word/document.xml", "block": 5,
                                      "path": "w:tbl[0]/w:tr[1]/w:tc[0]/w:p[0]"}


def _astra_tags(body: etree._Element) -> list[str]:
    return [tag.get(f"{{{W}}}val") for tag in body.iter(f"{{{W}}}tag")]


def test_the_render_holds_one_control_per_marked_zone_around_its_first_use():
    template, context = _zones_template(), {
        "Client_Name": "Ada", "title": "the pump", "summary": "One.\nTwo.", "actions": [{"owner": "Bo", "due": "May"}],
        "Rows": [{"desc": "seal", "qty": 2}], "client": {"name": "Acme", "city": "Leeds"}, "urgent": True,
        "in_if": "now", "tags": ["a"], "in_loop": "!", "linked": "L", "in_field": "F"}
    body = etree.fromstring(_part(JinjaTemplate.read(template).render(context)))
    assert _astra_tags(body) == ["astra:Client_Name;kind=text", "astra:title;kind=text", "astra:summary;kind=text",
                                 "astra:actions;kind=list", "astra:Rows;kind=table"]
    sdts = {sdt.find(f".//{{{W}}}tag").get(f"{{{W}}}val"): sdt for sdt in body.iter(f"{{{W}}}sdt")}
    assert "".join(sdts["astra:title;kind=text"].itertext()) == "the pump"  # the second use ("Again:") is not in it
    assert "Again: the pump" in ["".join(p.itertext()) for p in body.iter(f"{{{W}}}p")]
    assert sdts["astra:Rows;kind=table"].find(f"{{{W}}}sdtContent/{{{W}}}tbl") is not None
    assert ["".join(p.itertext()) for p in sdts["astra:summary;kind=text"].iter(f"{{{W}}}p")] == ["One.", "Two."]


def test_a_bare_run_tag_at_the_top_is_marked():
    doc = docx.Document()
    _runs(doc.add_paragraph(), "Note: ", ("{{r note }}", {"bold": True}))
    [zone] = JinjaTemplate.read(_save(doc)).zones
    assert (zone.id, zone.kind, zone.marked) == ("note", "text", True)


# --------------------------------------------------------------------------- render


def test_a_value_is_escaped_cleaned_and_its_line_ends_and_tabs_become_breaks_and_tabs():
    body = _render_body("A {{ x }} B", {"x": "a&b <c/> ]]> \x01\x07\x1bz\nsecond\tcol"})
    [control] = body.iter(f"{{{W}}}sdtContent")
    kinds = [(etree.QName(el).localname, el.text) for run in control for el in run if el.tag != f"{{{W}}}rPr"]
    assert kinds == [("t", "a&b <c/> ]]> z"), ("br", None), ("t", "second"), ("tab", None), ("t", "col")]
    xml = _part(JinjaTemplate.read(_one_paragraph("A {{ x }} B")).render({"x": "a&b <c/> ]]>"}))
    assert b"a&amp;b &lt;c/&gt; ]]&gt;" in xml


@pytest.mark.parametrize(("text", "context", "caps", "said"), [
    ("{% for a in xs %}{% for b in xs %}{{ b }}{% endfor %}{% endfor %}", {"xs": list(range(400))}, RenderCaps(),
     "cap of iterations"),
    ("{% for a in xs %}{% for b in xs %}{% endfor %}{% endfor %}", {"xs": list(range(20))},
     RenderCaps(max_iterations=100), "cap of iterations"),
    ("{% for a in xs %}{{ a }}{% endfor %}", {"xs": list(range(1000))}, RenderCaps(max_part_chars=3000),
     "3,000 characters"),
    ("{{ 'a' * n }}", {"n": 10 ** 12}, RenderCaps(), "repeating"),
    ("{{ '%s' % x }}", {"x": "y"}, RenderCaps(), "'%' on text"),
    ("{{ a / b }}", {"a": 1, "b": 0}, RenderCaps(), "division by zero"),
    ("{{ a // b }}", {"a": 1, "b": 0}, RenderCaps(), "division by zero"),
    ("{{ '%1000000d'|format(x) }}", {"x": 1}, RenderCaps(), "width or precision"),
], ids=["iterations-default", "iterations-caps", "output", "repeat", "percent", "division", "floor-division",
        "format-width"])
def test_a_render_past_a_cap_or_failing_on_the_data_stops_with_a_one_line_error(text, context, caps, said):
    with pytest.raises(RenderError) as stopped:
        _render_body(text, context, caps)
    assert said in str(stopped.value)
    assert "\n" not in str(stopped.value)


def test_the_iteration_cap_counts_every_loop_of_the_document():
    doc = docx.Document()
    doc.sections[0].header.paragraphs[0].text = "{% for h in xs %}{{ h }}{% endfor %}"
    doc.add_paragraph("{% for b in xs %}{{ b }}{% endfor %}")
    template = JinjaTemplate.read(_save(doc))
    template.render({"xs": list(range(50))}, RenderCaps(max_iterations=100))
    with pytest.raises(RenderError, match="cap of iterations"):
        template.render({"xs": list(range(51))}, RenderCaps(max_iterations=100))


def _doubling(operator: str, levels: int = 30) -> str:
    """A chain of ``with`` blocks, each doubling the value before: 2**levels copies if nothing stops it."""
    opening = "".join(f"{{% with v{i + 1} = v{i} {operator} v{i} %}}" for i in range(levels))
    return opening + f"{{{{ v{levels}|length }}}}" + "{% endwith %}" * levels


@pytest.mark.parametrize(("text", "context", "said"), [
    (_doubling("~"), {"v0": "x" * 1000}, "'~' would make a value of"),
    (_doubling("+"), {"v0": "x" * 1000}, "'\\+' would make a value of"),
    (_doubling("+"), {"v0": list(range(1000))}, "'\\+' would make a value of"),
    (_doubling("~", 13) * 3, {"v0": "x" * 1000}, "made more text than its cap"),
    ("{{ ('a' * 100000)|replace('a', 'b' * 100000)|length }}", {}, "replace would make"),
    ("{{ ([x] * 100000)|join|length }}", {"x": "y" * 100000}, "join would make"),
    ("{{ nl|indent(1000)|length }}", {"nl": "\n" * 99999}, "indent would make"),
    ("{{ xs|sum(start=[])|length }}", {"xs": [[1]] * 10}, "sum adds numbers"),
    ("{{ xs|batch(n, 0)|list|length }}", {"xs": [1], "n": 10 ** 9}, "batch size"),
    ("{{ xs|slice(n)|list|length }}", {"xs": [1], "n": 10 ** 9}, "number of slices"),
    ("{% for i in range(10000) %}{{ xs|sort|first }}{% endfor %}", {"xs": list(range(10000))},
     "walked more items"),
    ("{% set a = n * n %}{% set b = a * a %}{% set c = b * b %}{% set d = c * c %}{{ d * d * d }}",
     {"n": 10 ** 60}, "number of more than"),
], ids=["concat", "plus-text", "plus-list", "concat-summed", "replace", "join", "indent", "sum-lists", "batch", "slice",
        "filter-walk", "big-number"])
def test_what_the_template_makes_is_paid_for_before_it_is_made(text, context, said):
    """The review's memory attacks: each stops with one line, before the value is built (where nothing stopped them
    they took GBs or minutes)."""
    with pytest.raises(RenderError) as stopped:
        _render_body(text, context)
    assert re.search(said, str(stopped.value))
    assert "\n" not in str(stopped.value)


def test_a_render_stops_at_its_deadline():
    template = JinjaTemplate.read(_one_paragraph("{% for a in xs %}{% for b in xs %}{{ b }}{% endfor %}{% endfor %}"))
    template.render({"xs": list(range(100))})
    with pytest.raises(RenderError, match="time limit"):
        template.render({"xs": list(range(300))}, RenderCaps(max_seconds=0.0))


def test_a_template_within_the_caps_renders_what_the_filters_make():
    body = _render_body("{{ (a ~ '-' ~ b)|upper }} {{ (xs + ys)|join(',') }} {{ xs|sum }} {{ t|replace('a', 'o') }}",
                        {"a": "x", "b": "y", "xs": [1, 2], "ys": [3], "t": "banana"})
    assert "".join(body.itertext()) == "X-Y 1,2,3 3 bonono"


@pytest.mark.parametrize("key", ["_astra_raw", "_astra", "_astra_anything"])
def test_a_context_name_beginning_with_astra_is_refused(key):
    template = JinjaTemplate.read(_one_paragraph("{{ x|upper }}"))
    with pytest.raises(RenderError, match="_astra"):
        template.render({"x": "a", key: ["<w:p/>"]})


def _template_with_kept_block(kept: bytes) -> bytes:
    """A header without tags; the body: a tag, then ``kept`` (a block holding no tag), then a table without tags."""
    doc = docx.Document()
    doc.sections[0].header.paragraphs[0].text = "A header without tags"
    doc.add_paragraph("Hello {{ name|title }}")
    doc.add_paragraph("KEPT")
    _table(doc, [["untouched", "cells"]])
    template = _save(doc)
    document = _part(template)
    start = document.index(b"<w:p>", document.index(b"Hello"))
    end = document.index(b"</w:p>", document.index(b"KEPT")) + len(b"</w:p>")
    return _with_part(template, DOCUMENT, document[:start] + kept + document[end:])


def test_parts_without_tags_and_top_level_blocks_without_tags_keep_their_bytes():
    # a block serialized as no XML writer would: the render must copy it, not re-write it
    kept = b"<w:p  ><w:r ><w:t xml:space='preserve'>Kept  &#x41; &amp; </w:t ></w:r></w:p >"
    template = _template_with_kept_block(kept)
    document = _part(template)
    table = document[document.index(b"<w:tbl>"):document.index(b"</w:tbl>") + len(b"</w:tbl>")]

    rendered = JinjaTemplate.read(template).render({"name": "ada"})
    before, after = _parts(template), _parts(rendered)
    assert sorted(before) == sorted(after)
    assert {name for name in before if before[name] != after[name]} == {DOCUMENT}
    assert kept in after[DOCUMENT]
    assert table in after[DOCUMENT]
    assert b">Ada</w:t>" in after[DOCUMENT]


def test_an_untouched_block_holding_a_brace_keeps_its_bytes():
    kept = b"<w:p><w:r><w:t>Write { and } freely</w:t></w:r></w:p>"
    rendered = JinjaTemplate.read(_template_with_kept_block(kept)).render({"name": "ada"})
    assert kept in _part(rendered)


def test_a_render_is_deterministic():
    doc = docx.Document()
    doc.sections[0].header.paragraphs[0].text = "{{ ref }}"
    doc.add_paragraph("Dear {{ name }},")
    doc.add_paragraph("{%p for a in items %}")
    doc.add_paragraph("{{ a.text }} ({{ loop.index }})")
    doc.add_paragraph("{%p endfor %}")
    template = _save(doc)
    context = {"ref": "R-1", "name": "Ada & Bo", "items": [{"text": "one"}, {"text": "two"}]}
    first = JinjaTemplate.read(template).render(context)
    assert JinjaTemplate.read(template).render(context) == first  # a second read: its own random tokens
    reused = JinjaTemplate.read(template)
    assert reused.render(context) == reused.render(context) == first


def _ids(body: etree._Element) -> tuple[list[str], list[str]]:
    return ([d.get("id") for d in body.iter(f"{{{WP}}}docPr")],
            [i.get(f"{{{W}}}val") for i in body.iter(f"{{{W}}}id") if i.getparent().tag == f"{{{W}}}sdtPr"])


def test_a_row_loop_repeating_a_picture_and_a_content_control_gives_each_copy_fresh_ids():
    doc = docx.Document()
    doc.add_paragraph("Before {{ title }}")
    table = _table(doc, [["Photo", "Note"], ["{%tr for r in rows %}", ""], ["{{ r.name }}", "{{ r.note }}"],
                         ["{%tr endfor %}", ""]])
    table.rows[2].cells[0].paragraphs[0].add_run().add_picture(io.BytesIO(_png()))
    table.rows[2].cells[1]._tc.append(etree.fromstring(
        f'<w:sdt xmlns:w="{W}"><w:sdtPr><w:tag w:val="note"/><w:id w:val="900"/></w:sdtPr>'
        '<w:sdtContent><w:p><w:r><w:t>signed</w:t></w:r></w:p></w:sdtContent></w:sdt>'))
    doc.add_picture(io.BytesIO(_png()))  # a drawing outside the loop keeps its id
    template = _save(doc)
    original_doc_prs, _ = _ids(etree.fromstring(_part(template)))

    rows = [{"name": name, "note": f"note {i}"} for i, name in enumerate(["Alpha", "Beta", "Gamma"])]
    body = etree.fromstring(_part(JinjaTemplate.read(template).render({"title": "T", "rows": rows})))
    doc_prs, sdt_ids = _ids(body)
    assert len(doc_prs) == 4 and len(sdt_ids) == 1 + 1 + 3  # title, the table's control, three notes
    assert len(set(doc_prs)) == len(doc_prs)
    assert len(set(sdt_ids)) == len(sdt_ids)
    assert doc_prs[0] == original_doc_prs[0] and doc_prs[-1] == original_doc_prs[-1]
    assert "900" in sdt_ids
    names = ["Alpha", "Beta", "Gamma"]
    assert [t.text for t in body.iter(f"{{{W}}}t") if t.text in names] == names


def test_a_tag_cut_by_a_break_is_refused_showing_where_it_is_cut():
    doc = docx.Document()
    run = doc.add_paragraph().add_run("{{ name")
    run.add_break()
    run.add_text("}}")
    with pytest.raises(TemplateLanguageError) as refused:
        JinjaTemplate.read(_save(doc))
    assert refused.value.code == "jinja_syntax"
    assert "{{ name ⏎ }}" in refused.value.message
    assert "\x00" not in refused.value.message


def test_a_dash_merge_never_takes_away_another_tag():
    """docxtpl's ``{%-`` takes everything back to the previous ``</w:t>``, a tag written before it in the same
    text included (dropping it silently or unbalancing the template); ASTRA keeps the other tag."""
    template = JinjaTemplate.read(_one_paragraph("A {% if y %}{%- if x %}B{% endif %}{% endif %} {{ a }} -%}"
                                                 .replace(" -%}", "")))
    text = "".join(etree.fromstring(_part(template.render({"x": True, "y": True, "a": "z"}))).itertext())
    assert text == "A B z"
    doc = docx.Document()
    doc.add_paragraph("first {{ a }} {%- if x %}")
    doc.add_paragraph("second{% endif %}")
    rendered = JinjaTemplate.read(_save(doc)).render({"a": "kept", "x": True})
    assert "kept" in "".join(etree.fromstring(_part(rendered)).itertext())


def test_a_block_tag_that_ends_in_another_place_of_the_xml_is_refused_at_read():
    doc = docx.Document()
    doc.add_paragraph("{% for x in xs %}")
    table = doc.add_table(rows=1, cols=1)
    table.cell(0, 0).paragraphs[0].text = "{{ x }}{% endfor %}"
    with pytest.raises(TemplateLanguageError) as refused:
        JinjaTemplate.read(_save(doc))
    assert refused.value.code == "jinja_syntax"
    assert "'{% for x in xs %}' opens in the body" in refused.value.message
    assert "'{% endfor %}' stands in a table cell" in refused.value.message
    assert refused.value.location["path"] == "w:p[0]"


@pytest.mark.parametrize("shown", [True, False])
def test_an_if_across_two_paragraphs_closes_one_and_opens_the_next_either_way(shown):
    """Not a docxtpl {%p %}: the body closes a paragraph and opens another, so taking it away joins them (as
    docxtpl does) and keeping it keeps both; either way the XML is whole."""
    doc = docx.Document()
    doc.add_paragraph("A {% if x %}B")
    doc.add_paragraph("C{% endif %} D")
    body = etree.fromstring(_part(JinjaTemplate.read(_save(doc)).render({"x": shown})))
    paragraphs = ["".join(p.itertext()) for p in body.iter(f"{{{W}}}p")]
    assert paragraphs == (["A B", "C D"] if shown else ["A  D"])


def test_loops_that_ran_no_time_leave_tables_word_opens_without_repair():
    doc = docx.Document()
    empty_rows = doc.add_table(rows=1, cols=2)
    empty_rows.cell(0, 0).paragraphs[0].text = "{%tr for r in none %}"
    empty_rows.cell(0, 1).paragraphs[0].text = "{{ r }}{%tr endfor %}"
    kept = doc.add_table(rows=1, cols=2)
    kept.cell(0, 0).paragraphs[0].text = "{%p for x in none %}"
    kept.cell(0, 0).add_paragraph("{{ x }}")
    kept.cell(0, 0).add_paragraph("{%p endfor %}")
    kept.cell(0, 1).paragraphs[0].text = "right"
    body = etree.fromstring(_part(JinjaTemplate.read(_save(doc)).render({"none": []})))
    tables = list(body.iter(f"{{{W}}}tbl"))
    assert len(tables) == 1  # the table whose only row was a loop that ran no time is gone
    for cell in body.iter(f"{{{W}}}tc"):
        assert cell.findall(f"{{{W}}}p"), "a cell with no paragraph"
    assert "right" in "".join(tables[0].itertext())


def test_a_bookmark_a_loop_repeats_gets_a_fresh_id_and_name():
    doc = docx.Document()
    doc.add_paragraph("{%p for x in xs %}")
    paragraph = doc.add_paragraph()
    paragraph._p.append(etree.fromstring(f'<w:bookmarkStart xmlns:w="{W}" w:id="7" w:name="item"/>'))
    paragraph.add_run("{{ x }}")
    paragraph._p.append(etree.fromstring(f'<w:bookmarkEnd xmlns:w="{W}" w:id="7"/>'))
    doc.add_paragraph("{%p endfor %}")
    body = etree.fromstring(_part(JinjaTemplate.read(_save(doc)).render({"xs": ["a", "b", "c"]})))
    starts = [(el.get(f"{{{W}}}id"), el.get(f"{{{W}}}name")) for el in body.iter(f"{{{W}}}bookmarkStart")]
    ends = [el.get(f"{{{W}}}id") for el in body.iter(f"{{{W}}}bookmarkEnd")]
    assert len(starts) == 3 and len({i for i, _ in starts}) == 3 and len({n for _, n in starts}) == 3
    assert starts[0] == ("7", "item") and ends == [i for i, _ in starts]


@pytest.mark.parametrize(("text", "shown"), [
    ("{{ xs|select('odd') }}", "[1, 3]"),
    ("{{ xs|select('odd')|string }}", "[1, 3]"),
    ("{{ {'k': xs|map('string')|list} }}", "{'k': ['1', '2', '3']}"),
    ("{{ [xs|reject('odd')] }}", "[[2]]"),
    ("{{ xs|select('odd')|join(',') }}", "1,3"),
])
def test_what_a_filter_yields_prints_as_data_the_same_every_time(text, shown):
    """Jinja's select/map/… yield generators, which docxtpl prints as their memory address (another on every
    run); here they are lists."""
    assert "".join(_render_body(text, {"xs": [1, 2, 3]}).itertext()) == shown


@pytest.mark.parametrize("text", ["{{ c|e }}", "{{ c|escape|upper }}", "{{ c|forceescape }}", "{{ c|tojson }}",
                                  "{{ (c|e)[0:3] }}", "{{ c|e|center(12) }}"])
def test_escaping_filters_change_nothing_the_value_is_cleaned_and_escaped_once(text):
    """``|e`` made Markup, which skipped the cleaning (a control character broke the XML), and Markup's methods
    (``|e|upper``) wrote entities Word cannot read."""
    body = _render_body(text, {"c": "<b> & \x01\ud800"})
    written = "".join(body.itertext())
    assert "<" in written or "\\u003c" in written  # the text, shown as text (tojson writes < as \u003c)
    assert "&lt;" not in written and "\x01" not in written and "\ud800" not in written


def test_a_width_given_as_text_to_indent_is_text():
    body = _render_body("{{ s|e|indent(w, true) }}", {"s": "a\nb", "w": "<w:r><w:t>INJECTED</w:t></w:r>"})
    assert "<w:r><w:t>INJECTED</w:t></w:r>a" in "".join(body.itertext())
    assert not [t for t in body.iter(f"{{{W}}}t") if t.text == "INJECTED"]


def test_groupby_groups_read_by_grouper_and_list():
    body = _render_body("{% for g in xs|groupby('paid') %}{{ g.grouper }}: {{ g.list|length }}; {% endfor %}",
                        {"xs": [{"paid": True}, {"paid": False}, {"paid": True}]})
    assert "".join(body.itertext()) == "False: 1; True: 2; "


@pytest.mark.parametrize(("text", "said"), [
    ("{% for a in x %}" * 17 + "{{ a }}" + "{% endfor %}" * 17, "loops nested more than 16 deep"),
    ("{{ " + "(" * 2000 + "x" + ")" * 2000 + " }}", "nested too deeply"),
    ("{{ x" + "|upper" * 5000 + " }}", "nested too deeply"),
    ("{{ range }}", "range is only called"),
    ("{{ [range] }}", "range is only called"),
    ("{% for i in xs %}{{ loop }}{% endfor %}", "loop is only read by its counters"),
    ("{% for i in xs %}{{ loop.cycle }}{% endfor %}", "loop.cycle is only called"),
])
def test_what_would_crash_or_print_an_address_is_refused_at_read(text, said):
    with pytest.raises(TemplateLanguageError) as refused:
        JinjaTemplate.read(_one_paragraph(text))
    assert refused.value.code == "jinja_forbidden"
    assert said in refused.value.message


def test_the_whole_document_has_a_cap_not_only_each_part():
    doc = docx.Document()
    doc.sections[0].header.paragraphs[0].text = "{% for i in xs %}{{ i }}{% endfor %}"
    doc.sections[0].footer.paragraphs[0].text = "{% for i in xs %}{{ i }}{% endfor %}"
    doc.add_paragraph("{% for i in xs %}{{ i }}{% endfor %}")
    template = JinjaTemplate.read(_save(doc))
    sizes = {name: len(data) for name, data in _parts(template.render({"xs": list(range(2000))})).items()}
    part = max(sizes[n] for n in sizes if n.startswith(("word/header", "word/footer", "word/document")))
    caps = RenderCaps(max_part_chars=part + 1000, max_document_chars=2 * part)
    with pytest.raises(RenderError, match="rendered document passed"):
        template.render({"xs": list(range(2000))}, caps)


@pytest.mark.parametrize("anchor", [
    '<w:r><w:footnoteReference w:id="1"/></w:r>',
    '<w:commentRangeStart w:id="0"/><w:r><w:t>c</w:t></w:r><w:commentRangeEnd w:id="0"/>'
    '<w:r><w:commentReference w:id="0"/></w:r>',
])
def test_a_note_or_comment_inside_a_loop_is_refused_at_read(anchor):
    doc = docx.Document()
    doc.add_paragraph("{%p for x in xs %}")
    paragraph = doc.add_paragraph("{{ x }}")
    for el in etree.fromstring(f'<w:p xmlns:w="{W}">{anchor}</w:p>'):
        paragraph._p.append(el)
    doc.add_paragraph("{%p endfor %}")
    with pytest.raises(TemplateLanguageError) as refused:
        JinjaTemplate.read(_save(doc))
    assert refused.value.code == "jinja_forbidden"
    assert "'{%p for x in xs %}': a footnote, endnote or comment inside a loop" in refused.value.message


def test_a_tracked_change_a_loop_repeats_gets_a_fresh_id():
    doc = docx.Document()
    doc.add_paragraph("{%p for x in xs %}")
    paragraph = doc.add_paragraph("{{ x }}")
    paragraph._p.append(etree.fromstring(
        f'<w:ins xmlns:w="{W}" w:id="90" w:author="a" w:date="2024-01-01T00:00:00Z"><w:r><w:t>new</w:t></w:r></w:ins>'))
    doc.add_paragraph("{%p endfor %}")
    body = etree.fromstring(_part(JinjaTemplate.read(_save(doc)).render({"xs": [1, 2, 3]})))
    ids = [el.get(f"{{{W}}}id") for el in body.iter(f"{{{W}}}ins")]
    assert len(ids) == 3 and len(set(ids)) == 3 and ids[0] == "90"


@pytest.mark.parametrize(("text", "context", "said"), [
    ("{{ l|map(f, r)|first }}", {"l": ["x"], "f": "_astra_runs", "r": '<w:rPr><w:b/></w:rPr>'}, "no filter named"),
    ("{{ l|map('_ast' ~ 'ra_paragraphs', '', '')|first }}", {"l": ["x"]}, "no filter named"),
    ("{{ l|select(t)|list }}", {"l": [1], "t": "_astra"}, "no test named"),
    ("{% set l = [s] * 99000 %}{{ l }}", {"s": "y" * 1000}, "writing a list or mapping as text"),
    ("{% set l = [s] * 99000 %}{{ l|center(10) }}", {"s": "y" * 1000}, "writing a list or mapping as text"),
    ("{% set l = [s] * 99000 %}{{ l|string|length }}", {"s": "y" * 1000}, "writing a list or mapping as text"),
    ("{{ h|int(0, 16) }}", {"h": "f" * 400_000}, "|int of a text"),
    ("{{ p" + "|urlencode" * 30 + " }}", {"p": "%" * 100_000}, "made more text than its cap|would make a value"),
])
def test_what_the_second_review_found_stops_with_one_line(text, context, said):
    with pytest.raises(RenderError) as stopped:
        _render_body(text, context)
    assert re.search(said, str(stopped.value))


def test_a_set_block_is_refused_it_would_capture_xml():
    with pytest.raises(TemplateLanguageError) as refused:
        JinjaTemplate.read(_one_paragraph("{% set x %}<b>{{ y }}{% endset %}{{ x|upper }}"))
    assert refused.value.code == "jinja_forbidden" and "{% set x = … %}" in refused.value.message


def test_map_reads_groupby_groups_by_attribute():
    body = _render_body("{{ xs|groupby('k')|map(attribute='grouper')|join(',') }}",
                        {"xs": [{"k": "a"}, {"k": "b"}, {"k": "a"}]})
    assert "".join(body.itertext()) == "a,b"
