"""Labels from a comparison: corrections.json (schema, parsing, resolution), what a zone accepts, the model adapter."""

from __future__ import annotations

import json

import numpy as np
import pytest

from astra.learn.compare import FeedbackRefused
from astra.learn.labels import (
    MAX_CORRECTIONS_BYTES,
    CorrectionsRefused,
    IntentRanker,
    accepts,
    added_key,
    parse_corrections,
)
from astra.samples.edits import DocumentEdit

from .helpers import DOMAINS
from .test_compare import edit, run


def labels(*entries: dict) -> dict:
    return {"version": 1, "labels": list(entries)}


def examples_by_key(report: dict) -> dict[str, dict]:
    return {x["utterance_key"]: x for x in report["examples"]}


# --------------------------------------------------------------------------- corrections.json


def test_parse_corrections_accepts_the_published_shape():
    data = json.dumps(labels({"utterance_id": "u3", "intent": "home.reminder"}, {"text": "Buy nails", "intent": "oos"}))
    assert parse_corrections(data.encode())["labels"][1] == {"text": "Buy nails", "intent": "oos"}


@pytest.mark.parametrize(("data", "says"), [
    (b"\xff\xfe{}", "not valid JSON"),
    (b'{"version": 1, "labels": [{"utterance_id": "u1", "intent": "oos", "intent": "transfer"}]}', "given twice"),
    (b'{"version": NaN, "labels": []}', "not valid JSON"),
    (b"[" * 100_000 + b"]" * 100_000, "not valid JSON"),
    (b'{"version": 2, "labels": []}', "version"),
    (b'{"version": 1, "labels": [{"intent": "oos"}]}', "labels/0"),
    (b'{"version": 1, "labels": [{"utterance_id": "u1", "text": "x", "intent": "oos"}]}', "labels/0"),
    (b'{"version": 1, "labels": [{"utterance_id": "u1", "intent": "Transfer Money"}]}', "labels/0/intent"),
    (b'{"version": 1, "labels": [{"text": "   ", "intent": "oos"}]}', "labels/0/text"),
    (b'{"version": 1, "labels": [{"utterance_id": "u1\\n", "intent": "oos"}]}', "labels/0/utterance_id"),
    (b'{"version": 1, "labels": [], "note": "hi"}', "(root)"),
])
def test_bad_corrections_are_named(data: bytes, says: str):
    with pytest.raises(CorrectionsRefused, match=says.replace("(", r"\(").replace(")", r"\)")):
        parse_corrections(data)


def test_corrections_are_capped():
    many = labels(*({"utterance_id": f"u{i}", "intent": "oos"} for i in range(1001)))
    with pytest.raises(CorrectionsRefused, match="labels"):
        parse_corrections(json.dumps(many).encode())
    with pytest.raises(CorrectionsRefused, match="over the"):
        parse_corrections(b" " * (MAX_CORRECTIONS_BYTES + 1))


# --------------------------------------------------------------------------- what a zone accepts


def test_what_a_zone_accepts():
    zone = {"accepts": {"intents": ["travel.book_flight", "transfer"], "domains": ["home"]}}
    assert accepts(zone, "book_flight", DOMAINS) and accepts(zone, "transfer", DOMAINS)
    assert accepts(zone, "reminder", DOMAINS)  # through its domain
    assert not accepts(zone, "schedule_meeting", DOMAINS)  # domain work
    assert not accepts(zone, "book_flight", {"book_flight": "banking"})  # qualified by another domain
    assert accepts(zone, "book_flight", {})  # a domain the model does not know: the zone's word is taken
    assert not accepts({"accepts": {"intents": [], "domains": []}}, "transfer", DOMAINS)


def test_the_ranker_adapter_ranks_the_models_labels():
    class Head:
        labels = ["oos", "reminder", "transfer"]

    class Model:
        head = Head()
        domains = {"reminder": "home", "transfer": "banking"}

        def _probabilities(self, texts):
            assert texts == ["pay the roofer"]
            return np.array([[0.1, 0.3, 0.6]])

    ranker = IntentRanker.from_model(Model())
    assert ranker.rank("pay the roofer") == [("transfer", 0.6), ("reminder", 0.3), ("oos", 0.1)]
    assert ranker.domains == {"reminder": "home", "transfer": "banking"}


# --------------------------------------------------------------------------- corrections in a comparison


def test_corrections_label_added_kept_moved_and_deleted_paragraphs():
    e = edit()
    e.add("action_items", "Order new downpipes.")
    e.move("Remind me to call the roofer", "action_items")
    e.delete("Book a flight to Paris")
    corrections = labels({"text": "order new  DOWNPIPES.", "intent": "todo_list_update"},
                         {"utterance_id": "u3", "intent": "home.todo_list_update"},  # qualified: written bare
                         {"utterance_id": "u5", "intent": "schedule_meeting"},
                         {"utterance_id": "u1", "intent": "book_hotel"})
    examples = examples_by_key(run(e.save(), corrections=corrections))
    added = examples[added_key("Order new downpipes.")]
    assert (added["intent"], added["kind"], added["from_zone"], added["to_zone"]) == \
        ("todo_list_update", "added", None, "action_items")
    assert (examples["u3"]["intent"], examples["u3"]["kind"]) == ("todo_list_update", "moved")  # not the ranker's
    assert (examples["u5"]["intent"], examples["u5"]["kind"]) == ("schedule_meeting", "labelled")
    assert (examples["u1"]["intent"], examples["u1"]["kind"], examples["u1"]["to_zone"]) == \
        ("book_hotel", "deleted", None)


def test_a_paragraph_added_twice_is_one_example():
    e = edit()
    e.add("notes", "Check the skylight.")
    e.add("notes", "Check the skylight.")
    report = run(e.save(), corrections=labels({"text": "Check the skylight.", "intent": "oos"}))
    assert [x["utterance_key"] for x in report["examples"]] == [added_key("Check the skylight.")]
    assert report["counts"]["skipped_duplicate_text"] == 1


def test_an_unresolved_utterance_is_learned_only_when_labelled():
    e = edit()
    e.unwrap("action_items")
    report = run(e.save(), corrections=labels({"utterance_id": "u4", "intent": "todo_list_update"}))
    (example,) = report["examples"]
    assert (example["utterance_key"], example["kind"], example["from_zone"], example["to_zone"]) == \
        ("u4", "labelled", "action_items", None)
    assert report["counts"]["skipped_unresolved"] == 1


@pytest.mark.parametrize(("entries", "says"), [
    ([{"utterance_id": "u99", "intent": "oos"}], "is no utterance of the session"),
    ([{"text": "Nobody wrote this.", "intent": "oos"}], "no paragraph of the zones reads"),
    ([{"utterance_id": "u1", "intent": "reminder"}], "zone 'summary' does not accept intent 'reminder'"),
    ([{"utterance_id": "u6", "intent": "transfer"}], "zone 'notes' does not accept"),  # the fallback: only oos
    ([{"utterance_id": "u1", "intent": "banking.book_flight"}], "in domain 'travel'"),
    ([{"utterance_id": "u1", "intent": "oos"}, {"text": "Book a flight to Paris for the site team.",
                                                "intent": "oos"}], "labelled twice"),
    ([{"utterance_id": "u2", "intent": "weather"}], "does not accept"),
])
def test_corrections_that_do_not_fit_the_document_refuse_the_feedback(entries, says):
    with pytest.raises(FeedbackRefused) as caught:
        run(edit().save(), corrections=labels(*entries))
    assert caught.value.code == "bad_corrections" and says in caught.value.message


def test_corrections_refused_for_a_table_zone_an_ambiguous_text_and_an_invalid_document():
    e = edit()
    e.move("Book a flight to Paris", "measurements")
    with pytest.raises(FeedbackRefused, match="table zone 'measurements'"):
        run(e.save(), corrections=labels({"utterance_id": "u1", "intent": "oos"}))
    e = edit()
    e.add("notes", "Transfer two hundred dollars to the repair account.")
    with pytest.raises(FeedbackRefused, match="2 different paragraphs"):
        run(e.save(), corrections=labels({"text": "Transfer two hundred dollars to the repair account.",
                                          "intent": "transfer"}))
    with pytest.raises(FeedbackRefused, match="bad_corrections"):
        run(edit().save(), corrections={"version": 1, "labels": "all of them"})


def test_an_utterance_builder_cut_away_cannot_be_labelled():
    from astra.builder.engine import BuildCaps, build

    from .helpers import intent_output, sample_maps, sample_template, zone_map

    zones = zone_map()
    output = intent_output({"notes": [("Gate code is 4411.", "oos"), ("Far past the cap, never shown.", "oos")]},
                           tables=False)
    generated = build(sample_template(), zones, sample_maps().style_map, output, {},
                      caps=BuildCaps(max_zone_chars=18)).docx
    with pytest.raises(FeedbackRefused, match="is not in the document BUILDER wrote"):
        run(DocumentEdit(generated).save(), generated=generated, zones=zones, output=output,
            corrections=labels({"utterance_id": "u2", "intent": "oos"}))
