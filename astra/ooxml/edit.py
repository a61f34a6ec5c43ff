"""Editing a package without disturbing what is not edited: the writer's side of :mod:`blocks`.

* :func:`fragment_xml` serializes one element as a fragment meant to sit where it came from: the
  namespaces in scope there are declared on a wrapper and cut away with it, so the fragment
  carries no redundant ``xmlns`` declarations.
* :func:`splice_blocks` replaces some top-level blocks of a story part and keeps every other byte
  (the blocks are found by :func:`astra.ooxml.blocks.split_children`, so an unchanged block is the
  same atom before and after). UTF-16 parts stay UTF-16.
* :func:`add_relationships` and :func:`add_content_type_defaults` append entries to a
  relationships part and to ``[Content_Types].xml``: the part is parsed with the hardened parser
  (so a UTF-16 part, comments or processing instructions after the root, a prefixed root, or a
  comment that looks like an entry change nothing) and written back in its own encoding, every
  existing entry, comment and processing instruction kept.
"""

from __future__ import annotations

import re
from copy import deepcopy

from lxml import etree

from .blocks import split_children
from .errors import PackageError
from .rels import Relationship, relationships_xml
from .xml import parse_xml, utf16_encoding

_CONTAINER_PATHS = {"document": ("body",), "glossaryDocument": ("docParts",)}
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


def _parse_entries_part(part: bytes, root_local: str, name: str) -> etree._Element:
    root = parse_xml(part, name, normalise_strict=False)
    if etree.QName(root).localname != root_local:
        raise PackageError(f"{name}: the root element is <{etree.QName(root).localname}>, not <{root_local}>")
    return root


def _append_entries(root: etree._Element, local: str, entries: list[dict[str, str]]) -> None:
    """New ``local`` elements at the end of ``root``, in its namespace (spelled with its prefix, if any)."""
    namespace = etree.QName(root).namespace
    tag = f"{{{namespace}}}{local}" if namespace else local
    for attributes in entries:
        etree.SubElement(root, tag, attributes)


def _serialize_like(root: etree._Element, part: bytes) -> bytes:
    """The whole document of ``root`` (comments and processing instructions around it included), in the
    encoding ``part`` was written in: UTF-16 stays UTF-16 (with a byte order mark), anything else is UTF-8."""
    tree = root.getroottree()
    encoding = "UTF-16" if utf16_encoding(part) else "UTF-8"
    return etree.tostring(tree, encoding=encoding, xml_declaration=True, standalone=tree.docinfo.standalone)


def add_relationships(rels_part: bytes | None, rels: list[Relationship]) -> bytes:
    """A relationships part with ``rels`` appended (a new part when ``rels_part`` is None).
    Raises PackageError when the part is not a readable relationships part."""
    if rels_part is None:
        return relationships_xml(rels)
    root = _parse_entries_part(rels_part, "Relationships", "relationships part")
    _append_entries(root, "Relationship", [
        {"Id": r.id, "Type": r.type, "Target": r.target, **({"TargetMode": "External"} if r.external else {})}
        for r in rels
    ])
    return _serialize_like(root, rels_part)


def add_content_type_defaults(content_types: bytes, defaults: dict[str, str]) -> bytes:
    """``[Content_Types].xml`` with ``Default`` entries for the extensions it does not map yet (compared
    case-insensitively, as OPC does). Raises PackageError when the part is not a readable ``Types`` part."""
    root = _parse_entries_part(content_types, "Types", "[Content_Types].xml")
    known = {(el.get("Extension") or "").lower() for el in root
             if isinstance(el.tag, str) and etree.QName(el).localname == "Default"}
    missing = {ext: ct for ext, ct in defaults.items() if ext.lower() not in known}
    if not missing:
        return content_types
    _append_entries(root, "Default", [{"Extension": e, "ContentType": ct} for e, ct in missing.items()])
    return _serialize_like(root, content_types)


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
