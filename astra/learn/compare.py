"""LEARN's comparator: a user's edited document against the exact binary BUILDER produced for that session version.

:func:`compare` returns the comparison report (``schemas/comparison_report.schema.json``) or raises
:class:`FeedbackRefused` with a code and a reason when the feedback is not derived from that binary; then nothing is
learned from it. :func:`report_bytes` is the report's canonical JSON (sorted keys, compact, UTF-8), whose sha256
every labelled example of the report carries (:func:`report_examples`).

**Refused** (``FeedbackRefused.code``):

* ``not_docx``: not a zip, an OLE file (encrypted or legacy .doc), no Word main document, too large, or a package
  the reader cannot read; ``audit_refused``: anything else the INGEST upload audit refuses (zip bombs, DTDs and
  entities, macros, ActiveX, OLE objects, hostile fields, external relationships…) — the same audit, the same limits;
* ``unknown_zone``: an ``astra:`` content control whose tag names no zone of the zone map (the document was made
  from another template, or a tag was edited); ``duplicate_zone``: a zone held by two controls (a copied control:
  which one is the zone cannot be told); ``nested_zone``: a zone's control inside another zone's;
* ``zones_gone``: no zone of the map is left;
* ``other_template``: the text outside the zones is not the generated document's. Measure: the share of the
  generated document's outside-zone words (normalized, in order) that the edited one keeps, as matched by difflib's
  ``SequenceMatcher`` over the two word sequences. Text the user adds outside the zones, or content a removed control
  leaves behind, does not lower it; rewording or deleting the template's own text does. Refused under
  :data:`MIN_OUTSIDE_KEPT` (0.6): a user fixing headings or the intro keeps well above it, while another template
  keeps only the common words that happen to fall in order (well under half). Not judged when the generated
  document has no text outside its zones.
* ``other_document``: at least :data:`MIN_UTTERANCES_FOR_IDENTITY` utterances were written, not one of them is found
  unchanged (kept or moved), fewer than half of them resemble a paragraph (edited) and the zones hold other text:
  another session's document made from the same template (short utterances of two sessions resemble one another
  now and then). Learning from it would teach every utterance of this one as out of scope.
* ``bad_corrections``: corrections.json is invalid or does not fit the document (:mod:`astra.learn.labels`);
* ``too_large``: the edited document holds more than :data:`EDITED_CAPS` allow — more than 20 000 paragraphs or
  2 000 000 characters in its zones (ten zones filled to BUILDER's ``max_zone_chars``; a real session writes a few
  hundred utterances), or more than 1 000 000 characters outside them (a template's own text is a few pages); the
  message names the cap. Reading stops at the cap, so what a hostile document makes LEARN hold stays bounded.

**Matching.** The generated zone items are the intent output's utterances in the order BUILDER wrote them (each
zone's utterance list); each is aligned with the paragraph (or, in an inline zone, the line) of the generated
document that shows it. A paragraph that shows no utterance — a content control's placeholder text, the note BUILDER
adds when it cuts a zone — is scaffolding: the same text left in the same zone of the edited document is neither
kept nor added. The utterances BUILDER cut away (past a zone's character cap) were never in the document and are
not compared (``counts.not_written``); so are, in an inline zone, an utterance holding a line break (BUILDER
separates an inline zone's utterances by line breaks too) and those after it. A zone whose first utterance the
generated document does not show was not built from this intent output: :class:`ComparisonError` — except in a
docxtpl template's zone (``"language": "jinja"``), whose template may write each utterance inside text of its own
(``{{ loop.index }}. {{ item }}``): that zone's utterances are then not compared (``counts.not_written``) and its
paragraphs are scaffolding. Only the zones a built document holds as controls are compared (of a docxtpl template,
its marked zones: :func:`astra.builder.check.controlled_zones`). Texts are
compared normalized (whitespace runs as one space, case folded, typographic quotes and dashes as ASCII); the
``"<speaker>: "`` lead BUILDER adds is not part of the text (:mod:`astra.learn.document_zones`). In order:

1. an edited-document paragraph equal to a written utterance is that utterance, *kept* when in the same zone —
   unless its formatting differs (paragraph properties, or the run properties of any part of its text), then
   *formatting_only*, never a content change — and *moved* when in another zone (the same zone is tried first;
   equal texts pair in document order);
2. the scaffolding of each zone is set aside;
3. of what is left, the closest pairs pair up, same-zone pairs first and then by similarity: *edited* in the same
   zone (with a word diff), *moved* and edited in another. Close means difflib's ``ratio`` over the two texts' words
   (punctuation left out) >= :data:`EDIT_RATIO` (0.6, difflib's own ``get_close_matches`` cutoff), or over their
   characters >= :data:`EDIT_RATIO_LETTERS` (0.8). One or two words changed in a ten-word utterance keep 0.8–0.9
   of its words; two unrelated sentences share a few short words (0.1–0.3) but many of their letters (0.4–0.65: a
   character ratio at 0.6 would pair "how do i say hello in french" with "how do you say goodbye in spanish").
   Characters count only at 0.8, for a short utterance whose one word or number was fixed ("transfer 100 from
   checking to savings" → "transfer 150 from checking into savings": 0.67 of the words, 0.95 of the characters),
   and only between texts sharing at least half their words. A wrong pairing labels a new text with an old intent,
   a missed one labels an old text out of scope: both thresholds sit where the examples above fall right.
   The work is bounded by :data:`MAX_COMPARISON_WORK`, paid before each step of each pair: :data:`PAIR_COST` to
   look at a pair at all (difflib's ``real_quick_ratio``, the length ratio), both texts' lengths for
   ``quick_ratio`` (the multiset bound), and for ``ratio`` an upper bound of difflib's work (``_ratio_cost``: the
   product of the lengths, more for long texts), in words and again in characters when those are compared. Most
   pairs leave at the cheap bounds. When a step cannot be paid, comparing stops: about 3 s at worst (measured up
   to ~28 ns per unit). The review's repro scripts, before → after: ``fuzzy_budget.py 170 40`` (170-word
   utterances of eight words, reworded) 505 s → 0.3 s, budget spent; ``fuzzy_budget.py 30 300`` 0.7 s;
   ``many_paragraphs.py 400000 4000`` 157 s and 848 MB → refused ``too_large`` in 1.3 s, 332 MB (the parsed XML);
   ``many_paragraphs.py 19000 4000`` (under the caps) 1.6 s, 107 MB, budget spent;
4. a written utterance whose text is now a new cell of a table zone's table is *moved* there (a table zone teaches
   no intent, but the utterance was not deleted);
5. a written utterance still unpaired is *deleted*; an edited paragraph still unpaired is *added*.

**A zone whose control is gone** is ``"status": "missing"``. Its utterances are NOT deleted: the user may have
removed the control (Word's "Remove content control" keeps the text, outside any zone), not meant the content.
An utterance of it found in another zone is moved; one found nowhere is *unresolved* (``outside_zones`` says
whether its text is now outside the zones) and teaches nothing unless corrections.json labels it. Likewise, when
the comparison budget runs out, the utterances it could not pair are unresolved, never deleted. Whether an
unresolved utterance's text is outside the zones is looked up as a whole outside paragraph first, then searched as
part of one, through at most :data:`MAX_OUTSIDE_SEARCH` characters in all; past them ``outside_zones`` is true only
for a whole paragraph.

**Tables** (table zones): each table of the zone as a grid of cell texts; every cell whose text differs
(exactly, after trimming) is in ``cells_changed`` (table, row, column, before, after; ``null`` for a cell one side
does not have). **Images**: per zone, the sha256s of the pictures kept, added and deleted.

Examples are made from the report by :func:`astra.learn.labels.label_examples` (rules there).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from difflib import SequenceMatcher
from pathlib import Path

from astra.builder.check import controlled_zones
from astra.builder.sanitize import clean_text
from astra.canonical import canonical_json
from astra.ingest.audit import Code, audit
from astra.tenancy import InvalidKey, SessionKey

from .document_zones import (
    DocumentTooLarge,
    DocumentUnreadable,
    DocumentZones,
    Paragraph,
    ReadCaps,
    normalize,
    read_zones,
)
from .examples import LabelledExample
from .labels import CorrectionsRefused, IntentRanker, added_key, label_examples, placements, validate_corrections

REPORT_FORMAT = 1
REPORT_SCHEMA_PATH = Path(__file__).with_name("schemas") / "comparison_report.schema.json"
EDIT_RATIO = 0.6  # difflib ratio over words
EDIT_RATIO_LETTERS = 0.8  # difflib ratio over characters, for a short utterance with a word fixed
EDIT_RATIO_WORDS_SHARED = 0.5  # below this share of words in common, characters are not compared
MIN_OUTSIDE_KEPT = 0.6
MIN_UTTERANCES_FOR_IDENTITY = 3
# The unit of comparison work is about 30 ns, one step of difflib's inner loop (measured on this machine's Python).
MAX_COMPARISON_WORK = 80_000_000  # about 3 s at worst
PAIR_COST = 100  # looking at a pair at all: the loop, set_seq1 and real_quick_ratio (~3 µs)
BOUND_COST = 4  # quick_ratio, per item of either text: a dict lookup and update
BLOCK_COST = 100  # ratio, per matching block (at most one per item of the shorter text) beyond its n * m steps
RATIO_DEPTH_ITEMS = 64  # ratio, one more n * m level of difflib's recursion charged per this many items
MAX_OUTSIDE_SEARCH = 50_000_000  # characters searched for unresolved utterances in the outside text: ~0.1 s
EDITED_CAPS = ReadCaps(paragraphs_in_zones=20_000, characters_in_zones=2_000_000, characters_outside_zones=1_000_000)
REFUSAL_CODES = ("not_docx", "audit_refused", "unknown_zone", "duplicate_zone", "nested_zone", "zones_gone",
                 "other_template", "other_document", "bad_corrections", "too_large")
_NOT_A_DOCX = frozenset({Code.UPLOAD_TOO_LARGE, Code.OLE_COMPOUND_FILE, Code.NOT_A_ZIP, Code.MISSING_CONTENT_TYPES,
                         Code.MISSING_MAIN_DOCUMENT})
_UTTERANCE_KINDS = ("text", "list")
_WORD = re.compile(r"\w+")


class FeedbackRefused(ValueError):
    """The feedback is not derived from the binary it is compared with, or cannot be read; nothing is learned."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code, self.message = code, message


class ComparisonError(ValueError):
    """The generated binary, the zone map and the intent output do not fit together: the caller's inputs are wrong,
    not the user's feedback."""


@dataclass
class _Written:
    """An utterance as BUILDER wrote it: its zone and paragraph of the generated document."""

    utterance: dict
    zone: str
    paragraph: Paragraph
    norm: str
    order: int


@dataclass
class _Edited:
    zone: str
    paragraph: Paragraph
    norm: str
    order: int
    taken: bool = False


@dataclass
class _Pairing:
    pairs: list[tuple[_Written, _Edited, bool]] = field(default_factory=list)  # (written, edited, exact)
    unpaired: list[_Written] = field(default_factory=list)
    incomplete: bool = False  # the fuzzy budget ran out


def compare(generated: bytes, edited: bytes, zone_map: dict, intent_output: dict, *, corrections: dict | None,
            tenant: str, session: str, config_version: int | str | None, model_version: str | None,
            ranker: IntentRanker) -> dict:
    """The comparison report of ``edited`` against ``generated`` (see the module docstring)."""
    _check_session(tenant, session)
    if corrections is not None:
        try:
            validate_corrections(corrections)
        except CorrectionsRefused as exc:
            raise FeedbackRefused("bad_corrections", str(exc)) from None
    _audit(edited)
    jinja = zone_map.get("language") == "jinja"
    zone_map = {**zone_map, "zones": controlled_zones(zone_map)}
    zones = {zone["id"]: zone for zone in zone_map["zones"]}
    utterances = {u["id"]: u for u in intent_output.get("utterances") or []}
    speakers = _speakers(zones, intent_output, utterances)
    before = _read_generated(generated, zone_map, speakers)
    after = _read_edited(edited, zone_map, speakers)
    _check_outside(before.outside, after.outside)

    written, scaffolding, not_written = _align(before, zones, intent_output, utterances, shown_whole=not jinja)
    paragraphs = [(zone_id, p) for zone_id, content in after.zones.items() for p in content.paragraphs]
    pieces = [_Edited(zone_id, p, normalize(p.text), n) for n, (zone_id, p) in enumerate(paragraphs)]
    pairing = _pair(written, pieces, scaffolding)
    _pair_with_new_cells(pairing, before, after, zones)
    unchanged = sum(exact for _, _, exact in pairing.pairs)
    added = [piece for piece in pieces if not piece.taken]
    if len(written) >= MIN_UTTERANCES_FOR_IDENTITY and not unchanged and 2 * len(pairing.pairs) < len(written) \
            and added:
        raise FeedbackRefused("other_document", f"none of the {len(written)} utterances written in the generated "
                              f"document is found unchanged in the edited one ({len(pairing.pairs)} resemble one), "
                              "whose zones hold other text: it is not this session's document")

    report_zones = {zone_id: _empty_zone(zone, after) for zone_id, zone in zones.items()}
    moves = _place_utterances(report_zones, pairing, after)
    for piece in added:
        report_zones[piece.zone]["added"].append({"key": added_key(piece.paragraph.text), "text": piece.paragraph.text})
    for zone_id, zone in zones.items():
        if zone_id in after.zones:
            if zone["kind"] == "table":
                report_zones[zone_id]["cells_changed"] = _cells_changed(before.zones[zone_id].tables,
                                                                        after.zones[zone_id].tables)
            report_zones[zone_id]["images"] = _images(before.zones[zone_id].images, after.zones[zone_id].images)

    try:
        examples, skipped = label_examples(placements(report_zones), zone_map, utterances, corrections, ranker,
                                           tenant=tenant, session=session, model_version=model_version)
    except CorrectionsRefused as exc:
        raise FeedbackRefused("bad_corrections", str(exc)) from None
    counts = _counts(report_zones, moves, not_written, pairing, examples, skipped)
    return {
        "format": REPORT_FORMAT,
        "tenant": tenant,
        "session": session,
        "document_sha256": hashlib.sha256(generated).hexdigest(),
        "feedback_sha256": hashlib.sha256(edited).hexdigest(),
        "config_version": config_version,
        "model_version": model_version,
        "zones": report_zones,
        "moves": moves,
        "counts": counts,
        "examples": examples,
    }


def report_bytes(report: dict) -> bytes:
    """The report's canonical JSON (:func:`astra.canonical.canonical_json`)."""
    return canonical_json(report)


def report_sha256(report: dict) -> str:
    return hashlib.sha256(report_bytes(report)).hexdigest()


def report_examples(report: dict) -> list[LabelledExample]:
    """The report's examples as LabelledExample, each carrying the sha256 of :func:`report_bytes` (the examples in
    the report itself leave it out: they are part of what it hashes)."""
    digest = report_sha256(report)
    return [LabelledExample(**example, report_sha256=digest) for example in report["examples"]]


# --------------------------------------------------------------------------- reading and refusing


def _check_session(tenant: str, session: str) -> None:
    try:
        key = SessionKey.parse(session)
    except InvalidKey as exc:
        raise ComparisonError(str(exc)) from None
    if key.tenant != tenant:
        raise ComparisonError(f"session {session!r} does not belong to tenant {tenant!r}")


def _audit(edited: bytes) -> None:
    if not isinstance(edited, (bytes, bytearray)):
        raise FeedbackRefused("not_docx", "the feedback is not a file's bytes")
    refusals = audit(bytes(edited), "feedback.docx").refusals
    if not refusals:
        return
    hostile = [finding for finding in refusals if finding.code not in _NOT_A_DOCX]  # named first when there is one
    code = "audit_refused" if hostile else "not_docx"
    first = (hostile or refusals)[0]
    more = f" ({len(refusals) - 1} more finding(s))" if len(refusals) > 1 else ""
    raise FeedbackRefused(code, f"{first.code} at {first.location}: {first.message}{more}")


def _speakers(zones: dict[str, dict], intent_output: dict, utterances: dict[str, dict]) -> list[str]:
    """The speakers BUILDER led utterances with: those of the utterances of the zones that ask for the speaker."""
    names = set()
    for entry in intent_output.get("zones") or []:
        if (zones.get(entry.get("id")) or {}).get("speaker") is True:
            for uid in entry.get("utterances") or []:
                speaker = clean_text(str((utterances.get(uid) or {}).get("speaker") or ""))
                if speaker:
                    names.add(speaker)
    return sorted(names)


def _read_generated(generated: bytes, zone_map: dict, speakers: list[str]) -> DocumentZones:
    try:
        found = read_zones(generated, zone_map, speakers=speakers)
    except DocumentUnreadable as exc:
        raise ComparisonError(f"the generated document cannot be read: {exc}") from None
    missing = [z["id"] for z in zone_map.get("zones") or [] if z["id"] not in found.zones]
    if missing or found.unknown or found.duplicates or found.nested:
        raise ComparisonError("the generated document does not fit the zone map: "
                              f"missing {missing}, unknown {found.unknown}, duplicated {found.duplicates}, "
                              f"nested {found.nested}")
    return found


def _read_edited(edited: bytes, zone_map: dict, speakers: list[str]) -> DocumentZones:
    try:
        found = read_zones(edited, zone_map, speakers=speakers, caps=EDITED_CAPS)
    except DocumentUnreadable as exc:
        raise FeedbackRefused("not_docx", f"the document cannot be read: {exc}") from None
    except DocumentTooLarge as exc:
        raise FeedbackRefused("too_large", f"the document holds {exc} (cap {exc.cap}): far more than a session "
                              "writes; it is not compared") from None
    if found.unknown:
        raise FeedbackRefused("unknown_zone", f"content control tagged {found.unknown[0][:100]!r} names no zone of "
                              "the template this session was built from")
    if found.duplicates:
        raise FeedbackRefused("duplicate_zone", f"zone {found.duplicates[0]!r} is held by more than one content "
                              "control: which one is the zone cannot be told")
    if found.nested:
        raise FeedbackRefused("nested_zone", f"the content control of zone {found.nested[0]!r} sits inside another "
                              "zone's")
    if not found.zones:
        raise FeedbackRefused("zones_gone", "no zone of the template is left in the document (every astra: content "
                              "control was removed)")
    return found


def _check_outside(before: list[str], after: list[str]) -> None:
    words_before = " ".join(normalize(text) for text in before).split()
    if not words_before:
        return
    words_after = " ".join(normalize(text) for text in after).split()
    matcher = SequenceMatcher(None, words_before, words_after, autojunk=False)
    kept = sum(block.size for block in matcher.get_matching_blocks()) / len(words_before)
    if kept < MIN_OUTSIDE_KEPT:
        raise FeedbackRefused("other_template", f"only {kept:.0%} of the generated document's text outside the "
                              f"zones is left (at least {MIN_OUTSIDE_KEPT:.0%} needed): the document was not made "
                              "from this session's template")


# --------------------------------------------------------------------------- matching


def _align(before: DocumentZones, zones: dict[str, dict], intent_output: dict, utterances: dict[str, dict], *,
           shown_whole: bool) -> tuple[list[_Written], dict[str, list[str]], int]:
    """The written utterances, each zone's scaffolding (normalized texts) and how many utterances were not written.
    ``shown_whole``: BUILDER wrote each utterance as a paragraph (or line) of its own, so a zone whose first one is
    not there was built from another intent output; else (a docxtpl template's zones) such a zone is not compared."""
    written: list[_Written] = []
    scaffolding: dict[str, list[str]] = {}
    not_written = 0
    entries = {entry.get("id"): entry for entry in intent_output.get("zones") or []}
    for zone_id, content in before.zones.items():
        items = [(p, normalize(p.text)) for p in content.paragraphs]
        aligned: set[int] = set()
        uids = (entries.get(zone_id) or {}).get("utterances") or [] if zones[zone_id]["kind"] in _UTTERANCE_KINDS \
            else []
        at, cut = 0, False
        for uid in uids:
            utterance = utterances.get(uid)
            if utterance is None:
                raise ComparisonError(f"zone {zone_id!r} of the intent output lists utterance {uid!r}, which it does "
                                      "not hold")
            text = normalize(clean_text(str(utterance.get("text") or "")))
            if not text:
                continue  # an empty utterance shows nothing to compare
            k = None if cut else _find(items, at, lambda norm, text=text: norm == text)
            if k is None and not cut:  # the utterance BUILDER cut at the zone's cap shows a prefix of its text
                k = _find(items, at, lambda norm, text=text: bool(norm) and text.startswith(norm))
            if k is None:
                if not aligned and not cut and shown_whole:
                    raise ComparisonError(f"the first utterance of zone {zone_id!r} ({uid!r}) is not in the "
                                          "generated document: it was not built from this intent output")
                cut = True  # BUILDER writes a zone's utterances in order until its cap: none after this one
                not_written += 1
                continue
            aligned.add(k)
            written.append(_Written(utterance, zone_id, items[k][0], items[k][1], len(written)))
            at = k + 1
        scaffolding[zone_id] = [norm for k, (_, norm) in enumerate(items) if k not in aligned]
    return written, scaffolding, not_written


def _find(items: list[tuple[Paragraph, str]], start: int, match) -> int | None:
    return next((k for k in range(start, len(items)) if match(items[k][1])), None)


def _pair(written: list[_Written], pieces: list[_Edited], scaffolding: dict[str, list[str]]) -> _Pairing:
    pairing = _Pairing()
    by_text: dict[str, list[_Edited]] = {}
    for piece in pieces:
        by_text.setdefault(piece.norm, []).append(piece)

    def take(w: _Written, same_zone: bool) -> bool:
        piece = next((p for p in by_text.get(w.norm, ()) if not p.taken and (p.zone == w.zone) == same_zone), None)
        if piece is not None:
            piece.taken = True
            pairing.pairs.append((w, piece, True))
        return piece is not None

    # 1. equal texts: in the same zone first (every utterance), then in any other
    not_in_place = [w for w in written if not take(w, True)]
    unpaired = [w for w in not_in_place if not take(w, False)]
    for zone_id, texts in scaffolding.items():  # 2. scaffolding left where it was
        for text in texts:
            piece = next((p for p in by_text.get(text, ()) if not p.taken and p.zone == zone_id), None)
            if piece is not None:
                piece.taken = True
    _pair_close(unpaired, [p for p in pieces if not p.taken], pairing)  # 3.
    pairing.pairs.sort(key=lambda pair: pair[0].order)
    return pairing


def _words(norm: str) -> tuple[str, ...]:
    """The words of a normalized text, punctuation left out."""
    return tuple(_WORD.findall(norm))


class _Budget:
    """What is left of :data:`MAX_COMPARISON_WORK`. A step is paid before it is taken; one it cannot pay is not
    taken, and the budget stays spent from then on."""

    def __init__(self, work: int) -> None:
        self.left, self.spent = work, False

    def pay(self, cost: int) -> bool:
        if self.spent or cost > self.left:
            self.spent = True
            return False
        self.left -= cost
        return True


def _similarity(written: SequenceMatcher, letters: SequenceMatcher, words: tuple[str, ...], norm: str,
                budget: _Budget) -> float | None:
    """How close a paragraph (``words``, ``norm``) is to the utterance the two matchers hold as their second sequence:
    the word ratio when it reaches :data:`EDIT_RATIO`, else the character ratio when it reaches
    :data:`EDIT_RATIO_LETTERS`, else 0; None when the budget cannot pay the next step. The cheap upper bounds are
    tried first; characters only when at least half the words are shared (a short utterance with a number or a
    misheard word fixed shares most of them)."""
    if not budget.pay(PAIR_COST):
        return None
    written.set_seq1(words)
    if written.real_quick_ratio() < EDIT_RATIO_WORDS_SHARED:
        return 0.0
    n, m = len(words), len(written.b)
    if not budget.pay(BOUND_COST * (n + m)):
        return None
    shared = written.quick_ratio()
    if shared >= EDIT_RATIO:
        if not budget.pay(_ratio_cost(n, m)):
            return None
        if (ratio := written.ratio()) >= EDIT_RATIO:
            return ratio
    if shared < EDIT_RATIO_WORDS_SHARED:
        return 0.0
    letters.set_seq1(norm)
    if letters.real_quick_ratio() < EDIT_RATIO_LETTERS:
        return 0.0
    n, m = len(norm), len(letters.b)
    if not budget.pay(BOUND_COST * (n + m)):
        return None
    if letters.quick_ratio() < EDIT_RATIO_LETTERS:
        return 0.0
    if not budget.pay(_ratio_cost(n, m)):
        return None
    return ratio if (ratio := letters.ratio()) >= EDIT_RATIO_LETTERS else 0.0


def _ratio_cost(n: int, m: int) -> int:
    """difflib's ``ratio`` over sequences of ``n`` and ``m`` items, in work units, bounded from above as measured:
    each level of its recursion into the gaps between matching blocks may meet every item of one sequence with
    every item of the other; texts of few distinct items (letters, a vocabulary of eight words shuffled) go one
    level deeper per few dozen items; and a call's overhead per matching block."""
    return n * m * (1 + min(n, m) // RATIO_DEPTH_ITEMS) + BLOCK_COST * (min(n, m) + 1)


def _pair_close(unpaired: list[_Written], free: list[_Edited], pairing: _Pairing) -> None:
    budget = _Budget(MAX_COMPARISON_WORK)
    candidates = []
    by_zone: dict[str, list[tuple[_Edited, tuple[str, ...]]]] = {}
    for piece in free:
        by_zone.setdefault(piece.zone, []).append((piece, _words(piece.norm)))
    for same_zone in (True, False):
        for w in unpaired:
            words = _words(w.norm)
            if not budget.pay(BOUND_COST * (len(words) + len(w.norm))):  # the two matchers' indexes of it
                break
            by_words, by_letters = SequenceMatcher(None, autojunk=False), SequenceMatcher(None, autojunk=False)
            by_words.set_seq2(words)
            by_letters.set_seq2(w.norm)
            # a zone's pieces all of one side or the other: other-zone pieces are never looked at in the first pass
            for zone_id, pieces in by_zone.items():
                if (zone_id == w.zone) != same_zone:
                    continue
                for piece, piece_words in pieces:
                    similarity = _similarity(by_words, by_letters, piece_words, piece.norm, budget)
                    if similarity is None:
                        break
                    if similarity:
                        candidates.append((not same_zone, -similarity, w.order, piece.order, w, piece))
                if budget.spent:
                    break
            if budget.spent:
                break
    pairing.incomplete = budget.spent
    candidates.sort(key=lambda c: c[:4])
    paired: set[int] = set()
    for *_, w, piece in candidates:
        if w.order in paired or piece.taken:
            continue
        paired.add(w.order)
        piece.taken = True
        pairing.pairs.append((w, piece, False))
    pairing.unpaired = [w for w in unpaired if w.order not in paired]


def _pair_with_new_cells(pairing: _Pairing, before: DocumentZones, after: DocumentZones, zones: dict[str, dict],
                         ) -> None:
    """An unpaired utterance whose text is now a cell of a table zone's table, one the generated document did not
    have, was moved there (not deleted)."""
    new_cells: dict[str, list[tuple[str, str]]] = {}
    for zone_id, content in after.zones.items():
        if zones[zone_id]["kind"] != "table":
            continue
        had = Counter(normalize(cell) for table in before.zones[zone_id].tables for row in table for cell in row)
        for cell in (cell for table in content.tables for row in table for cell in row):
            if had[normalize(cell)]:
                had[normalize(cell)] -= 1
            else:
                new_cells.setdefault(normalize(cell), []).append((zone_id, cell))
    still = []
    for w in pairing.unpaired:
        if not new_cells.get(w.norm):
            still.append(w)
            continue
        zone_id, text = new_cells[w.norm].pop(0)
        pairing.pairs.append((w, _Edited(zone_id, Paragraph(text, {"paragraph": {}, "runs": []}), w.norm, -1, True),
                              True))
    pairing.unpaired = still
    pairing.pairs.sort(key=lambda pair: pair[0].order)


# --------------------------------------------------------------------------- the report


def _empty_zone(zone: dict, after: DocumentZones) -> dict:
    return {"kind": zone["kind"], "status": "present" if zone["id"] in after.zones else "missing",
            "kept": [], "edited": [], "deleted": [], "added": [], "moved_in": [], "moved_out": [],
            "cells_changed": [], "formatting_only": [], "unresolved": [],
            "images": {"kept": [], "added": [], "deleted": []}}


def _place_utterances(report_zones: dict[str, dict], pairing: _Pairing, after: DocumentZones) -> list[dict]:
    moves = []
    for w, piece, exact in pairing.pairs:
        uid, now = w.utterance["id"], piece.paragraph.text
        if piece.zone == w.zone and exact:
            look_before, look_after = _look(w.paragraph.formatting), _look(piece.paragraph.formatting)
            if look_before == look_after:
                report_zones[w.zone]["kept"].append({"utterance_id": uid, "text": now})
            else:
                report_zones[w.zone]["formatting_only"].append({"utterance_id": uid, "text": now,
                                                                "before": w.paragraph.formatting,
                                                                "after": piece.paragraph.formatting})
        elif piece.zone == w.zone:
            report_zones[w.zone]["edited"].append({"utterance_id": uid, "before": w.paragraph.text, "after": now,
                                                   "diff": _diff(w.paragraph.text, now)})
        else:
            diff = [] if exact else _diff(w.paragraph.text, now)
            report_zones[piece.zone]["moved_in"].append({"utterance_id": uid, "text": now, "before": w.paragraph.text,
                                                         "from_zone": w.zone, "edited": not exact, "diff": diff})
            report_zones[w.zone]["moved_out"].append({"utterance_id": uid, "text": w.paragraph.text,
                                                      "to_zone": piece.zone})
            moves.append({"utterance_id": uid, "text": now, "before": w.paragraph.text, "from_zone": w.zone,
                          "to_zone": piece.zone, "edited": not exact})
    outside = _OutsideText(after.outside)
    for w in pairing.unpaired:
        uid = w.utterance["id"]
        if w.zone in after.zones and not pairing.incomplete:
            report_zones[w.zone]["deleted"].append({"utterance_id": uid, "text": w.paragraph.text})
        else:
            report_zones[w.zone]["unresolved"].append({"utterance_id": uid, "text": w.paragraph.text,
                                                       "outside_zones": outside.holds(w.norm)})
    return moves


class _OutsideText:
    """The text outside the zones, for telling whether an unresolved utterance's text is there: a whole paragraph
    (a set lookup) or part of one (a substring search through all of it, paid from :data:`MAX_OUTSIDE_SEARCH`)."""

    def __init__(self, texts: list[str]) -> None:
        self.paragraphs = {normalize(text) for text in texts}
        self.joined = "\n".join(self.paragraphs)  # normalized text holds no line break: no match spans two
        self.search_left = MAX_OUTSIDE_SEARCH

    def holds(self, norm: str) -> bool:
        if norm in self.paragraphs:
            return True
        if len(self.joined) > self.search_left:
            self.search_left = 0
            return False
        self.search_left -= len(self.joined)
        return norm in self.joined


def _look(formatting: dict) -> tuple:
    """What the text looks like, whatever its whitespace and case: the paragraph's properties and each visible
    piece's run properties (adjacent pieces of one look joined)."""
    runs: list[list] = []
    for props, text in formatting["runs"]:
        if not normalize(text):
            continue
        key = json.dumps(props, sort_keys=True)
        if runs and runs[-1][0] == key:
            runs[-1][1] += " " + normalize(text)
        else:
            runs.append([key, normalize(text)])
    return json.dumps(formatting["paragraph"], sort_keys=True), tuple((key, text) for key, text in runs)


def _diff(before: str, after: str) -> list[dict]:
    """The word-level changes from ``before`` to ``after``."""
    a, b = before.split(), after.split()
    matcher = SequenceMatcher(None, a, b, autojunk=False)
    return [{"op": op, "before": " ".join(a[i1:i2]), "after": " ".join(b[j1:j2])}
            for op, i1, i2, j1, j2 in matcher.get_opcodes() if op != "equal"]


def _cells_changed(before: list[list[list[str]]], after: list[list[list[str]]]) -> list[dict]:
    changed = []
    for t in range(max(len(before), len(after))):
        rows_before = before[t] if t < len(before) else []
        rows_after = after[t] if t < len(after) else []
        for r in range(max(len(rows_before), len(rows_after))):
            cells_before = rows_before[r] if r < len(rows_before) else []
            cells_after = rows_after[r] if r < len(rows_after) else []
            for c in range(max(len(cells_before), len(cells_after))):
                old = cells_before[c] if c < len(cells_before) else None
                new = cells_after[c] if c < len(cells_after) else None
                if old != new:
                    changed.append({"table": t, "row": r, "column": c, "before": old, "after": new})
    return changed


def _images(before: Sequence[str], after: Sequence[str]) -> dict:
    old, new = Counter(before), Counter(after)
    return {"kept": sorted((old & new).elements()), "added": sorted((new - old).elements()),
            "deleted": sorted((old - new).elements())}


def _counts(report_zones: dict[str, dict], moves: list[dict], not_written: int, pairing: _Pairing,
            examples: list[dict], skipped: Counter) -> dict:
    def total(name: str) -> int:
        return sum(len(zone[name]) for zone in report_zones.values())

    counts = {name: total(name) for name in ("kept", "formatting_only", "edited", "deleted", "added", "unresolved",
                                            "cells_changed")}
    counts["moved"] = len(moves)
    counts["moved_edited"] = sum(move["edited"] for move in moves)
    counts["images_added"] = sum(len(zone["images"]["added"]) for zone in report_zones.values())
    counts["images_deleted"] = sum(len(zone["images"]["deleted"]) for zone in report_zones.values())
    counts["zones_missing"] = sum(zone["status"] == "missing" for zone in report_zones.values())
    counts["not_written"] = not_written
    counts["comparison_incomplete"] = int(pairing.incomplete)
    counts["examples"] = len(examples)
    counts.update(sorted(skipped.items()))
    return counts


__all__ = ["EDITED_CAPS", "EDIT_RATIO", "MAX_COMPARISON_WORK", "MAX_OUTSIDE_SEARCH", "MIN_OUTSIDE_KEPT",
           "MIN_UTTERANCES_FOR_IDENTITY", "REFUSAL_CODES", "REPORT_FORMAT", "REPORT_SCHEMA_PATH", "ComparisonError",
           "FeedbackRefused", "compare", "report_bytes", "report_examples", "report_sha256"]
