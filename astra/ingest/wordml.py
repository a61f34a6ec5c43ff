"""WordprocessingML helpers shared by the zone and style extractors.

* Namespace constants and Clark-name helpers (``W.p`` == ``"{...wordprocessingml/2006/main}p"``).
* A hardened lxml parser: no entity expansion, no DTD loading, no network, no huge trees;
  a part carrying a DOCTYPE is rejected outright (no OOXML part legitimately has one).
* :class:`WordPackage`: a minimal read-only view of a .docx read straight from the zip with
  :mod:`zipfile` — main document, header/footer, styles and theme parts found through the
  package relationships (with the conventional part names as fallback). ISO/IEC 29500
  *Strict* documents are accepted: their namespaces are rewritten to the transitional ones
  on parse, so the rest of the code only knows one vocabulary.

This module does not depend on python-docx.
"""

from __future__ import annotations

import io
import posixpath
import re
import zipfile
from dataclasses import dataclass, field

from lxml import etree

from astra.ingest.errors import PackageError
from astra.ingest.opc import hardened_parser

# --------------------------------------------------------------------------- namespaces

W_NS = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"
R_NS = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
A_NS = "http://schemas.openxmlformats.org/drawingml/2006/main"
MC_NS = "http://schemas.openxmlformats.org/markup-compatibility/2006"
PKG_REL_NS = "http://schemas.openxmlformats.org/package/2006/relationships"

STRICT_TO_TRANSITIONAL = {
    "http://purl.oclc.org/ooxml/wordprocessingml/main": W_NS,
    "http://purl.oclc.org/ooxml/officeDocument/relationships": R_NS,
    "http://purl.oclc.org/ooxml/drawingml/main": A_NS,
}

PREFIXES = {
    W_NS: "w",
    R_NS: "r",
    A_NS: "a",
    MC_NS: "mc",
    "http://schemas.openxmlformats.org/drawingml/2006/wordprocessingDrawing": "wp",
    "http://schemas.microsoft.com/office/word/2010/wordprocessingShape": "wps",
    "urn:schemas-microsoft-com:vml": "v",
    "http://schemas.openxmlformats.org/officeDocument/2006/math": "m",
}

NSMAP = {"w": W_NS, "r": R_NS, "a": A_NS, "mc": MC_NS}


class _Names:
    """Attribute access to Clark names of one namespace: ``W.p`` -> ``{ns}p``."""

    def __init__(self, ns: str) -> None:
        self._ns = ns

    def __getattr__(self, local: str) -> str:
        if local.startswith("_"):
            raise AttributeError(local)
        return f"{{{self._ns}}}{local}"

    def __call__(self, local: str) -> str:
        return f"{{{self._ns}}}{local}"


W = _Names(W_NS)
A = _Names(A_NS)
MC = _Names(MC_NS)

# Upper bound on the uncompressed size of any XML part we parse (zip-bomb guard).
MAX_PART_BYTES = 64 * 1024 * 1024


# --------------------------------------------------------------------------- parsing


def parse_xml(data: bytes, name: str = "<xml>") -> etree._Element:
    """Parse ``data`` with the hardened parser; strict namespaces are normalised.

    Raises :class:`PackageError` for malformed XML or any DOCTYPE declaration.
    """
    try:
        root = etree.fromstring(data, parser=hardened_parser())
    except etree.XMLSyntaxError as exc:
        raise PackageError(f"{name}: malformed XML: {exc}") from None
    if root is None:
        raise PackageError(f"{name}: empty XML document")
    docinfo = root.getroottree().docinfo
    if docinfo.doctype or docinfo.internalDTD is not None or docinfo.externalDTD is not None:
        raise PackageError(f"{name}: DOCTYPE declarations are not allowed in package parts")
    _normalise_strict(root)
    return root


def _normalise_strict(root: etree._Element) -> None:
    """Rewrite ISO 29500 Strict namespaces to their transitional equivalents, in place."""
    if not any(ns in STRICT_TO_TRANSITIONAL for ns in (root.nsmap or {}).values()):
        return
    for el in root.iter():
        tag = el.tag
        if isinstance(tag, str) and tag.startswith("{"):
            ns, _, local = tag[1:].partition("}")
            if ns in STRICT_TO_TRANSITIONAL:
                el.tag = f"{{{STRICT_TO_TRANSITIONAL[ns]}}}{local}"
        if not isinstance(tag, str):
            continue
        for key in list(el.attrib):
            if key.startswith("{"):
                ns, _, local = key[1:].partition("}")
                if ns in STRICT_TO_TRANSITIONAL:
                    value = el.attrib.pop(key)
                    el.set(f"{{{STRICT_TO_TRANSITIONAL[ns]}}}{local}", value)


# --------------------------------------------------------------------------- small accessors


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


def children(el: etree._Element) -> list[etree._Element]:
    """Element children only (comments and processing instructions skipped)."""
    return [c for c in el if isinstance(c.tag, str)]


def qname(tag: str) -> str:
    """``{ns}local`` -> ``w:local`` using the known prefixes (else the bare local name)."""
    if tag.startswith("{"):
        ns, _, local = tag[1:].partition("}")
        prefix = PREFIXES.get(ns)
        return f"{prefix}:{local}" if prefix else local
    return tag


def element_path(el: etree._Element, root: etree._Element) -> str:
    """Readable XPath-like path from ``root`` (exclusive) down to ``el``.

    Every step is ``prefix:name[i]`` with ``i`` the 0-based index among the element
    siblings of the same name, e.g. ``w:tbl[0]/w:tr[1]/w:tc[0]/w:p[0]/w:sdt[0]``.
    """
    steps: list[str] = []
    cur = el
    while cur is not None and cur is not root:
        parent = cur.getparent()
        if parent is None:
            break
        idx = 0
        for sib in parent:
            if sib is cur:
                break
            if sib.tag == cur.tag:
                idx += 1
        steps.append(f"{qname(cur.tag)}[{idx}]")
        cur = parent
    return "/".join(reversed(steps))


def top_block(el: etree._Element, root: etree._Element) -> tuple[int, etree._Element]:
    """(index among ``root``'s element children, that child) of the block holding ``el``."""
    cur = el
    while cur.getparent() is not None and cur.getparent() is not root:
        cur = cur.getparent()
    idx = 0
    for child in root:
        if child is cur:
            return idx, cur
        if isinstance(child.tag, str):
            idx += 1
    return 0, cur  # pragma: no cover - el not under root


# --------------------------------------------------------------------------- package

_REL_SUFFIX = {
    "officeDocument": "/officeDocument",
    "header": "/header",
    "footer": "/footer",
    "styles": "/styles",
    "theme": "/theme",
}


@dataclass(frozen=True)
class Relationship:
    rel_id: str
    rel_type: str
    target: str  # absolute part name ("/word/styles.xml") or external URI
    external: bool


@dataclass
class WordPackage:
    """Read-only access to the parts of a .docx held in memory."""

    zf: zipfile.ZipFile
    _names: dict[str, str] = field(default_factory=dict)  # lower-case part name -> zip member
    _cache: dict[str, etree._Element] = field(default_factory=dict)

    @classmethod
    def open(cls, data: bytes) -> "WordPackage":
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise PackageError("template must be bytes")
        try:
            zf = zipfile.ZipFile(io.BytesIO(bytes(data)))
        except (zipfile.BadZipFile, OSError, ValueError) as exc:
            raise PackageError(f"not a zip package: {exc}") from None
        pkg = cls(zf)
        for info in zf.infolist():
            if info.is_dir():
                continue
            pkg._names.setdefault("/" + info.filename.lstrip("/").lower(), info.filename)
        return pkg

    # -- raw access
    def has_part(self, partname: str) -> bool:
        return partname.lower() in self._names

    def read_part(self, partname: str) -> bytes:
        member = self._names.get(partname.lower())
        if member is None:
            raise PackageError(f"missing part {partname}")
        info = self.zf.getinfo(member)
        if info.file_size > MAX_PART_BYTES:
            raise PackageError(f"{partname}: part too large ({info.file_size} bytes)")
        try:
            with self.zf.open(info) as fh:
                data = fh.read(MAX_PART_BYTES + 1)
        except (zipfile.BadZipFile, OSError, RuntimeError, NotImplementedError, EOFError) as exc:
            raise PackageError(f"{partname}: unreadable zip member: {exc}") from None
        if len(data) > MAX_PART_BYTES:
            raise PackageError(f"{partname}: part too large")
        return data

    def xml(self, partname: str) -> etree._Element:
        key = partname.lower()
        if key not in self._cache:
            self._cache[key] = parse_xml(self.read_part(partname), partname)
        return self._cache[key]

    def part_name(self, partname: str) -> str:
        """Canonical spelling of a part name as stored in the zip (with leading slash)."""
        member = self._names.get(partname.lower())
        return "/" + member.lstrip("/") if member else partname

    # -- relationships
    def relationships(self, source: str) -> list[Relationship]:
        """Relationships of part ``source`` ("/" for the package itself)."""
        if source == "/":
            rels_name, base = "/_rels/.rels", "/"
        else:
            directory, fname = posixpath.split(source)
            rels_name, base = f"{directory}/_rels/{fname}.rels", directory + "/"
        if not self.has_part(rels_name):
            return []
        root = self.xml(rels_name)
        out = []
        for rel in root.iter(f"{{{PKG_REL_NS}}}Relationship"):
            target = rel.get("Target") or ""
            external = (rel.get("TargetMode") or "").lower() == "external"
            if not external:
                target = target if target.startswith("/") else posixpath.join(base, target)
                target = posixpath.normpath(target)
                if not target.startswith("/"):
                    target = "/" + target
            out.append(Relationship(rel.get("Id") or "", rel.get("Type") or "", target, external))
        return out

    def related(self, source: str, kind: str) -> list[str]:
        suffix = _REL_SUFFIX[kind]
        return [
            r.target
            for r in self.relationships(source)
            if not r.external and r.rel_type.endswith(suffix) and self.has_part(r.target)
        ]

    def main_document(self) -> str:
        found = self.related("/", "officeDocument")
        if found:
            return self.part_name(found[0])
        if self.has_part("/word/document.xml"):
            return self.part_name("/word/document.xml")
        raise PackageError("no main document part (word/document.xml)")

    def story_parts(self) -> list[str]:
        """Main document, then headers, then footers (each group in natural name order)."""
        main = self.main_document()
        headers = self.related(main, "header")
        footers = self.related(main, "footer")
        if not headers and not footers:  # no rels: fall back on conventional names
            for member in self._names:
                if re.fullmatch(r"/word/header\d*\.xml", member):
                    headers.append(member)
                elif re.fullmatch(r"/word/footer\d*\.xml", member):
                    footers.append(member)
        ordered = [main]
        for group in (headers, footers):
            for name in sorted({self.part_name(n) for n in group}, key=_natural_key):
                if name.lower() != main.lower():
                    ordered.append(name)
        return ordered

    def styles_part(self) -> str | None:
        main = self.main_document()
        found = self.related(main, "styles")
        if found:
            return self.part_name(found[0])
        return self.part_name("/word/styles.xml") if self.has_part("/word/styles.xml") else None

    def theme_part(self) -> str | None:
        main = self.main_document()
        found = self.related(main, "theme")
        if found:
            return self.part_name(found[0])
        return self.part_name("/word/theme/theme1.xml") if self.has_part("/word/theme/theme1.xml") else None


def _natural_key(name: str) -> list:
    return [int(tok) if tok.isdigit() else tok.lower() for tok in re.split(r"(\d+)", name)]
