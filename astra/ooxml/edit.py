"""Editing a package without disturbing what is not edited: the writer's side of :mod:`blocks`.

* :func:`fragment_xml` serializes one element as a fragment meant to sit where it came from: the
  namespaces in scope there are declared on a wrapper and cut away with it, so the fragment
  carries no redundant ``xmlns`` declarations.
* :func:`splice_blocks` replaces some top-level blocks of a story part and keeps every other byte
  (the blocks are found by :func:`astra.ooxml.blocks.split_children`, so an unchanged block is the
  same atom before and after). UTF-16 parts stay UTF-16.
* :func:`add_relationships` and :func:`add_content_type_defaults` append entries to a
  relationships part and to ``[Content_Types].xml`` before their closing tag, leaving the
  existing entries byte for byte.
"""

from __future__ import annotations

import re
from copy import deepcopy
from xml.sax.saxutils import quoteattr

from lxml import etree

from .blocks import split_children
from .errors import PackageError
from .rels import Relationship, relationships_xml
from .xml import utf16_encoding

_CONTAINER_PATHS = {"document": ("body",), "glossaryDocument": ("docParts",)}
_CLOSING_TAG = re.compile(rb"</\s*(?:([A-Za-z_][\w.-]*):)?(Relationships|Types)\s*>\s*$")
_RELATIONSHIP_ID = re.compile(r"rId(\d+)")


def story_container_path(root_local_name: str) -> tuple[str, ...]:
    """Local names from a story part's root to the element holding its blocks (w:body for w:document)."""
    return _CONTAINER_PATHS.get(root_local_name, ())


def fragment_xml(el: etree._Element, nsmap: dict | None = None) -> bytes:
    """``el`` serialized (UTF-8, no declaration) for the place it came from: the namespaces in scope
    there (``nsmap``, default: its parent's) are not redeclared on it."""
    scope = nsmap if nsmap is not None else (el.getparent().nsmap if el.getparent() is not None else {})
    wrapper = etree.Element("wrapper", nsmap=scope)
    wrapper.append(deepcopy(el))
    text = etree.tostring(wrapper, encoding="UTF-8", xml_declaration=False)
    return text[text.index(b">") + 1:text.rindex(b"</")]


def splice_blocks(part: bytes, replacements: dict[int, bytes]) -> bytes:
    """``part`` with its top-level blocks number ``i`` (0-based, elements only, as
    :func:`astra.ooxml.wordml.top_block` counts) replaced by ``replacements[i]`` (UTF-8 bytes);
    every other byte is kept. Raises PackageError when the part cannot be split exactly."""
    segments = split_children(part, story_container_path)
    if segments is None:
        raise PackageError("story part cannot be split at its blocks")
    encoding = utf16_encoding(part)
    out: list[bytes] = []
    index = 0
    for kind, start, end in segments:
        if kind.startswith("block:"):
            replacement = replacements.get(index)
            index += 1
            if replacement is not None:
                out.append(replacement.decode("utf-8").encode(encoding) if encoding else replacement)
                continue
        out.append(part[start:end])
    missing = [i for i in replacements if i >= index]
    if missing:
        raise PackageError(f"story part has no block {missing[0]}")
    return b"".join(out)


def _insert_before_close(part: bytes, entries: str, root_local: str) -> bytes:
    match = _CLOSING_TAG.search(part)
    if match is None or match.group(2) != root_local.encode():
        raise PackageError(f"no closing </{root_local}> tag to add entries before")
    prefix = match.group(1).decode() if match.group(1) else None
    if prefix:  # the part spells its elements with a prefix: so must the new entries
        entries = re.sub(r"<(Relationship|Default|Override)\b", rf"<{prefix}:\1", entries)
    return part[:match.start()] + entries.encode("utf-8") + part[match.start():]


def add_relationships(rels_part: bytes | None, rels: list[Relationship]) -> bytes:
    """A relationships part with ``rels`` appended (a new part when ``rels_part`` is None)."""
    if rels_part is None:
        return relationships_xml(rels)
    entries = "".join(
        f"<Relationship Id={quoteattr(r.id)} Type={quoteattr(r.type)} Target={quoteattr(r.target)}"
        + (' TargetMode="External"' if r.external else "") + "/>"
        for r in rels
    )
    return _insert_before_close(rels_part, entries, "Relationships")


def add_content_type_defaults(content_types: bytes, defaults: dict[str, str]) -> bytes:
    """``[Content_Types].xml`` with ``Default`` entries for the extensions it does not map yet."""
    known = {m.group(1).lower() for m in re.finditer(rb'Extension\s*=\s*["\']([^"\']*)["\']', content_types)}
    missing = {ext: ct for ext, ct in defaults.items() if ext.lower().encode() not in known}
    if not missing:
        return content_types
    entries = "".join(f"<Default Extension={quoteattr(e)} ContentType={quoteattr(ct)}/>" for e, ct in missing.items())
    return _insert_before_close(content_types, entries, "Types")


def next_relationship_ids(existing: list[Relationship], count: int) -> list[str]:
    """``count`` fresh ids ``rId<n>`` above every numbered id in ``existing``: stable for the same part."""
    numbers = [int(m.group(1)) for r in existing if (m := _RELATIONSHIP_ID.fullmatch(r.id))]
    taken = {r.id for r in existing}
    ids, n = [], max(numbers, default=0)
    while len(ids) < count:
        n += 1
        if f"rId{n}" not in taken:
            ids.append(f"rId{n}")
    return ids
