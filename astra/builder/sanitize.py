"""Sanitized injection: user text can only ever become text in the document.

There is no switch to turn any of this off. Every string BUILDER writes goes through
:func:`clean_text` (characters XML 1.0 cannot hold are removed, line ends normalised) and then
:func:`escape_text` / :func:`escape_attr` (``& < >`` and quotes as entities). Content is written
as ``w:t`` text only: BUILDER never writes a field (``w:fldSimple``, ``w:instrText``), a
hyperlink or a relationship from content, so a transcript saying
``{ DDEAUTO c:\\windows\\system32\\cmd.exe }`` or ``</w:t><w:fldSimple w:instr="INCLUDETEXT …">``
is shown as exactly those characters. Line breaks and tabs in text become ``w:br`` / ``w:tab``
(:func:`text_runs`), never raw control characters.
"""

from __future__ import annotations

import re

# XML 1.0 Char: #x9 | #xA | #xD | [#x20-#xD7FF] | [#xE000-#xFFFD] | [#x10000-#x10FFFF]. Lone
# surrogates (which a Python str can hold) fall outside it too.
_ILLEGAL_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_LINE_ENDS = re.compile("\r\n?")
_BREAKS = re.compile("([\n\t])")


def clean_text(text: str) -> str:
    """``text`` without characters XML cannot carry; CRLF and CR become LF."""
    return _LINE_ENDS.sub("\n", _ILLEGAL_XML.sub("", text))


def escape_text(text: str) -> str:
    """Escape for XML character data (``text`` must already be clean)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def escape_attr(text: str) -> str:
    """Clean and escape for a double-quoted XML attribute value (labels, style names: rare, short)."""
    return escape_text(clean_text(text)).replace('"', "&quot;").replace("\n", "&#10;").replace("\t", "&#9;")


def text_runs(text: str, rpr: str) -> str:
    """Runs carrying clean ``text`` with run properties ``rpr`` (XML of a ``w:rPr`` or ""): line
    breaks as ``w:br``, tabs as ``w:tab``, everything else in ``xml:space="preserve"`` ``w:t``."""
    if "\n" not in text and "\t" not in text:
        return f'<w:r>{rpr}<w:t xml:space="preserve">{escape_text(text)}</w:t></w:r>' if text else ""
    inner = []
    for piece in _BREAKS.split(text):
        if piece == "\n":
            inner.append("<w:br/>")
        elif piece == "\t":
            inner.append("<w:tab/>")
        elif piece:
            inner.append(f'<w:t xml:space="preserve">{escape_text(piece)}</w:t>')
    return f"<w:r>{rpr}{''.join(inner)}</w:r>"


def truncate(text: str, limit: int) -> tuple[str, int]:
    """(``text`` cut to ``limit`` characters, how many characters were cut)."""
    if len(text) <= limit:
        return text, 0
    return text[:limit], len(text) - limit
