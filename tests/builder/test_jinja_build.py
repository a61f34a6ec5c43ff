"""BUILDER on a docxtpl template (issue 11): the zone map INGEST makes of it, an intent output bound by CORE's rules,
rendered through the template language; marked zones are controls, the document passes its checks."""

from __future__ import annotations

import dataclasses

import docx
import pytest

from astra.builder import engine
from astra.builder.check import check_document
from astra.builder.engine import BuildCaps, BuildError, build
from astra.core.binding import ClassifiedUtterance, bind
from astra.core.data import read_tables
from astra.ingest.zones import extract_maps
from astra.template_language import RenderCaps
from tests.template_language.docxtpl_fixtures import _runs, _save, _table, document_text

from .helpers import zone_paragraphs

READINGS = (b"sensor,location,pressure_kpa\n"
            b"P-101,north inlet,412.5\nP-102,north outlet,398.1\nP-103,<east & west>,120\n")
CLIENT = b"Name,City\nSmith & Sons,Leeds\nOther,York\n"
SIDECAR = {"version": 1, "zones": {
    "summary": {"label": "Summary", "domains": ["travel", "banking"]},
    "actions": {"intents": ["reminder"]},
    "urgent": {"intents": ["urgent_alert"]},
    "readings": {"data": "data/readings*.csv"},
    "client": {"data": "data/client.csv"},
}, "fallback_zone": "notes"}


def jinja_template() -> bytes:
    """A docxtpl template of each zone kind: a paragraph text zone, an inline text zone, a flag, a record, a list
    (paragraph loop) and a table (row loop, fields matched to the CSV's headers)."""
    doc = docx.Document()
    doc.add_paragraph("Inspection report", style="Title")
    doc.add_paragraph("Summary:")
    doc.add_paragraph("{{p summary }}")
    _runs(doc.add_paragraph(), "Notes: ", ("{{ notes }}", {"italic": True}), " (end of notes)")
    doc.add_paragraph("{%p if urgent %}")
    doc.add_paragraph("URGENT: act within 24 hours.")
    doc.add_paragraph("{%p endif %}")
    doc.add_paragraph("Client: {{ client.Name }} ({{ client.city }})")
    doc.add_paragraph("{%p for a in actions %}")
    doc.add_paragraph("{{ a }}", style="List Bullet")
    doc.add_paragraph("{%p endfor %}")
    _table(doc, [["Sensor", "Where", "kPa"], ["{%tr for r in readings %}", "", ""],
                 ["{{ r.sensor }}", "{{ r.location }}", "{{ r.pressure_kpa }}"], ["{%tr endfor %}", "", ""]])
    return _save(doc)


def utterance(uid: str, text: str, intent: str, domain: str | None, start: float) -> ClassifiedUtterance:
    return ClassifiedUtterance(uid, text, start, start + 1.0, "Ana", intent, domain, 0.9, False)


UTTERANCES = [utterance("u1", "Book a flight to Denver.", "book_flight", "travel", 0.0),
              utterance("u2", "Transfer two hundred dollars.", "transfer", "banking", 1.0),
              utterance("u3", "Remind me to call the inspector.", "reminder", "home", 2.0),
              utterance("u4", "The weather was dry.", "weather", "utility", 3.0)]


@pytest.fixture(scope="module")
def template() -> bytes:
    return jinja_template()


@pytest.fixture(scope="module")
def maps(template):
    return extract_maps(template, SIDECAR)


@pytest.fixture(scope="module")
def output(maps) -> dict:
    data = read_tables([("data/readings.csv", READINGS), ("data/client.csv", CLIENT)])
    return bind(maps.zone_map, UTTERANCES, data, locale="de-DE", supported_locales={"de"})


@pytest.fixture(scope="module")
def built(template, maps, output):
    return build(template, maps.zone_map, maps.style_map, output)


def test_the_zone_map_is_a_docxtpl_one(maps):
    zones = {z["id"]: (z["kind"], z["marked"], tuple(z.get("fields", ()))) for z in maps.zone_map["zones"]}
    assert maps.zone_map["language"] == "jinja"
    assert zones == {"summary": ("text", True, ()), "notes": ("text", True, ()), "urgent": ("flag", False, ()),
                     "client": ("record", False, ("Name", "city")), "actions": ("list", True, ()),
                     "readings": ("table", True, ("sensor", "location", "pressure_kpa"))}


def test_every_zone_is_rendered_from_the_intent_output_and_the_document_passes_its_checks(built, maps, template):
    assert built.fills == {"actions": {"kind": "list", "items": 1}, "client": {"kind": "record", "items": 1},
                           "notes": {"kind": "text", "items": 1},
                           "readings": {"kind": "table", "items": 1, "rows": 3},
                           "summary": {"kind": "text", "items": 2}, "urgent": {"kind": "flag", "items": 0}}
    assert built.problems == []
    report = check_document(built.docx, maps.zone_map, template=template)
    assert report.passed, report.findings
    assert sorted(report.zones_found) == ["actions", "notes", "readings", "summary"]  # the marked zones
    assert zone_paragraphs(built.docx, "summary") == ["Book a flight to Denver.", "Transfer two hundred dollars."]
    assert zone_paragraphs(built.docx, "notes") == ["The weather was dry."]
    text = document_text(built.docx)
    assert "p: Notes: The weather was dry. (end of notes)" in text
    assert "p: Client: Smith & Sons (Leeds)" in text  # the record's first row, "city" read from "City"
    assert "URGENT" not in "\n".join(text)  # the flag received nothing
    assert "p: Remind me to call the inspector." in text
    assert "cell[3,1]" in "\n".join(text)
    joined = "\n".join(text)
    assert "P-103" in joined and "<east & west>" in joined and "412,5" in joined  # escaped, the locale's decimals


def test_a_flag_that_receives_an_utterance_shows_its_paragraphs(template, maps):
    urgent = [*UTTERANCES, utterance("u5", "This is urgent.", "urgent_alert", None, 4.0)]
    output = bind(maps.zone_map, urgent, read_tables([]), locale=None)
    built = build(template, maps.zone_map, maps.style_map, output)
    assert built.fills["urgent"] == {"kind": "flag", "items": 1}
    assert "p: URGENT: act within 24 hours." in document_text(built.docx)
    assert "p: Client:  ()" in document_text(built.docx)  # no client table: the record's names show empty
    assert built.fills["readings"] == {"kind": "table", "items": 0, "rows": 0}


def test_a_build_is_deterministic_and_the_template_read_once(template, maps, output, built, monkeypatch):
    engine.clear_template_cache()
    reads = []
    real = engine._JINJA_TEMPLATES.read
    monkeypatch.setattr(engine._JINJA_TEMPLATES, "read", lambda data: reads.append(1) or real(data))
    first = build(template, maps.zone_map, maps.style_map, output)
    second = build(template, maps.zone_map, maps.style_map, output)
    assert first.docx == second.docx == built.docx and first.sha256 == built.sha256
    assert reads == [1]


def test_text_and_cells_are_cut_at_the_caps(template, maps, output):
    caps = BuildCaps(max_zone_chars=10, max_cell_chars=3)
    built = build(template, maps.zone_map, maps.style_map, output, caps=caps)
    assert zone_paragraphs(built.docx, "summary") == ["Book a fli"]
    assert {(p.zone, p.code) for p in built.problems} >= {("summary", "truncated"), ("readings", "cell_truncated")}
    assert built.fills["summary"]["truncated_chars"] == len("ght to Denver.Transfer two hundred dollars.")


def test_a_render_the_data_makes_fail_is_a_build_error(template, maps, output):
    caps = BuildCaps(render=RenderCaps(max_iterations=2))
    with pytest.raises(BuildError, match="cannot be rendered with this session's data") as info:
        build(template, maps.zone_map, maps.style_map, output, caps=caps)
    assert "\n" not in str(info.value)


def _zone(zone_map: dict, zone_id: str, **changes) -> dict:
    return {**zone_map, "zones": [{**z, **changes} if z["id"] == zone_id else z for z in zone_map["zones"]]}


@pytest.mark.parametrize("change, message", [
    (lambda m: _zone(m, "urgent", kind="text"), "zone 'urgent' of the zone map has kind 'text', but the template "
                                                "uses it as a flag zone"),
    (lambda m: _zone(m, "urgent", id="ghost"), "zone 'ghost' of the zone map is not declared by the template"),
    (lambda m: {**m, "zones": m["zones"][1:]}, "zone 'summary' of the template is not in the zone map"),
])
def test_a_zone_map_that_is_not_the_templates_is_refused(template, maps, output, change, message):
    with pytest.raises(BuildError, match=message):
        build(template, change(maps.zone_map), maps.style_map, output)


def test_an_intent_output_that_does_not_fit_is_refused(template, maps, output):
    odd = {**output, "zones": [*output["zones"], {"id": "ghost", "utterances": [], "tables": []}]}
    with pytest.raises(BuildError, match="fills zone 'ghost'"):
        build(template, maps.zone_map, maps.style_map, odd)
    missing = {**output, "zones": [{"id": "notes", "utterances": ["u404"], "tables": []}]}
    with pytest.raises(BuildError, match="lists utterance 'u404'"):
        build(template, maps.zone_map, maps.style_map, missing)


def test_a_template_the_language_refuses_is_a_build_error(maps):
    doc = docx.Document()
    doc.add_paragraph("{{ summary.__class__ }} {{ notes }}")
    with pytest.raises(BuildError, match="the template cannot be read: jinja_forbidden"):
        build(_save(doc), maps.zone_map, maps.style_map, {"zones": []})


def test_build_caps_carry_the_render_caps():
    assert BuildCaps().render == RenderCaps()
    assert dataclasses.replace(BuildCaps(), render=RenderCaps(max_part_chars=10)).render.max_part_chars == 10
