"""LabelledExample: the contract D, E, F and G share (identity, holdout split, stream fields, validation)."""

from __future__ import annotations

import hashlib

import pytest

from astra.core.intent.data import Example
from astra.learn.examples import FORMAT, InvalidExample, LabelledExample

SHA = "ab" * 32


def example(**overrides) -> LabelledExample:
    fields = dict(tenant="acme", session="acme--s1--v2", utterance_key="u7", text="move 50 dollars to savings",
                  intent="transfer", kind="moved", from_zone="notes", to_zone="actions", model_version="m1",
                  report_sha256=SHA)
    return LabelledExample(**{**fields, **overrides})


def test_example_id_is_the_contracts_hash_of_tenant_session_and_utterance():
    expected = hashlib.sha256(b"acme\0acme--s1--v2\0u7").hexdigest()[:32]
    assert example().example_id() == expected
    # One label per utterance: a relabel keeps the id; another version or utterance does not.
    assert example(intent="oos", kind="deleted", to_zone=None).example_id() == expected
    assert example(session="acme--s1--v3").example_id() != expected
    assert example(utterance_key="u8").example_id() != expected


def test_holdout_is_a_fixed_fifth_of_the_ids():
    examples = [example(utterance_key=f"u{i}") for i in range(2000)]
    held = [e for e in examples if e.holdout()]
    assert all(e.holdout() == (int(e.example_id()[:8], 16) % 5 == 0) for e in examples)
    assert 0.17 < len(held) / len(examples) < 0.23


def test_to_example_carries_text_and_label():
    assert example(intent="oos").to_example() == Example(text="move 50 dollars to savings", intent="oos")


@pytest.mark.parametrize("zones", [("notes", "actions"), ("notes", None), (None, "actions")])
def test_stream_fields_round_trip_as_str_and_as_bytes(zones):
    original = example(from_zone=zones[0], to_zone=zones[1])
    fields = original.to_fields()
    assert fields["format"] == FORMAT and all(isinstance(v, str) for v in fields.values())
    assert LabelledExample.from_fields(fields) == original
    raw = {k.encode(): v.encode() for k, v in fields.items()}  # what a Redis client without decoding returns
    assert LabelledExample.from_fields(raw) == original


def test_unknown_fields_are_ignored():
    assert LabelledExample.from_fields({**example().to_fields(), "note": "x"}) == example()


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"format": "2"}, "format '2'"),
        ({"format": None}, "format None"),
        ({"intent": None}, "missing fields: intent"),
        ({"text": b"\xff\xfe"}, "field 'text' is not UTF-8"),
        ({"kind": "renamed"}, "kind 'renamed'"),
        ({"tenant": "other"}, "does not belong to tenant 'other'"),
    ],
)
def test_malformed_stream_fields_are_refused(fields, message):
    entry: dict = example().to_fields()
    for key, value in fields.items():
        if value is None:
            entry.pop(key)
        else:
            entry[key] = value
    with pytest.raises(InvalidExample, match=message):
        LabelledExample.from_fields(entry)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"tenant": "base", "session": "base--s1--v1"}, "reserved"),  # corrections never train the base model
        ({"tenant": "Acme"}, "invalid tenant"),
        ({"session": "acme--s1"}, "invalid session partition key"),
        ({"session": "other--s1--v1"}, "does not belong"),
        ({"utterance_key": ""}, "utterance_key must be a non-empty string"),
        ({"text": "  \n"}, "text is blank"),
        ({"text": "a\x00b"}, "text holds a NUL"),
        ({"text": "a\ud800"}, "lone surrogate"),
        ({"intent": 3}, "intent must be a non-empty string"),
        ({"from_zone": ""}, "from_zone must be a non-empty string"),
        ({"kind": "MOVED"}, "kind 'MOVED'"),
        ({"report_sha256": "AB" * 32}, "64 lowercase hex"),
        ({"report_sha256": SHA[:-1]}, "64 lowercase hex"),
    ],
)
def test_invalid_examples_are_refused_with_the_reason(overrides, message):
    with pytest.raises(InvalidExample, match=message):
        example(**overrides)
