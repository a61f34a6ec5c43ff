"""Zone ids as Jinja identifiers everywhere, and docxtpl templates' zone maps (issue 11, docs/zones.md "docxtpl
templates")."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from astra.ingest.zones import (
    REFUSAL_CODES,
    SIDECAR_SCHEMA_PATH,
    ZONE_ID_RE,
    TemplateRefused,
    extract_maps,
    load_known_intents,
)
from astra.samples.templates import minimal_docx
from astra.template_language import REFUSAL_CODES as LANGUAGE_REFUSAL_CODES

SCHEMAS = Path(__file__).resolve().parents[2] / "astra" / "config_svc" / "schemas"


def para(text: str, ppr: str = "") -> str:
    return f'<w:p>{ppr}<w:r><w:t xml:space="preserve">{text}</w:t></w:r></w:p>'


def test_every_schema_holds_the_one_zone_id_pattern():
    anchored = "^" + ZONE_ID_RE.pattern + "$"
    zone_map = json.loads((SCHEMAS / "zone_map.schema.json").read_text())
    style_map = json.loads((SCHEMAS / "style_map.schema.json").read_text())
    sidecar = json.loads(SIDECAR_SCHEMA_PATH.read_text())
    assert zone_map["$defs"]["zone_id"]["pattern"] == anchored
    assert style_map["properties"]["zones"]["propertyNames"]["pattern"] == anchored
    assert sidecar["$defs"]["zone_id"]["pattern"] == anchored


@pytest.mark.parametrize("kind", ["flag", "record"])
def test_a_sidecar_cannot_give_a_grammar_zone_a_docxtpl_kind(kind):
    with pytest.raises(TemplateRefused) as info:
        extract_maps(minimal_docx(para("{{ a }}") + para("{{ b }}")), {"zones": {"a": {"kind": kind}}})
    assert info.value.code == "invalid_sidecar" and info.value.location == {"part": "sidecar", "path": "zones.a.kind"}
    assert f"kind {kind!r}" in info.value.message


# --------------------------------------------------------------------------- docxtpl templates

ZONE_MAP = Draft202012Validator(json.loads((SCHEMAS / "zone_map.schema.json").read_text()))
STYLE_MAP = Draft202012Validator(json.loads((SCHEMAS / "style_map.schema.json").read_text()))
STYLES = ('<w:style w:type="paragraph" w:default="1" w:styleId="Normal"><w:name w:val="Normal"/></w:style>'
          '<w:style w:type="paragraph" w:styleId="Heading1"><w:name w:val="heading 1"/><w:basedOn w:val="Normal"/>'
          '<w:rPr><w:sz w:val="32"/></w:rPr></w:style>'
          '<w:style w:type="table" w:styleId="Grid"><w:name w:val="Table Grid"/></w:style>')


def row(*cells: str) -> str:
    return "<w:tr>" + "".join(f"<w:tc>{para(cell)}</w:tc>" for cell in cells) + "</w:tr>"


ITEMS = ('<w:tbl><w:tblPr><w:tblStyle w:val="Grid"/></w:tblPr>' + row("Item", "Qty") + row("{%tr for item in items %}")
         + row("{{ item.desc }}", "{{ item['Unit price'] }}") + row("{%tr endfor %}") + "</w:tbl>")
# Every kind, a field read as a string key, ids with capitals, a zone in a footer, the summary's tag split across
# runs (a bold run and a plain one) in a Heading1 paragraph.
BODY = (para("Client: {{ Client.name }} of {{ Client.city|upper }}") + ITEMS
        + para("{%p for s in steps %}") + para("{{ s.text }}") + para("{%p endfor %}")
        + para("{% if paid %}Paid in full{% endif %}")
        + '<w:p><w:pPr><w:pStyle w:val="Heading1"/></w:pPr><w:r><w:rPr><w:b/></w:rPr><w:t>{{ sum</w:t></w:r>'
          '<w:r><w:t>mary }}</w:t></w:r></w:p>'
        + para("{{p notes_2 }}"))
FOOTER = para("Page note: {{ footer_Note|default('-') }}")


def docxtpl_template(body: str = BODY, footers: tuple[str, ...] = (FOOTER,)) -> bytes:
    return minimal_docx(body, styles=STYLES, footers=footers)


def jinja_maps(docx: bytes, sidecar: dict | None = None, known: set[str] | None = None):
    maps = extract_maps(docx, sidecar, known)
    assert not list(ZONE_MAP.iter_errors(maps.zone_map)), list(ZONE_MAP.iter_errors(maps.zone_map))
    assert not list(STYLE_MAP.iter_errors(maps.style_map))
    assert list(maps.style_map["zones"]) == [zone["id"] for zone in maps.zone_map["zones"]]
    return maps


def refusal(docx: bytes, code: str, sidecar: dict | None = None, known: set[str] | None = None) -> TemplateRefused:
    with pytest.raises(TemplateRefused) as info:
        extract_maps(docx, sidecar, known)
    assert info.value.code == code, str(info.value)
    assert code in REFUSAL_CODES
    return info.value


def test_a_docxtpl_templates_zones_kinds_fields_and_marks():
    maps = jinja_maps(docxtpl_template())
    zone_map = maps.zone_map
    assert zone_map["language"] == "jinja"
    assert [(z["id"], z["kind"], z.get("fields"), z["marked"]) for z in zone_map["zones"]] == [
        ("Client", "record", ["name", "city"], False),  # read with attributes outside a loop
        ("items", "table", ["desc", "Unit price"], True),  # a row loop: the table is marked
        ("steps", "list", ["text"], True),  # a {%p for %} pair in the body
        ("paid", "flag", None, False),  # only tested
        ("summary", "text", None, True),
        ("notes_2", "text", None, True),  # {{p x}}
        ("footer_Note", "text", None, True),  # output through a filter, at the top: the tag's output is marked
    ]
    assert all(z["declared_by"] == "jinja" and "speaker" not in z for z in zone_map["zones"])
    # The fallback rule of the grammar: the last text zone of the main document.
    assert zone_map["fallback_zone"] == "notes_2"
    assert [z["id"] for z in zone_map["zones"] if z["accepts"]["fallback"]] == ["notes_2"]
    by = {z["id"]: z for z in zone_map["zones"]}
    assert by["items"]["location"] == {"part": "/word/document.xml", "block": 1,
                                       "path": "w:tbl[0]/w:tr[1]/w:tc[0]/w:p[0]"}
    assert by["footer_Note"]["location"] == {"part": "/word/footer1.xml", "block": 0, "path": "w:p[0]"}
    assert (by["Client"]["label"], by["footer_Note"]["label"]) == ("Client", "Footer Note")


def test_a_docxtpl_zones_style_is_read_where_its_first_tag_is():
    styles = jinja_maps(docxtpl_template()).style_map["zones"]
    # The run the tag starts in (bold), its paragraph's style (16 pt), as for a placeholder.
    assert styles["summary"]["paragraph_style"] == "Heading1"
    assert styles["summary"]["resolved"]["bold"] is True and styles["summary"]["resolved"]["size_pt"] == 16
    assert styles["items"]["table_style"] == "Grid" and styles["Client"]["table_style"] is None
    assert styles["steps"]["paragraph_style"] == "Normal" and styles["steps"]["resolved"]["bold"] is None


def test_a_sidecar_completes_a_docxtpl_template(known):
    sidecar = {"zones": {"summary": {"label": "Trip summary", "intents": ["travel.book_flight"], "kind": "text"},
                         "steps": {"domains": ["home"]}, "paid": {"intents": ["banking.pay_bill"]},
                         "items": {"data": "data/items*.csv", "kind": "table"}, "Client": {"data": "data/client.csv"}},
               "fallback_zone": "footer_Note"}
    by = {z["id"]: z for z in jinja_maps(docxtpl_template(), sidecar, known).zone_map["zones"]}
    assert by["summary"]["label"] == "Trip summary" and by["summary"]["accepts"]["intents"] == ["travel.book_flight"]
    assert by["steps"]["accepts"]["domains"] == ["home"] and by["paid"]["accepts"]["intents"] == ["banking.pay_bill"]
    assert by["items"]["accepts"]["data"] == "data/items*.csv" and by["Client"]["accepts"]["data"] == "data/client.csv"
    assert [zone_id for zone_id in by if by[zone_id]["accepts"]["fallback"]] == ["footer_Note"]


@pytest.mark.parametrize("sidecar, code, path", [
    ({"zones": {"paid": {"kind": "text"}}}, "invalid_sidecar", "zones.paid.kind"),
    ({"zones": {"items": {"kind": "list"}}}, "invalid_sidecar", "zones.items.kind"),
    ({"zones": {"summary": {"kind": "image"}}}, "invalid_sidecar", "zones.summary.kind"),
    ({"zones": {"summary": {"speaker": True}}}, "bad_speaker_zone", "zones.summary.speaker"),
    ({"zones": {"client": {"label": "x"}}}, "unknown_sidecar_zone", "zones.client"),  # ids are case-sensitive
    ({"fallback_zone": "ghost"}, "unknown_sidecar_zone", "fallback_zone"),
    ({"fallback_zone": "paid"}, "bad_fallback_zone", "fallback_zone"),
    ({"fallback_zone": "Client"}, "bad_fallback_zone", "fallback_zone"),
])
def test_a_sidecar_cannot_change_what_the_template_decides(sidecar, code, path):
    err = refusal(docxtpl_template(), code, sidecar)
    assert err.location == {"part": "sidecar", "path": path}
    if "kind" in path:
        assert "the template's use decides" in err.message


def test_intents_a_docxtpl_zone_binds_are_checked_against_the_catalog(known):
    err = refusal(docxtpl_template(), "unknown_intent", {"zones": {"paid": {"intents": ["banking.teleport"]}}}, known)
    assert err.location == {"part": "/word/document.xml", "block": 5, "path": "w:p[4]"}


def test_a_docxtpl_template_without_a_text_or_list_zone_has_no_fallback_zone():
    body = ITEMS + para("{% if paid %}Paid{% endif %} {{ Client.name }}")
    err = refusal(docxtpl_template(body, ()), "no_fallback_zone")
    assert "items (table)" in err.message and "paid (flag)" in err.message and "Client (record)" in err.message


def test_a_docxtpl_template_reading_no_name_has_no_zones():
    refusal(docxtpl_template(para("{% for i in range(3) %}{{ i }}{% endfor %}"), ()), "no_zones")


@pytest.fixture(scope="module")
def known() -> set[str]:
    return load_known_intents(Path("/work/shared/datasets/clinc150/domains.json"))


def test_every_refusal_of_the_template_language_is_a_refusal_code_of_ingest():
    assert set(LANGUAGE_REFUSAL_CODES) <= set(REFUSAL_CODES)


@pytest.mark.parametrize("text, code, said", [
    ("{% if paid %}Paid", "jinja_syntax", "{% if paid %}"),  # not closed
    ("{{ 9lives }}", "jinja_syntax", "9lives"),
    ("{{ site photo }}", "jinja_syntax", "site photo"),
    ("{{  }}", "jinja_syntax", "{{  }}"),
    ("{{ title {% if a %}{% endif %}", "jinja_syntax", "{{ title"),  # not closed, in a docxtpl template
    ("{{ notes;speaker }}", "jinja_syntax", "';'"),  # a placeholder takes no parameters
    ("{{ caf\u00e9 }}", "bad_zone_id", "caf\u00e9"),
    ("{{ x.__class__ }}", "jinja_forbidden", "__class__"),
    ("{{ x|evil }}", "jinja_forbidden", "evil"),
    ("{% for i in range(n) %}{{ i }}{% endfor %}", "jinja_forbidden", "range"),
    ("{% import 'x' as y %}", "jinja_forbidden", "import"),
    ("{{ x|safe }}", "jinja_forbidden", "safe"),
    ("{{ " + "a" * 65 + " }} {{ b.c }}", "bad_zone_id", "a" * 65),
])
def test_a_docxtpl_template_is_refused_at_upload_naming_the_tag_and_where(text, code, said):
    err = refusal(docxtpl_template(para("{{ notes }}") + para(text), ()), code)
    assert said in err.message
    assert err.location == {"part": "/word/document.xml", "block": 1, "path": "w:p[1]"}


def test_a_template_in_both_languages_is_refused():
    control = ('<w:sdt><w:sdtPr><w:tag w:val="astra:summary"/></w:sdtPr><w:sdtContent>' + para("old")
               + "</w:sdtContent></w:sdt>")
    err = refusal(docxtpl_template(control + para("{% if paid %}Paid{% endif %}"), ()), "mixed_template_languages")
    assert "astra:summary" in err.message


def test_the_grammar_refuses_what_it_refused_before_in_a_template_without_jinja():
    """Only a Jinja tag makes a docxtpl template: {{ name }} alone is still ASTRA's placeholder, with its rules."""
    maps = extract_maps(minimal_docx(para("{{ Summary }}") + para("{{ notes }}")))
    assert "language" not in maps.zone_map
    assert [z["declared_by"] for z in maps.zone_map["zones"]] == ["placeholder", "placeholder"]


def test_a_docxtpl_template_with_a_content_control_where_none_may_stand_is_refused():
    """BUILDER's check fails every document with such a control, whatever the template's language."""
    misplaced = ('<w:p><w:r><w:sdt><w:sdtPr><w:tag w:val="other"/></w:sdtPr><w:sdtContent><w:r><w:t>x</w:t></w:r>'
                 "</w:sdtContent></w:sdt></w:r></w:p>")
    err = refusal(docxtpl_template(para("{{ notes }} {% if paid %}!{% endif %}") + misplaced, ()),
                  "zone_unsupported_position")
    assert err.location == {"part": "/word/document.xml", "block": 1, "path": "w:p[1]/w:r[0]/w:sdt[0]"}


def test_bare_placeholders_the_grammar_refuses_are_read_as_a_docxtpl_template():
    """A docxtpl template of plain ``{{ name }}``s, a name used twice: ASTRA's grammar refuses a zone declared twice;
    docxtpl's language accepts it, and so does INGEST, as a docxtpl template."""
    docx = minimal_docx(para("Dear {{ client }},") + para("{{ body }}") + para("Regards to {{ client }}."),
                        footers=(para("{{ client }}"),))
    maps = jinja_maps(docx)
    assert maps.zone_map["language"] == "jinja"
    assert {zone["id"]: zone["kind"] for zone in maps.zone_map["zones"]} == {"client": "text", "body": "text"}


def test_a_grammar_template_with_a_content_control_keeps_its_refusal():
    control = ('<w:sdt><w:sdtPr><w:tag w:val="astra:client"/></w:sdtPr><w:sdtContent>'
               + para("x") + "</w:sdtContent></w:sdt>")
    refusal(minimal_docx(control + para("{{ client }}")), "duplicate_zone_id")
