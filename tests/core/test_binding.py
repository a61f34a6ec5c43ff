"""astra.core.binding over the sample template's real zone map (extracted by INGEST) and CONFIG_SVC's test map."""

from __future__ import annotations

import copy
import io
import json
from functools import cache
from pathlib import Path

import openpyxl
import pytest
from jsonschema import Draft202012Validator

from astra.canonical import canonical_json
from astra.core.binding import (
    BindingError,
    ClassifiedUtterance,
    bind,
    document_sha256,
    locale_supported,
)
from astra.core.data import read_tables
from astra.ingest.zones import extract_maps
from astra.samples.templates import build_sample_template, sample_sidecar
from tests.config_svc.maps import ZONE_MAP as CONFIG_TEST_MAP

ROOT = Path(__file__).parents[2]
SCHEMA = json.loads((ROOT / "astra" / "config_svc" / "schemas" / "zone_map.schema.json").read_text())
SAMPLE_CSV = (ROOT / "astra" / "samples" / "readings.csv").read_bytes()


@cache
def _sample_map() -> dict:
    return extract_maps(build_sample_template(), sample_sidecar()).zone_map


def sample_map() -> dict:
    zone_map = copy.deepcopy(_sample_map())
    Draft202012Validator(SCHEMA).validate(zone_map)
    return zone_map


def utt(uid: str, intent: str, domain: str | None, confidence: float = 0.9, start: float | None = None,
        oos: bool = False, text: str = "words") -> ClassifiedUtterance:
    return ClassifiedUtterance(id=uid, text=text, start=start, end=None if start is None else start + 1.0,
                               speaker=None, intent=intent, domain=domain, confidence=confidence, oos=oos)


def zone_of(doc: dict, uid: str) -> str:
    return next(u["zone"] for u in doc["utterances"] if u["id"] == uid)


def flags_of(doc: dict, uid: str) -> list[str]:
    return next(u["flags"] for u in doc["utterances"] if u["id"] == uid)


def zones(doc: dict) -> dict[str, dict]:
    return {z["id"]: z for z in doc["zones"]}


NO_DATA = read_tables([])


def test_sample_session_binds_to_the_sample_template():
    doc = bind(sample_map(), [
        utt("u1", "book_flight", "travel", start=1.0),
        utt("u2", "transfer", "banking", start=2.0),
        utt("u3", "reminder", "home", start=3.0),
        utt("u4", "oos", None, confidence=0.8, start=4.0, oos=True),
    ], read_tables([("data/readings.csv", SAMPLE_CSV)]), model_version="m1", config_version=3)
    assert [zone_of(doc, u) for u in ("u1", "u2", "u3", "u4")] == ["summary", "summary", "action_items", "notes"]
    by_id = zones(doc)
    assert by_id["summary"]["utterances"] == ["u1", "u2"]
    assert by_id["measurements"]["tables"] == ["data/readings.csv"]
    assert by_id["site_photo"] == {"id": "site_photo", "kind": "image", "utterances": [], "tables": []}
    assert [z["id"] for z in doc["zones"]] == [z["id"] for z in sample_map()["zones"]]  # zone map order
    assert doc["tables"][0]["zone"] == "measurements" and doc["tables"][0]["row_count"] == 3
    assert doc["unbound_tables"] == [] and doc["data_problems"] == []
    assert doc["model_version"] == "m1" and doc["config_version"] == 3
    assert doc["counts"] == {"utterances": 4, "per_zone": {"title": 0, "summary": 2, "action_items": 1,
                                                           "measurements": 0, "site_photo": 0, "notes": 1,
                                                           "report_ref": 0},
                             "out_of_scope": 1, "low_confidence": 0, "unmatched": 0, "locale_unsupported": 0,
                             "tables": 1, "unbound_tables": 0, "data_problems": 0}


def test_qualified_and_bare_intent_names_match_exactly():
    zone_map = sample_map()
    zone_map["zones"][2]["accepts"]["intents"].append("pay_bill")  # action_items, bare name
    doc = bind(zone_map, [utt("q", "banking.transfer", None), utt("b", "pay_bill", "banking"),
                          utt("p", "transfe", "work")], NO_DATA)
    assert zone_of(doc, "q") == "summary"  # "banking.transfer" as the model gave it
    assert zone_of(doc, "b") == "summary"  # qualified "banking.pay_bill" in summary, declared first
    assert zone_of(doc, "p") == "action_items"  # no prefix match on intents: the domain "work" decides


def test_an_intent_match_beats_an_earlier_domain_match():
    zone_map = sample_map()
    zone_map["zones"][2]["accepts"]["intents"].append("travel.travel_notification")
    doc = bind(zone_map, [utt("u", "travel_notification", "travel")], NO_DATA)
    assert zone_of(doc, "u") == "action_items"  # summary accepts the domain travel, action_items the intent


def test_a_tie_goes_to_the_first_zone_in_map_order():
    zone_map = sample_map()
    zone_map["zones"][2]["accepts"]["domains"].append("travel")
    zone_map["zones"][2]["accepts"]["intents"].append("travel.book_flight")
    doc = bind(zone_map, [utt("i", "book_flight", "travel"), utt("d", "timezone", "travel")], NO_DATA)
    assert zone_of(doc, "i") == zone_of(doc, "d") == "summary"
    zone_map["zones"][1], zone_map["zones"][2] = zone_map["zones"][2], zone_map["zones"][1]
    doc = bind(zone_map, [utt("i", "book_flight", "travel"), utt("d", "timezone", "travel")], NO_DATA)
    assert zone_of(doc, "i") == zone_of(doc, "d") == "action_items"


def test_domain_match_when_no_zone_lists_the_intent():
    doc = bind(sample_map(), [utt("u", "exchange_rate", "banking")], NO_DATA)
    assert zone_of(doc, "u") == "summary" and flags_of(doc, "u") == []


def test_unmatched_and_out_of_scope_go_to_the_fallback_zone():
    doc = bind(sample_map(), [utt("m", "play_music", "music"), utt("n", "what_song", None),
                              utt("o", "oos", None, oos=True)], NO_DATA)
    assert [zone_of(doc, u) for u in "mno"] == ["notes"] * 3
    assert flags_of(doc, "m") == flags_of(doc, "n") == ["unmatched"]
    assert flags_of(doc, "o") == ["out_of_scope"]
    assert doc["counts"]["unmatched"] == 2 and doc["counts"]["out_of_scope"] == 1


def test_an_out_of_scope_utterance_is_not_bound_by_its_intent():
    # A model that reports oos but still names an in-scope intent: the oos flag decides.
    doc = bind(sample_map(), [utt("o", "book_flight", "travel", oos=True)], NO_DATA)
    assert zone_of(doc, "o") == "notes"


def test_utterances_bind_only_to_text_and_list_zones():
    zone_map = sample_map()
    zone_map["zones"][3]["accepts"]["intents"] = ["meeting_schedule"]  # measurements, a table zone
    zone_map["zones"][4]["accepts"]["domains"] = ["meta"]  # site_photo, an image zone
    doc = bind(zone_map, [utt("t", "meeting_schedule", "work"), utt("i", "whisper_mode", "meta")], NO_DATA)
    assert zone_of(doc, "t") == "action_items" and zone_of(doc, "i") == "notes"


@pytest.mark.parametrize("confidence, flagged", [(0.49, True), (0.5, False), (0.95, False)])
def test_low_confidence_is_flagged_and_still_bound(confidence, flagged):
    doc = bind(sample_map(), [utt("u", "book_hotel", "travel", confidence=confidence)], NO_DATA)
    assert zone_of(doc, "u") == "summary"
    assert flags_of(doc, "u") == (["low_confidence"] if flagged else [])
    assert doc["counts"]["low_confidence"] == int(flagged)


def test_the_low_confidence_threshold_is_an_argument():
    doc = bind(sample_map(), [utt("u", "book_hotel", "travel", confidence=0.7)], NO_DATA, low_confidence=0.8)
    assert flags_of(doc, "u") == ["low_confidence"] and doc["low_confidence_threshold"] == 0.8


@pytest.mark.parametrize("locale", ["fr-FR", "de", "pt_BR"])
def test_an_unsupported_locale_flags_every_utterance_and_uses_the_fallback(locale):
    doc = bind(sample_map(), [utt("a", "book_flight", "travel"), utt("b", "oos", None, oos=True)], NO_DATA,
               locale=locale)
    assert doc["flags"] == ["locale_unsupported"] and doc["locale"] == locale
    assert [zone_of(doc, u) for u in "ab"] == ["notes", "notes"]
    assert flags_of(doc, "a") == ["locale_unsupported"]
    assert flags_of(doc, "b") == ["locale_unsupported", "out_of_scope"]
    assert doc["utterances"][0]["intent"] == "book_flight"  # the classification is kept for the reviewer
    assert doc["counts"]["locale_unsupported"] == 2


@pytest.mark.parametrize("locale", [None, "en", "en-US", "en_GB", "EN-au"])
def test_supported_locales(locale):
    doc = bind(sample_map(), [utt("a", "book_flight", "travel")], NO_DATA, locale=locale)
    assert doc["flags"] == [] and zone_of(doc, "a") == "summary"


def test_supported_locales_is_an_argument():
    assert locale_supported("fr-CA", {"fr"}) and not locale_supported("en-US", {"fr"})
    doc = bind(sample_map(), [utt("a", "book_flight", "travel")], NO_DATA, locale="en-US",
               supported_locales={"en-gb"})
    assert doc["flags"] == ["locale_unsupported"]


def test_zone_utterances_are_in_time_order():
    doc = bind(sample_map(), [utt("late", "book_flight", "travel", start=9.0),
                              utt("early", "transfer", "banking", start=1.5),
                              utt("mid", "book_hotel", "travel", start=4.0)], NO_DATA)
    assert zones(doc)["summary"]["utterances"] == ["early", "mid", "late"]
    assert [u["id"] for u in doc["utterances"]] == ["late", "early", "mid"]  # the transcript's order is kept


def test_untimed_utterances_keep_transcript_order():
    doc = bind(sample_map(), [utt("b", "book_flight", "travel"), utt("a", "transfer", "banking")], NO_DATA)
    assert zones(doc)["summary"]["utterances"] == ["b", "a"]


def test_tables_bind_by_the_data_pattern_and_the_rest_are_reported():
    files = [("data/readings.csv", SAMPLE_CSV), ("data/extra/more.csv", b"a\n1\n"), ("data/book.json", b'[{"a":1}]'),
             ("data/broken.csv", b"a,b\n1\n"), ("data/blob.bin", b"\x00")]
    doc = bind(sample_map(), [], read_tables(files))
    assert zones(doc)["measurements"]["tables"] == ["data/extra/more.csv", "data/readings.csv"]  # * crosses /
    assert doc["unbound_tables"] == ["data/book.json"]
    assert {t["id"]: t["zone"] for t in doc["tables"]} == {"data/book.json": None, "data/extra/more.csv":
                                                           "measurements", "data/readings.csv": "measurements"}
    assert [(p["source"], p["reason"], p["zone"]) for p in doc["data_problems"]] == [
        ("data/blob.bin", "unsupported_format", None), ("data/broken.csv", "ragged_row", "measurements")]
    counts = doc["counts"]
    assert (counts["tables"], counts["unbound_tables"], counts["data_problems"]) == (3, 1, 2)


def test_the_data_pattern_is_case_sensitive_and_only_table_zones_take_tables():
    zone_map = sample_map()
    zone_map["zones"][0]["accepts"]["data"] = "data/*"  # title, a text zone
    doc = bind(zone_map, [], read_tables([("data/READINGS.CSV", SAMPLE_CSV)]))
    assert doc["unbound_tables"] == ["data/READINGS.CSV"]


def test_the_first_matching_table_zone_takes_a_table():
    zone_map = sample_map()
    second = copy.deepcopy(zone_map["zones"][3])
    second["id"], second["accepts"]["data"] = "all_data", "data/*"
    zone_map["zones"].insert(1, second)
    doc = bind(zone_map, [], read_tables([("data/readings.csv", SAMPLE_CSV), ("data/x.json", b'[{"a":1}]')]))
    assert zones(doc)["all_data"]["tables"] == ["data/readings.csv", "data/x.json"]
    assert zones(doc)["measurements"]["tables"] == []


def test_an_xlsx_binds_one_table_per_sheet():
    book = openpyxl.Workbook()
    book.active.title = "S1"
    book.active.append(["a"])
    book.active.append([1])
    out = io.BytesIO()
    book.save(out)
    zone_map = sample_map()
    zone_map["zones"][3]["accepts"]["data"] = "data/*.xlsx"
    doc = bind(zone_map, [], read_tables([("data/w.xlsx", out.getvalue())]))
    assert zones(doc)["measurements"]["tables"] == ["data/w.xlsx#S1"]


def test_config_svc_map_fallback_and_domains():
    doc = bind(CONFIG_TEST_MAP, [utt("t", "transfer", "banking"), utt("f", "book_flight", "travel"),
                                 utt("x", "pay_bill", "banking")], NO_DATA)
    assert [zone_of(doc, u) for u in "tfx"] == ["summary", "summary", "notes"]
    assert doc["fallback_zone"] == "notes"


def test_a_zone_map_without_its_fallback_zone_is_refused():
    zone_map = sample_map()
    zone_map["fallback_zone"] = "nowhere"
    with pytest.raises(BindingError, match="nowhere"):
        bind(zone_map, [], NO_DATA)


def test_duplicate_utterance_ids_are_refused():
    with pytest.raises(BindingError, match="unique"):
        bind(sample_map(), [utt("a", "book_flight", "travel"), utt("a", "transfer", "banking")], NO_DATA)


@pytest.mark.parametrize("confidence", [float("nan"), 1.5, -0.1])
def test_from_json_refuses_a_confidence_outside_0_1(confidence):
    with pytest.raises(BindingError, match="confidence"):
        ClassifiedUtterance.from_json({"id": "a", "text": "t", "intent": "x", "confidence": confidence})


def test_from_json_round_trip():
    doc = bind(sample_map(), [utt("a", "book_flight", "travel", start=0.5)], NO_DATA)
    again = ClassifiedUtterance.from_json(doc["utterances"][0])
    assert again == utt("a", "book_flight", "travel", start=0.5)


def _session(order: int) -> dict:
    utterances = [utt("u1", "book_flight", "travel", start=1.0, text="fly to Zürich"),
                  utt("u2", "oos", None, confidence=0.3, start=2.0, oos=True)]
    files = [("data/readings.csv", SAMPLE_CSV), ("data/bad.csv", b"\x00\x00")]
    if order:
        files.reverse()
    return bind(sample_map(), utterances, read_tables(files), locale="en-US", model_version="base-abc",
                config_version=7)


def test_same_input_gives_byte_identical_json_and_hash():
    a, b = _session(0), _session(1)
    assert canonical_json(a) == canonical_json(b)
    assert document_sha256(a) == document_sha256(b)
    assert len(document_sha256(a)) == 64
    raw = canonical_json(a)
    assert json.loads(raw) == a  # JSON-able as it stands
    assert raw == json.dumps(json.loads(raw), sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    assert "Zürich".encode() in raw


def test_the_hash_changes_with_any_recorded_field():
    a = _session(0)
    b = copy.deepcopy(a)
    b["config_version"] = 8
    assert document_sha256(a) != document_sha256(b)


def _jinja_zone(zone_id: str, kind: str, accepts: dict, fields: tuple[str, ...] = ()) -> dict:
    zone = {"id": zone_id, "label": zone_id, "kind": kind, "declared_by": "jinja",
            "location": {"part": "/word/document.xml", "block": 0, "path": "w:p[0]"}, "accepts": accepts,
            "marked": kind != "flag"}
    return {**zone, "fields": list(fields)} if fields else zone


# A docxtpl template's zone map as INGEST writes one (tests/ingest/test_jinja_zones.py extracts such maps).
JINJA_MAP = {
    "language": "jinja",
    "zones": [
        _jinja_zone("Client", "record", {"intents": ["book_flight"], "data": "data/client*.csv"}, ("name", "city")),
        _jinja_zone("items", "table", {"data": "data/*.csv"}, ("desc", "qty")),
        _jinja_zone("summary", "text", {"intents": ["travel.book_flight"]}),
        _jinja_zone("steps", "list", {"domains": ["home"]}),
        _jinja_zone("paid", "flag", {"intents": ["transfer"], "data": "data/*.csv"}),
        _jinja_zone("notes", "text", {"fallback": True}),
    ],
    "fallback_zone": "notes",
}


def test_a_docxtpl_zone_map_binds_utterances_to_text_and_list_zones_raises_flags_and_binds_tables_to_records():
    Draft202012Validator(SCHEMA).validate(JINJA_MAP)
    files = [("data/client.csv", b"name,city\nAcme,Oslo\n"), ("data/items.csv", b"desc,qty\nbolt,3\n")]
    doc = bind(JINJA_MAP, [utt("f", "book_flight", "travel", start=1.0), utt("t", "transfer", "banking", start=2.0),
                           utt("r", "reminder", "home", start=3.0), utt("x", "whisper_mode", "meta", start=4.0)],
               read_tables(files))
    # The record zone lists book_flight, but takes no utterance: the text zone after it does.
    # The flag zone takes no utterance: "transfer" raises it and stays shown in the fallback zone.
    assert {u["id"]: u["zone"] for u in doc["utterances"]} == {"f": "summary", "t": "notes", "r": "steps",
                                                               "x": "notes"}
    by_id = zones(doc)
    assert by_id["paid"] == {"id": "paid", "kind": "flag", "utterances": [], "tables": [], "raised_by": ["t"]}
    # The first table or record zone whose pattern matches takes a table; a flag zone takes none.
    assert by_id["Client"]["tables"] == ["data/client.csv"] and by_id["Client"]["utterances"] == []
    assert by_id["items"]["tables"] == ["data/items.csv"]
    assert doc["unbound_tables"] == [] and doc["counts"]["per_zone"]["Client"] == 0


def test_a_table_only_a_flag_zone_matches_is_unbound():
    zone_map = copy.deepcopy(JINJA_MAP)
    del zone_map["zones"][1]["accepts"]["data"], zone_map["zones"][0]["accepts"]["data"]
    doc = bind(zone_map, [], read_tables([("data/items.csv", b"desc,qty\nbolt,3\n")]))
    assert doc["unbound_tables"] == ["data/items.csv"] and zones(doc)["paid"]["tables"] == []


def test_a_docxtpl_templates_extracted_zone_map_binds():
    """End to end from INGEST: the zone map extract_maps gives a docxtpl template binds by the same rules."""
    from astra.samples.templates import minimal_docx

    def para(text: str) -> str:
        return f'<w:p><w:r><w:t xml:space="preserve">{text}</w:t></w:r></w:p>'

    rows = "".join(f"<w:tr><w:tc>{para(text)}</w:tc></w:tr>"
                   for text in ("{%tr for r in Readings %}", "{{ r.point }}", "{%tr endfor %}"))
    body = (para("{{ site.name }}") + f"<w:tbl>{rows}</w:tbl>" + para("{% if urgent %}URGENT{% endif %}")
            + para("{%p for u in actions %}") + para("{{ u.text }}") + para("{%p endfor %}") + para("{{ notes }}"))
    sidecar = {"zones": {"site": {"data": "data/site.csv"}, "Readings": {"data": "data/*.csv"},
                         "urgent": {"intents": ["alarm"]}, "actions": {"domains": ["home"]}}}
    zone_map = extract_maps(minimal_docx(body), sidecar).zone_map
    Draft202012Validator(SCHEMA).validate(zone_map)
    files = [("data/site.csv", b"name\nPier 4\n"), ("data/readings.csv", SAMPLE_CSV)]
    doc = bind(zone_map, [utt("a", "alarm", "utility"), utt("h", "reminder", "home"), utt("x", "oos", None, oos=True)],
               read_tables(files))
    assert {u["id"]: u["zone"] for u in doc["utterances"]} == {"a": "notes", "h": "actions", "x": "notes"}
    assert zones(doc)["urgent"]["raised_by"] == ["a"]
    assert {z["id"]: (z["kind"], z["tables"]) for z in doc["zones"]} == {
        "site": ("record", ["data/site.csv"]), "Readings": ("table", ["data/readings.csv"]),
        "urgent": ("flag", []), "actions": ("list", []), "notes": ("text", [])}


def test_a_flag_is_raised_by_in_scope_utterances_only_and_in_time_order():
    said = [utt("late", "transfer", "banking", start=9.0), utt("early", "transfer", "banking", start=1.0),
            utt("oos", "transfer", "banking", start=2.0, oos=True)]
    doc = bind(JINJA_MAP, said, read_tables([]))
    assert zones(doc)["paid"]["raised_by"] == ["early", "late"]
    assert zones(doc)["notes"]["utterances"] == ["early", "oos", "late"]  # all shown in the fallback zone
    unsupported = bind(JINJA_MAP, [utt("a", "transfer", "banking")], read_tables([]), locale="xx")
    assert zones(unsupported)["paid"]["raised_by"] == []
