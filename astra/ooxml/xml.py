"""Hardened XML for package parts: no entity expansion, no DTD loading, no network, no huge trees.

No OOXML part legitimately carries a DOCTYPE, so :func:`parse_xml` refuses one outright (and
:func:`has_dtd_markup` lets a caller refuse it before any parser sees the bytes, in UTF-8 or
UTF-16). Strict (ISO/IEC 29500) namespaces are rewritten to the transitional ones on parse.
"""

from __future__ import annotations

import re

from lxml import etree

from .errors import PackageError
from .ns import STRICT_TO_TRANSITIONAL


def hardened_parser() -> etree.XMLParser:
    """An lxml parser that never expands entities, loads DTDs or touches the network."""
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        collect_ids=False,
    )


class ForbiddenDtd(PackageError):
    """A part declares a DOCTYPE or an entity."""


_DTD_MARKERS = re.compile(rb"<!\s*(?:DOCTYPE|ENTITY)", re.IGNORECASE)
_DTD_MARKERS_TEXT = re.compile(r"<!\s*(?:DOCTYPE|ENTITY)", re.IGNORECASE)


def utf16_encoding(data: bytes) -> str | None:
    """'utf-16-le' / 'utf-16-be' when the bytes look like UTF-16 XML (BOM or '<' sniffing)."""
    head = data[:2]
    if head in (b"\xff\xfe", b"<\x00"):
        return None if data[:4] == b"\xff\xfe\x00\x00" else "utf-16-le"  # FF FE 00 00 is UTF-32
    if head in (b"\xfe\xff", b"\x00<"):
        return None if data[:4] == b"\x00\x00\xfe\xff" else "utf-16-be"
    return None


def has_dtd_markup(data: bytes) -> bool:
    """True if the XML bytes carry a DOCTYPE or ENTITY declaration (also in UTF-16)."""
    if _DTD_MARKERS.search(data):
        return True
    encoding = utf16_encoding(data)
    if encoding:
        try:
            return bool(_DTD_MARKERS_TEXT.search(data.decode(encoding)))
        except UnicodeDecodeError:
            return False
    return False


def parse_xml(data: bytes, name: str = "<xml>", *, normalise_strict: bool = True) -> etree._Element:
    """Parse a part with the hardened parser. Raises PackageError for malformed XML or any DTD."""
    if has_dtd_markup(data):
        raise ForbiddenDtd(f"{name}: DOCTYPE and ENTITY declarations are not allowed in package parts")
    try:
        root = etree.fromstring(data, parser=hardened_parser())
    except (etree.XMLSyntaxError, ValueError) as exc:
        raise PackageError(f"{name}: malformed XML: {exc}") from None
    if root is None:
        raise PackageError(f"{name}: empty XML document")
    docinfo = root.getroottree().docinfo
    if docinfo.doctype or docinfo.internalDTD is not None or docinfo.externalDTD is not None:
        raise ForbiddenDtd(f"{name}: DOCTYPE declarations are not allowed in package parts")
    if normalise_strict:
        _normalise_strict(root)
    return root


def _strict_to_transitional(name: str) -> str | None:
    if name.startswith("{"):
        ns, _, local = name[1:].partition("}")
        if ns in STRICT_TO_TRANSITIONAL:
            return f"{{{STRICT_TO_TRANSITIONAL[ns]}}}{local}"
    return None


def _normalise_strict(root: etree._Element) -> None:
    """Rewrite ISO 29500 Strict namespaces to their transitional equivalents, in place."""
    if not any(ns in STRICT_TO_TRANSITIONAL for ns in (root.nsmap or {}).values()):
        return
    for el in root.iter():
        if not isinstance(el.tag, str):
            continue
        el.tag = _strict_to_transitional(el.tag) or el.tag
        for key in list(el.attrib):
            renamed = _strict_to_transitional(key)
            if renamed:
                el.set(renamed, el.attrib.pop(key))
