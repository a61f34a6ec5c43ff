"""WordprocessingML on top of a :class:`~astra.ooxml.package.Package`: where the stories, styles and
theme of a .docx are, and small accessors for w: elements (python-docx's ``oxml`` in miniature)."""

from __future__ import annotations

import re
from collections.abc import Iterable

from lxml import etree

from .ns import W_NS, WP_NS, W, qname
from .package import CONTENT_TYPES_PART, Package
from .partname import natural_key
from .rels import media_type

_HEADER = re.compile(r"word/header\d*\.xml", re.IGNORECASE)
_FOOTER = re.compile(r"word/footer\d*\.xml", re.IGNORECASE)


# --------------------------------------------------------------------------- where things are

def story_parts(pkg: Package) -> list[str]:
    """Main document, then headers, then footers (each group in natural name order)."""
    main = pkg.main_document()
    headers = pkg.related(main, "header")
    footers = pkg.related(main, "footer")
    if not headers and not footers:  # no relationships: fall back on the conventional names
        headers = [m for m in pkg.members if _HEADER.fullmatch(m)]
        footers = [m for m in pkg.members if _FOOTER.fullmatch(m)]
    ordered = [main]
    for group in (headers, footers):
        for name in sorted(set(group), key=natural_key):
            if name.lower() != main.lower():
                ordered.append(name)
    return ordered


def _related_or_conventional(pkg: Package, kind: str, conventional: str) -> str | None:
    found = pkg.related(pkg.main_document(), kind)
    if found:
        return found[0]
    return pkg.name_of(conventional) if pkg.has(conventional) else None


def styles_part(pkg: Package) -> str | None:
    return _related_or_conventional(pkg, "styles", "word/styles.xml")


def theme_part(pkg: Package) -> str | None:
    return _related_or_conventional(pkg, "theme", "word/theme/theme1.xml")


# --------------------------------------------------------------------------- element accessors

def wval(el: etree._Element | None, attr: str = "val") -> str | None:
    """``w:<attr>`` of ``el`` (None if ``el`` or the attribute is missing)."""
    if el is None:
        return None
    return el.get(W(attr))


def on_off(el: etree._Element | None) -> bool | None:
    """ST_OnOff of a toggle element such as ``<w:b/>``; None when the element is absent."""
    if el is None:
        return None
    val = el.get(W.val)
    if val is None:
        return True
    return val.strip().lower() not in ("false", "0", "off", "none")


# Counted in C: a Python loop over the siblings made a location per tag quadratic in a long template.
_ELEMENTS_BEFORE = etree.XPath("count(preceding-sibling::*)")
_SAME_BEFORE: dict[str, etree.XPath] = {}


def _same_before(el: etree._Element) -> int:
    """How many element siblings before ``el`` have its name (an XPath per name, its node test matched in C)."""
    if not isinstance(el.tag, str):  # a comment or processing instruction: no name
        return 0
    counter = _SAME_BEFORE.get(el.tag)
    if counter is None:
        name = etree.QName(el)
        counter = etree.XPath(f"count(preceding-sibling::n:{name.localname})", namespaces={"n": name.namespace}) \
            if name.namespace else etree.XPath(f"count(preceding-sibling::{name.localname})")
        if len(_SAME_BEFORE) < 4096:
            _SAME_BEFORE[el.tag] = counter
    return int(counter(el))


def element_path(el: etree._Element, root: etree._Element) -> str:
    """Readable XPath-like path from ``root`` (exclusive) down to ``el``.

    Every step is ``prefix:name[i]`` with ``i`` the 0-based index among the element
    siblings of the same name, e.g. ``w:tbl[0]/w:tr[1]/w:tc[0]/w:p[0]/w:sdt[0]``.
    """
    steps: list[str] = []
    cur = el
    while cur is not None and cur is not root:
        if cur.getparent() is None:
            break
        idx = _same_before(cur)
        steps.append(f"{qname(cur.tag)}[{idx}]")
        cur = cur.getparent()
    return "/".join(reversed(steps))


def top_block(el: etree._Element, root: etree._Element) -> tuple[int, etree._Element]:
    """(index among ``root``'s element children, that child) of the block holding ``el``."""
    cur = el
    while cur.getparent() is not None and cur.getparent() is not root:
        cur = cur.getparent()
    if cur.getparent() is not root:
        return 0, cur  # pragma: no cover - el not under root
    return int(_ELEMENTS_BEFORE(cur)), cur


# --------------------------------------------------------------------------- numeric ids

MAX_ID = 2**31 - 1  # ids are int32 (ST_DecimalNumber); Word refuses a larger one
# Every w:id attribute, the w:val of w:id elements, and drawings' docPr/@id.
_ID_VALUES = etree.XPath("//@w:id | //w:id/@w:val | //wp:docPr/@id", namespaces={"w": W_NS, "wp": WP_NS})
_PLAIN_ID = re.compile(r"[0-9]{1,18}")


def id_parts(pkg: Package) -> list[str]:
    """Every XML part but relationships and content types, whatever its name (the main document may be any part
    the package's relationship names): where ids of controls, bookmarks, revisions, comments and drawings live."""
    types = pkg.content_types()
    parts = []
    for member in pkg.members:
        name = member.lower()
        if name == CONTENT_TYPES_PART.lower() or name.endswith(".rels"):
            continue
        content_type = media_type(types.of(member))
        if name.endswith(".xml") or content_type.endswith("+xml") or content_type in ("application/xml", "text/xml"):
            parts.append(member)
    return parts


def numeric_ids(roots: Iterable[etree._Element]) -> frozenset[int]:
    """The valid numeric ids in the parts (content-control ``w:id/@w:val``, bookmark, revision and comment ``w:id``,
    drawing ``docPr/@id``): a new id is none of them. ASCII digits only, within int32 (``w:id="²"`` or one of
    thousands of digits is no id to count from)."""
    used = set()
    for root in {id(r): r for r in roots}.values():
        for value in _ID_VALUES(root):  # one XPath in C: walking every element in Python cost ~75 ms a template
            text = str(value)
            if _PLAIN_ID.fullmatch(text) and int(text) <= MAX_ID:
                used.add(int(text))
    return frozenset(used)
