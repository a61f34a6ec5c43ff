"""The Jinja context of a docxtpl template's build, from an intent output alone (no template, no rendering)."""

from __future__ import annotations

import pytest

from astra.builder.cells import CellFormat
from astra.builder.jinja_context import ContextError, DataRecord, field_key, header_for_fields, jinja_context

from .helpers import intent_output

ITEMS = {"id": "data/items.csv", "source": "data/items.csv", "sheet": None,
         "header": ["Description", "Unit Price", "When"],
         "columns": [{"name": "Description", "type": "text"}, {"name": "Unit Price", "type": "decimal"},
                     {"name": "When", "type": "date"}],
         "rows": [["Gasket", 12.5, {"value": "2024-03-01", "text": "1.3.2024"}],
                  ["Valve <B&C>", 140.0, None]]}
ZONES = [{"id": "notes", "kind": "text"}, {"id": "actions", "kind": "list"},
         {"id": "items", "kind": "table", "fields": ["Description", "unit_price", "qty"]},
         {"id": "client", "kind": "record", "fields": ["description"]},
         {"id": "urgent", "kind": "flag"}, {"id": "paid", "kind": "flag"}]
CAPS = {"max_zone_chars": 200_000, "max_cell_chars": 2_000}


def _context(output: dict, zones=ZONES, locale=None, **caps):
    return jinja_context(zones, output, CellFormat(locale), **{**CAPS, **caps})


@pytest.fixture
def output() -> dict:
    out = intent_output({"notes": ["Access road flooded.", "Pump\x07 ok."],
                         "actions": ["Replace the gasket", "Book a visit"], "urgent": ["It is urgent."]},
                        {"items": [ITEMS], "client": [ITEMS]}, locale="de-DE")
    out["utterances"][2].update(speaker="Ana", start=1.5, end=2.0, intent="reminder")
    urgent = next(entry for entry in out["zones"] if entry["id"] == "urgent")
    urgent["raised_by"], urgent["utterances"] = urgent["utterances"], []  # a flag is raised, it takes no utterance
    return out


def test_a_text_zone_is_its_utterances_joined_by_line_breaks_cleaned(output):
    context = _context(output, locale="de-DE")
    assert context.values["notes"] == "Access road flooded.\nPump ok."
    assert context.fills["notes"] == {"kind": "text", "items": 2}


def test_a_list_zone_is_utterance_records_shown_as_their_text(output):
    items = _context(output).values["actions"]
    assert [str(item) for item in items] == ["Replace the gasket", "Book a visit"]
    assert dict(items[0]) == {"text": "Replace the gasket", "speaker": "Ana", "start": 1.5, "end": 2.0,
                              "intent": "reminder"}
    assert (items[1]["speaker"], items[1]["intent"], items[1]["start"]) == ("", "", None)


def test_a_table_zone_is_rows_by_header_with_fields_matched_and_cells_as_the_locale_writes_them(output):
    context = _context(output, locale="de-DE")
    rows = context.values["items"]
    assert len(rows) == 2 and context.fills["items"] == {"kind": "table", "items": 1, "rows": 2}
    first = rows[0]
    assert dict(first) == {"Description": "Gasket", "Unit Price": "12,5", "When": "01.03.2024",
                           "unit_price": "12,5"}  # the field reads "Unit Price"; no header answers "qty"
    assert rows[1]["When"] == "" and rows[1]["Description"] == "Valve <B&C>"  # escaping is the renderer's
    assert str(first) == "Gasket, 12,5, 01.03.2024"


def test_a_record_zone_is_the_first_row_and_an_empty_record_without_a_table(output):
    context = _context(output)
    client = context.values["client"]
    assert client["description"] == client["Description"] == "Gasket"
    assert context.fills["client"] == {"kind": "record", "items": 1}
    output["zones"] = [z for z in output["zones"] if z["id"] != "client"]
    empty = _context(output).values["client"]
    assert not empty and dict(empty) == {}


def test_a_flag_is_whether_an_utterance_raised_it(output):
    context = _context(output)
    assert context.values["urgent"] is True and context.values["paid"] is False
    assert context.fills["urgent"] == {"kind": "flag", "items": 1}


def test_zones_without_entries_are_empty_of_their_kind():
    context = _context({"utterances": [], "tables": [], "zones": []})
    assert context.values == {"notes": "", "actions": [], "items": [], "client": DataRecord({}, ""),
                              "urgent": False, "paid": False}


def test_text_is_cut_at_the_zone_cap_and_cells_at_the_cell_cap(output):
    context = _context(output, max_zone_chars=25, max_cell_chars=4)
    assert context.values["notes"] == "Access road flooded.\nPump "
    assert context.fills["notes"] == {"kind": "text", "items": 2, "truncated_chars": 3}
    assert [str(item) for item in context.values["actions"]] == ["Replace the gasket", "Book a "]
    assert context.fills["actions"]["truncated_chars"] == 5
    first = context.values["items"][0]
    assert (first["Description"], first["When"]) == ("Gask\u2026", "2024\u2026")
    assert context.fills["items"]["cells_truncated"] == 4  # Gasket, 2024-03-01; Valve <B&C>, 140.0 (12.5 fits)


def test_headers_match_fields_exactly_first_then_loosely():
    assert field_key("Unit Price (EUR)") == "unit_price__eur_"
    assert header_for_fields(["unit_price", "Unit Price", "QTY"], ["unit_price", "qty", "Unit_Price", "none"]) == {
        "unit_price": "unit_price", "qty": "QTY", "Unit_Price": "unit_price"}


@pytest.mark.parametrize("zone, entry, detail", [
    ("notes", {"utterances": ["u404"]}, "lists utterance 'u404'"),
    ("items", {"tables": ["data/none.csv"]}, "lists table 'data/none.csv'"),
])
def test_an_entry_naming_what_the_intent_output_lacks_is_refused(zone, entry, detail):
    output = {"utterances": [], "tables": [], "zones": [{"id": zone, "utterances": [], "tables": [], **entry}]}
    with pytest.raises(ContextError, match=detail):
        _context(output)
