"""A tenant's intent model: the base model's data plus the tenant's accepted corrections (issue 10 §2).

The model is an ``IntentModel.update`` of the base model, not a full ``IntentModel.train``: the head is refitted
warm-started on the base training set plus the corrections, each correction replacing the base rows with the same
text and weighing ``model.CORRECTION_WEIGHT``. Measured on the real base model (CLINC150, 15 100 rows, 151 labels,
this 2-core machine at load ≈ 2): 100 or 300 corrections take 5.7–6.0 s as an update and 42 s as a full train on the
same rows (encodings reused, n-grams and both experts refitted from zero, 150 L-BFGS iterations), with the same
accuracy on the gate's slice of val (96.6–97.1 % vs 96.9–97.0 %). So a retrain is always an update.

The update starts from the base model's data every time, with all the tenant's corrections, so a relabelled
correction replaces its earlier label instead of piling up beside it. It is warm-started from the tenant's current
model when that model was retrained from the same base (same encoder, standardisation and n-gram vocabulary, so its
head fits the base data's features): the refit then continues from where the tenant is, and every column of the
current model is kept, including a tenant's own intent whose corrections were all relabelled since. Otherwise (first
retrain, or a new base model) it starts from the base head.

Labels: an intent the base does not know is allowed, it is the tenant's own (a zone may accept intents the base
never had): the update adds its column. It must be an intent name as zones spell them (``INTENT_RE``), or ``oos``.
The result never loses an intent: its labels are checked to include the base model's and the current model's.

The caller passes only this tenant's corrections (``Example`` carries no tenant); the tenant is written into the
model's ``head.json``, so the same corrections give a different content version for another tenant and a tenant
model can never be mistaken for the base. The held-back corrections (``LabelledExample.holdout``) are not passed
here: they are the gate's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from astra.core.intent.data import OOS, Example
from astra.core.intent.model import IntentModel
from astra.core.intent.store import BASE_TENANT
from astra.ingest.zones import INTENT_RE
from astra.tenancy import InvalidKey, validate_slug


class RetrainError(ValueError):
    """A retrain that cannot be done as asked; the message says why. Nothing was trained."""


def retrain(base: IntentModel, tenant: str, corrections: Sequence[Example],
            current: IntentModel | None = None) -> IntentModel:
    """The tenant's model: ``base`` updated with the tenant's ``corrections`` (all its accepted ones, in the order
    they were given: of several corrections of one text, the last one's label is learned). ``current`` is the model
    the tenant is served now, when it has its own."""
    try:
        validate_slug(tenant)
    except InvalidKey as exc:
        raise RetrainError(str(exc)) from None
    if base.tenant != BASE_TENANT:
        raise RetrainError(f"a tenant's model is retrained from the base model, not from {base.tenant!r}'s")
    if current is not None and current.tenant != tenant:
        raise RetrainError(f"the current model belongs to {current.tenant!r}, not to {tenant!r}")
    latest = _latest_labels(corrections)
    if not latest:
        raise RetrainError(f"no corrections for {tenant!r}: the tenant is served the base model")
    start, warm_start = replace(base, tenant=tenant), base
    if current is not None and current.metrics.get("base_version") == base.version:
        # Retrained from this very base: its head reads the same features (the base version pins the encoder,
        # the standardisation and the n-gram vocabulary).
        start, warm_start = replace(start, head=current.head, domains={**base.domains, **current.domains}), current
    model = start.update(latest)
    lost = sorted((set(base.head.labels) | set(current.head.labels if current else ())) - set(model.head.labels))
    if lost:
        raise RetrainError(f"the retrained model would lose intents {lost}: {tenant!r}'s current model was not "
                           f"retrained from base {base.version} and these have no example left")
    model.metrics = {"base_version": base.version, "warm_start": warm_start.version, "corrections": len(latest),
                     "new_intents": sorted(set(model.head.labels) - set(base.head.labels))}
    return model


def _latest_labels(corrections: Sequence[Example]) -> list[Example]:
    """Each text once (compared as ``IntentModel.update`` does: case and spacing aside), with its last label, at its
    last position. RetrainError on anything that is not a correction the model can learn."""
    latest: dict[str, Example] = {}
    for n, example in enumerate(corrections):
        if not isinstance(example, Example):
            raise RetrainError(f"correction {n} is a {type(example).__name__}, not an Example")
        if not isinstance(example.text, str) or not example.text.strip():
            raise RetrainError(f"correction {n} has no text")
        if not isinstance(example.intent, str) or not (example.intent == OOS or INTENT_RE.fullmatch(example.intent)):
            raise RetrainError(f"correction {n} has the label {example.intent!r}: not an intent name "
                               f"(lowercase a-z, 0-9, '_', one optional '.') nor {OOS!r}")
        key = " ".join(example.text.lower().split())
        latest.pop(key, None)
        latest[key] = example
    return list(latest.values())

