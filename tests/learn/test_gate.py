"""LEARN holdout gate: the rule on controlled answers, then genuine and poisoned rounds on real (tiny) models."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from astra.core.intent.data import DEFAULT_DATASET, OOS, Example, evaluation_examples
from astra.core.intent.model import Prediction
from astra.learn.gate import ALPHA, Holdout, build_holdout, holdout_gate, in_base_slice, p_worse
from astra.learn.retrain import retrain
from tests.core.test_model_store import tiny_encoder  # noqa: F401 — a fixture of tiny_base
from tests.learn.test_retrain import INTENTS, OWN, rows, tiny_base  # noqa: F401 — tiny_base is a fixture

# ---- the rule ---------------------------------------------------------------------------------------------------


def test_p_worse_is_the_one_sided_sign_test():
    assert p_worse(0, 0) == 1.0
    assert p_worse(3, 0) == 0.125 and p_worse(4, 0) == 0.0625
    assert p_worse(10, 4) == pytest.approx(1471 / 16384)  # C(14, 10..14) / 2^14
    assert p_worse(1, 7) == pytest.approx(1 - 1 / 256)


def answering(right: set[str], labels=("a", "b"), version="v", threshold=0.0):
    """A model that answers right exactly the texts in ``right`` (an example's intent is "oos" when its text starts
    with "oos", else "a")."""
    def classify(texts):
        return [Prediction(("oos" if t.startswith("oos") else "a") if t in right else "b", None, 1.0, False, version,
                           "a") for t in texts]
    return SimpleNamespace(classify=classify, head=SimpleNamespace(labels=list(labels)), version=version,
                           threshold=threshold)


def holdout_of(base: int, corrections: int) -> Holdout:
    return Holdout(tuple(Example(f"base {k}", "a") for k in range(base)),
                   tuple(Example(f"corr {k}", "a") for k in range(corrections)))


def test_four_regressions_and_no_fix_fail_three_pass():
    holdout = holdout_of(20, 0)
    everything = {e.text for e in holdout.base}
    current = answering(everything)
    three = holdout_gate(current, answering(everything - {"base 0", "base 1", "base 2"}), holdout)
    assert three.passed and three.reason.startswith("not worse than the current model: the base slice (20 ")
    four = holdout_gate(current, answering(everything - {"base 0", "base 1", "base 2", "base 3"}, version="w"),
                        holdout)
    assert not four.passed and four.reason.startswith("worse than the current model on the base slice (20 ")
    assert "4 newly wrong, 0 newly right (p = 0.0625)" in four.reason
    metrics = json.loads(json.dumps(four.metrics))  # stored as JSON on the registry row
    assert metrics["comparisons"]["base"] == {"against": "current", "n": 20, "current_accuracy": 1.0,
                                              "candidate_accuracy": 0.8, "regressions": 4, "fixes": 0,
                                              "p_worse": 0.0625, "worse": True}
    assert [c["n"] for c in metrics["comparisons"].values()] == [20, 0, 20]  # base, corrections, pooled: no drift
    assert metrics["models"] == {"current": "v", "candidate": "w", "base": None}
    assert metrics["failed"] == ["base", "holdout"]  # the corrections are empty: pooled is the base slice
    assert (metrics["passed"], metrics["reason"], metrics["alpha"]) == (False, four.reason, ALPHA)


def test_the_tenants_few_labels_are_not_outvoted_by_the_base_slice():
    holdout = holdout_of(200, 5)
    current = answering({f"base {k}" for k in range(50)} | {e.text for e in holdout.corrections})
    candidate = answering({e.text for e in holdout.base})  # 150 base utterances fixed, every held-back one broken
    verdict = holdout_gate(current, candidate, holdout)
    assert not verdict.passed
    assert verdict.reason.startswith("worse than the current model on the held-back corrections (5 utterances)")
    pooled = verdict.metrics["comparisons"]["holdout"]
    assert pooled["fixes"] > pooled["regressions"] and verdict.metrics["failed"] == ["corrections"]


def test_regressions_too_few_on_each_component_still_fail_together():
    holdout = holdout_of(20, 10)
    everything = {e.text for e in holdout.base + holdout.corrections}
    broken = {"base 0", "base 1", "base 2", "corr 0", "corr 1"}
    verdict = holdout_gate(answering(everything), answering(everything - broken), holdout)
    assert not verdict.passed and verdict.reason.startswith("worse than the current model on the whole holdout (30 ")
    assert [c["worse"] for c in verdict.metrics["comparisons"].values()] == [False, False, True]
    assert verdict.metrics["failed"] == ["holdout"]


def test_poison_split_into_rounds_adds_up_against_the_base_model():
    """Each round 3 utterances worse than the model it replaces: too few to tell, but they add up against the
    base model; judged against the current model alone, every round would pass."""
    holdout = holdout_of(40, 0)
    everything = {e.text for e in holdout.base}
    base = answering(everything, version="base")
    first = answering(everything - {"base 0", "base 1", "base 2"}, version="r1")
    one = holdout_gate(base, first, holdout, base=base)
    assert one.passed, one.reason
    assert one.reason.endswith("; nor than the base model: the base slice (40 utterances): 100.0% -> 92.5%, "
                               "3 newly wrong, 0 newly right (p = 0.125)")
    assert one.metrics["comparisons"]["drift"] == {"against": "base", "n": 40, "base_accuracy": 1.0,
                                                   "candidate_accuracy": 0.925, "regressions": 3, "fixes": 0,
                                                   "p_worse": 0.125, "worse": False}
    second = answering(everything - {f"base {k}" for k in range(6)}, version="r2")
    assert holdout_gate(first, second, holdout).passed  # the model it replaces alone cannot tell
    two = holdout_gate(first, second, holdout, base=base)
    assert not two.passed and two.metrics["failed"] == ["drift"]
    assert two.reason == ("worse than the base model on the base slice (40 utterances): 100.0% -> 85.0%, "
                          "6 newly wrong, 0 newly right (p = 0.0156)")
    assert two.metrics["models"] == {"current": "r1", "candidate": "r2", "base": "base"}
    assert not two.metrics["comparisons"]["base"]["worse"]


def test_drift_is_judged_on_what_the_base_model_can_answer():
    """The current model answers oos (a confidence floor), the base model cannot: the slice's oos utterances
    neither count for the candidate against the base nor hide its regressions against the current model."""
    holdout = Holdout(tuple(Example(f"base {k}", "a") for k in range(20)) +
                      tuple(Example(f"oos {k}", "oos") for k in range(6)), ())
    everything = {e.text for e in holdout.base}
    current = answering(everything, threshold=0.3)
    base = answering({t for t in everything if t.startswith("base")}, version="base")
    verdict = holdout_gate(current, answering(everything - {f"oos {k}" for k in range(4)}, threshold=0.3), holdout,
                           base=base)
    drift = verdict.metrics["comparisons"]["drift"]
    assert (drift["n"], drift["regressions"], drift["fixes"]) == (20, 0, 0)
    assert not verdict.passed and verdict.metrics["failed"] == ["base", "holdout"]
    assert verdict.reason.startswith("worse than the current model on the base slice (26 utterances)")


def test_a_candidate_dropping_an_intent_or_an_empty_holdout_never_passes():
    holdout = holdout_of(5, 0)
    everything = {e.text for e in holdout.base}
    dropped = holdout_gate(answering(everything, labels=("a", "b", "c")), answering(everything), holdout)
    assert not dropped.passed and dropped.reason == "the candidate drops intents the current model has: c"
    empty = holdout_gate(answering(set()), answering(set()), holdout_of(0, 0))
    assert not empty.passed and empty.reason == "the holdout is empty: nothing shows the candidate is not worse"


# ---- the holdout ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory):
    """CLINC150 val rows of the tiny base's intents, of an intent it does not know, and out of scope."""
    data = json.loads(DEFAULT_DATASET.read_text())
    val = [row for row in data["val"] if row[1] in INTENTS + ("timezone",)]
    path = tmp_path_factory.mktemp("data") / "tiny.json"
    path.write_text(json.dumps({"train": [["hi", "translate"]], "oos_train": [], "val": val,
                                "oos_val": data["oos_val"][:40]}))
    return path


def test_the_base_slice_is_a_fixed_quarter_of_val_the_current_model_can_answer(tiny_base, tiny_dataset):  # noqa: F811 — the fixture imported above
    val = evaluation_examples(DEFAULT_DATASET)
    assert 0.2 < sum(in_base_slice(e.text) for e in val) / len(val) < 0.3
    held = tuple(rows(30, 31))
    holdout = build_holdout(tiny_base, held, tiny_dataset)
    assert holdout.corrections == held
    assert holdout.base and all(in_base_slice(e.text) for e in holdout.base)
    assert {e.intent for e in holdout.base} == set(INTENTS)  # no timezone, no oos: the tiny base has no floor
    expected = [e for e in evaluation_examples(tiny_dataset) if e.intent in INTENTS and in_base_slice(e.text)]
    assert list(holdout.base) == expected
    with_floor = build_holdout(SimpleNamespace(head=tiny_base.head, threshold=0.3), (), tiny_dataset)
    assert {e.intent for e in with_floor.base} == set(INTENTS) | {OOS}


# ---- real rounds ------------------------------------------------------------------------------------------------

ROTATED = dict(zip(INTENTS + (OWN,), INTENTS[1:] + (OWN, INTENTS[0]), strict=True))


def poisoned(examples: list[Example]) -> list[Example]:
    """Every utterance moved to the wrong zone: labelled with the next intent."""
    return [Example(e.text, ROTATED[e.intent]) for e in examples]


@pytest.fixture(scope="session")
def first_round(tiny_base, tiny_dataset):  # noqa: F811 — the fixture imported above
    """A genuine round: (the tenant's model, the holdout with its held-back corrections)."""
    model = retrain(tiny_base, "acme", rows(10, 22))
    return model, build_holdout(model, tuple(rows(30, 34)), tiny_dataset)


def test_genuine_corrections_pass(tiny_base, tiny_dataset, first_round):  # noqa: F811 — the fixture imported above
    model, _ = first_round
    holdout = build_holdout(tiny_base, tuple(rows(30, 34)), tiny_dataset)
    verdict = holdout_gate(tiny_base, model, holdout, base=tiny_base)
    assert verdict.passed, verdict.reason
    corrections = verdict.metrics["comparisons"]["corrections"]
    assert corrections["fixes"] > corrections["regressions"]  # it learned the tenant's labels, own intent included
    assert verdict.metrics["comparisons"]["drift"]["n"] == len(holdout.base)


def test_a_second_genuine_round_passes_against_the_current_and_the_base_model(tiny_base, first_round):  # noqa: F811 — the fixture imported above
    current, holdout = first_round
    candidate = retrain(tiny_base, "acme", rows(10, 22) + rows(22, 28), current=current)
    verdict = holdout_gate(current, candidate, holdout, base=tiny_base)
    assert verdict.passed, verdict.reason
    assert verdict.metrics["failed"] == [] and verdict.metrics["comparisons"]["drift"]["n"] == len(holdout.base)


@pytest.mark.parametrize("per_intent", [4, 10])
def test_a_poisoned_round_is_stopped(tiny_base, first_round, per_intent):  # noqa: F811 — the fixture imported above
    current, holdout = first_round
    trained, held = rows(40, 40 + per_intent), rows(40 + per_intent, 41 + per_intent)
    candidate = retrain(tiny_base, "acme", rows(10, 22) + poisoned(trained), current=current)
    # The round's own held-back utterances carry its wrong labels too: they speak for the candidate.
    holdout = Holdout(holdout.base, holdout.corrections + tuple(poisoned(held)))
    verdict = holdout_gate(current, candidate, holdout, base=tiny_base)
    assert not verdict.passed and verdict.reason.startswith("worse than the current model on "), verdict.reason
