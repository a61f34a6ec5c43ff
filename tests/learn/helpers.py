"""Shared helpers for the LEARN comparator tests: the sample template built by BUILDER, and a user's edits made with
python-docx (what a Word user's save looks like to a reader: the same package, its XML rewritten)."""

from __future__ import annotations

import copy
import io
from functools import lru_cache

import docx
from docx.oxml.ns import qn

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


class Edit:
    """A user's edit of a .docx, through python-docx: find paragraphs by text, move them between zones' content
    controls, change their text or formatting, add or delete paragraphs, remove controls."""

    def __init__(self, data: bytes) -> None:
        self.doc = docx.Document(io.BytesIO(data))

    def save(self) -> bytes:
        out = io.BytesIO()
        self.doc.save(out)
        return out.getvalue()

    def control(self, zone_id: str):
        """The w:sdt of a zone (main document, headers)."""
        for root in self._roots():
            for sdt in root.iter(qn("w:sdt")):
                tag = sdt.find(f"{qn('w:sdtPr')}/{qn('w:tag')}")
                if tag is not None and tag.get(qn("w:val")).split(";")[0] == f"astra:{zone_id}":
                    return sdt
        raise KeyError(zone_id)

    def content(self, zone_id: str):
        return self.control(zone_id).find(qn("w:sdtContent"))

    def paragraph(self, text: str):
        """The w:p whose text contains ``text``."""
        for root in self._roots():
            for p in root.iter(qn("w:p")):
                if text in "".join(t.text or "" for t in p.iter(qn("w:t"))):
                    return p
        raise KeyError(text)

    def move(self, text: str, zone_id: str) -> None:
        """Cut the paragraph holding ``text`` and paste it at the end of the zone."""
        p = self.paragraph(text)
        p.getparent().remove(p)
        self.content(zone_id).append(p)

    def set_text(self, text: str, new_text: str) -> None:
        """Replace ``text`` in its paragraph's runs (the lead run, if any, stays)."""
        p = self.paragraph(text)
        for t in p.iter(qn("w:t")):
            if t.text and text in t.text:
                t.text = t.text.replace(text, new_text)
                return
        raise KeyError(text)

    def delete(self, text: str) -> None:
        p = self.paragraph(text)
        p.getparent().remove(p)

    def add(self, zone_id: str, text: str) -> None:
        """A new paragraph at the end of the zone, styled like its first paragraph if it has one."""
        content = self.content(zone_id)
        first = content.find(qn("w:p"))
        p = copy.deepcopy(first) if first is not None else content.makeelement(qn("w:p"), {})
        for child in list(p):
            if child.tag != qn("w:pPr"):
                p.remove(child)
        run = p.makeelement(qn("w:r"), {})
        t = run.makeelement(qn("w:t"), {})
        t.text = text
        run.append(t)
        p.append(run)
        content.append(p)

    def bold(self, text: str) -> None:
        """Make every run of the paragraph holding ``text`` bold."""
        for run in self.paragraph(text).iter(qn("w:r")):
            rpr = run.find(qn("w:rPr"))
            if rpr is None:
                rpr = run.makeelement(qn("w:rPr"), {})
                run.insert(0, rpr)
            if rpr.find(qn("w:b")) is None:
                rpr.insert(0, rpr.makeelement(qn("w:b"), {}))

    def unwrap(self, zone_id: str) -> None:
        """Word's "Remove content control": the content stays, the control goes."""
        sdt = self.control(zone_id)
        for child in list(sdt.find(qn("w:sdtContent"))):
            sdt.addprevious(child)
        sdt.getparent().remove(sdt)

    def remove_control(self, zone_id: str) -> None:
        """The control deleted with its content."""
        sdt = self.control(zone_id)
        sdt.getparent().remove(sdt)

    def retag(self, zone_id: str, tag: str) -> None:
        self.control(zone_id).find(f"{qn('w:sdtPr')}/{qn('w:tag')}").set(qn("w:val"), tag)

    def copy_control(self, zone_id: str) -> None:
        sdt = self.control(zone_id)
        sdt.addnext(copy.deepcopy(sdt))

    def set_cell(self, row: int, column: int, text: str, zone_id: str = "measurements") -> None:
        table = self.content(zone_id).find(qn("w:tbl"))
        cell = table.findall(qn("w:tr"))[row].findall(qn("w:tc"))[column]
        ts = list(cell.iter(qn("w:t")))
        ts[0].text = text
        for t in ts[1:]:
            t.text = ""

    def outside(self, old: str, new: str) -> None:
        """Change text outside the zones (a heading, the intro)."""
        self.set_text(old, new)

    def _roots(self):
        yield self.doc.element.body
        for section in self.doc.sections:
            yield section.header._element
