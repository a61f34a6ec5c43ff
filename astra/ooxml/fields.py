"""Word fields: every field instruction in a WordprocessingML part, however it is written.

A field is either simple (``<w:fldSimple w:instr="PAGE"/>``) or complex: a ``w:fldChar`` of type
``begin``, the instruction in one or more ``w:instrText`` runs (Word splits it anywhere, even
inside the field name), a ``separate`` fldChar, the last result, and an ``end`` fldChar. Complex
fields nest (``{ INCLUDETEXT "{ FILENAME }" }``) and may span paragraphs. :func:`field_instructions`
returns each field's own instruction text (nested fields' text belongs to the nested field),
in document order of their ends. Deleted instruction text (``w:delInstrText``, tracked changes)
counts too: rejecting the deletion brings it back.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from lxml import etree

from .ns import W_NS, W_STRICT_NS

_W_NAMESPACES = (W_NS, W_STRICT_NS)
_FIELD_NAME = re.compile(r'\s*"?\s*([^\s\\"]+)')


@dataclass(frozen=True)
class FieldInstruction:
    instruction: str
    simple: bool  # w:fldSimple (else a complex field built from w:instrText runs)

    @property
    def name(self) -> str:
        """The field type, upper-cased (``"INCLUDETEXT"``; ``"="`` for a formula); "" when empty."""
        m = _FIELD_NAME.match(self.instruction)
        return m.group(1).upper() if m else ""


def _tag_set(*locals_: str) -> frozenset[str]:
    return frozenset(f"{{{ns}}}{local}" for ns in _W_NAMESPACES for local in locals_)


_FLD_SIMPLE = _tag_set("fldSimple")
_FLD_CHAR = _tag_set("fldChar")
_INSTR_TEXT = _tag_set("instrText", "delInstrText")
_FIELD_TAGS = _FLD_SIMPLE | _FLD_CHAR | _INSTR_TEXT


def _attr(el: etree._Element, local: str) -> str:
    for ns in _W_NAMESPACES:
        value = el.get(f"{{{ns}}}{local}")
        if value is not None:
            return value
    return ""


def field_instructions(root: etree._Element) -> list[FieldInstruction]:
    """Every field instruction under ``root`` (simple and complex, nested ones separately)."""
    found: list[FieldInstruction] = []
    open_fields: list[list[str] | None] = []  # one per open complex field; None once its code ended
    stray: list[str] = []  # instrText outside any begin/separate: Word may still honour it
    for el in root.iter(*_FIELD_TAGS):
        tag = el.tag
        if tag in _FLD_SIMPLE:
            found.append(FieldInstruction(_attr(el, "instr"), simple=True))
        elif tag in _INSTR_TEXT:
            target = open_fields[-1] if open_fields and open_fields[-1] is not None else stray
            target.append(el.text or "")
        else:
            kind = _attr(el, "fldCharType").strip().lower()
            if kind == "begin":
                open_fields.append([])
            elif kind in ("separate", "end") and open_fields:
                code = open_fields[-1]
                if code is not None:
                    found.append(FieldInstruction("".join(code), simple=False))
                if kind == "end":
                    open_fields.pop()
                else:
                    open_fields[-1] = None
    for code in open_fields:  # unterminated fields: judge what they hold
        if code is not None:
            found.append(FieldInstruction("".join(code), simple=False))
    if stray:
        found.append(FieldInstruction("".join(stray), simple=False))
    return found
