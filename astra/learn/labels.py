"""Labels from a comparison: which corrections teach the intent model what, and corrections.json.

Each utterance BUILDER wrote, and each paragraph the user added, is one *placement* of the comparison report
(:func:`placements`): kept, formatting-only, edited, moved (A → B), deleted, unresolved (its zone's control is gone)
or added. A placement gives at most one labelled example (its ``utterance_key``: the utterance id, or
``added:<sha256 of the normalized text>[:16]``):

=================  ===============================================================================================
placement          example
=================  ===============================================================================================
moved A → B        kind ``moved``: the label corrections.json gives it, else the model's best-ranked intent among
                   those B accepts; B accepting no intent (a fallback zone) → ``oos``; B a table or image zone →
                   none (counted ``skipped_to_table_zone`` / ``skipped_to_image_zone``); none of B's intents
                   known to the model → none (``skipped_no_known_intent``)
edited in place    kind ``edited``: the edited text with the utterance's original intent when that was in scope
                   (else none: ``skipped_edited_out_of_scope``), or the label corrections.json gives
deleted            kind ``deleted``: ``oos`` — deleted from every zone and found in none, the user says it does
                   not belong in the report — or the label corrections.json gives
added              kind ``added``: only with a corrections.json label (else ``skipped_unlabelled_added``)
kept, formatting   kind ``labelled``: only with a corrections.json label
unresolved         kind ``labelled``: only with a corrections.json label (else ``skipped_unresolved``)
=================  ===============================================================================================

What a zone accepts: an intent listed in ``accepts.intents`` bare (``transfer``) or qualified (``banking.transfer``,
matched when the model's domain map puts the intent in that domain or does not know it), or any intent the model's
domain map puts in one of ``accepts.domains``. ``oos`` is always a valid label. Labels are the model's bare label
names: a qualified label is written bare.

**corrections.json** (``schemas/corrections.schema.json``, parsed by :func:`parse_corrections`): ``{"version": 1,
"labels": [{"utterance_id" | "text", "intent"}]}``, at most 1,000 labels and 256 KiB. A label names an utterance
BUILDER wrote, wherever the user left it, or a paragraph by its text as it now reads (normalized as the comparator
compares texts). A corrections file that names nothing, names a paragraph twice, matches several different
paragraphs by text, or gives an intent the paragraph's zone does not accept (a table or image zone accepts none)
is refused as a whole (:class:`CorrectionsRefused`): a user's label is never dropped in silence.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from jsonschema import Draft202012Validator

from .document_zones import normalize

if TYPE_CHECKING:
    from astra.core.intent.model import IntentModel

OOS = "oos"
CORRECTIONS_SCHEMA_PATH = Path(__file__).with_name("schemas") / "corrections.schema.json"
MAX_CORRECTIONS_BYTES = 256 * 1024
UTTERANCE_KINDS = ("text", "list")
# Report lists -> placement kinds; the order is the order examples are made in (deterministic).
_PLACED = (("kept", "kept"), ("formatting_only", "formatting_only"), ("edited", "edited"), ("moved_in", "moved"),
           ("added", "added"), ("deleted", "deleted"), ("unresolved", "unresolved"))
_NOW_IN_A_ZONE = frozenset({"kept", "formatting_only", "edited", "moved", "added"})


class CorrectionsRefused(ValueError):
    """corrections.json cannot be used; the message says what to fix."""


@dataclass(frozen=True)
class IntentRanker:
    """The model's view the labels need: ``rank(text)`` -> every label with its probability, most probable first,
    and the model's domain map (intent -> domain)."""

    rank: Callable[[str], Sequence[tuple[str, float]]]
    domains: Mapping[str, str]

    @classmethod
    def from_model(cls, model: IntentModel) -> IntentRanker:
        labels = list(model.head.labels)

        def rank(text: str) -> list[tuple[str, float]]:
            row = model._probabilities([text])[0]
            return sorted(zip(labels, (float(p) for p in row), strict=True), key=lambda pair: -pair[1])

        return cls(rank, dict(model.domains))


@dataclass(frozen=True)
class Placement:
    kind: str  # kept | formatting_only | edited | moved | added | deleted | unresolved
    key: str  # the utterance id, or "added:<sha256 of the normalized text>[:16]"
    text: str  # as it reads now; for deleted and unresolved, as BUILDER wrote it
    from_zone: str | None  # where BUILDER wrote it (None: added)
    to_zone: str | None  # where it is now (None: deleted, unresolved)


def added_key(text: str) -> str:
    return "added:" + hashlib.sha256(normalize(text).encode("utf-8")).hexdigest()[:16]


# --------------------------------------------------------------------------- corrections.json


@lru_cache(maxsize=1)
def _validator() -> Draft202012Validator:
    schema = json.loads(CORRECTIONS_SCHEMA_PATH.read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def parse_corrections(data: bytes) -> dict:
    """corrections.json from its bytes: at most :data:`MAX_CORRECTIONS_BYTES`, UTF-8 JSON without NaN, Infinity or
    a key given twice, valid against the schema. Raises :class:`CorrectionsRefused`."""
    if len(data) > MAX_CORRECTIONS_BYTES:
        raise CorrectionsRefused(f"corrections.json is {len(data)} bytes, over the {MAX_CORRECTIONS_BYTES}-byte limit")
    try:
        document = json.loads(data.decode("utf-8"), object_pairs_hook=_no_duplicate_keys, parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise CorrectionsRefused(f"corrections.json is not valid JSON: {str(exc)[:200]}") from None
    return validate_corrections(document)


def validate_corrections(document: object) -> dict:
    """``document`` checked against the schema (the first problem named); returned as is."""
    errors = sorted(_validator().iter_errors(document), key=lambda e: (list(e.absolute_path), e.message))
    if errors:
        where = "/".join(str(p) for p in errors[0].absolute_path) or "(root)"
        raise CorrectionsRefused(f"corrections.json at {where}: {errors[0].message[:300]}")
    return document  # type: ignore[return-value]  # the schema says it is an object


def _no_duplicate_keys(pairs: list[tuple[str, object]]) -> dict:
    keys = [key for key, _ in pairs]
    repeated = sorted({key for key in keys if keys.count(key) > 1})
    if repeated:
        raise ValueError(f"key {repeated[0]!r} given twice")
    return dict(pairs)


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


# --------------------------------------------------------------------------- placements and examples


def placements(report_zones: Mapping[str, dict]) -> list[Placement]:
    """Every placement of a report's zones (zones in the report's order, then the lists of :data:`_PLACED`)."""
    found: list[Placement] = []
    for zone_id, zone in report_zones.items():
        for report_list, kind in _PLACED:
            for item in zone.get(report_list) or []:
                if kind == "added":
                    found.append(Placement(kind, item["key"], item["text"], None, zone_id))
                elif kind == "edited":
                    found.append(Placement(kind, item["utterance_id"], item["after"], zone_id, zone_id))
                elif kind == "moved":
                    found.append(Placement(kind, item["utterance_id"], item["text"], item["from_zone"], zone_id))
                elif kind in ("deleted", "unresolved"):
                    found.append(Placement(kind, item["utterance_id"], item["text"], zone_id, None))
                else:
                    found.append(Placement(kind, item["utterance_id"], item["text"], zone_id, zone_id))
    return found


def label_examples(found: Sequence[Placement], zone_map: dict, utterances: Mapping[str, dict],
                   corrections: dict | None, ranker: IntentRanker, *, tenant: str, session: str,
                   model_version: str | None) -> tuple[list[dict], Counter]:
    """The labelled examples of ``found`` (dicts of the LabelledExample fields but ``report_sha256``) and the
    count of placements that gave none, by reason (``skipped_<reason>``). Raises :class:`CorrectionsRefused`."""
    zones = {zone["id"]: zone for zone in zone_map.get("zones") or []}
    given = _resolve(corrections, found, zones, utterances, ranker.domains)
    examples: list[dict] = []
    skipped: Counter = Counter()
    made: set[str] = set()
    for placement in found:
        label = given.get(placement.key)
        intent, kind, reason = _label(placement, label, zones, utterances, ranker)
        if intent is None:
            if reason:  # a kept utterance without a label teaches nothing new: not counted as skipped
                skipped[f"skipped_{reason}"] += 1
            continue
        if model_version is None:
            skipped["skipped_no_model_version"] += 1
            continue
        if placement.key in made:
            skipped["skipped_duplicate_text"] += 1  # a second paragraph added with the same text
            continue
        made.add(placement.key)
        examples.append({"tenant": tenant, "session": session, "utterance_key": placement.key,
                         "text": placement.text.strip(), "intent": intent, "kind": kind,
                         "from_zone": placement.from_zone, "to_zone": placement.to_zone,
                         "model_version": model_version})
    return examples, skipped


def _label(placement: Placement, given: str | None, zones: dict[str, dict], utterances: Mapping[str, dict],
           ranker: IntentRanker) -> tuple[str | None, str, str]:
    """(intent or None, example kind, why there is none: "" when nothing was to be learned)."""
    kind = placement.kind
    if kind == "moved":
        zone = zones[placement.to_zone]
        if zone["kind"] not in UTTERANCE_KINDS:
            return None, kind, f"to_{zone['kind']}_zone"
        if given is not None:
            return given, kind, ""
        if not _accepts_any(zone):
            return OOS, kind, ""
        for intent, _probability in ranker.rank(placement.text):
            if intent != OOS and accepts(zone, intent, ranker.domains):
                return intent, kind, ""
        return None, kind, "no_known_intent"
    if kind == "edited":
        if given is not None:
            return given, kind, ""
        utterance = utterances[placement.key]
        original = bare(str(utterance.get("intent") or OOS))
        if utterance.get("oos") or original == OOS:
            return None, kind, "edited_out_of_scope"
        return original, kind, ""
    if kind == "deleted":
        return given or OOS, kind, ""
    if kind == "added":
        return given, kind, "unlabelled_added"
    return given, "labelled", "unresolved" if kind == "unresolved" else ""


def bare(intent: str) -> str:
    return intent.rpartition(".")[2]


def accepts(zone: dict, intent: str, domains: Mapping[str, str]) -> bool:
    """Whether ``zone`` accepts the (bare) ``intent`` (see the module docstring)."""
    accepted = zone.get("accepts") or {}
    domain = domains.get(intent)
    for entry in accepted.get("intents") or ():
        entry_domain, _, entry_intent = entry.rpartition(".")
        if entry_intent == intent and (not entry_domain or domain is None or entry_domain == domain):
            return True
    return domain is not None and domain in (accepted.get("domains") or ())


def _accepts_any(zone: dict) -> bool:
    accepted = zone.get("accepts") or {}
    return bool(accepted.get("intents") or accepted.get("domains"))


def _resolve(corrections: dict | None, found: Sequence[Placement], zones: dict[str, dict],
             utterances: Mapping[str, dict], domains: Mapping[str, str]) -> dict[str, str]:
    """placement key -> the bare intent corrections.json gives it, every label checked."""
    if corrections is None:
        return {}
    validate_corrections(corrections)
    by_key = {p.key: p for p in found if not p.key.startswith("added:")}
    given: dict[str, str] = {}
    for n, entry in enumerate(corrections["labels"]):
        where = f"corrections.json labels/{n}"
        if "utterance_id" in entry:
            placement = by_key.get(entry["utterance_id"])
            if placement is None:
                known = "is not in the document BUILDER wrote" if entry["utterance_id"] in utterances else \
                    "is no utterance of the session"
                raise CorrectionsRefused(f"{where}: utterance {entry['utterance_id']!r} {known}")
        else:
            placement = _by_text(entry["text"], found, where)
        if placement.key in given:
            raise CorrectionsRefused(f"{where}: {_named(placement)} is labelled twice")
        given[placement.key] = _checked_intent(entry["intent"], placement, zones, domains, where)
    return given


def _by_text(text: str, found: Sequence[Placement], where: str) -> Placement:
    wanted = normalize(text)
    matches = {p.key: p for p in found if p.kind in _NOW_IN_A_ZONE and normalize(p.text) == wanted}
    if not matches:
        raise CorrectionsRefused(f"{where}: no paragraph of the zones reads {text[:80]!r}")
    if len(matches) > 1:
        raise CorrectionsRefused(f"{where}: {len(matches)} different paragraphs read {text[:80]!r}: name the "
                                 "utterance_id")
    return next(iter(matches.values()))


def _checked_intent(intent: str, placement: Placement, zones: dict[str, dict], domains: Mapping[str, str],
                    where: str) -> str:
    domain, _, name = intent.rpartition(".")
    if domain and domains.get(name) not in (None, domain):
        raise CorrectionsRefused(f"{where}: intent {intent!r}: the model puts {name!r} in domain "
                                 f"{domains[name]!r}")
    if placement.to_zone is None:  # deleted, or its zone is gone: any intent some zone takes
        if name == OOS or any(z["kind"] in UTTERANCE_KINDS and accepts(z, name, domains) for z in zones.values()):
            return name
        raise CorrectionsRefused(f"{where}: no zone of the template accepts intent {intent!r}")
    zone = zones[placement.to_zone]
    if zone["kind"] not in UTTERANCE_KINDS:
        raise CorrectionsRefused(f"{where}: {_named(placement)} is in {zone['kind']} zone {zone['id']!r}, which "
                                 "takes no utterances: nothing is learned from it")
    if name == OOS or accepts(zone, name, domains):
        return name
    raise CorrectionsRefused(f"{where}: zone {zone['id']!r} does not accept intent {intent!r} (label it with an "
                             "intent the zone accepts, or oos)")


def _named(placement: Placement) -> str:
    return f"the added paragraph {placement.text[:60]!r}" if placement.kind == "added" else \
        f"utterance {placement.key!r}"


__all__ = ["CORRECTIONS_SCHEMA_PATH", "MAX_CORRECTIONS_BYTES", "OOS", "CorrectionsRefused", "IntentRanker",
           "Placement", "accepts", "added_key", "bare", "label_examples", "parse_corrections", "placements",
           "validate_corrections"]
