"""Part names: the ONE resolver of relationship targets, and the rules for zip member names.

Member names are written as in the zip (``word/document.xml``, no leading slash); the package
itself is the source ``""``. :func:`resolve_target` is the ONE place a target is percent-decoded
(``word/%64oc.xml`` names ``word/doc.xml``), before it is resolved, and it refuses anything that
leaves the package once decoded: a ``..`` above the root (``../../evil.xml`` from
``word/document.xml``, ``%2e%2e/x.xml`` from the root), a backslash (Windows tools would read it
as a separator), a URI scheme, a network-path reference (``//server/share``), control characters
or surrounding blanks. The audit, BUILDER and LEARN all resolve through here, so a target either
names a member or is refused — never silently clamped to the root.
"""

from __future__ import annotations

import posixpath
import re
from urllib.parse import unquote

_URI_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
_DRIVE = re.compile(r"^[A-Za-z]:")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
def resolve_target(source_part: str, target: str) -> str | None:
    """The member name an internal relationship target points to; None if it escapes the package.

    ``source_part`` is the member the relationship belongs to ("" for the package); ``target``
    is relative to its folder, or absolute from the package root when it starts with "/".
    A fragment (``#…``) is dropped; percent-escapes are decoded first.
    """
    try:
        target = unquote(target.split("#", 1)[0], errors="strict")
    except UnicodeDecodeError:  # escapes that are not UTF-8 name no part
        return None
    if (not target or target != target.strip() or "\\" in target or target.startswith("//")
            or _URI_SCHEME.match(target) or _CONTROL.search(target)):
        return None
    joined = target.lstrip("/") if target.startswith("/") else posixpath.join(posixpath.dirname(source_part), target)
    parts: list[str] = []
    for seg in joined.split("/"):
        if seg in ("", "."):
            continue
        if seg == "..":
            if not parts:
                return None
            parts.pop()
        else:
            parts.append(seg)
    return "/".join(parts) or None


def rels_part_for(source_part: str) -> str:
    """'' -> '_rels/.rels'; 'word/document.xml' -> 'word/_rels/document.xml.rels'."""
    folder, _, base = source_part.rpartition("/")
    return f"{folder + '/' if folder else ''}_rels/{base}.rels"


def rels_source(rels_part: str) -> str | None:
    """The member a relationships part belongs to ('word/_rels/document.xml.rels' -> 'word/document.xml');
    '' for the package's own '_rels/.rels'; None if the name is not a relationships part."""
    folder, _, base = rels_part.rpartition("/")
    if not base.lower().endswith(".rels"):
        return None
    parent, _, rels_dir = folder.rpartition("/") if "/" in folder else ("", "", folder)
    if rels_dir.lower() != "_rels":
        return None
    source = base[: -len(".rels")]
    return f"{parent}/{source}" if parent else source


def member_name_problems(name: str) -> list[str]:
    """What is wrong with a zip member name as an OPC part name: a list of
    "invalid" (empty, control characters), "absolute", "traversal", "backslash"."""
    problems = []
    if not name or any(ord(c) < 0x20 or c == "\x7f" for c in name):
        problems.append("invalid")
    if name.startswith(("/", "\\")) or _DRIVE.match(name):
        problems.append("absolute")
    if ".." in re.split(r"[/\\]", name):
        problems.append("traversal")
    if "\\" in name:
        problems.append("backslash")
    return problems


def natural_key(name: str) -> list:
    """Sort key putting header2.xml before header10.xml."""
    return [int(tok) if tok.isdigit() else tok.lower() for tok in re.split(r"(\d+)", name)]
