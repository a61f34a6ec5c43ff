"""The holdout gate (issue 10 §2): a retrained model replaces the current one only when it is not worse on the
tenant's holdout, nor worse than the base model on the base slice.

The holdout has two components, judged apart and together:

- ``base``: a fixed slice of the base data's evaluation split (CLINC150 val + oos_val): the utterances whose text
  hashes to 0 modulo ``SLICE_MODULUS`` (one in four), restricted to the answers the current model can give (its
  labels, and ``oos`` when it has an oos threshold). Fixed by the text alone, so the same utterances judge every
  round; whoever builds training sessions from the same split leaves these out (``in_base_slice``).
- ``corrections``: the tenant's held-back corrections (``LabelledExample.holdout``), never trained on.

Rule, per component, on the same examples (a paired comparison): ``regressions`` = examples the current model gets
right and the candidate wrong, ``fixes`` = the opposite. Were both models equally good, each of the
``regressions + fixes`` examples they disagree on would be as likely to go either way; the candidate is **worse**
when so many go against it that this has probability below ``ALPHA`` (exact one-sided sign test, McNemar's test on
the discordant pairs). The candidate passes when it is worse neither on ``base``, nor on ``corrections``, nor on the
whole holdout (both pooled), and it keeps every intent of the current model. Apart, so that the base slice's
hundreds of utterances cannot outvote the tenant's few explicit labels; pooled, so that a few regressions on each,
too few to tell on either alone, still count. An empty holdout passes nothing: there is no evidence the candidate is
not worse.

``drift``: the same test on the base slice (restricted to what the base model can answer) against the base model
the candidate was retrained from. Judged only against the model it replaces, poison split into rounds too small to
tell passes round after round, each a little worse than the last; against the base the regressions add up until
they tell. Measured on the real base (rounds of 30 val utterances outside the slice, each labelled with a random
wrong intent, 12 rounds): without it 9 rounds promoted and the slice fell 96.1 % -> 93.7 %, still falling; with it
5 promoted and the slice held at 95.4-95.6 %, what the sign test cannot tell from the base. Wrong labels that move
nothing on the slice still pass: the gate sees what its holdout sees. Genuine rounds (20 misrouted val utterances
outside the slice, rightly labelled, 4 rounds) all passed, drift p >= 0.98 (9 fixes, no regression by the last).

The verdict's metrics (JSON, on the registry row) hold every comparison (``against``: ``current`` or ``base``,
either model's accuracy, regressions, fixes, p, ``worse``) and ``failed``: the comparisons that stopped it.

``ALPHA`` = 0.1, from measurements on the real base model's slice (764 utterances) with rounds of val utterances
outside it, as the learning-loop bench builds them: genuine rounds of 40 or 80 misrouted utterances moved to their
right zone gave p >= 0.75 (3 seeds each: at most 5 regressions, always at least as many fixes); poisoned rounds of
100 utterances moved to random wrong zones gave p = 0.006, 0.011 and 0.062 (6-13 regressions against 1-3 fixes):
all stopped at 0.1, where the customary 0.05 let the last one through. Rounds of 40 wrong labels moved the slice by
at most a few utterances (p 0.02-0.81, one of six stopped): within what the slice resolves, such a round is caught
only when it contradicts the tenant's held-back corrections. A false rejection is visible (the reason stays on the
rejected registry row) and costs a round; a false acceptance is a silent regression: hence the larger alpha. The
smallest evidence that fails is 4 regressions and no fix (p = 0.0625).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from astra.core.intent.data import DEFAULT_DATASET, OOS, Example, evaluation_examples
from astra.core.intent.model import IntentModel

SLICE_MODULUS = 4
ALPHA = 0.1
COMPONENTS = ("base", "corrections")
POOLED = "holdout"
DRIFT = "drift"  # the base slice, the candidate against the base model
CURRENT, BASE = "current", "base"  # the model a comparison judges the candidate against
_NAMES = {"base": "the base slice", "corrections": "the held-back corrections", POOLED: "the whole holdout",
          DRIFT: "the base slice"}


@dataclass(frozen=True)
class Holdout:
    base: tuple[Example, ...]  # the slice of the base data's evaluation split
    corrections: tuple[Example, ...]  # the tenant's held-back corrections


@dataclass(frozen=True)
class GateVerdict:
    passed: bool
    reason: str
    metrics: dict  # JSON: kept on the registry row (metrics.gate)


def in_base_slice(text: str) -> bool:
    """Whether an utterance of the base data's evaluation split is in the gate's slice."""
    return int(hashlib.sha256(text.encode("utf-8")).hexdigest()[:8], 16) % SLICE_MODULUS == 0


def answers(model: IntentModel) -> set[str]:
    """What the model can answer: its labels, and ``oos`` when it has a confidence floor."""
    return set(model.head.labels) | ({OOS} if model.threshold > 0 else set())


def build_holdout(current: IntentModel, held_back: Sequence[Example],
                  dataset: str | Path = DEFAULT_DATASET) -> Holdout:
    """The tenant's holdout: the base slice of ``dataset`` the current model can be right on, and ``held_back``."""
    known = answers(current)
    rows = [e for e in evaluation_examples(dataset) if e.intent in known and in_base_slice(e.text)]
    return Holdout(tuple(rows), tuple(held_back))


def holdout_gate(current: IntentModel, candidate: IntentModel, holdout: Holdout,
                 base: IntentModel | None = None) -> GateVerdict:
    """Whether ``candidate`` may replace ``current``: worse neither on a component of ``holdout`` nor on the whole
    of it, not worse than ``base`` (the base model it was retrained from) on the base slice, and keeping every
    intent ``current`` has (module doc). No ``base``: no drift comparison (the caller judges the base model
    itself, or has none)."""
    against_current = {name: (_right(current, getattr(holdout, name)), _right(candidate, getattr(holdout, name)))
                       for name in COMPONENTS}
    comparisons = {name: _compare(CURRENT, *pair) for name, pair in against_current.items()}
    comparisons[POOLED] = _compare(CURRENT, *(against_current["base"][k] + against_current["corrections"][k]
                                              for k in range(2)))
    if base is not None:
        known = answers(base)
        base_slice = [k for k, e in enumerate(holdout.base) if e.intent in known]
        current_right, candidate_right = against_current["base"]
        base_right = current_right if base is current else _right(base, holdout.base)
        comparisons[DRIFT] = _compare(BASE, [base_right[k] for k in base_slice],
                                      [candidate_right[k] for k in base_slice])
    lost = sorted(set(current.head.labels) - set(candidate.head.labels))
    failed = [name for name, c in comparisons.items() if c["worse"]]
    empty = not any(comparisons[name]["n"] for name in (*COMPONENTS, POOLED))
    if lost:
        reason = f"the candidate drops intents the current model has: {', '.join(lost)}"
    elif empty:
        reason = "the holdout is empty: nothing shows the candidate is not worse"
    elif failed:
        by_model = {against: [_describe(name, comparisons[name]) for name in failed
                              if comparisons[name]["against"] == against] for against in (CURRENT, BASE)}
        reason = "; ".join(f"worse than the {against} model on " + "; ".join(described)
                           for against, described in by_model.items() if described)
    else:
        reason = "not worse than the current model: " + "; ".join(
            _describe(name, comparisons[name]) for name in COMPONENTS if comparisons[name]["n"])
        if DRIFT in comparisons:
            reason += "; nor than the base model: " + _describe(DRIFT, comparisons[DRIFT])
    passed = not (lost or empty or failed)
    metrics = {
        "rule": f"fail when, on base, corrections or the whole holdout against the current model, or on the base "
                f"slice against the base model (drift), the candidate's regressions outnumber its fixes with "
                f"one-sided sign-test p < {ALPHA}",
        "alpha": ALPHA,
        "models": {"current": current.version, "candidate": candidate.version,
                   "base": base.version if base is not None else None},
        "comparisons": comparisons,
        "failed": failed,
        "passed": passed,
        "reason": reason,
    }
    return GateVerdict(passed, reason, metrics)


def _right(model: IntentModel, examples: Sequence[Example]) -> list[bool]:
    """Which examples the model answers right."""
    predictions = model.classify([e.text for e in examples]) if examples else []
    return [p.intent == e.intent for p, e in zip(predictions, examples, strict=True)]


def _compare(against: str, before: list[bool], after: list[bool]) -> dict:
    """The candidate's answers (``after``) paired with those of the model it is judged against (``before``)."""
    regressions = sum(b and not a for b, a in zip(before, after, strict=True))
    fixes = sum(a and not b for b, a in zip(before, after, strict=True))
    p = p_worse(regressions, fixes)
    return {"against": against, "n": len(before), f"{against}_accuracy": _accuracy(before),
            "candidate_accuracy": _accuracy(after), "regressions": regressions, "fixes": fixes, "p_worse": p,
            "worse": p < ALPHA}


def p_worse(regressions: int, fixes: int) -> float:
    """P(at least ``regressions`` of the ``regressions + fixes`` disagreements go against the candidate) were each
    a fair coin: the one-sided exact sign test. 1.0 when the models never disagree."""
    discordant = regressions + fixes
    tail = sum(math.comb(discordant, k) for k in range(regressions, discordant + 1))
    return tail / 2 ** discordant


def _accuracy(right: list[bool]) -> float | None:
    return round(sum(right) / len(right), 4) if right else None


def _describe(name: str, c: dict) -> str:
    before = c[f"{c['against']}_accuracy"]
    return (f"{_NAMES[name]} ({c['n']} utterances): {before:.1%} -> {c['candidate_accuracy']:.1%}, "
            f"{c['regressions']} newly wrong, {c['fixes']} newly right (p = {c['p_worse']:.3g})")
