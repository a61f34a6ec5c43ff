"""Binding a session's classified utterances and tables to the zones of its template: the intent output document.

Rules (zone map as published by CONFIG_SVC, ``astra/config_svc/schemas/zone_map.schema.json``):

* Utterances bind to ``text`` and ``list`` zones only (a table, record or image zone takes data or media).
  A docxtpl template's ``flag`` zone takes none: it is **raised** (``raised_by``: the utterance ids, in time order) by
  every in-scope utterance of a supported locale its ``accepts`` holds by the same intent/domain rules, and the
  utterance stays bound, and shown, where the rules below put it (a flag shows nothing: taking the utterance would
  lose it from the document).
  An utterance goes to the first zone, in zone map order, whose ``accepts.intents`` holds its intent — bare
  (``transfer``) or domain-qualified (``banking.transfer``), matched exactly; failing any intent match, to the first
  zone whose ``accepts.domains`` holds its domain. So an intent match anywhere beats a domain match, and a tie goes to
  the zone the template declares first.
* Out-of-scope (flag ``out_of_scope``) and unmatched (flag ``unmatched``) utterances go to the fallback zone.
* Confidence below ``low_confidence`` flags ``low_confidence``; the utterance stays bound where the rules put it.
* A session locale the models do not cover flags every utterance ``locale_unsupported`` and sends it to the fallback
  zone, with the session flag ``locale_unsupported``; the classification is kept so a reviewer sees what it said.
  A locale is covered when its tag or its language subtag is in ``supported_locales`` (``en`` covers ``en-AU``);
  a session without a locale is taken as covered.
* A table binds to the first ``table`` or ``record`` zone (a docxtpl template's record zone shows its first row) whose
  ``accepts.data`` pattern matches its file path relative to the version folder (``fnmatch.fnmatchcase``:
  case-sensitive, ``*`` also crosses ``/``). A table no zone takes is listed in ``unbound_tables``; a table zone
  without a table stays empty. A refused data file is listed in
  ``data_problems`` with the zone it would have filled.

:func:`astra.canonical.canonical_json` gives its bytes: the same input gives the same bytes.
"""

from __future__ import annotations

import fnmatch
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from astra.canonical import canonical_json
from astra.core.data import DataProblem, DataSet

DOCUMENT_VERSION = 1
DEFAULT_LOW_CONFIDENCE = 0.5
DEFAULT_SUPPORTED_LOCALES = frozenset({"en", "en-us", "en-gb"})
UTTERANCE_ZONE_KINDS = ("text", "list")
TABLE_ZONE_KINDS = ("table", "record")
FLAG_LOW_CONFIDENCE = "low_confidence"
FLAG_LOCALE_UNSUPPORTED = "locale_unsupported"
FLAG_OUT_OF_SCOPE = "out_of_scope"
FLAG_UNMATCHED = "unmatched"


class BindingError(ValueError):
    """The inputs cannot be bound (a zone map without its fallback zone, duplicate utterance ids)."""


@dataclass(frozen=True)
class ClassifiedUtterance:
    id: str
    text: str
    start: float | None
    end: float | None
    speaker: str | None
    intent: str  # "oos" when out of scope
    domain: str | None
    confidence: float
    oos: bool

    @classmethod
    def from_json(cls, d: dict) -> ClassifiedUtterance:
        confidence = float(d["confidence"])
        if not 0.0 <= confidence <= 1.0:  # also refuses NaN, which canonical JSON cannot hold
            raise BindingError(f"utterance {d['id']}: confidence {confidence} is not in [0, 1]")
        return cls(id=str(d["id"]), text=d["text"], start=d.get("start"), end=d.get("end"), speaker=d.get("speaker"),
                   intent=d["intent"], domain=d.get("domain"), confidence=confidence, oos=bool(d.get("oos", False)))

    def names(self) -> set[str]:
        """The names a zone may list for this intent: bare and, with a domain, qualified."""
        domain, _, bare = self.intent.rpartition(".")
        domain = domain or self.domain
        return {bare, f"{domain}.{bare}"} if domain else {bare}


def normalise_locale(locale: str) -> str:
    return locale.strip().lower().replace("_", "-")


def locale_supported(locale: str | None, supported: Iterable[str] = DEFAULT_SUPPORTED_LOCALES) -> bool:
    if locale is None:
        return True
    tags = {normalise_locale(s) for s in supported}
    tag = normalise_locale(locale)
    return tag in tags or tag.split("-")[0] in tags


def bind(
    zone_map: dict,
    utterances: Sequence[ClassifiedUtterance],
    data: DataSet,
    *,
    locale: str | None = None,
    supported_locales: Iterable[str] = DEFAULT_SUPPORTED_LOCALES,
    low_confidence: float = DEFAULT_LOW_CONFIDENCE,
    model_version: str | None = None,
    config_version: int | str | None = None,
) -> dict:
    """The intent output document (JSON-able). ``model_version``/``config_version`` are the caller's to record."""
    zones = _check_zone_map(zone_map)
    _check_unique_ids(utterances)
    fallback = zone_map["fallback_zone"]
    supported = locale_supported(locale, supported_locales)
    bound = [_bind_utterance(u, zones, fallback, supported, low_confidence) for u in utterances]
    table_zone = {t.id: _table_zone(t.source, zones) for t in data.tables}
    return {
        "document_version": DOCUMENT_VERSION,
        "model_version": model_version,
        "config_version": config_version,
        "locale": locale,
        "flags": [] if supported else [FLAG_LOCALE_UNSUPPORTED],
        "low_confidence_threshold": low_confidence,
        "fallback_zone": fallback,
        "utterances": bound,
        "zones": _zone_entries(zones, utterances, bound, table_zone),
        "tables": [{**t.to_json(), "zone": table_zone[t.id]} for t in data.tables],
        "unbound_tables": [t.id for t in data.tables if table_zone[t.id] is None],
        "data_problems": [_problem(p, zones) for p in data.problems],
        "counts": _counts(zones, bound, data, table_zone),
    }


def document_sha256(document: dict) -> str:
    return hashlib.sha256(canonical_json(document)).hexdigest()


def _check_zone_map(zone_map: dict) -> list[dict]:
    zones = zone_map.get("zones") or []
    if zone_map.get("fallback_zone") not in {z["id"] for z in zones}:
        raise BindingError(f"the fallback zone {zone_map.get('fallback_zone')!r} is not a zone of the map")
    return zones


def _check_unique_ids(utterances: Sequence[ClassifiedUtterance]) -> None:
    ids = [u.id for u in utterances]
    if len(ids) != len(set(ids)):
        raise BindingError("utterance ids are not unique")


def _bind_utterance(u: ClassifiedUtterance, zones: list[dict], fallback: str, locale_ok: bool,
                    low_confidence: float) -> dict:
    flags = set()
    if u.confidence < low_confidence:
        flags.add(FLAG_LOW_CONFIDENCE)
    if u.oos:
        flags.add(FLAG_OUT_OF_SCOPE)
    if not locale_ok:
        flags.add(FLAG_LOCALE_UNSUPPORTED)
    to_fallback = u.oos or not locale_ok
    zone = None if to_fallback else _utterance_zone(u, zones)
    if zone is None and not to_fallback:
        flags.add(FLAG_UNMATCHED)
    zone = zone or fallback
    return {"id": u.id, "text": u.text, "start": u.start, "end": u.end, "speaker": u.speaker, "intent": u.intent,
            "domain": u.domain, "confidence": u.confidence, "oos": u.oos, "zone": zone, "flags": sorted(flags)}


def _utterance_zone(u: ClassifiedUtterance, zones: list[dict]) -> str | None:
    candidates = [z for z in zones if z["kind"] in UTTERANCE_ZONE_KINDS]
    names = u.names()
    for zone in candidates:
        if names & set(zone["accepts"].get("intents") or ()):
            return zone["id"]
    if u.domain:
        for zone in candidates:
            if u.domain in (zone["accepts"].get("domains") or ()):
                return zone["id"]
    return None


def _table_zone(source: str, zones: list[dict]) -> str | None:
    for zone in zones:
        pattern = zone["accepts"].get("data")
        if zone["kind"] in TABLE_ZONE_KINDS and pattern and fnmatch.fnmatchcase(source, pattern):
            return zone["id"]
    return None


def _raises(u: ClassifiedUtterance, zone: dict) -> bool:
    """Whether utterance ``u`` raises flag zone ``zone``: its intent, else its domain, is one the zone accepts."""
    accepts = zone["accepts"]
    return bool(u.names() & set(accepts.get("intents") or ())) or bool(
        u.domain and u.domain in (accepts.get("domains") or ()))


def _time_order(utterances: Sequence[ClassifiedUtterance]) -> list[int]:
    """Indexes by start time; utterances without times keep the transcript's order (after the timed ones)."""
    return sorted(range(len(utterances)), key=lambda i: (utterances[i].start is None, utterances[i].start or 0.0, i))


def _zone_entries(zones: list[dict], utterances: Sequence[ClassifiedUtterance], bound: list[dict],
                  table_zone: dict[str, str | None]) -> list[dict]:
    entries = {z["id"]: {"id": z["id"], "kind": z["kind"], "utterances": [], "tables": []} for z in zones}
    for i in _time_order(utterances):
        entries[bound[i]["zone"]]["utterances"].append(bound[i]["id"])
    for table_id, zone in table_zone.items():
        if zone is not None:
            entries[zone]["tables"].append(table_id)
    for zone in zones:
        if zone["kind"] == "flag":
            entries[zone["id"]]["raised_by"] = [
                bound[i]["id"] for i in _time_order(utterances)
                if not ({FLAG_OUT_OF_SCOPE, FLAG_LOCALE_UNSUPPORTED} & set(bound[i]["flags"]))
                and _raises(utterances[i], zone)]
    return list(entries.values())


def _problem(problem: DataProblem, zones: list[dict]) -> dict:
    return {**problem.to_json(), "zone": _table_zone(problem.source, zones)}


def _counts(zones: list[dict], bound: list[dict], data: DataSet, table_zone: dict[str, str | None]) -> dict:
    per_zone = {z["id"]: 0 for z in zones}
    for u in bound:
        per_zone[u["zone"]] += 1
    flagged = {flag: sum(flag in u["flags"] for u in bound)
               for flag in (FLAG_OUT_OF_SCOPE, FLAG_LOW_CONFIDENCE, FLAG_UNMATCHED, FLAG_LOCALE_UNSUPPORTED)}
    return {
        "utterances": len(bound),
        "per_zone": per_zone,
        **flagged,
        "tables": len(data.tables),
        "unbound_tables": sum(zone is None for zone in table_zone.values()),
        "data_problems": len(data.problems),
    }

