"""Word fields: every field instruction in a WordprocessingML part, in every way a reader may see it.

A field is either simple (``<w:fldSimple w:instr="PAGE"/>``) or complex: a ``w:fldChar`` of type
``begin``, the instruction in one or more ``w:instrText`` runs (Word splits it anywhere, even
inside the field name), a ``separate`` fldChar, the last result, and an ``end`` fldChar. Complex
fields nest (``{ INCLUDETEXT "{ FILENAME }" }``) and may span paragraphs.

A field's *code* is its own instruction text with :data:`NESTED` standing for each field nested
in it: Word evaluates the nested fields first and splices their results in, so a nested field in
the name (``{ {QUOTE 68 68 69} x }``) makes the field type unknowable without running it.

What a reader sees depends on choices the file leaves open, so a part is read several ways
(:func:`field_instructions` returns the fields of every reading, each once):

* tracked changes: as it stands (insertions accepted, deletions dropped), as it was (deletions
  restored, insertions dropped), and with both kept; within one field code every combination
  of accepting or rejecting each revision is a :meth:`FieldInstruction.variants` of it;
* ``mc:AlternateContent``: every branch on its own (one reading per set of understood
  ``Requires`` prefixes), and all branches together;
* ``w:instrText`` outside any field (stray) is a field of its own, run by run, never joined.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from lxml import etree

from .ns import MC_NS, W_NS, W_STRICT_NS

NESTED = "\ufffc"  # stands for a nested field inside its outer field's code
MAX_REVISIONS_PER_FIELD = 8  # 2**8 variants; more tracked changes in one field code are not judged
MAX_ALTERNATE_PREFIXES = 6  # beyond this, AlternateContent readings are all/none/each prefix alone

_W_NAMESPACES = (W_NS, W_STRICT_NS)
_NAME_REGION = re.compile(r'[\s"]*(\S*)')  # the field name and anything glued to it
_NAME = re.compile(r'[^\\"]*')


def _tag_set(*locals_: str) -> frozenset[str]:
    return frozenset(f"{{{ns}}}{local}" for ns in _W_NAMESPACES for local in locals_)


_FLD_SIMPLE = _tag_set("fldSimple")
_FLD_CHAR = _tag_set("fldChar")
_INSTR_TEXT = _tag_set("instrText", "delInstrText")
_DEL_INSTR_TEXT = _tag_set("delInstrText")
_FIELD_TAGS = _FLD_SIMPLE | _FLD_CHAR | _INSTR_TEXT
_INSERTED = _tag_set("ins", "moveTo")
_DELETED = _tag_set("del", "moveFrom")
_ALTERNATE_CONTENT = f"{{{MC_NS}}}AlternateContent"
_CHOICE = f"{{{MC_NS}}}Choice"
_FALLBACK = f"{{{MC_NS}}}Fallback"


def name_region(code: str) -> str:
    """The first token of a field code: the field name and whatever is glued to it."""
    return _NAME_REGION.match(code).group(1)


def field_name(code: str) -> str:
    """The field type, upper-cased (``"INCLUDETEXT"``; ``"="`` for a formula); "" when empty or computed."""
    region = name_region(code)
    if region.startswith("="):
        return "="  # a formula stays a formula whatever its nested fields return
    if NESTED in region:
        return ""
    return _NAME.match(region).group(0).upper()


def computed_name(code: str) -> bool:
    """True when a nested field's result becomes (part of) the field name: only running it tells."""
    region = name_region(code)
    return NESTED in region and not region.startswith("=")


@dataclass(frozen=True)
class CodePiece:
    text: str
    revision: int | None  # the tracked change (w:ins/w:del...) holding the text; None when untracked


@dataclass(frozen=True)
class FieldInstruction:
    pieces: tuple[CodePiece, ...]
    simple: bool  # w:fldSimple (else a complex field built from w:instrText runs)

    @property
    def code(self) -> str:
        """The own code, every tracked piece kept, :data:`NESTED` where a nested field sits."""
        return "".join(p.text for p in self.pieces)

    @property
    def instruction(self) -> str:
        """The own instruction text (nested fields left out)."""
        return self.code.replace(NESTED, "")

    @property
    def name(self) -> str:
        return field_name(self.code)

    def revisions(self) -> list[int]:
        return sorted({p.revision for p in self.pieces if p.revision is not None})

    def variants(self) -> list[str] | None:
        """The code under every combination of accepting/rejecting each tracked change in it;
        None when there are more than :data:`MAX_REVISIONS_PER_FIELD` of them."""
        revisions = self.revisions()
        if len(revisions) > MAX_REVISIONS_PER_FIELD:
            return None
        codes = []
        for size in range(len(revisions) + 1):
            for kept in itertools.combinations(revisions, size):
                code = "".join(p.text for p in self.pieces if p.revision is None or p.revision in kept)
                if code not in codes:
                    codes.append(code)
        return codes


def _attr(el: etree._Element, local: str) -> str:
    for ns in _W_NAMESPACES:
        value = el.get(f"{{{ns}}}{local}")
        if value is not None:
            return value
    return ""


@dataclass(frozen=True)
class _Marked:
    """A field element and the choices that decide whether a reader sees it."""

    el: etree._Element
    inserted: bool
    deleted: bool
    revision: int | None
    branches: tuple[tuple[etree._Element, etree._Element], ...]  # (mc:AlternateContent, its branch)


def _mark(el: etree._Element, revision_ids: dict[etree._Element, int]) -> _Marked:
    inserted = deleted = False
    revision_el = el if el.tag in _DEL_INSTR_TEXT else None
    branches = []
    child = el
    for parent in el.iterancestors():
        if parent.tag in _INSERTED or parent.tag in _DELETED:
            inserted |= parent.tag in _INSERTED
            deleted |= parent.tag in _DELETED
            if revision_el is None or revision_el is el:
                revision_el = parent
        elif parent.tag == _ALTERNATE_CONTENT and child.tag in (_CHOICE, _FALLBACK):
            branches.append((parent, child))
        child = parent
    deleted |= el.tag in _DEL_INSTR_TEXT
    revision = None if revision_el is None else revision_ids.setdefault(revision_el, len(revision_ids))
    return _Marked(el, inserted, deleted, revision, tuple(branches))


def _requires(choice: etree._Element) -> frozenset[str]:
    return frozenset((choice.get("Requires") or "").split())


def _branch_taken(ac: etree._Element, understood: frozenset[str]) -> etree._Element | None:
    """The branch of an AlternateContent a reader understanding ``understood`` prefixes takes."""
    for child in ac:
        if child.tag == _CHOICE and _requires(child) <= understood:
            return child
    return next((child for child in ac if child.tag == _FALLBACK), None)


def _understood_sets(marked: list[_Marked]) -> list[frozenset[str] | None]:
    """AlternateContent readings: None (every branch at once), then sets of understood prefixes."""
    acs = {ac for m in marked for ac, _ in m.branches}
    if not acs:
        return [None]
    prefixes = sorted({p for ac in acs for child in ac if child.tag == _CHOICE for p in _requires(child)})
    if len(prefixes) <= MAX_ALTERNATE_PREFIXES:
        subsets = [frozenset(c) for n in range(len(prefixes) + 1) for c in itertools.combinations(prefixes, n)]
    else:
        subsets = [frozenset(), frozenset(prefixes), *(frozenset({p}) for p in prefixes)]
    return [None, *subsets]


def _readings(marked: list[_Marked]) -> Iterator[Callable[[_Marked], bool]]:
    tracked = any(m.inserted or m.deleted for m in marked)
    revision_modes = ("all", "current", "original") if tracked else ("all",)
    for mode, understood in itertools.product(revision_modes, _understood_sets(marked)):
        taken: dict[etree._Element, etree._Element | None] = {}

        def sees(m: _Marked, mode=mode, understood=understood, taken=taken) -> bool:
            if (mode == "current" and m.deleted) or (mode == "original" and m.inserted):
                return False
            if understood is None:
                return True
            for ac, branch in m.branches:
                if ac not in taken:
                    taken[ac] = _branch_taken(ac, understood)
                if taken[ac] is not branch:
                    return False
            return True

        yield sees


class _OpenField:
    def __init__(self) -> None:
        self.pieces: list[CodePiece] = []
        self.in_code = True  # False once its separate fldChar has passed


def _scan(marked: list[_Marked], sees: Callable[[_Marked], bool]) -> list[FieldInstruction]:
    """The fields of one reading."""
    found: list[FieldInstruction] = []
    open_fields: list[_OpenField] = []

    def collecting() -> _OpenField | None:
        return open_fields[-1] if open_fields and open_fields[-1].in_code else None

    for m in marked:
        if not sees(m):
            continue
        tag, outer = m.el.tag, collecting()
        if tag in _FLD_SIMPLE:
            found.append(FieldInstruction((CodePiece(_attr(m.el, "instr"), None),), simple=True))
            if outer:
                outer.pieces.append(CodePiece(NESTED, None))
        elif tag in _INSTR_TEXT:
            piece = CodePiece(m.el.text or "", m.revision)
            if outer:
                outer.pieces.append(piece)
            else:  # stray: Word may still honour it; judged alone, never joined to other strays
                found.append(FieldInstruction((piece,), simple=False))
        else:
            kind = _attr(m.el, "fldCharType").strip().lower()
            if kind == "begin":
                if outer:
                    outer.pieces.append(CodePiece(NESTED, None))
                open_fields.append(_OpenField())
            elif kind in ("separate", "end") and open_fields:
                if outer:
                    found.append(FieldInstruction(tuple(outer.pieces), simple=False))
                    outer.in_code = False
                if kind == "end":
                    open_fields.pop()
    for field in open_fields:  # unterminated fields: judge what they hold
        if field.in_code:
            found.append(FieldInstruction(tuple(field.pieces), simple=False))
    return found


def field_instructions(root: etree._Element) -> list[FieldInstruction]:
    """Every field instruction under ``root``, in every reading (nested fields separately)."""
    revision_ids: dict[etree._Element, int] = {}
    marked = [_mark(el, revision_ids) for el in root.iter(*_FIELD_TAGS)]
    found: list[FieldInstruction] = []
    seen: set[FieldInstruction] = set()
    for sees in _readings(marked):
        reading = _scan(marked, sees)
        found += [f for f in reading if f not in seen]
        seen.update(reading)
    return found
