"""LEARN retrain: a tenant's model = the base model's data + the tenant's corrections, on real (tiny) models."""

from __future__ import annotations

import functools
import json
from dataclasses import replace

import pytest

from astra.core.intent.data import DEFAULT_DATASET, Example
from astra.core.intent.model import IntentModel
from astra.core.intent.store import BASE_TENANT
from astra.learn.retrain import RetrainError, retrain
from tests.core.test_model_store import tiny_encoder  # noqa: F401 — a fixture

INTENTS = ("translate", "transfer", "weather", "alarm", "pay_bill", "timer")
OWN = "acme.credit"  # a tenant's own intent, unknown to the base; its utterances are CLINC150's credit_score ones
_OWN_SOURCE = "credit_score"


@functools.cache
def _train_rows() -> dict[str, list[str]]:
    rows: dict[str, list[str]] = {}
    for text, intent in json.loads(DEFAULT_DATASET.read_text())["train"]:
        rows.setdefault(intent, []).append(text)
    return rows


def rows(start: int, stop: int, own: bool = True) -> list[Example]:
    """CLINC150 train utterances [start:stop] of each intent, truly labelled (and as many of the tenant's own)."""
    found = [Example(t, i) for i in INTENTS for t in _train_rows()[i][start:stop]]
    return found + ([Example(t, OWN) for t in _train_rows()[_OWN_SOURCE][start:stop]] if own else [])


@pytest.fixture(scope="session")
def tiny_base(tiny_encoder) -> IntentModel:  # noqa: F811 — the fixture imported above
    """A base model that has seen four utterances per intent: corrections have something to fix."""
    return IntentModel.train(rows(0, 4, own=False), tiny_encoder, tenant=BASE_TENANT)


def test_retrain_learns_the_corrections_for_the_tenant_only(tiny_base):
    base_version, base_rows = tiny_base.version, len(tiny_base.training.texts)
    corrections = rows(10, 22)
    model = retrain(tiny_base, "acme", corrections)
    assert model.tenant == "acme" and model.version not in (base_version, "")
    assert model.version == model.content_version()
    assert set(model.head.labels) == set(INTENTS) | {OWN}
    assert model.metrics == {"base_version": base_version, "warm_start": base_version,
                             "corrections": len(corrections), "new_intents": [OWN]}
    held = rows(30, 34)
    assert model.evaluate(held)["in_scope_accuracy"] > tiny_base.evaluate(held)["in_scope_accuracy"]
    assert (tiny_base.version, len(tiny_base.training.texts), tiny_base.tenant) == (base_version, base_rows, "base")
    # The tenant is part of the content version: the same corrections make another tenant another model.
    assert retrain(tiny_base, "acme", corrections).version == model.version
    assert retrain(tiny_base, "other", corrections).version != model.version


def test_a_later_correction_of_the_same_text_replaces_the_earlier_label(tiny_base):
    text = "please move my alarm to seven"
    corrections = [Example(text, "transfer"), Example("  Please MOVE my alarm to seven ", "alarm")]
    model = retrain(tiny_base, "acme", corrections)
    learned = [(t, label) for t, label in zip(model.training.texts, model.training.labels, strict=True)
               if " ".join(t.lower().split()) == text]
    assert [label for _, label in learned] == ["alarm"] and model.metrics["corrections"] == 1


def test_retrain_continues_from_the_current_model_and_never_loses_its_intents(tiny_base, tmp_path):
    first = retrain(tiny_base, "acme", rows(10, 14))
    first.save(tmp_path / "first")
    current = IntentModel.load(tmp_path / "first")  # as the retrain asset gets it: from the registry's artifact
    # Every utterance of the tenant's own intent relabelled since: its column stays all the same.
    relabelled = [Example(e.text, "translate") if e.intent == OWN else e for e in rows(10, 14)]
    second = retrain(tiny_base, "acme", relabelled, current=current)
    assert OWN in second.head.labels and second.metrics["warm_start"] == current.version
    assert second.metrics["new_intents"] == [OWN]
    # A current model not retrained from this base cannot lend its head: the intent would be lost, so no model.
    with pytest.raises(RetrainError, match=r"would lose intents \['acme.credit'\].*not retrained from base"):
        retrain(tiny_base, "acme", relabelled, current=replace(current, metrics={}))


def test_a_tenant_model_is_never_the_start_of_another_tenants(tiny_base):
    acme = retrain(tiny_base, "acme", rows(10, 12))
    with pytest.raises(RetrainError, match="retrained from the base model, not from 'acme'"):
        retrain(acme, "other", rows(10, 12))
    with pytest.raises(RetrainError, match="current model belongs to 'acme', not to 'other'"):
        retrain(tiny_base, "other", rows(10, 12), current=acme)


@pytest.mark.parametrize(("tenant", "corrections", "message"), [
    ("base", [Example("hi", "translate")], "reserved"),
    ("Acme", [Example("hi", "translate")], "invalid tenant"),
    ("acme", [], "no corrections for 'acme'"),
    ("acme", [Example("   ", "translate")], "correction 0 has no text"),
    ("acme", [Example("hi", "translate"), Example("hello", "Translate!")], "correction 1 has the label 'Translate!'"),
    ("acme", [Example("hi", "")], "correction 0 has the label ''"),
    ("acme", [("hi", "translate")], "correction 0 is a tuple, not an Example"),
])
def test_retrain_refuses_what_it_cannot_learn(tiny_base, tenant, corrections, message):
    with pytest.raises(RetrainError, match=message):
        retrain(tiny_base, tenant, corrections)


def test_an_out_of_scope_correction_is_learned_as_oos(tiny_base):
    model = retrain(tiny_base, "acme", [Example("what is the meaning of life", "oos")] + rows(10, 12))
    assert "oos" in model.head.labels
    assert model.classify(["what is the meaning of life"])[0].intent == "oos"
