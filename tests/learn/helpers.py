"""Shared helpers for the LEARN comparator tests: the sample template built by BUILDER, and a user's edits made with
python-docx (what a Word user's save looks like to a reader: the same package, its XML rewritten)."""

from __future__ import annotations

import copy
from functools import lru_cache

from astra.builder.engine import build
from astra.ingest.zones import TemplateMaps, extract_maps
from astra.learn.labels import IntentRanker
from astra.samples.templates import build_sample_template, sample_sidecar

TENANT = "acme"
SESSION = "acme--site-visit--v1"
MODEL_VERSION = "m-test-1"
DOMAINS = {"book_flight": "travel", "book_hotel": "travel", "car_rental": "travel", "travel_alert": "travel",
           "pay_bill": "banking", "transfer": "banking", "todo_list_update": "home", "reminder": "home",
           "schedule_meeting": "work", "shopping_list": "home", "weather": "utility"}
# What each sample utterance is, as the model classified it (zone: [(text, intent)]).
SAMPLE_UTTERANCES = {
    "summary": [("Book a flight to Paris for the site team.", "book_flight"),
                ("Transfer two hundred dollars to the repair account.", "transfer"),
                ("Remind me to call the roofer on Monday.", "book_hotel")],
    "action_items": [("Add gutter cleaning to my to do list.", "todo_list_update"),
                     ("Schedule a meeting with the owner next week.", "schedule_meeting")],
    "notes": [("The weather was dry and clear all afternoon.", "oos")],
}
SAMPLE_TABLE = {"id": "data/readings.csv", "source": "data/readings.csv", "header": ["Point", "Reading", "Unit"],
                "columns": [{"name": "Point", "type": "text"}, {"name": "Reading", "type": "decimal"},
                            {"name": "Unit", "type": "text"}],
                "rows": [["A1", 4.5, "mm"], ["B2", 7.25, "mm"]]}


@lru_cache(maxsize=1)
def sample_template() -> bytes:
    return build_sample_template()


@lru_cache(maxsize=1)
def sample_maps() -> TemplateMaps:
    return extract_maps(sample_template(), sample_sidecar())


def zone_map(*, speaker: tuple[str, ...] = ()) -> dict:
    """The sample template's zone map, ``"speaker": true`` on the zones named."""
    base = copy.deepcopy(sample_maps().zone_map)
    for zone in base["zones"]:
        if zone["id"] in speaker:
            zone["speaker"] = True
    return base


def intent_output(zone_utterances: dict[str, list[tuple[str, str]]] | None = None, *, speaker: str | None = None,
                  tables: bool = True) -> dict:
    """An intent output as CORE's binding writes it: utterances with intents, each zone's ids in order."""
    utterances, zones = [], []
    for zone_id, items in (SAMPLE_UTTERANCES if zone_utterances is None else zone_utterances).items():
        ids = []
        for text, intent in items:
            uid = f"u{len(utterances) + 1}"
            oos = intent == "oos"
            utterances.append({"id": uid, "text": text, "speaker": speaker, "start": None, "end": None,
                               "intent": intent, "domain": None if oos else DOMAINS.get(intent),
                               "confidence": 0.9, "oos": oos, "zone": zone_id, "flags": []})
            ids.append(uid)
        zones.append({"id": zone_id, "kind": "text", "utterances": ids, "tables": []})
    out_tables = []
    if tables:
        out_tables.append({**SAMPLE_TABLE, "zone": "measurements"})
        zones.append({"id": "measurements", "kind": "table", "utterances": [], "tables": [SAMPLE_TABLE["id"]]})
    return {"document_version": 1, "model_version": MODEL_VERSION, "config_version": 1, "locale": "en-US",
            "utterances": utterances, "zones": zones, "tables": out_tables, "fallback_zone": "notes"}


def built(zones: dict, output: dict, template: bytes | None = None, style_map: dict | None = None) -> bytes:
    """The document BUILDER makes for ``output`` (the sample template unless another is given)."""
    return build(template or sample_template(), zones, style_map if style_map is not None else sample_maps().style_map,
                 output, {}).docx


def fixed_ranker(order: list[str]) -> IntentRanker:
    """A ranker that ranks the labels in ``order`` (most probable first) whatever the text."""
    share = 1.0 / len(order)
    return IntentRanker(lambda text: [(label, round(1.0 - k * share, 3)) for k, label in enumerate(order)], DOMAINS)
