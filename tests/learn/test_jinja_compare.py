"""LEARN on a document built from a docxtpl template (issue 11): the marked zones are read and compared like any
zone; the unmarked ones (names the template only reads) are not looked for."""

from __future__ import annotations

import docx
import pytest

from astra.builder.engine import build
from astra.core.binding import bind
from astra.core.data import read_tables
from astra.ingest.zones import extract_maps
from astra.learn.compare import FeedbackRefused, compare
from astra.learn.document_zones import read_zones
from astra.samples.edits import DocumentEdit
from tests.builder.test_jinja_build import CLIENT, READINGS, SIDECAR, UTTERANCES, jinja_template
from tests.template_language.docxtpl_fixtures import _save

from .helpers import MODEL_VERSION, SESSION, TENANT, fixed_ranker

RANKER = fixed_ranker(["book_flight", "transfer", "reminder", "weather"])


@pytest.fixture(scope="module")
def session():
    template = jinja_template()
    maps = extract_maps(template, SIDECAR)
    data = read_tables([("data/readings.csv", READINGS), ("data/client.csv", CLIENT)])
    output = bind(maps.zone_map, UTTERANCES, data, locale=None, model_version=MODEL_VERSION)
    return maps.zone_map, output, build(template, maps.zone_map, maps.style_map, output).docx


def _compare(session, edited: bytes, *, zone_map: dict | None = None, generated: bytes | None = None) -> dict:
    zones, output, built = session
    return compare(generated or built, edited, zone_map or zones, output, corrections=None, tenant=TENANT,
                   session=SESSION, config_version=1, model_version=MODEL_VERSION, ranker=RANKER)


def test_the_reader_finds_the_marked_zones_only(session):
    zone_map, _, built = session
    found = read_zones(built, zone_map)
    assert list(found.zones) == ["summary", "notes", "actions", "readings"]
    assert [p.text for p in found.zones["summary"].paragraphs] == ["Book a flight to Denver.",
                                                                   "Transfer two hundred dollars."]
    assert found.zones["notes"].inline and [p.text for p in found.zones["notes"].paragraphs] == [
        "The weather was dry."]
    assert found.zones["readings"].tables[0][1] == ["P-101", "north inlet", "412.5"]
    assert "Client: Smith & Sons (Leeds)" in found.outside  # an unmarked zone's text is the template's own


def test_an_untouched_document_keeps_every_utterance(session):
    report = _compare(session, DocumentEdit(session[2]).save())
    assert report["counts"]["kept"] == 4 and report["counts"]["edited"] == 0 and report["examples"] == []
    assert set(report["zones"]) == {"summary", "notes", "actions", "readings"}


def test_an_edit_of_a_marked_text_zone_is_seen_and_teaches_its_intent(session):
    edit = DocumentEdit(session[2])
    edit.set_text("Book a flight to Denver.", "Book a flight to Boston for Monday.")
    edit.set_text("The weather was dry.", "The weather was dry and windy.")
    report = _compare(session, edit.save())
    (summary_edit,) = report["zones"]["summary"]["edited"]
    assert (summary_edit["utterance_id"], summary_edit["after"]) == ("u1", "Book a flight to Boston for Monday.")
    (notes_edit,) = report["zones"]["notes"]["edited"]  # the inline control of "Notes: {{ notes }} (end)"
    assert (notes_edit["utterance_id"], notes_edit["after"]) == ("u4", "The weather was dry and windy.")
    assert {(e["utterance_key"], e["text"], e["intent"], e["kind"]) for e in report["examples"]} == {
        ("u1", "Book a flight to Boston for Monday.", "book_flight", "edited"),
        ("u4", "The weather was dry and windy.", "weather", "edited")}


def test_an_utterance_moved_between_marked_zones_is_a_move(session):
    edit = DocumentEdit(session[2])
    edit.move("Remind me to call the inspector.", "summary")
    report = _compare(session, edit.save())
    assert [(m["utterance_id"], m["from_zone"], m["to_zone"]) for m in report["moves"]] == [
        ("u3", "actions", "summary")]


def test_a_control_of_an_unmarked_zone_is_another_templates(session):
    edit = DocumentEdit(session[2])
    edit.retag("notes", "astra:urgent;kind=flag")
    with pytest.raises(FeedbackRefused, match="unknown_zone"):
        _compare(session, edit.save())


def test_a_zone_whose_template_writes_each_utterance_in_its_own_text_is_not_compared():
    """``{{ loop.index }}. {{ a }}``: the paragraphs are not the utterances; the zone is left out, not an error."""
    doc = docx.Document()
    doc.add_paragraph("{{ notes }}")
    doc.add_paragraph("{%p for a in actions %}")
    doc.add_paragraph("{{ loop.index }}. {{ a }}")
    doc.add_paragraph("{%p endfor %}")
    template = _save(doc)
    maps = extract_maps(template, {"version": 1, "zones": {"actions": {"intents": ["reminder"]}}})
    output = bind(maps.zone_map, UTTERANCES, read_tables([]), locale=None, model_version=MODEL_VERSION)
    generated = build(template, maps.zone_map, maps.style_map, output).docx
    edit = DocumentEdit(generated)
    edit.set_text("1. Remind me", "1. Please remind me")
    report = _compare((maps.zone_map, output, generated), edit.save())
    assert report["counts"]["not_written"] == 1 and report["counts"]["kept"] == 3
    assert report["zones"]["actions"]["added"][0]["text"] == "1. Please remind me to call the inspector."
