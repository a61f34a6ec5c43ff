"""What each zone of a built (or user-edited) .docx holds, as BUILDER wrote it: LEARN's reading of a document.

:func:`read_zones` reads the package through :mod:`astra.ooxml` and finds every zone as BUILDER leaves it: an
``astra:<zone_id>…`` content control (a ``{{ zone_id }}`` placeholder of the template becomes one too, see
:mod:`astra.builder.engine`), in the main document, headers and footers. Only controls tagged with a zone id of
the zone map are zones (of a docxtpl template's zone map, ``"language": "jinja"``, its marked zones: the others have
no control, :func:`astra.builder.check.controlled_zones`); every other ``astra:`` control is reported (``unknown``),
as are a zone held by two controls (``duplicates``) and a zone control inside another (``nested``): the comparator
refuses all three.
``mc:Fallback`` branches are never read: they are copies of their ``mc:Choice`` (a text box's second rendering).

Per zone (:class:`ZoneContent`):

* ``paragraphs``: one :class:`Paragraph` per paragraph of the zone (in a table zone, those outside its tables); an
  inline (run-level) zone has one per line, its lines separated by breaks as BUILDER separates its utterances.
  Each has its text (tabs and breaks as ``\\t`` / ``\\n``) and a formatting fingerprint: the paragraph's
  properties and its runs as (properties, text) pieces, adjacent pieces of equal properties joined. Properties are
  read canonically: revision ids (``rsid*``), language, proofing marks, the recorded previous formatting of a
  tracked change and a paragraph mark's own run properties are left out (Word changes them on any save); a toggle
  (``w:b``, ``w:i``…) reads as on or off however it is spelled. An empty paragraph is no item.
* ``tables``: each table of the zone (outermost ones) as a grid of cell texts, the rows as written (a header row
  included), a cell's paragraphs joined by ``\\n``, trimmed; nested tables are not read. Read in every zone, compared
  in table zones.
* ``images``: the sha256 of each picture the zone shows (``a:blip`` and VML ``v:imagedata``), in order.

Text is what a reader sees: inserted text of a tracked change is read, deleted and moved-from text is not, a
field's code is not (its result is), a drawing's own text box is read as its own paragraphs.

**Speaker leads.** BUILDER leads an utterance with ``"<speaker>: "`` in bold when its zone says
``"speaker": true``. A paragraph (or line) starting with ``"<name>: "`` for a name in ``speakers`` whose characters
are all bold has that lead removed (and kept in ``Paragraph.speaker``), in every zone: a paragraph moved from a
speaker zone into another keeps its lead, and the text compares with the utterance either way. A paragraph whose
lead is not bold (the user retyped it, or the words are the utterance's own) keeps it.

Text outside the zones (``outside``): the text of every paragraph left once the content of every ``astra:``
control is taken out, in document order; the comparator uses it to tell a document derived from the generated one
from another template.

**Caps** (:class:`ReadCaps`, optional): the paragraphs (items) read in zones, the characters read in zones (items
and table cells) and the characters read outside them. Reading stops at the first one past its cap and
:class:`DocumentTooLarge` names it: what a hostile document makes the comparator hold and compare stays bounded.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field

from lxml import etree

from astra.builder.check import controlled_zones
from astra.ingest.zones import zone_control_id
from astra.ooxml.errors import PackageError
from astra.ooxml.ns import MC, R_NS, V_NS, W_NS, A, W, local_name
from astra.ooxml.package import Package
from astra.ooxml.wordml import on_off, story_parts, wval

_W = f"{{{W_NS}}}"
_TAG_PREFIX = "astra:"
# Elements whose text is not shown (deleted or moved away), or is another paragraph's (a drawing's text box),
# or is no text at all (properties, field codes).
_NOT_SHOWN = frozenset({W.pPr, W.rPr, W.delText, W.instrText, W.delInstrText, W.drawing, W.pict, W.object,
                        W("del"), W.moveFrom, W.txbxContent, MC.Fallback, W.fldData, W.sdtPr, W.sdtEndPr})
_BREAKS = frozenset({W.br, W.cr})
_BLOCK_CONTAINERS = frozenset({W.body, W.hdr, W.ftr, W.tc, W.txbxContent, W.footnote, W.endnote, W.comment,
                               W.docPartBody})
# Run properties Word rewrites without the user changing how the text looks.
_IGNORED_RUN_PROPS = frozenset({"lang", "noProof", "rPrChange", "webHidden", "specVanish"})
_IGNORED_PARAGRAPH_PROPS = frozenset({"rPr", "sectPr", "pPrChange"})
_IGNORED_ATTRIBUTES = frozenset({"hint"})
_TOGGLES = frozenset({"b", "bCs", "i", "iCs", "caps", "smallCaps", "strike", "dstrike", "outline", "shadow",
                      "emboss", "imprint", "vanish", "keepNext", "keepLines", "pageBreakBefore", "widowControl",
                      "contextualSpacing", "suppressAutoHyphens", "bidi"})


class DocumentUnreadable(ValueError):
    """The bytes are not a WordprocessingML package this reader can read; the message says why."""


class DocumentTooLarge(ValueError):
    """The document holds more than one of the :class:`ReadCaps` allows; ``cap`` names it."""

    def __init__(self, cap: str, limit: int) -> None:
        super().__init__(f"more than {limit} {cap.replace('_', ' ')}")
        self.cap, self.limit = cap, limit


@dataclass(frozen=True)
class ReadCaps:
    paragraphs_in_zones: int
    characters_in_zones: int
    characters_outside_zones: int


@dataclass(frozen=True)
class Paragraph:
    text: str  # as shown, the speaker lead removed; "\t" and "\n" for tabs and breaks
    formatting: dict  # {"paragraph": properties, "runs": [[properties, text], ...]}
    speaker: str | None = None  # the lead removed, if any


@dataclass
class ZoneContent:
    zone_id: str
    kind: str  # the zone map's kind
    part: str
    inline: bool
    paragraphs: list[Paragraph] = field(default_factory=list)
    tables: list[list[list[str]]] = field(default_factory=list)
    images: list[str] = field(default_factory=list)


@dataclass
class DocumentZones:
    zones: dict[str, ZoneContent]  # the zones present, in document order
    outside: list[str]  # the text of each paragraph outside every astra: control
    unknown: list[str] = field(default_factory=list)  # tags of astra: controls naming no zone of the map
    duplicates: list[str] = field(default_factory=list)  # zone ids held by more than one control
    nested: list[str] = field(default_factory=list)  # zone ids whose control sits inside another zone's


def read_zones(docx: bytes, zone_map: dict, *, speakers: Iterable[str] = (), caps: ReadCaps | None = None,
               ) -> DocumentZones:
    """Every zone of ``zone_map`` present in ``docx``, its content read as the module docstring says.
    Raises :class:`DocumentUnreadable` when the package or one of its story parts cannot be read,
    :class:`DocumentTooLarge` when it holds more than ``caps`` allow."""
    kinds = {zone["id"]: zone["kind"] for zone in controlled_zones(zone_map)}
    leads = sorted({f"{name}: " for name in speakers if name}, key=len, reverse=True)
    try:
        pkg = Package.read(docx)
        reader = _Reader(pkg, kinds, leads, caps)
        for part in story_parts(pkg):
            reader.read_part(part)
    except PackageError as exc:
        raise DocumentUnreadable(str(exc)) from None
    return reader.result


def normalize(text: str) -> str:
    """Text as the comparator compares it: whitespace runs as one space, trimmed, case folded, typographic quotes
    and dashes as their ASCII forms (Word's autoformat changes them as the user types)."""
    return " ".join(text.translate(_TYPOGRAPHY).split()).casefold()


_TYPOGRAPHY = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u201c": '"',
                             "\u201d": '"', "\u201e": '"', "\u2013": "-", "\u2014": "-", "\u2212": "-",
                             "\u00a0": " ", "\u2011": "-"})


# --------------------------------------------------------------------------- reading


@dataclass
class _Piece:
    text: str
    props: dict
    zone: etree._Element | None  # the astra: control (of a zone or not) the text belongs to, None outside


class _Reader:
    def __init__(self, pkg: Package, kinds: dict[str, str], leads: list[str], caps: ReadCaps | None) -> None:
        self.pkg, self.kinds, self.leads, self.caps = pkg, kinds, leads, caps
        self.result = DocumentZones({}, [])
        self.read = {"paragraphs_in_zones": 0, "characters_in_zones": 0, "characters_outside_zones": 0}
        self.controls: dict[etree._Element, str | None] = {}  # astra: control -> zone id of the map (or None)

    def read_part(self, part: str) -> None:
        root = self.pkg.xml(part)
        self.part = part
        for sdt in root.iter(W.sdt):
            if not _astra(sdt) or _in_fallback(sdt):
                continue
            zone_id = zone_control_id(sdt)
            if zone_id not in self.kinds:
                self.result.unknown.append(wval(sdt.find(f"{W.sdtPr}/{W.tag}")) or "")
                self.controls[sdt] = None
                continue
            if any(_astra(a) for a in sdt.iterancestors(W.sdt)):
                self.result.nested.append(zone_id)
            if zone_id in self.result.zones:
                if zone_id not in self.result.duplicates:
                    self.result.duplicates.append(zone_id)
                self.controls[sdt] = None
                continue
            inline = _inside_paragraph(sdt)
            self.result.zones[zone_id] = ZoneContent(zone_id, self.kinds[zone_id], part, inline)
            self.controls[sdt] = zone_id
            self._read_tables(sdt, self.result.zones[zone_id])
            self._read_images(sdt, self.result.zones[zone_id])
        for p in root.iter(W.p):
            if not _in_fallback(p):
                self._read_paragraph(p)

    # -- paragraphs

    def _read_paragraph(self, p: etree._Element) -> None:
        block_zone = self._block_zone(p)
        if block_zone is not None and self.kinds.get(self.controls.get(block_zone) or "") == "table" and \
                self._in_zone_table(p, block_zone):
            return  # a cell of one of a table zone's tables: read with the table
        pieces: list[_Piece] = []
        _walk(p, {}, block_zone, pieces)
        paragraph_props = _props(p.find(W.pPr), _IGNORED_PARAGRAPH_PROPS)
        outside = "".join(piece.text for piece in pieces if piece.zone is None)
        if outside.strip():
            self._count("characters_outside_zones", len(outside))
            self.result.outside.append(outside)
        by_control: dict[etree._Element, list[_Piece]] = {}
        for piece in pieces:
            if piece.zone is not None:
                by_control.setdefault(piece.zone, []).append(piece)
        for control, own in by_control.items():
            zone_id = self.controls.get(control)
            if zone_id is None:
                continue  # an unknown control's, or a duplicate's: reported, not read
            zone = self.result.zones[zone_id]
            lines = _split_lines(own) if zone.inline else [own]
            for line in lines:
                item = self._item(line, paragraph_props)
                if item is not None:
                    self._count("paragraphs_in_zones", 1)
                    self._count("characters_in_zones", len(item.text))
                    zone.paragraphs.append(item)

    def _count(self, cap: str, amount: int) -> None:
        self.read[cap] += amount
        if self.caps is not None and self.read[cap] > getattr(self.caps, cap):
            raise DocumentTooLarge(cap, getattr(self.caps, cap))

    def _block_zone(self, p: etree._Element) -> etree._Element | None:
        """The outermost astra: control holding the whole paragraph (None: the paragraph is outside)."""
        found = None
        for ancestor in p.iterancestors(W.sdt):
            if _astra(ancestor):
                found = ancestor
        return found

    def _in_zone_table(self, p: etree._Element, zone: etree._Element) -> bool:
        for ancestor in p.iterancestors():
            if ancestor is zone:
                return False
            if ancestor.tag == W.tbl:
                return True
        return False

    def _item(self, pieces: list[_Piece], paragraph_props: dict) -> Paragraph | None:
        pieces, speaker = self._without_lead(pieces)
        text = "".join(piece.text for piece in pieces)
        if not text.strip():
            return None
        runs: list[list] = []
        for piece in pieces:
            if runs and runs[-1][0] == piece.props:
                runs[-1][1] += piece.text
            elif piece.text:
                runs.append([piece.props, piece.text])
        return Paragraph(text, {"paragraph": paragraph_props, "runs": runs}, speaker)

    def _without_lead(self, pieces: list[_Piece]) -> tuple[list[_Piece], str | None]:
        text = "".join(piece.text for piece in pieces)
        lead = next((lead for lead in self.leads if text.startswith(lead)), None)
        if lead is None:
            return pieces, None
        rest, left = [], len(lead)
        for piece in pieces:
            if left <= 0:
                rest.append(piece)
                continue
            if piece.props.get("b", {}).get("val") != "1":
                return pieces, None  # not BUILDER's bold lead: the words are the text's own
            if len(piece.text) > left:
                rest.append(_Piece(piece.text[left:], piece.props, piece.zone))
            left -= len(piece.text)
        return rest, lead[:-2]

    # -- tables and images

    def _read_tables(self, sdt: etree._Element, zone: ZoneContent) -> None:
        content = sdt.find(W.sdtContent)
        if content is None:
            return
        for table in content.iter(W.tbl):
            if _in_fallback(table) or _nearest(table, W.tbl, stop=sdt) is not None:
                continue  # a copy, or a table nested in one of the zone's tables
            grid = []
            for row in _own(table, W.tr, W.tbl):
                grid.append([_cell_text(cell) for cell in _own(row, W.tc, W.tr)])
                self._count("characters_in_zones", sum(map(len, grid[-1])))
            zone.tables.append(grid)

    def _read_images(self, sdt: etree._Element, zone: ZoneContent) -> None:
        targets = {rel.id: rel.target_part for rel in self.pkg.relationships(self.part) if not rel.external}
        for el in sdt.iter(A.blip, f"{{{V_NS}}}imagedata"):
            if _in_fallback(el):
                continue
            rel_id = el.get(f"{{{R_NS}}}embed") if el.tag == A.blip else el.get(f"{{{R_NS}}}id")
            target = targets.get(rel_id or "")
            if target is not None and self.pkg.has(target):
                zone.images.append(hashlib.sha256(self.pkg.read_part(target)).hexdigest())


# --------------------------------------------------------------------------- helpers


def _walk(el: etree._Element, props: dict, zone: etree._Element | None, out: list[_Piece]) -> None:
    """The text ``el`` shows, as pieces carrying their run properties and the astra: control they are in."""
    for child in el:
        tag = child.tag
        if not isinstance(tag, str) or tag in _NOT_SHOWN:
            continue
        if tag == W.r:
            _walk(child, _props(child.find(W.rPr), _IGNORED_RUN_PROPS), zone, out)
        elif tag == W.t:
            out.append(_Piece(child.text or "", props, zone))
        elif tag == W.tab or tag == W.ptab:
            out.append(_Piece("\t", props, zone))
        elif tag in _BREAKS:
            out.append(_Piece("\n", props, zone))
        elif tag == W.noBreakHyphen:
            out.append(_Piece("-", props, zone))
        elif tag == W.sdt and zone is None and _astra(child):
            _walk(child, props, child, out)
        elif tag == MC.AlternateContent:
            choice = child.find(MC.Choice)
            if choice is not None:
                _walk(choice, props, zone, out)
        else:  # hyperlinks, other controls, smart tags, inserted or moved-to text, simple fields' results
            _walk(child, props, zone, out)


def _astra(sdt: etree._Element) -> bool:
    tag = wval(sdt.find(f"{W.sdtPr}/{W.tag}"))
    return tag is not None and tag.strip()[: len(_TAG_PREFIX)].lower() == _TAG_PREFIX


def _in_fallback(el: etree._Element) -> bool:
    return any(True for _ in el.iterancestors(MC.Fallback))


def _inside_paragraph(el: etree._Element) -> bool:
    """Run-level: a paragraph holds ``el`` before any container of blocks (a text box in a paragraph is one)."""
    for ancestor in el.iterancestors():
        if ancestor.tag == W.p:
            return True
        if ancestor.tag in _BLOCK_CONTAINERS:
            return False
    return False


def _nearest(el: etree._Element, tag: str, *, stop: etree._Element) -> etree._Element | None:
    for ancestor in el.iterancestors():
        if ancestor is stop:
            return None
        if ancestor.tag == tag:
            return ancestor
    return None


def _own(container: etree._Element, tag: str, owner_tag: str) -> list[etree._Element]:
    """The ``tag`` descendants of ``container`` whose nearest ``owner_tag`` ancestor is ``container`` (rows of
    a table, cells of a row, through row- and cell-level controls, not those of nested tables)."""
    return [el for el in container.iter(tag) if not _in_fallback(el) and
            next(el.iterancestors(owner_tag), None) is container]


def _cell_text(cell: etree._Element) -> str:
    texts = []
    for p in _own(cell, W.p, W.tc):
        pieces: list[_Piece] = []
        _walk(p, {}, None, pieces)
        texts.append("".join(piece.text for piece in pieces))
    return "\n".join(texts).strip()


def _split_lines(pieces: list[_Piece]) -> list[list[_Piece]]:
    lines: list[list[_Piece]] = [[]]
    for piece in pieces:
        if piece.text == "\n":
            lines.append([])
        else:
            lines[-1].append(piece)
    return lines


def _props(pr: etree._Element | None, ignored: frozenset[str]) -> dict:
    """Canonical properties of a ``w:rPr`` / ``w:pPr``: {local name: {attribute or child: value}}."""
    if pr is None:
        return {}
    out: dict = {}
    for child in pr:
        if not isinstance(child.tag, str) or not child.tag.startswith(_W):
            continue
        name = local_name(child.tag)
        if name in ignored:
            continue
        value = _element_value(child)
        if value is None:
            continue
        key, n = name, 1
        while key in out:  # repeated children (tabs' tab stops) keep their order
            n += 1
            key = f"{name}#{n}"
        out[key] = value
    return out


def _element_value(el: etree._Element) -> dict | None:
    name = local_name(el.tag)
    if name in _TOGGLES:
        return {"val": "1" if on_off(el) else "0"}
    attrs = {local_name(k): v for k, v in el.attrib.items()
             if not local_name(k).startswith("rsid") and local_name(k) not in _IGNORED_ATTRIBUTES}
    children = _props(el, frozenset())
    if not attrs and not children and len(el.attrib):
        return None  # only ignored attributes (a font hint): says nothing about the look
    return {**attrs, **children}


__all__ = ["DocumentTooLarge", "DocumentUnreadable", "DocumentZones", "Paragraph", "ReadCaps", "ZoneContent",
           "normalize", "read_zones"]
