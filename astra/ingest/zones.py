"""Zone map and style map extraction from a tenant's Word template (INGEST).

:func:`extract_maps` reads a .docx (bytes) through :mod:`astra.ooxml` and returns the **zone
map** and the **style map** (see ``astra/config_svc/schemas``), or raises :class:`TemplateRefused`.
The grammar (content-control tags, ``{{ zone_id }}`` placeholders, the sidecar, zone fields,
the fallback rule and the refusal codes) is documented in ``docs/zones.md``. A template in docxtpl's language
(:func:`astra.template_language.uses_jinja`) gets its zones from its Jinja expressions instead (``docs/templates.md``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from jsonschema import Draft202012Validator
from lxml import etree

from astra.ooxml.errors import PackageError
from astra.ooxml.ns import M_NS, MC, NSMAP, Names, W, qname
from astra.ooxml.package import Package
from astra.ooxml.wordml import element_path, story_parts, styles_part, theme_part, top_block, wval

from .styles import StyleAnchor, StyleSheet, zone_style

if TYPE_CHECKING:  # astra.template_language imports this module (paragraph_text): imported where used
    from astra.template_language import JinjaZone

__all__ = [
    "CONTROL_PARENTS",
    "JINJA_KINDS",
    "KINDS",
    "SIDECAR_SCHEMA_PATH",
    "REFUSAL_CODES",
    "RUN_CONTROL_PARENTS",
    "PlaceholderText",
    "TemplateMaps",
    "TextPiece",
    "TemplateRefused",
    "ZONE_ID_RE",
    "ZoneDecl",
    "control_place",
    "extract_maps",
    "field_depths",
    "load_known_intents",
    "paragraph_text",
    "parse_tag",
    "placeholder_texts",
    "scan_zones",
    "validate_sidecar",
    "zone_control_id",
]

KINDS = ("text", "list", "table", "image")  # the kinds of ASTRA's zone grammar (tags, placeholders)
JINJA_KINDS = ("text", "list", "table", "flag", "record")  # a docxtpl template's: its use of each name decides
TAG_PREFIX = "astra:"
TAG_KEYS = ("kind", "intents", "domains", "data", "media", "fallback", "speaker")
_FLAG_KEYS = ("fallback", "speaker")  # booleans: bare key = true
SIDECAR_SCHEMA_PATH = Path(__file__).with_name("sidecar.schema.json")
REFUSAL_CODES = (
    "invalid_package",
    "no_zones",
    "bad_zone_id",
    "invalid_tag",
    "duplicate_zone_id",
    "nested_zone",
    "unknown_intent",
    "unknown_domain",
    "invalid_sidecar",
    "unknown_sidecar_zone",
    "multiple_fallback_zones",
    "bad_fallback_zone",
    "no_fallback_zone",
    "bad_speaker_zone",
    "zone_unsupported_position",
    "jinja_syntax",
    "jinja_forbidden",
    "mixed_template_languages",
)

# A Jinja identifier (a docxtpl template's zones are its top-level names). The one pattern: the zone map, style map
# and sidecar schemas hold its text between ^ and $ (tests/ingest/test_jinja_zones.py compares them).
ZONE_ID_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
INTENT_RE = re.compile(r"[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)?")
DOMAIN_RE = re.compile(r"[a-z][a-z0-9_]*")
_SOURCE_RE = {
    "data": re.compile(r"data/(?!.*\.\.)[^\\;,\x00-\x1f]+"),
    "media": re.compile(r"media/(?!.*\.\.)[^\\;,\x00-\x1f]+"),
}
_TRUE = {"true", "yes", "1", "on"}
_FALSE = {"false", "no", "0", "off"}
_PLACEHOLDER_RE = re.compile(r"\{\{([^{}\x00]*)\}\}")
# A placeholder as a reader of any text sees one: what is left of a zone BUILDER did not fill.
_PLACEHOLDER_TEXT_RE = re.compile(r"\{\{\s*(" + ZONE_ID_RE.pattern + r")\s*\}\}")
_SEP = "\x00"  # stands for tabs, breaks, drawings, field characters, zone edges: a placeholder never spans one
_NOTE_PARTS = ("footnotes", "endnotes", "comments")
_MAX_LABEL = 200
_M = Names(M_NS)


class TemplateRefused(ValueError):
    """The template cannot be accepted. ``code`` is one of :data:`REFUSAL_CODES`;
    ``location`` is a zone-map style location (``part``/``block``/``path``), a sidecar
    location (``{"part": "sidecar", "path": "zones.x"}``) or None."""

    def __init__(self, code: str, message: str, location: dict | None = None):
        super().__init__(code, message, location)
        self.code = code
        self.message = message
        self.location = location

    def __str__(self) -> str:
        where = ""
        if self.location:
            where = " (at " + " ".join(f"{k}={v}" for k, v in self.location.items()) + ")"
        return f"{self.code}: {self.message}{where}"


class TemplateMaps(NamedTuple):
    zone_map: dict
    style_map: dict


@dataclass
class ZoneDecl:
    """One zone as declared in the template (before sidecar merge)."""

    id: str
    declared_by: str  # "content_control" | "placeholder"
    part: str
    block: int
    path: str
    element: etree._Element  # the w:sdt, or the w:p holding the placeholder
    anchor: StyleAnchor
    inferred_kind: str
    alias: str | None = None
    params: dict = field(default_factory=dict)  # parsed tag parameters
    runs: tuple = ()  # placeholder: the w:r elements the {{ ... }} spans
    # Where BUILDER puts the zone's content: "inline" among a paragraph's runs (a run-level control; a placeholder
    # with other content in its paragraph), "block" among blocks (a block-level control; a placeholder that is its
    # whole paragraph, which the zone's paragraphs replace), "row" or "cell" (a control among a table's rows or a
    # row's cells, which BUILDER cannot fill: INGEST refuses it).
    level: str = "block"
    span: tuple[int, int] | None = None  # placeholder: offsets in the paragraph's text (paragraph_text)

    @property
    def location(self) -> dict:
        return {"part": self.part, "block": self.block, "path": self.path}


# --------------------------------------------------------------------------- tag grammar


def parse_tag(value: str, location: dict | None = None) -> tuple[str, dict]:
    """Parse an ``astra:`` content-control tag into ``(zone_id, params)``.

    ``params`` holds only the keys given: ``kind`` (str), ``intents``/``domains`` (lists),
    ``data``/``media`` (str), ``fallback`` and ``speaker`` (bool).
    """
    text = value.strip()
    if not text[: len(TAG_PREFIX)].lower() == TAG_PREFIX:
        raise TemplateRefused("invalid_tag", f"tag {value!r} does not start with {TAG_PREFIX!r}", location)
    pieces = text[len(TAG_PREFIX) :].split(";")
    zone_id = pieces[0].strip()
    if not ZONE_ID_RE.fullmatch(zone_id):
        raise TemplateRefused(
            "bad_zone_id", f"zone id {zone_id!r} in tag {value!r} must match {ZONE_ID_RE.pattern}", location
        )
    params: dict = {}
    for raw in pieces[1:]:
        raw = raw.strip()
        if not raw:
            continue
        key, eq, val = raw.partition("=")
        key, val = key.strip().lower(), val.strip()
        if key not in TAG_KEYS:
            raise TemplateRefused(
                "invalid_tag", f"unknown parameter {key!r} in tag {value!r} (allowed: {', '.join(TAG_KEYS)})", location
            )
        if key in params:
            raise TemplateRefused("invalid_tag", f"parameter {key!r} given twice in tag {value!r}", location)
        if key in _FLAG_KEYS:
            if not eq or val.lower() in _TRUE:
                params[key] = True
            elif val.lower() in _FALSE:
                params[key] = False
            else:
                raise TemplateRefused("invalid_tag", f"{key}={val!r} is not a boolean in tag {value!r}", location)
            continue
        if not eq or not val:
            raise TemplateRefused("invalid_tag", f"parameter {key!r} needs a value in tag {value!r}", location)
        if key == "kind":
            if val not in KINDS:
                raise TemplateRefused(
                    "invalid_tag", f"kind={val!r} in tag {value!r} is not one of {', '.join(KINDS)}", location
                )
            params[key] = val
        elif key in ("intents", "domains"):
            pattern = INTENT_RE if key == "intents" else DOMAIN_RE
            items: list[str] = []
            for item in (x.strip() for x in val.split(",")):
                if not item or item in items:
                    continue
                if not pattern.fullmatch(item):
                    raise TemplateRefused(
                        "invalid_tag", f"{key} entry {item!r} in tag {value!r} is malformed", location
                    )
                items.append(item)
            params[key] = items
        else:  # data / media
            if not _SOURCE_RE[key].fullmatch(val):
                raise TemplateRefused(
                    "invalid_tag",
                    f"{key}={val!r} in tag {value!r} must be a pattern under {key}/ (no '..', '\\\\', ';' or ',')",
                    location,
                )
            params[key] = val
    return zone_id, params


def _astra_tag(sdt: etree._Element) -> str | None:
    val = wval(sdt.find(f"{W.sdtPr}/{W.tag}"))
    if val is not None and val.strip()[: len(TAG_PREFIX)].lower() == TAG_PREFIX:
        return val
    return None


def _is_astra_control(sdt: etree._Element) -> bool:
    return _astra_tag(sdt) is not None


def zone_control_id(sdt: etree._Element) -> str | None:
    """The zone id an ``astra:`` content control's tag names; None for any other control, or a malformed tag."""
    tag = _astra_tag(sdt)
    if tag is None:
        return None
    try:
        return parse_tag(tag)[0]
    except TemplateRefused:
        return None


# --------------------------------------------------------------------------- sidecar


@lru_cache(maxsize=1)
def _sidecar_validator() -> Draft202012Validator:
    schema = json.loads(SIDECAR_SCHEMA_PATH.read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def validate_sidecar(sidecar: object) -> dict:
    """Validate a sidecar against ``sidecar.schema.json``; returns it (``{}`` for None)."""
    if sidecar is None:
        return {}
    errors = sorted(_sidecar_validator().iter_errors(sidecar), key=lambda e: (list(e.absolute_path), e.message))
    if errors:
        err = errors[0]
        where = ".".join(str(p) for p in err.absolute_path) or "(root)"
        raise TemplateRefused("invalid_sidecar", f"sidecar {where}: {err.message}", {"part": "sidecar", "path": where})
    # JSON Schema regexes use search semantics ('$' accepts a trailing newline): re-check.
    for zid, spec in (sidecar.get("zones") or {}).items():
        if not ZONE_ID_RE.fullmatch(zid):
            raise TemplateRefused(
                "invalid_sidecar", f"sidecar zone id {zid!r} is malformed", {"part": "sidecar", "path": f"zones.{zid}"}
            )
        for key in ("data", "media"):
            if key in spec and not _SOURCE_RE[key].fullmatch(spec[key]):
                raise TemplateRefused(
                    "invalid_sidecar",
                    f"sidecar zones.{zid}.{key} is malformed",
                    {"part": "sidecar", "path": f"zones.{zid}.{key}"},
                )
        for key, pattern in (("intents", INTENT_RE), ("domains", DOMAIN_RE)):
            for item in spec.get(key, []):
                if not pattern.fullmatch(item):
                    raise TemplateRefused(
                        "invalid_sidecar",
                        f"sidecar zones.{zid}.{key} entry {item!r} is malformed",
                        {"part": "sidecar", "path": f"zones.{zid}.{key}"},
                    )
    fallback = sidecar.get("fallback_zone")
    if fallback is not None and not ZONE_ID_RE.fullmatch(fallback):
        raise TemplateRefused(
            "invalid_sidecar",
            f"sidecar fallback_zone {fallback!r} is malformed",
            {"part": "sidecar", "path": "fallback_zone"},
        )
    return sidecar


# --------------------------------------------------------------------------- known intents


def load_known_intents(domains_json_path: str | Path) -> set[str]:
    """Read a ``{domain: [intent, ...]}`` JSON file (CLINC150 ``domains.json``) into the set
    of plain intents (``book_flight``), domain-qualified intents (``travel.book_flight``)
    and domain names (``travel``)."""
    data = json.loads(Path(domains_json_path).read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{domains_json_path}: expected an object mapping domain -> list of intents")
    known: set[str] = set()
    for domain, intents in data.items():
        if not isinstance(domain, str) or not DOMAIN_RE.fullmatch(domain):
            raise ValueError(f"{domains_json_path}: bad domain name {domain!r}")
        if not isinstance(intents, list) or not all(isinstance(i, str) and DOMAIN_RE.fullmatch(i) for i in intents):
            raise ValueError(f"{domains_json_path}: domain {domain!r} must list intent names")
        known.add(domain)
        for intent in intents:
            known.add(intent)
            known.add(f"{domain}.{intent}")
    return known


class _Vocabulary:
    """Interprets a flat ``known_intents`` set: dotted names give the domains."""

    def __init__(self, known: set[str]):
        self.known = set(known)
        dotted = {k for k in self.known if "." in k}
        self.domains = {k.split(".", 1)[0] for k in dotted}
        self.plain = {k.split(".", 1)[1] for k in dotted} | {
            k for k in self.known if "." not in k and k not in self.domains
        }
        self.has_dotted = bool(dotted)

    def intent_ok(self, name: str) -> bool:
        return name in self.known if "." in name else name in self.plain

    def domain_ok(self, name: str) -> bool:
        return name in self.domains if self.has_dotted else name in self.known


# --------------------------------------------------------------------------- scanning

# Where ECMA-376 lets a run-level content control (CT_SdtRun) stand: the elements whose content is EG_PContent
# (w:p, w:hyperlink, w:fldSimple, w:smartTag, w:customXml, w:sdtContent, w:dir, w:bdo) or EG_ContentRunContent (the
# revision marks w:ins, w:del, w:moveFrom, w:moveTo). Not a run, nor ruby text or base (w:rt, w:rubyBase: runs and
# run-level marks only).
RUN_CONTROL_PARENTS = frozenset({W.p, W.hyperlink, W.fldSimple, W.smartTag, W.customXml, W.sdtContent, W.dir, W.bdo,
                                 W.ins, W("del"), W.moveFrom, W.moveTo})
# Where ECMA-376 lets a content control (w:sdt) stand in a story part (body, header, footer): among blocks
# (EG_ContentBlockContent: the story, a cell, a text box), among a table's rows, among a row's cells, among runs
# (RUN_CONTROL_PARENTS; w:sdtContent and w:customXml hold any of the four), and in an equation or one of its arguments
# (EG_PContentMath). Not in a run, ruby text or base, or directly in mc:AlternateContent. The one list: INGEST refuses
# a template with a control anywhere else, BUILDER's check fails a document with one (misplaced_control).
CONTROL_PARENTS = frozenset({
    W.body, W.hdr, W.ftr, W.tc, W.txbxContent, W.tbl, W.tr, *RUN_CONTROL_PARENTS,
    *(_M(name) for name in ("oMath", "e", "num", "den", "fName", "lim", "sub", "sup", "deg")),
})
# Where BUILDER may put the control of a placeholder zone: those, but not deleted or moved-away text (accepting the
# revision would take the zone with it).
_PLACEHOLDER_HOLDERS = RUN_CONTROL_PARENTS - {W("del"), W.moveFrom}
# What stands where its parent does: an mc:Choice's content (where its mc:AlternateContent is), a content control's.
_STANDS_FOR = {MC.Choice: MC.AlternateContent, W.sdtContent: W.sdt}
_SKIP_IN_PARAGRAPH = {W.pPr, W.rPr, W.sdtPr, W.sdtEndPr, MC.Fallback, W.moveFrom, W.p, W.txbxContent}
_SEPARATORS = {W.tab, W.ptab, W.br, W.cr, W.drawing, W.pict, W.object, W.fldChar}
_BLOCK_CONTAINERS = {W.body, W.hdr, W.ftr, W.tc, W.txbxContent, W.tbl, W.tr, W.footnote, W.endnote, W.comment}
_CONTROL_LEVELS = {W.p: "inline", W.tbl: "row", W.tr: "cell"}  # by the nearest of _BLOCK_CONTAINERS | {W.p}
# What a paragraph may hold beside its placeholder for the zone to be the whole paragraph (BUILDER replaces it with
# the zone's blocks): properties, range markers, proofing marks, and plain runs (properties, text, a rendering
# hint). Anything else (a tab, a field, a picture, a hyperlink, a tracked change...) would be lost: the zone is inline.
_PARAGRAPH_MARKS = frozenset(W(name) for name in (
    "bookmarkStart", "commentRangeStart", "permStart", "moveFromRangeStart", "moveToRangeStart", "bookmarkEnd",
    "commentRangeEnd", "permEnd", "moveFromRangeEnd", "moveToRangeEnd", "proofErr"))
_PLAIN_RUN_CHILDREN = frozenset({W.rPr, W.t, W.lastRenderedPageBreak})


class TextPiece(NamedTuple):
    """What :func:`paragraph_text` reads at ``[start, end)`` of a paragraph's text: a ``w:t`` (its text, maybe
    none), or a separator (one :data:`_SEP`): a tab, break, drawing or field character, or the ``w:sdt`` of a
    zone control at each of its edges."""

    start: int
    end: int
    element: etree._Element
    in_zone: bool  # inside a control ``is_zone`` accepts (its edges are not)


def paragraph_text(p: etree._Element, is_zone: Callable[[etree._Element], bool] = _is_astra_control,
                   ) -> tuple[str, list[TextPiece]]:
    """The text of ``p`` as the zone grammar reads it (docs/zones.md), and the pieces it is read from in order.

    Its own runs' ``w:t`` joined; a tab, break, drawing or field character, and each edge of a control
    ``is_zone`` accepts, one separating character a placeholder never spans; moved-from text, ``mc:Fallback``
    copies, text boxes, nested paragraphs and properties left out. The one reader for the zone scan, for
    :func:`placeholder_texts` and for BUILDER, which replaces a placeholder at the offsets the scan found it.
    """
    chunks: list[str] = []
    pieces: list[TextPiece] = []
    pos = 0

    def add(text: str, el: etree._Element, in_zone: bool) -> None:
        nonlocal pos
        chunks.append(text)
        pieces.append(TextPiece(pos, pos + len(text), el, in_zone))
        pos += len(text)

    def walk(el: etree._Element, in_zone: bool) -> None:
        for child in el:
            tag = child.tag
            if not isinstance(tag, str) or tag in _SKIP_IN_PARAGRAPH:
                continue
            if tag == W.t:
                add(child.text or "", child, in_zone)
            elif tag in _SEPARATORS:
                add(_SEP, child, in_zone)
            elif tag == W.sdt and not in_zone and is_zone(child):
                add(_SEP, child, False)
                walk(child, True)
                add(_SEP, child, False)
            else:
                walk(child, in_zone)

    walk(p, False)
    return "".join(chunks), pieces


def _spanned(pieces: list[TextPiece], start: int, end: int) -> list[TextPiece]:
    return [piece for piece in pieces if piece.start < end and piece.end > start]


def _nearest(el: etree._Element, tags: set[str], stop: etree._Element) -> etree._Element | None:
    cur = el.getparent()
    while cur is not None and cur is not stop:
        if cur.tag in tags:
            return cur
        cur = cur.getparent()
    return None


def _is_numbered(p: etree._Element | None, sheet: StyleSheet) -> bool:
    if p is None:
        return False
    ppr = p.find(W.pPr)
    if ppr is not None:
        num = ppr.find(W.numPr)
        if num is not None:
            num_id = wval(num.find(W.numId))
            if num_id is not None:
                return num_id.strip() != "0"
        pstyle = wval(ppr.find(W.pStyle))
    else:
        pstyle = None
    return sheet.has_numbering(sheet.paragraph_style_for(pstyle))


def _first_desc(el: etree._Element, tag: str) -> etree._Element | None:
    for found in el.iter(tag):
        if found is not el:
            return found
    return None


def _location(el: etree._Element, root: etree._Element, part: str) -> dict:
    return {"part": part, "block": top_block(el, root)[0], "path": element_path(el, root)}


def _content_control_kind(sdt_pr, table, paragraph, inline: bool, sheet: StyleSheet) -> str:
    if sdt_pr is not None and sdt_pr.find(W.picture) is not None:
        return "image"
    if table is not None and not inline:  # a table cannot go in a line of text
        return "table"
    return "list" if _is_numbered(paragraph, sheet) else "text"


def _content_control_decl(sdt: etree._Element, tag: str, root: etree._Element, part: str,
                          sheet: StyleSheet) -> ZoneDecl:
    """The zone an ``astra:`` content control declares: its tag, style anchor and inferred kind."""
    location = _location(sdt, root, part)
    zone_id, params = parse_tag(tag, location)
    sdt_pr = sdt.find(W.sdtPr)
    content = sdt.find(W.sdtContent)
    content = content if content is not None else sdt
    container = _nearest(sdt, _BLOCK_CONTAINERS | {W.p}, root)
    level = _CONTROL_LEVELS.get(container.tag, "block") if container is not None else "block"
    if level == "inline":
        paragraph = container
        run = _first_desc(content, W.r)
    else:  # block-, row- or cell-level control: its first paragraph and that one's first run
        paragraph = _first_desc(content, W.p)
        run = _first_desc(paragraph, W.r) if paragraph is not None else None
    table = _first_desc(content, W.tbl)
    if table is None:
        table = _nearest(sdt, {W.tbl}, root)
    return ZoneDecl(
        id=zone_id,
        declared_by="content_control",
        part=part,
        block=location["block"],
        path=location["path"],
        element=sdt,
        anchor=StyleAnchor(paragraph=paragraph, run=run, table=table, sdt=sdt),
        inferred_kind=_content_control_kind(sdt_pr, table, paragraph, level == "inline", sheet),
        alias=wval(sdt_pr.find(W.alias)) if sdt_pr is not None else None,
        params=params,
        level=level,
    )


def _placeholder_decls(p: etree._Element, zone_sdt: etree._Element | None, root: etree._Element, part: str,
                       sheet: StyleSheet) -> list[ZoneDecl]:
    """The zones ``{{ zone_id }}`` placeholders declare in one paragraph (found across split runs)."""
    text, pieces = paragraph_text(p)
    if "{{" not in text:
        return []
    decls = []
    for match in _PLACEHOLDER_RE.finditer(text):
        location = _location(p, root, part)
        inner = match.group(1).strip()
        if not ZONE_ID_RE.fullmatch(inner):
            raise TemplateRefused(
                "bad_zone_id",
                f"placeholder {match.group(0)!r} does not name a zone id ({ZONE_ID_RE.pattern})",
                location,
            )
        start, end = match.span()
        spanned = _spanned(pieces, start, end)
        if zone_sdt is not None or any(piece.in_zone for piece in spanned):
            raise TemplateRefused(
                "nested_zone", f"placeholder {match.group(0)!r} sits inside an astra content control", location
            )
        holders = [piece.element.getparent() for piece in spanned]
        misplaced = next((holder for holder in holders if holder.tag != W.r), None)
        if misplaced is not None:
            # BUILDER puts the zone's content control where the runs the placeholder spans were: beside a run it
            # can stand, inside mc:AlternateContent (say) it would make the document invalid.
            raise TemplateRefused(
                "zone_unsupported_position",
                f"placeholder {match.group(0)!r} has text in {qname(misplaced.tag)}, not directly in a run "
                "(w:r/w:t): BUILDER replaces the runs a placeholder spans with the zone's content control",
                location,
            )
        runs = list(dict.fromkeys(holders))
        for run in runs:
            outside = _outside_placeholder_holders(run, p)
            if outside is not None:
                raise TemplateRefused(
                    "zone_unsupported_position",
                    f"placeholder {match.group(0)!r} has text in a run inside {qname(outside.tag)} "
                    f"({element_path(run, p)} of its paragraph), where no content control can stand: BUILDER "
                    "replaces the runs a placeholder spans with the zone's content control, which stands only in the "
                    "paragraph or, inside it, in a hyperlink, simple field, smart tag, custom XML element, content "
                    "control, w:dir, w:bdo, inserted or moved-to text, or an mc:Choice standing in one of those",
                    location,
                )
        table = _nearest(p, {W.tbl}, root)
        level = "block" if _alone_in_paragraph(p, text, match.group(0)) else "inline"
        kind = "table" if table is not None and level == "block" else "list" if _is_numbered(p, sheet) else "text"
        decls.append(
            ZoneDecl(
                id=inner,
                declared_by="placeholder",
                part=part,
                block=location["block"],
                path=location["path"],
                element=p,
                anchor=StyleAnchor(paragraph=p, run=runs[0], table=table),
                inferred_kind=kind,
                runs=tuple(runs),
                span=(start, end),
                level=level,
            )
        )
    return decls


def _alone_in_paragraph(p: etree._Element, text: str, placeholder: str) -> bool:
    """Whether the placeholder is the whole of its paragraph ``p`` (``text`` as :func:`paragraph_text` reads it):
    nothing in it but :data:`_PARAGRAPH_MARKS`, plain runs, and the placeholder's text with blanks around."""
    for child in p:
        if not isinstance(child.tag, str):
            continue  # a comment or processing instruction
        if child.tag == W.r:
            if any(isinstance(c.tag, str) and c.tag not in _PLAIN_RUN_CHILDREN for c in child):
                return False
        elif child.tag != W.pPr and child.tag not in _PARAGRAPH_MARKS:
            return False
    return text.strip() == placeholder


def _outside_placeholder_holders(run: etree._Element, p: etree._Element) -> etree._Element | None:
    """The first element between ``run`` and its paragraph ``p`` that is not one of :data:`_PLACEHOLDER_HOLDERS`, or
    None: a zone's control may stand where ``run`` is. An ``mc:Choice`` or ``w:sdtContent`` is judged by where its
    ``mc:AlternateContent`` or ``w:sdt`` stands (:data:`_STANDS_FOR`)."""
    holder = run.getparent()
    while holder is not p:
        parent = holder.getparent()
        if _STANDS_FOR.get(holder.tag) == parent.tag:
            holder = parent.getparent()
        elif holder.tag in _PLACEHOLDER_HOLDERS:
            holder = parent
        else:
            return holder
    return None


def control_place(sdt: etree._Element) -> etree._Element:
    """The element ``sdt`` stands in: its parent, or for a branch of ``mc:AlternateContent`` (whose content stands
    where the alternate content does) the place of that. A control may stand there when its tag is one of
    :data:`CONTROL_PARENTS`."""
    parent = sdt.getparent()
    while parent.tag in (MC.Choice, MC.Fallback) and parent.getparent().tag == MC.AlternateContent:
        parent = parent.getparent().getparent()
    return parent


def _refuse_misplaced_controls(pkg: Package) -> None:
    """Refuse a template whose story parts hold a content control (a zone's or any other) where none may stand:
    BUILDER keeps or fills it where it is, and its check fails every build (misplaced_control)."""
    try:
        for part in story_parts(pkg):
            root = pkg.xml(part)
            story = root.find(W.body) if root.tag == W.document else root
            for sdt in root.iter(W.sdt):
                place = control_place(sdt)
                if place.tag in CONTROL_PARENTS:
                    continue
                zone_id = zone_control_id(sdt)
                what = f"the content control of zone {zone_id!r}" if zone_id else "a content control"
                raise TemplateRefused(
                    "zone_unsupported_position",
                    f"{what} stands in {qname(place.tag)}, where no content control may stand (ECMA-376): every "
                    "document built from this template would be invalid markup",
                    _location(sdt, story if story is not None else root, "/" + part))
    except PackageError as exc:
        raise TemplateRefused("invalid_package", str(exc)) from None


def _scan_story(root: etree._Element, part: str, sheet: StyleSheet) -> list[ZoneDecl]:
    """Every zone declared in one story, in document order; a zone inside a zone refuses."""
    decls: list[ZoneDecl] = []

    def walk(el: etree._Element, zone_sdt: etree._Element | None) -> None:
        for child in el:
            tag = child.tag
            if not isinstance(tag, str) or tag == MC.Fallback:
                continue
            if tag == W.sdt:
                astra = _astra_tag(child)
                if astra is not None:
                    if zone_sdt is not None:
                        raise TemplateRefused("nested_zone", f"content control {astra.strip()!r} sits inside "
                                              "another astra zone", _location(child, root, part))
                    decls.append(_content_control_decl(child, astra, root, part, sheet))
                    walk(child, child)
                    continue
            elif tag == W.p:
                decls.extend(_placeholder_decls(child, zone_sdt, root, part, sheet))
            walk(child, zone_sdt)

    walk(root, None)
    return decls


# --------------------------------------------------------------------------- what BUILDER's check sees


class PlaceholderText(NamedTuple):
    part: str  # member name, e.g. word/footnotes.xml
    zone_id: str
    element: etree._Element  # the w:p, or the mc:Fallback, whose own text holds it


def _text_parts(pkg: Package) -> list[str]:
    """Every part whose text Word shows: the story parts, then the main document's footnotes, endnotes and
    comments."""
    main = pkg.main_document()
    return list(dict.fromkeys(story_parts(pkg) + [name for kind in _NOTE_PARTS for name in pkg.related(main, kind)]))


def placeholder_texts(pkg: Package, zone_ids: Collection[str]) -> list[PlaceholderText]:
    """Every ``{{ zone_id }}`` text of the package that is no zone's content, in :func:`_text_parts` order.

    Text is read as the grammar reads it (:func:`paragraph_text`: each paragraph's own runs, joined across
    them; tabs, breaks, drawings and field characters separate; deleted and moved-from text left out), and
    the own text of every ``mc:Fallback`` is read too: the copy a reader without the ``mc:Choice``'s feature
    shows. In the story parts the content of a control tagged with one of ``zone_ids`` is that zone's (left
    out); footnotes, endnotes and comments hold no zone. One function for both sides: BUILDER's check finds
    the placeholders a built document still shows with it, INGEST the template's texts BUILDER will not fill.
    """
    ids = frozenset(zone_ids)
    story = set(story_parts(pkg))

    def declared(sdt: etree._Element) -> bool:
        return zone_control_id(sdt) in ids

    found: list[PlaceholderText] = []
    for part in _text_parts(pkg):
        is_zone = declared if part in story else _no_zone
        found += [PlaceholderText(part, zone_id, el) for zone_id, el in _placeholder_texts_in(pkg.xml(part), is_zone)]
    return found


def _no_zone(_sdt: etree._Element) -> bool:
    return False


def _placeholder_texts_in(root: etree._Element, is_zone: Callable[[etree._Element], bool]) -> list[tuple]:
    found: list[tuple[str, etree._Element]] = []

    def walk(el: etree._Element) -> None:
        for child in el:
            if not isinstance(child.tag, str) or (child.tag == W.sdt and is_zone(child)):
                continue
            if child.tag in (W.p, MC.Fallback):
                text, pieces = paragraph_text(child, is_zone)
                for match in _PLACEHOLDER_TEXT_RE.finditer(text):
                    if not any(piece.in_zone for piece in _spanned(pieces, *match.span())):
                        found.append((match.group(1), child))
            walk(child)

    walk(root)
    return found


def field_depths(root: etree._Element, anchors: Collection[etree._Element],
                 is_zone: Callable[[etree._Element], bool]) -> dict[etree._Element, int]:
    """How many complex fields are open at each of ``anchors`` (elements under ``root``): the ``begin`` and
    ``end`` field characters before it in document order, a stray ``end`` ignored. Field characters in an
    ``mc:Fallback`` (a copy of its choice) or inside a zone (content BUILDER replaces) do not count."""
    wanted = set(anchors)
    depths: dict[etree._Element, int] = {}
    depth = 0
    for el in root.iter(W.fldChar, *{a.tag for a in wanted}):
        if el in wanted:
            depths[el] = depth
        elif el.tag == W.fldChar and _counted(el, is_zone):
            depth = _step(depth, el)
    return depths


def _step(depth: int, fld_char: etree._Element) -> int:
    kind = (wval(fld_char, "fldCharType") or "").strip().lower()
    return depth + 1 if kind == "begin" else max(depth - 1, 0) if kind == "end" else depth


def _counted(fld_char: etree._Element, is_zone: Callable[[etree._Element], bool]) -> bool:
    return not any(a.tag == MC.Fallback or (a.tag == W.sdt and is_zone(a)) for a in fld_char.iterancestors())


def _open(docx_bytes: bytes) -> tuple[Package, StyleSheet]:
    try:
        pkg = Package.read(docx_bytes)
        styles_name = styles_part(pkg)
        theme_name = theme_part(pkg)
        sheet = StyleSheet(
            pkg.xml(styles_name) if styles_name else None,
            pkg.xml(theme_name) if theme_name else None,
        )
    except PackageError as exc:
        raise TemplateRefused("invalid_package", str(exc)) from None
    return pkg, sheet


def scan_zones(docx_bytes: bytes) -> list[ZoneDecl]:
    """Every zone the template declares, in document order (no sidecar, no validation of
    uniqueness). Raises :class:`TemplateRefused` for malformed declarations."""
    pkg, sheet = _open(docx_bytes)
    return _scan(pkg, sheet)


def _scan(pkg: Package, sheet: StyleSheet) -> list[ZoneDecl]:
    decls: list[ZoneDecl] = []
    try:
        for part in story_parts(pkg):
            root = pkg.xml(part)
            if root.tag == W.document:  # the main story is w:body, not the document element
                root = root.find(W.body)
                if root is None:
                    continue
            decls.extend(_scan_story(root, "/" + part, sheet))
    except PackageError as exc:
        raise TemplateRefused("invalid_package", str(exc)) from None
    return decls


# --------------------------------------------------------------------------- extraction


def _label(text: str | None) -> str | None:
    if not text:
        return None
    text = " ".join(text.split())
    return text[:_MAX_LABEL] or None


def _title(zone_id: str) -> str:
    """``site_photo`` -> ``Site Photo``; a capital inside a word is kept (``clientName`` -> ``ClientName``)."""
    return " ".join(word[:1].upper() + word[1:] for word in zone_id.split("_") if word) or zone_id


def extract_maps(
    docx_bytes: bytes,
    sidecar: dict | None = None,
    known_intents: set[str] | None = None,
) -> TemplateMaps:
    """Zone map and style map of a template. See docs/zones.md for the rules; a template in docxtpl's language
    (:func:`astra.template_language.uses_jinja`) is read by :func:`_extract_jinja_maps`."""
    from astra.template_language import uses_jinja

    side = validate_sidecar(sidecar)
    pkg, sheet = _open(docx_bytes)
    if uses_jinja(docx_bytes):
        return _extract_jinja_maps(docx_bytes, pkg, sheet, side, known_intents)
    try:
        return _extract_grammar_maps(pkg, sheet, side, known_intents)
    except TemplateRefused as refused:
        # A template of bare {{ name }} placeholders reads in both languages. ASTRA's grammar comes first (every
        # template accepted before reads as before); where it refuses what docxtpl's language accepts (a name
        # used twice, a placeholder in a footnote), the template is a docxtpl one.
        if not _docxtpl_accepts(refused) or not _only_placeholders(pkg, sheet):
            raise
        try:
            return _extract_jinja_maps(docx_bytes, pkg, sheet, side, known_intents)
        except TemplateRefused:
            raise refused from None


def _docxtpl_accepts(refused: TemplateRefused) -> bool:
    """What ASTRA's grammar refuses of bare placeholders and docxtpl's language accepts: a name used twice, a
    placeholder in a footnote (docxtpl renders footnotes; not endnotes or comments, where it would stay text)."""
    part = str((refused.location or {}).get("part", ""))
    return refused.code == "duplicate_zone_id" or (
        refused.code == "zone_unsupported_position" and part.startswith("/word/footnotes"))


def _only_placeholders(pkg: Package, sheet: StyleSheet) -> bool:
    try:
        return all(decl.declared_by == "placeholder" for decl in _scan(pkg, sheet))
    except TemplateRefused:
        return False


def _extract_grammar_maps(pkg: Package, sheet: StyleSheet, side: dict, known_intents: set[str] | None) -> TemplateMaps:
    """The maps of a template in ASTRA's zone grammar (content controls and ``{{ placeholder }}``s)."""
    decls = _scan(pkg, sheet)
    _refuse_misplaced_controls(pkg)
    _refuse_unfilled_controls(decls)
    _refuse_zones_in_unmirrored_choices(decls)
    _refuse_placeholders_left(pkg, decls)
    if not decls:
        raise TemplateRefused(
            "no_zones", "the template declares no zone (no astra: content control, no {{ placeholder }})"
        )
    by_id = _unique(decls)
    _refuse_fields_across_zone_edges(decls)
    _refuse_zones_in_fields(decls)
    side_zones: dict = side.get("zones") or {}
    side_fallback = side.get("fallback_zone")
    _check_sidecar_names(side_zones, side_fallback, by_id)
    vocab = _Vocabulary(known_intents) if known_intents is not None else None
    zones = [_zone_entry(decl, side_zones.get(decl.id, {}), vocab) for decl in decls]

    flagged = [(d.id, d.location) for d in decls if d.params.get("fallback") is True]
    fallback_id = _choose_fallback(flagged, zones, side_fallback, "/" + pkg.main_document())
    for zone in zones:
        zone["accepts"]["fallback"] = zone["id"] == fallback_id
    zone_map = {"zones": zones, "fallback_zone": fallback_id}
    style_map = {
        "defaults": sheet.document_defaults(),
        "zones": {decl.id: zone_style(sheet, decl.anchor) for decl in decls},
    }
    return TemplateMaps(zone_map=zone_map, style_map=style_map)


def _refuse_placeholders_left(pkg: Package, decls: list[ZoneDecl]) -> None:
    """Refuse a ``{{ zone_id }}`` text BUILDER would leave in the documents it builds, failing their check: one
    in a footnote, endnote or comment, or in an ``mc:Fallback`` BUILDER does not always rewrite. In the
    story parts outside ``mc:Fallback``, the check and the declaration scan read the same text, so every
    other placeholder text is a declared zone."""
    filled = {(d.element, d.id) for d in decls if d.declared_by == "placeholder"}
    mirrored = {c for d in decls if _placed_in_every_build(d) for c in d.element.iterancestors(MC.Choice)}
    story = set(story_parts(pkg))
    try:
        texts = placeholder_texts(pkg, {d.id for d in decls})
    except PackageError as exc:
        raise TemplateRefused("invalid_package", str(exc)) from None
    for text in texts:
        if (text.element, text.zone_id) in filled or _mirrored_by_builder(text.element, mirrored):
            continue
        root = text.element.getroottree().getroot()
        body = root.find(W.body) if root.tag == W.document else None
        location = _location(text.element, body if body is not None else root, "/" + text.part)
        if text.part in story:
            where = ("an mc:Fallback (what readers without text-box shapes show) whose mc:Choice holds no zone "
                     "BUILDER fills in every build, so BUILDER does not rewrite it")
        else:
            where = f"/{text.part}: BUILDER fills zones in the body, headers and footers only"
        raise TemplateRefused("zone_unsupported_position", f"{{{{ {text.zone_id} }}}} is text in {where}; "
                              "every document built from this template would show it", location)


def _placed_in_every_build(decl: ZoneDecl) -> bool:
    """BUILDER puts content in a placeholder zone on every build, and in a content control unless it shows its own
    placeholder text (kept when the zone is empty)."""
    if decl.declared_by == "placeholder":
        return True
    sdt_pr = decl.element.find(W.sdtPr)
    return sdt_pr is None or sdt_pr.find(W.showingPlcHdr) is None


def _refuse_unfilled_controls(decls: list[ZoneDecl]) -> None:
    """Refuse a zone whose control stands among a table's rows or a row's cells: BUILDER cannot put generated
    content there and would leave it as it is on every build, losing what is routed to it (all that matches no
    other zone, were it the fallback zone)."""
    for decl in decls:
        if decl.level in ("row", "cell"):
            among = "a table's rows" if decl.level == "row" else "a row's cells"
            raise TemplateRefused(
                "zone_unsupported_position",
                f"zone {decl.id!r} is a content control among {among}: BUILDER cannot fill a row- or cell-level "
                "control, and what the zone receives would be lost; put the control inside a cell (around its "
                "paragraphs) or around the whole table", decl.location)


def _refuse_zones_in_unmirrored_choices(decls: list[ZoneDecl]) -> None:
    """Refuse a zone in an ``mc:Choice`` with an ``mc:Fallback`` unless the zone sits in a text box of the choice:
    BUILDER fills the choice and removes the fallback, so a reader that cannot use the choice (an unknown
    ``Requires``) would show nothing. A fallback whose text boxes pair with the choice's takes copies of them; one
    that does not shows the text box's shape without the zone, and is dropped (``mc:Fallback`` is optional)."""
    for decl in decls:
        start = decl.runs[0] if decl.runs else decl.element
        for choice in start.iterancestors(MC.Choice):
            if choice.getparent().find(MC.Fallback) is None or _nearest(start, {W.txbxContent}, choice) is not None:
                continue
            raise TemplateRefused(
                "zone_unsupported_position",
                f"zone {decl.id!r} sits in an mc:Choice (Requires={choice.get('Requires')!r}) beside an mc:Fallback, "
                "outside any text box: BUILDER fills the choice and removes the fallback, so a reader that cannot "
                "use the choice would show nothing where the zone is; put the zone outside the alternate content",
                decl.location)


def _mirrored_by_builder(el: etree._Element, mirrored: set) -> bool:
    """Whether ``el`` sits in a text box of an ``mc:Fallback`` whose ``mc:Choice`` holds a zone BUILDER fills
    in every build: BUILDER then gives the fallback's text boxes copies of the choice's (or drops a fallback
    whose text boxes do not pair with them)."""
    in_box = False
    for ancestor in el.iterancestors():
        if ancestor.tag == W.txbxContent:
            in_box = True
        elif ancestor.tag == MC.Fallback and in_box:
            if any(choice in mirrored for choice in ancestor.itersiblings(MC.Choice, preceding=True)):
                return True
    return False


def _refuse_zones_in_fields(decls: list[ZoneDecl]) -> None:
    """Refuse a zone BUILDER cannot keep out of a field's result (which Word replaces whenever the field is
    updated): a zone in a field is moved after it only when the field begins and ends in the zone's paragraph."""
    places = [_field_place(decl) for decl in decls]
    by_root: dict[etree._Element, list[etree._Element]] = {}
    for place in places:
        by_root.setdefault(place[0].getroottree().getroot(), []).extend(el for el in place if el is not None)
    depths: dict[etree._Element, int] = {}
    for root, anchors in by_root.items():
        depths.update(field_depths(root, anchors, _is_astra_control))
    for decl, (anchor, paragraph) in zip(decls, places, strict=True):
        if paragraph is not None and depths[paragraph] and _carried_field_open(anchor, paragraph, depths[paragraph]):
            where = "in a field begun in an earlier paragraph"
        elif depths[anchor] and (paragraph is None or not _field_ends_after(anchor, paragraph, depths[anchor])):
            where = "in a field that spans paragraphs"
        else:
            continue
        raise TemplateRefused(
            "zone_unsupported_position",
            f"zone {decl.id!r} sits {where}: Word replaces a field's result whenever it updates the field, and "
            "BUILDER moves a zone out of a field only when the field begins and ends in the zone's paragraph",
            decl.location)


def _refuse_fields_across_zone_edges(decls: list[ZoneDecl]) -> None:
    """Refuse a content-control zone holding part of a field: a field character or field code whose field begins
    or ends outside the zone. BUILDER replaces the zone's content, and the field's other part, left outside,
    becomes a field the template never had (or a stray field character)."""
    for decl in decls:
        if decl.declared_by != "content_control":
            continue
        open_fields = 0
        for el in decl.element.iter(W.fldChar, W.instrText, W.delInstrText):
            if any(a.tag == MC.Fallback for a in el.iterancestors()):
                continue  # a copy of its mc:Choice, counted there
            kind = (wval(el, "fldCharType") or "").strip().lower() if el.tag == W.fldChar else "code"
            if kind == "begin":
                open_fields += 1
            elif kind == "end" and open_fields:
                open_fields -= 1
            elif not open_fields and kind in ("end", "separate", "code"):
                part = {"end": "the end", "separate": "the separator", "code": "code"}[kind]
                _refuse_split_field(decl, f"{part} of a field begun before it")
        if open_fields:
            _refuse_split_field(decl, "the beginning of a field that ends after it")


def _refuse_split_field(decl: ZoneDecl, what: str) -> None:
    raise TemplateRefused(
        "zone_unsupported_position",
        f"zone {decl.id!r} holds {what}: BUILDER replaces the zone's content, and the part of the field left "
        "outside it would make a field the template does not have; a zone holds whole fields or none",
        decl.location)


def _field_place(decl: ZoneDecl) -> tuple[etree._Element, etree._Element | None]:
    """Where a zone starts, and the paragraph it is inline in (None: a block-level content control)."""
    if decl.declared_by == "placeholder":
        return (decl.runs[0] if decl.runs else decl.element), decl.element
    root = decl.element.getroottree().getroot()
    container = _nearest(decl.element, _BLOCK_CONTAINERS | {W.p}, root)
    return decl.element, container if container is not None and container.tag == W.p else None


def _carried_field_open(anchor: etree._Element, paragraph: etree._Element, carried: int) -> bool:
    """Whether one of the ``carried`` fields open at ``paragraph``'s start is still open at ``anchor``: an ``end``
    before the anchor, with no field begun in the paragraph open, closes one of them."""
    begun_here = 0
    for el in paragraph.iter(W.fldChar, anchor.tag):
        if el is anchor:
            return True
        if el.tag == W.fldChar and _counted(el, _is_astra_control):
            kind = (wval(el, "fldCharType") or "").strip().lower()
            if kind == "begin":
                begun_here += 1
            elif kind == "end" and begun_here:
                begun_here -= 1
            elif kind == "end":
                carried -= 1
                if not carried:
                    return False
    return True


def _field_ends_after(anchor: etree._Element, paragraph: etree._Element, depth: int) -> bool:
    """Whether the ``depth`` fields open at ``anchor`` all end later in ``paragraph`` (not inside the anchor)."""
    after = False
    for el in paragraph.iter(W.fldChar, anchor.tag):
        if el is anchor:
            after = True
        elif after and el.tag == W.fldChar and all(a is not anchor for a in el.iterancestors()) and _counted(
                el, _is_astra_control):
            depth = _step(depth, el)
            if depth == 0:
                return True
    return False


def _unique(decls: list[ZoneDecl]) -> dict[str, ZoneDecl]:
    """Declarations by zone id; a second declaration of an id refuses the template."""
    seen: dict[str, ZoneDecl] = {}
    for decl in decls:
        if decl.id in seen:
            first = seen[decl.id]
            raise TemplateRefused(
                "duplicate_zone_id",
                f"zone {decl.id!r} declared twice ({first.declared_by} at {first.part} block {first.block}, "
                f"{decl.declared_by} at {decl.part} block {decl.block})",
                decl.location,
            )
        seen[decl.id] = decl
    return seen


def _check_sidecar_names(side_zones: dict, side_fallback: str | None, by_id: dict[str, ZoneDecl]) -> None:
    """Every zone the sidecar names (and its fallback_zone) must be declared by the template."""
    for zid in side_zones:
        if zid not in by_id:
            raise TemplateRefused(
                "unknown_sidecar_zone", f"sidecar names zone {zid!r}, which the template does not declare",
                {"part": "sidecar", "path": f"zones.{zid}"},
            )
    if side_fallback is not None and side_fallback not in by_id:
        raise TemplateRefused(
            "unknown_sidecar_zone", f"sidecar fallback_zone {side_fallback!r} is not a zone of the template",
            {"part": "sidecar", "path": "fallback_zone"},
        )


def _accepts(zone_id: str, params: dict, location: dict, over: dict, vocab: _Vocabulary | None) -> dict:
    """What the zone accepts: sidecar (``over``) over tag (``params``); intents and domains checked against the
    catalog (a refusal names the zone's ``location``)."""
    accepts: dict = {
        "intents": list(over.get("intents", params.get("intents", []))),
        "domains": list(over.get("domains", params.get("domains", []))),
    }
    for key in ("data", "media"):
        value = over.get(key, params.get(key))
        if value is not None:
            accepts[key] = value
    if vocab is None:
        return accepts
    for name in accepts["intents"]:
        if not vocab.intent_ok(name):
            raise TemplateRefused("unknown_intent", f"zone {zone_id!r} binds unknown intent {name!r}", location)
    for name in accepts["domains"]:
        if not vocab.domain_ok(name):
            raise TemplateRefused("unknown_domain", f"zone {zone_id!r} binds unknown domain {name!r}", location)
    return accepts


def _zone_entry(decl: ZoneDecl, over: dict, vocab: _Vocabulary | None) -> dict:
    """One zone of the zone map; precedence for every field: sidecar > template > inference."""
    kind = over.get("kind") or decl.params.get("kind") or decl.inferred_kind
    if kind not in KINDS:
        raise TemplateRefused(
            "invalid_sidecar", f"sidecar gives zone {decl.id!r} kind {kind!r}, a kind of docxtpl templates only (the "
            f"template's use of a name decides it); this template's zones are one of {', '.join(KINDS)}",
            {"part": "sidecar", "path": f"zones.{decl.id}.kind"})
    if kind == "table" and decl.level == "inline":
        where = {"part": "sidecar", "path": f"zones.{decl.id}.kind"} if "kind" in over else decl.location
        raise TemplateRefused(
            "zone_unsupported_position", f"zone {decl.id!r} is a table zone inline in a line of text: a table "
            "cannot go there, and BUILDER would drop every table of the zone; make the zone its own paragraph, or "
            "a block-level control", where)
    entry = {
        "id": decl.id,
        "label": _label(over.get("label")) or _label(decl.alias) or _title(decl.id),
        "kind": kind,
        "declared_by": decl.declared_by,
        "location": decl.location,
        "accepts": _accepts(decl.id, decl.params, decl.location, over, vocab),
    }
    if over.get("speaker", decl.params.get("speaker", False)):
        if kind not in ("text", "list"):
            where = {"part": "sidecar", "path": f"zones.{decl.id}.speaker"} if "speaker" in over else decl.location
            raise TemplateRefused(
                "bad_speaker_zone", f"zone {decl.id!r} asks for the speaker but is a {kind} zone: only text and "
                "list zones lead their utterances with the speaker", where,
            )
        # Written only when asked for: zone maps made before the flag existed stay as they were.
        entry["speaker"] = True
    return entry


def _choose_fallback(flagged: list[tuple[str, dict]], zones: list[dict], side_fallback: str | None,
                     main_part: str) -> str:
    """The fallback zone (docs/zones.md): the sidecar's, else the one zone ``flagged`` by its tag (id, location),
    else the last text zone of ``main_part``, of any part, the last list zone."""
    by_id = {z["id"]: z for z in zones}
    explicit: str | None = side_fallback
    where: dict | None = {"part": "sidecar", "path": "fallback_zone"} if side_fallback else None
    if explicit is None:
        if len(flagged) > 1:
            raise TemplateRefused(
                "multiple_fallback_zones",
                "more than one zone is flagged fallback: " + ", ".join(zone_id for zone_id, _ in flagged),
                flagged[1][1],
            )
        if flagged:
            explicit, where = flagged[0]
    if explicit is not None:
        kind = by_id[explicit]["kind"]
        if kind not in ("text", "list"):
            raise TemplateRefused(
                "bad_fallback_zone", f"fallback zone {explicit!r} is a {kind} zone; it must be text or list", where
            )
        return explicit
    text_main = [z for z in zones if z["kind"] == "text" and z["location"]["part"] == main_part]
    text_any = [z for z in zones if z["kind"] == "text"]
    lists = [z for z in zones if z["kind"] == "list"]
    for group in (text_main, text_any, lists):
        if group:
            return group[-1]["id"]
    # Unmatched utterances are prose: a table or image zone cannot take them, so such a template has no fallback.
    raise TemplateRefused(
        "no_fallback_zone",
        "no text or list zone to receive the utterances no other zone accepts; zones: "
        + ", ".join(f"{z['id']} ({z['kind']})" for z in zones),
        None,
    )


# --------------------------------------------------------------------------- docxtpl templates

_STEP_RE = re.compile(r"(\w+):(\w+)\[(\d+)\]")
# A Jinja tag as a paragraph's text shows it: where a zone's first use starts (its style anchor's run).
_JINJA_TAG_RE = re.compile(r"\{\{.*?\}\}|\{%.*?%\}", re.S)


def _extract_jinja_maps(docx_bytes: bytes, pkg: Package, sheet: StyleSheet, side: dict,
                        known_intents: set[str] | None) -> TemplateMaps:
    """Zone map and style map of a docxtpl template: its zones are :class:`astra.template_language.JinjaTemplate`'s
    (kind, fields and marked from the template's use of each name), completed by the sidecar (labels, bindings,
    fallback zone); the fallback rule is the grammar's. docs/zones.md, "docxtpl templates"."""
    from astra.template_language import JinjaTemplate

    template = JinjaTemplate.read(docx_bytes)  # its refusals are TemplateRefused (TemplateLanguageError)
    _refuse_misplaced_controls(pkg)
    if not template.zones:
        raise TemplateRefused("no_zones", "the docxtpl template uses no name: it has no zone to fill")
    side_zones: dict = side.get("zones") or {}
    side_fallback = side.get("fallback_zone")
    _check_sidecar_names(side_zones, side_fallback, {zone.id: zone for zone in template.zones})
    vocab = _Vocabulary(known_intents) if known_intents is not None else None
    zones = [_jinja_zone_entry(zone, side_zones.get(zone.id, {}), vocab) for zone in template.zones]
    fallback_id = _choose_fallback([], zones, side_fallback, "/" + pkg.main_document())
    for zone in zones:
        zone["accepts"]["fallback"] = zone["id"] == fallback_id
    style_map = {
        "defaults": sheet.document_defaults(),
        "zones": {zone["id"]: zone_style(sheet, _jinja_anchor(pkg, zone["id"], zone["location"])) for zone in zones},
    }
    return TemplateMaps(zone_map={"language": "jinja", "zones": zones, "fallback_zone": fallback_id},
                        style_map=style_map)


def _jinja_zone_entry(zone: JinjaZone, over: dict, vocab: _Vocabulary | None) -> dict:
    """One zone of a docxtpl template's zone map. The template's use decides the kind: a sidecar may repeat it, not
    change it; it cannot ask for the speaker (an expression decides what a zone shows: ``{{ item.speaker }}`` in a
    list zone's loop)."""
    if "kind" in over and over["kind"] != zone.kind:
        raise TemplateRefused(
            "invalid_sidecar", f"sidecar gives zone {zone.id!r} kind {over['kind']!r}, but the template uses it as a "
            f"{zone.kind} zone: the template's use decides", {"part": "sidecar", "path": f"zones.{zone.id}.kind"})
    if over.get("speaker"):
        raise TemplateRefused(
            "bad_speaker_zone", f"zone {zone.id!r} of a docxtpl template asks for the speaker: the template's "
            "expressions decide what a zone shows (an utterance's speaker is item.speaker in a list zone's loop)",
            {"part": "sidecar", "path": f"zones.{zone.id}.speaker"})
    location = {key: zone.location[key] for key in ("part", "block", "path") if key in zone.location}
    entry = {
        "id": zone.id,
        "label": _label(over.get("label")) or _title(zone.id),
        "kind": zone.kind,
        "declared_by": "jinja",
        "location": location,
        "accepts": _accepts(zone.id, {}, location, over, vocab),
    }
    if zone.fields:
        entry["fields"] = list(zone.fields)
    entry["marked"] = zone.marked
    return entry


def _jinja_anchor(pkg: Package, zone_id: str, location: dict) -> StyleAnchor:
    """Where a docxtpl zone's formatting is read from, as for a placeholder: the paragraph of its first use, the
    run where the first tag naming it there starts, the table round it."""
    root = pkg.xml(location["part"].lstrip("/"))
    story = root.find(W.body) if root.tag == W.document else root
    el = _element_at(story, location.get("path", ""))
    paragraph = el if el is None or el.tag == W.p else _first_desc(el, W.p)
    if paragraph is None:
        return StyleAnchor(paragraph=None)
    return StyleAnchor(paragraph=paragraph, run=_tag_run(paragraph, zone_id), table=_nearest(paragraph, {W.tbl}, story))


def _element_at(root: etree._Element, path: str) -> etree._Element | None:
    """The element :func:`astra.ooxml.wordml.element_path` names under ``root``; None when there is none."""
    el = root
    for step in filter(None, path.split("/")):
        match = _STEP_RE.fullmatch(step)
        ns = NSMAP.get(match.group(1)) if match else None
        if ns is None:
            return None
        siblings = el.findall(f"{{{ns}}}{match.group(2)}")
        index = int(match.group(3))
        if index >= len(siblings):
            return None
        el = siblings[index]
    return el


def _tag_run(paragraph: etree._Element, zone_id: str) -> etree._Element | None:
    """The run where the paragraph's first Jinja tag naming ``zone_id`` starts (else its first tag; else None)."""
    text, pieces = paragraph_text(paragraph)
    tags = list(_JINJA_TAG_RE.finditer(text))
    name = re.compile(r"(?<![\w.])" + re.escape(zone_id) + r"(?!\w)")
    tag = next((t for t in tags if name.search(t.group(0))), tags[0] if tags else None)
    if tag is None:
        return None
    holder = next((piece.element.getparent() for piece in pieces if piece.end > tag.start()), None)
    return holder if holder is not None and holder.tag == W.r else None
