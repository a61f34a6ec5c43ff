"""Relationships and content types: reading them from parsed parts, and writing them.

A :class:`Relationship` keeps the target as written; :attr:`Relationship.target_part` resolves
an internal one through :func:`astra.ooxml.partname.resolve_target` (None when it escapes).
"""

from __future__ import annotations

from dataclasses import dataclass
from xml.sax.saxutils import quoteattr

from lxml import etree

from .ns import CONTENT_TYPES_NS, PKG_REL_NS, local_name
from .partname import rels_source, resolve_target

XML_DECLARATION = '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\r\n'


@dataclass(frozen=True)
class Relationship:
    rels_part: str
    source_part: str  # "" for the package itself (_rels/.rels)
    id: str
    type: str
    target: str  # as written: relative to the source's folder, absolute from the root, or a URI
    external: bool

    @property
    def target_part(self) -> str | None:
        """The member an internal relationship points to; None if external or escaping the package."""
        return None if self.external else resolve_target(self.source_part, self.target)


def parse_relationships(rels_part: str, root: etree._Element) -> list[Relationship]:
    source = rels_source(rels_part) or ""
    rels = []
    for el in root:
        if local_name(el.tag) != "Relationship":
            continue
        rels.append(Relationship(
            rels_part=rels_part,
            source_part=source,
            id=el.get("Id") or "",
            type=(el.get("Type") or "").strip(),
            target=el.get("Target") or "",
            external=(el.get("TargetMode") or "").strip().lower() == "external",
        ))
    return rels


def relationships_xml(rels: list[Relationship]) -> bytes:
    """A relationships part holding ``rels`` in the given order."""
    items = "".join(
        f"<Relationship Id={quoteattr(r.id)} Type={quoteattr(r.type)} Target={quoteattr(r.target)}"
        + (' TargetMode="External"' if r.external else "") + "/>"
        for r in rels
    )
    return f'{XML_DECLARATION}<Relationships xmlns="{PKG_REL_NS}">{items}</Relationships>'.encode()


@dataclass(frozen=True)
class ContentTypes:
    defaults: dict[str, str]  # lower-case extension -> content type
    overrides: dict[str, str]  # lower-case member name (no leading slash) -> content type

    def of(self, member_name: str) -> str | None:
        ct = self.overrides.get(member_name.lower())
        if ct is not None:
            return ct
        base = member_name.rsplit("/", 1)[-1]
        if "." not in base:
            return None
        return self.defaults.get(base.rsplit(".", 1)[-1].lower())


def media_type(content_type: str | None) -> str:
    """A content type as compared: parameters (``; charset=...``) and blanks dropped, lower-cased."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def parse_content_types(root: etree._Element) -> ContentTypes:
    defaults, overrides = {}, {}
    for el in root:
        name = local_name(el.tag)
        if name == "Default":
            defaults[(el.get("Extension") or "").lower()] = (el.get("ContentType") or "").strip()
        elif name == "Override":
            overrides[(el.get("PartName") or "").lstrip("/").lower()] = (el.get("ContentType") or "").strip()
    return ContentTypes(defaults, overrides)


def content_types_xml(defaults: dict[str, str], overrides: dict[str, str]) -> bytes:
    """[Content_Types].xml: ``defaults`` by extension, ``overrides`` by member name (no leading slash)."""
    entries = "".join(f"<Default Extension={quoteattr(e)} ContentType={quoteattr(ct)}/>" for e, ct in defaults.items())
    entries += "".join(f"<Override PartName={quoteattr('/' + p)} ContentType={quoteattr(ct)}/>"
                       for p, ct in overrides.items())
    return f'{XML_DECLARATION}<Types xmlns="{CONTENT_TYPES_NS}">{entries}</Types>'.encode()
