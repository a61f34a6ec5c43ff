"""CLINC150's figures (Larson et al. 2019): in-scope accuracy counts an out-of-scope answer as wrong."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from astra.core.intent.data import OOS


def score(predicted: Sequence[str], expected: Sequence[str]) -> dict:
    """in_scope_accuracy, oos_recall, oos_precision (fractions 0–1; None when undefined) and n."""
    pred = np.asarray(predicted, dtype=object)
    gold = np.asarray(expected, dtype=object)
    in_scope = gold != OOS
    said_oos = pred == OOS
    truly_oos = ~in_scope
    return {
        "in_scope_accuracy": _fraction((pred == gold)[in_scope].sum(), in_scope.sum()),
        "oos_recall": _fraction((said_oos & truly_oos).sum(), truly_oos.sum()),
        "oos_precision": _fraction((said_oos & truly_oos).sum(), said_oos.sum()),
        "n": int(len(gold)),
    }


def _fraction(part, whole) -> float | None:
    return round(float(part) / float(whole), 4) if whole else None


def choose_threshold(best_prob: np.ndarray, best_intent: Sequence[str], expected: Sequence[str],
                     min_oos_recall: float = 0.75) -> float:
    """The confidence floor (on held-out data) with the best in-scope accuracy among those reaching
    ``min_oos_recall`` — a margin over the 0.70 goal — else the one with the best sum of the two."""
    candidates = []
    for threshold in np.round(np.arange(0.0, 0.96, 0.01), 2):
        predicted = [OOS if p < threshold else i for p, i in zip(best_prob, best_intent, strict=True)]
        figures = score(predicted, expected)
        accuracy, recall = figures["in_scope_accuracy"] or 0.0, figures["oos_recall"] or 0.0
        candidates.append((recall >= min_oos_recall, accuracy + (recall if recall < min_oos_recall else 0), threshold))
    return float(max(candidates, key=lambda c: (c[0], c[1], -c[2]))[2])
