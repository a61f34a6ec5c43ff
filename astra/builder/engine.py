"""BUILDER: a session's document from the template, its zone and style maps, the intent output and media.

:func:`build` fills every zone of the zone map and returns a :class:`BuildResult` (the .docx bytes,
their sha256, what went into each zone, and the problems met: refused images, truncations).

* **Zones.** ``text``/``list`` zones get their utterances, one paragraph (or list item) each, in
  the intent output's time order, each led by its speaker where the zone map's zone says
  ``"speaker": true``;
  ``table`` zones get their bound tables as Word tables (a header row repeated on every page,
  numbers right-aligned, dates in the locale's pattern); ``image`` zones get their images
  (:mod:`astra.builder.media`). An empty zone gets nothing; a content control showing its
  placeholder text (``w:showingPlcHdr``) keeps it.
* **Marking.** A content-control zone stays that content control (its ``showingPlcHdr``,
  ``dataBinding`` — which would overwrite the content from custom XML — and special types
  such as plain text or date pickers are dropped so it holds rich content). DECISION: a
  ``{{ zone_id }}`` placeholder is replaced in place by a new content control tagged
  ``astra:<zone_id>;kind=<kind>`` (title = the zone's label, locked against deletion, content
  editable), not by a bookmark: the zone grammar of ``docs/zones.md`` then finds every zone of
  the output the same way it found them in the template, a control survives users editing its
  content (a bookmark is lost when its text is retyped or cut), and Word shows the zone's title.
  A placeholder alone in its paragraph becomes a block-level control holding paragraphs; one
  inside other text becomes an inline control, the runs around it split and kept. An inline zone
  (either way declared) is placed right after the hyperlink or field it sat in, if any (user
  content is never a link's text, nor a field's result that Word replaces on update). A filled
  control keeps only a lock against its deletion (a content lock or a repeating section would
  make the content uneditable or the control invalid). A zone in a text box is filled in the
  box's ``mc:Fallback`` copy too, so no reader sees the template's placeholder.
* **Formatting** comes from the style map: paragraphs take the zone paragraph's own properties
  (its style, numbering, spacing) or, without one, the mapped paragraph style; runs take the
  mapped character style plus, as direct formatting, exactly the resolved properties the styles
  alone would not give (so the text looks like the template's zone, and stays restyled by it).
* **Untouched outside zones.** Story parts are rewritten block by block
  (:func:`astra.ooxml.edit.splice_blocks`): a top-level block holding no zone keeps every byte,
  so it is the same atom in the template and in the output.
* **Media** go into the package (``word/media/astra-<sha256>.<ext>``, one part per distinct
  image, an internal relationship, a Default content type), never linked. Each is decoded once and
  stored no finer than ``BuildCaps.image_dpi`` at the largest size it is shown, and the stored pictures of one
  document stay under ``max_document_image_bytes`` (one past it is left out and reported).
* **Sanitized** (:mod:`astra.builder.sanitize`): text is only ever text.
* **Deterministic:** fixed zip timestamps and member order (the template's, then new parts by
  name), new ids counted up from the template's highest (:class:`_Ids`), content-addressed media names.

**docxtpl templates** (a zone map whose ``"language"`` is ``"jinja"``, issue 11): the template is rendered by
:class:`astra.template_language.JinjaTemplate` (read once per template, as the zone grammar's templates are) with
the context :func:`astra.builder.jinja_context.jinja_context` makes of the intent output; the template's own tags
place, repeat and format everything, and the renderer cleans and escapes every value and marks the zones it can
(``astra:<id>;kind=<kind>`` controls). Fills are counted per zone as for every template; a zone's text and cells are
cut at the same caps; a render the data makes fail (a loop or output cap, a division by zero) is a
:class:`BuildError`. Such a template has no image zone: ``media`` is not read.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import posixpath
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from copy import deepcopy
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Generic, TypeVar

from lxml import etree

from astra.ingest.styles import StyleSheet
from astra.ingest.zones import (
    KINDS,
    TemplateRefused,
    ZoneDecl,
    field_depths,
    paragraph_text,
    scan_zones,
    zone_control_id,
)
from astra.ooxml.edit import (
    add_content_type_defaults,
    add_relationships,
    fragment_xml,
    next_relationship_ids,
    splice_blocks,
)
from astra.ooxml.errors import PackageError
from astra.ooxml.ns import MC, R_NS, RT_TRANSITIONAL, W14_NS, W15_NS, W_NS, W_STRICT_NS, WP_NS, W, local_name
from astra.ooxml.package import CONTENT_TYPES_PART, Package, write_package
from astra.ooxml.partname import rels_part_for
from astra.ooxml.rels import Relationship
from astra.ooxml.wordml import MAX_ID, id_parts, numeric_ids, styles_part, theme_part, top_block
from astra.ooxml.xml import hardened_parser
from astra.template_language import JinjaTemplate, RenderCaps, RenderError, TemplateLanguageError

from . import wml
from .cells import NUMERIC_TYPES, CellFormat
from .jinja_context import ContextError, jinja_context
from .media import ImageRefused, PreparedImage, pixel_box, prepare_image
from .sanitize import clean_text, text_runs, truncate

MiB = 1024 * 1024
_PLAIN_INT = re.compile(r"[0-9]{1,18}")
_MIN_FRAME_TWIPS = 360  # a quarter inch
_WP = f"{{{WP_NS}}}"
# Content-control properties dropped when BUILDER fills a control: they would hide, replace or
# restrict what was put in (a placeholder flag, a custom-XML binding, single-value control types,
# a repeating section, which Word declares invalid around content it did not repeat).
_SDT_PR_DROPPED = {W.showingPlcHdr, W.dataBinding, W.text, W.date, W.dropDownList, W.comboBox, W.docPartList,
                   W.docPartObj, W.citation, W.bibliography, W.equation, W.group,
                   f"{{{W14_NS}}}checkbox", f"{{{W15_NS}}}repeatingSection", f"{{{W15_NS}}}repeatingSectionItem"}
# A filled control's lock keeps only its part against deleting the control: its content is the user's to edit.
_LOCK_KEPT = {"contentLocked": None, "sdtContentLocked": "sdtLocked", "sdtLocked": "sdtLocked"}
_NEEDED_NS = {"w": W_NS, "r": R_NS, "wp": WP_NS}
_IMAGE_REL = RT_TRANSITIONAL + "image"
_MARKERS = ("bookmarkStart", "commentRangeStart", "permStart", "moveFromRangeStart", "moveToRangeStart")
_END_MARKERS = ("bookmarkEnd", "commentRangeEnd", "permEnd", "moveFromRangeEnd", "moveToRangeEnd")
_XML_SPACE = "{http://www.w3.org/XML/1998/namespace}space"
_DEFAULT_TEXT_WIDTH_TWIPS = 9360  # 6.5 in: Letter with 1 in margins, when a part says nothing
_WIDTH_SAMPLE_ROWS = 200
T = TypeVar("T")


class BuildError(ValueError):
    """The inputs cannot make a document: the template is unreadable, or the zone map or the
    intent output does not fit it."""


@dataclass(frozen=True)
class BuildCaps:
    max_zone_chars: int = 200_000  # text per text/list zone; beyond it a visible note says what was cut
    max_cell_chars: int = 2_000
    max_image_bytes: int = 20 * MiB
    max_image_pixels: int = 40_000_000  # checked on the declared size, before decoding
    max_images_per_zone: int = 50
    image_dpi: int = 200  # a larger picture is stored scaled down to this resolution at its shown size
    max_document_image_bytes: int = 50 * MiB  # all stored pictures; one past it is left out and reported
    render: RenderCaps = RenderCaps()  # a docxtpl template's render: loop iterations, rendered XML per part


@dataclass(frozen=True)
class BuildProblem:
    zone: str | None
    code: str  # image_refused, image_dropped, truncated, cell_truncated, zone_unsupported_position
    detail: str

    def to_json(self) -> dict:
        return {"zone": self.zone, "code": self.code, "detail": self.detail}


@dataclass(frozen=True)
class BuildResult:
    docx: bytes
    sha256: str
    fills: dict[str, dict]  # zone id -> {"kind", "items", ...}
    problems: list[BuildProblem]

    @property
    def size(self) -> int:
        return len(self.docx)


def build(
    template: bytes,
    zone_map: dict,
    style_map: dict,
    intent_output: dict,
    media: Mapping[str, bytes] | None = None,
    *,
    locale: str | None = None,
    caps: BuildCaps = BuildCaps(),
) -> BuildResult:
    """Fill the template's zones (see the module docstring). ``media`` maps names as in the
    session folder (``media/site.png``) to bytes; an image zone takes the names its intent-output
    entry lists under ``media``, else those matching its ``accepts.media`` pattern. ``locale``
    defaults to the intent output's."""
    locale = locale if locale is not None else intent_output.get("locale")
    if zone_map.get("language") == "jinja":
        return _build_jinja(template, zone_map, intent_output, locale, caps)
    try:
        return _Builder(template, zone_map, style_map, intent_output, dict(media or {}), locale, caps).run()
    except PackageError as exc:  # a part read or written mid-build (relationships, content types, a story)
        raise BuildError(f"the template cannot be built: {exc}") from None


# --------------------------------------------------------------------------- the template, read once


@dataclass(frozen=True)
class _Template:
    """What a build reads from its template: the package, the zone declarations (elements of its
    parsed parts), the style sheet and the ids in use. Never modified by a build: a zone
    that needs its part's tree changed works on a copy (:meth:`_PartEdit.working`)."""

    pkg: Package
    decls: dict[str, ZoneDecl]
    sheet: StyleSheet
    used_ids: frozenset[int]

    @classmethod
    def read(cls, data: bytes) -> _Template:
        try:
            decls = scan_zones(data)
            pkg = Package.read(data)
            styles, theme = styles_part(pkg), theme_part(pkg)
            sheet = StyleSheet(pkg.xml(styles) if styles else None, pkg.xml(theme) if theme else None)
            strict = W_STRICT_NS in pkg.xml(pkg.main_document()).nsmap.values()
            # Every XML part, not only those holding zones: a header's picture or a footnote's bookmark keeps its
            # id, and a new id must not repeat it.
            used_ids = numeric_ids(pkg.xml(name) for name in id_parts(pkg))
        except (TemplateRefused, PackageError) as exc:
            raise BuildError(f"the template cannot be read: {exc}") from None
        if strict:
            # Generated content is transitional WordprocessingML; mixed into a Strict part it would
            # make a document Word repairs and python-docx cannot open (it cannot open Strict at all).
            raise BuildError("the template is ISO/IEC 29500 Strict Open XML, which BUILDER does not write: "
                             "save it as a Word Document (.docx)")
        return cls(pkg, {d.id: d for d in decls}, sheet, used_ids)


class _TemplateCache(Generic[T]):
    """The last few templates read, by sha256: a tenant's sessions share one template, and reading
    it (zip, XML, zones, styles) is most of a small document's build time. Bounded in count and
    in template bytes (parsed trees take a few times their size); a template above the byte
    budget is read for its build and not kept."""

    def __init__(self, size: int, max_bytes: int, read: Callable[[bytes], T]) -> None:
        self.size, self.max_bytes, self.read = size, max_bytes, read
        self._items: OrderedDict[str, tuple[T, int]] = OrderedDict()
        self._lock = threading.Lock()

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def get(self, data: bytes) -> T:
        key = hashlib.sha256(data).hexdigest()
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key][0]
        template = self.read(data)
        if len(data) <= self.max_bytes:
            with self._lock:
                self._items[key] = (template, len(data))
                while len(self._items) > self.size or sum(n for _, n in self._items.values()) > self.max_bytes:
                    self._items.popitem(last=False)
        return template


def _read_jinja_template(data: bytes) -> JinjaTemplate:
    try:
        return JinjaTemplate.read(data)
    except (TemplateLanguageError, PackageError) as exc:
        raise BuildError(f"the template cannot be read: {exc}") from None


_TEMPLATES = _TemplateCache(16, 64 * MiB, _Template.read)
_JINJA_TEMPLATES = _TemplateCache(16, 64 * MiB, _read_jinja_template)


def clear_template_cache() -> None:
    """Forget the templates read so far (the next build of each reads it again)."""
    _TEMPLATES.clear()
    _JINJA_TEMPLATES.clear()


# --------------------------------------------------------------------------- a docxtpl template


def _build_jinja(template: bytes, zone_map: dict, intent_output: dict, locale: str | None,
                 caps: BuildCaps) -> BuildResult:
    """The document of a docxtpl template (see the module docstring). The zone map must be the template's: the same
    zones, of the kinds its tags give them."""
    tpl = _JINJA_TEMPLATES.get(template)
    declared = {zone.id: zone for zone in tpl.zones}
    map_zones = zone_map.get("zones") or []
    for zone in map_zones:
        if zone["id"] not in declared:
            raise BuildError(f"zone {zone['id']!r} of the zone map is not declared by the template")
        if zone.get("kind") != declared[zone["id"]].kind:
            raise BuildError(f"zone {zone['id']!r} of the zone map has kind {zone.get('kind')!r}, but the template "
                             f"uses it as a {declared[zone['id']].kind} zone")
    listed = {zone["id"] for zone in map_zones}
    absent = [zone.id for zone in tpl.zones if zone.id not in listed]
    if absent:
        raise BuildError(f"zone {absent[0]!r} of the template is not in the zone map")
    unknown = [entry["id"] for entry in intent_output.get("zones") or [] if entry["id"] not in declared]
    if unknown:
        raise BuildError(f"the intent output fills zone {unknown[0]!r}, which the template does not declare")
    zones = [{"id": zone.id, "kind": zone.kind, "fields": zone.fields} for zone in tpl.zones]
    try:
        context = jinja_context(zones, intent_output, CellFormat(locale), max_zone_chars=caps.max_zone_chars,
                                max_cell_chars=caps.max_cell_chars)
        docx = tpl.render(context.values, caps.render)
    except ContextError as exc:
        raise BuildError(str(exc)) from None
    except RenderError as exc:
        raise BuildError(f"the template cannot be rendered with this session's data: {exc}") from None
    problems = []
    for zone_id, fill in context.fills.items():
        if fill.get("truncated_chars"):
            problems.append(BuildProblem(zone_id, "truncated", f"{fill['truncated_chars']} characters over the "
                                         f"{caps.max_zone_chars}-character limit of the zone were left out"))
        if fill.get("cells_truncated"):
            problems.append(BuildProblem(zone_id, "cell_truncated", f"{fill['cells_truncated']} cells cut at "
                                         f"{caps.max_cell_chars} characters"))
    return BuildResult(docx, hashlib.sha256(docx).hexdigest(), dict(sorted(context.fills.items())), problems)


# --------------------------------------------------------------------------- per-part editing state


@dataclass
class _PartEdit:
    name: str
    root: etree._Element  # the template's tree: read only
    container: etree._Element
    replacements: dict[int, bytes] = field(default_factory=dict)
    reserialize: set[int] = field(default_factory=set)
    new_rels: list[Relationship] = field(default_factory=list)
    image_rels: dict[str, str] = field(default_factory=dict)  # media part -> relationship id
    filled_choices: list[etree._Element] = field(default_factory=list)  # mc:Choice branches holding filled zones
    _copy: etree._Element | None = None
    _counterparts: dict[etree._Element, etree._Element] = field(default_factory=dict)

    def working(self, decl: ZoneDecl) -> ZoneDecl:
        """``decl`` with its element and runs in this build's own copy of the part's tree (made on
        first use; every element mapped before any is changed, so edits do not shift the mapping)."""
        if self._copy is None:
            self._copy = deepcopy(self.root)
            self._counterparts = dict(zip(self.root.iter(), self._copy.iter(), strict=True))
        return dataclasses.replace(decl, element=self._counterparts[decl.element],
                                   runs=tuple(self._counterparts[r] for r in decl.runs))

    def placed(self, el: etree._Element) -> None:
        """``el`` (in the working copy) now holds a zone's content: remember the alternate-content
        branches it sits in, whose fallbacks must show it too."""
        for choice in el.iterancestors(MC.Choice):
            if all(choice is not known for known in self.filled_choices):
                self.filled_choices.append(choice)

    @property
    def working_container(self) -> etree._Element:
        return self._counterparts[self.container] if self._copy is not None else self.container


@dataclass
class _Zone:
    id: str
    kind: str
    label: str
    decl: ZoneDecl
    edit: _PartEdit
    style: dict
    speaker: bool  # each utterance led by its speaker


class _Builder:
    def __init__(self, template: bytes, zone_map: dict, style_map: dict, intent_output: dict,
                 media: dict[str, bytes], locale: str | None, caps: BuildCaps):
        self.template, self.zone_map, self.style_map = template, zone_map, style_map
        self.output, self.media, self.caps = intent_output, media, caps
        self.cells = CellFormat(locale)
        self.problems: list[BuildProblem] = []
        self.fills: dict[str, dict] = {}
        self.media_parts: dict[str, PreparedImage] = {}  # part name -> image
        self.part_names: dict[str, str] = {}  # image sha256 -> part name
        self.image_bytes = 0  # of media_parts
        self.prepared: dict[str, PreparedImage | None] = {}  # media name -> image (None: refused)
        self.image_boxes: dict[str, tuple[int, int]] = {}  # media name -> the pixels it is prepared to fit
        self.run_props: dict[str, dict] = {}

    # ------------------------------------------------------------------ setup

    def run(self) -> BuildResult:
        template = _TEMPLATES.get(self.template)
        self.pkg, self.sheet, by_id = template.pkg, template.sheet, template.decls
        map_zones = self.zone_map.get("zones") or []
        missing = [z["id"] for z in map_zones if z["id"] not in by_id]
        if missing:
            raise BuildError(f"zone {missing[0]!r} of the zone map is not declared by the template")
        odd = [z for z in map_zones if z.get("kind") not in KINDS]
        if odd:
            raise BuildError(f"zone {odd[0]['id']!r} of the zone map has kind {odd[0].get('kind')!r}, "
                             f"not one of {', '.join(KINDS)}")
        for zone in map_zones:
            if not isinstance(zone.get("speaker", False), bool):
                raise BuildError(f"zone {zone['id']!r} of the zone map has speaker {zone['speaker']!r}, "
                                 "not true or false")
            if zone.get("speaker") and zone["kind"] not in ("text", "list"):
                raise BuildError(f"zone {zone['id']!r} of the zone map asks for the speaker, but its kind is "
                                 f"{zone['kind']}: only text and list zones hold utterances")
        self.ids = _Ids(template.used_ids)
        self.utterances = {u["id"]: u for u in self.output.get("utterances") or []}
        self.tables = {t["id"]: t for t in self.output.get("tables") or []}
        entries = {z["id"]: z for z in self.output.get("zones") or []}
        unknown = [zid for zid in entries if zid not in by_id]
        if unknown:
            raise BuildError(f"the intent output fills zone {unknown[0]!r}, which the template does not declare")

        edits: dict[str, _PartEdit] = {}
        zones = []
        for zone in map_zones:
            decl = by_id[zone["id"]]
            part = decl.part.lstrip("/")
            if part not in edits:
                root = decl.element.getroottree().getroot()
                container = root.find(W.body) if root.tag == W.document else root
                edits[part] = _PartEdit(self.pkg.name_of(part), root, container)
            style = (self.style_map.get("zones") or {}).get(zone["id"]) or {}
            zones.append(_Zone(zone["id"], zone["kind"], zone.get("label") or zone["id"], decl, edits[part], style,
                               zone.get("speaker") is True))
        # Placeholders sharing a paragraph are filled from the last one back: splitting runs
        # for a later one leaves the earlier one's text where its declaration found it.
        zones.sort(key=lambda z: -(z.decl.span[0] if z.decl.span else 0))
        self._size_images(zones, entries)
        for zone in zones:
            self._fill(zone, entries.get(zone.id) or {})
        for edit in edits.values():
            # Innermost first: a text box in a text box is copied filled into its outer box's fallback.
            for choice in sorted(edit.filled_choices, key=lambda c: -len(list(c.iterancestors()))):
                self._mirror_into_fallback(choice)
        return self._package(edits)

    def _mirror_into_fallback(self, choice: etree._Element) -> None:
        """The ``mc:Fallback`` beside a filled ``mc:Choice`` made to show the same: each of its text
        boxes takes a copy of the content of the Choice's text box in the same place (its controls
        and drawings numbered anew), so no reader sees the template's placeholder. Word and LibreOffice
        read the Choice; a reader without DrawingML shapes reads the Fallback. A Fallback whose
        text boxes do not pair with the Choice's is dropped: the Choice is then the only rendering."""
        fallback = choice.getparent().find(MC.Fallback)
        if fallback is None:
            return
        boxes, copies = _outer_text_boxes(choice), _outer_text_boxes(fallback)
        if not boxes or len(boxes) != len(copies):
            fallback.getparent().remove(fallback)
            return
        for box, copy in zip(boxes, copies, strict=True):
            for child in list(copy):
                copy.remove(child)
            for child in box:
                copy.append(deepcopy(child))
            for sdt_id in copy.iter(W.id):
                if sdt_id.getparent().tag == W.sdtPr:
                    sdt_id.set(W.val, str(self._new_id()))
            for doc_pr in copy.iter(_WP + "docPr"):
                doc_pr.set("id", str(self._new_id()))

    def _new_id(self) -> int:
        return self.ids.new()

    # ------------------------------------------------------------------ formatting from the style map

    def _run_props(self, zone: _Zone) -> dict:
        """Character style plus the resolved properties the styles alone do not give."""
        if zone.id not in self.run_props:
            self.run_props[zone.id] = self._resolve_run_props(zone)
        return self.run_props[zone.id]

    def _resolve_run_props(self, zone: _Zone) -> dict:
        style = zone.style
        resolved = style.get("resolved") or {}
        by_styles = self.sheet.resolve(paragraph_style=style.get("paragraph_style"),
                                       run_style=style.get("run_style"), table_style=style.get("table_style"))
        props = {k: v for k, v in resolved.items() if k != "alignment" and v is not None and by_styles.get(k) != v}
        if style.get("run_style") and self.sheet.exists(style["run_style"]):
            props["run_style"] = style["run_style"]
        return props

    def _mapped_ppr(self, zone: _Zone) -> str:
        style = zone.style
        paragraph_style = style.get("paragraph_style")
        if not self.sheet.exists(paragraph_style):
            paragraph_style = None
        alignment = (style.get("resolved") or {}).get("alignment")
        if alignment and self.sheet.resolve(paragraph_style=paragraph_style).get("alignment") == alignment:
            alignment = None
        return wml.ppr_xml(paragraph_style, alignment)

    # ------------------------------------------------------------------ zones

    def _fill(self, zone: _Zone, entry: dict) -> None:
        decl = zone.decl
        sdt_pr = decl.element.find(W.sdtPr) if decl.declared_by == "content_control" else None
        # Where the content goes is the zone scan's decision (ZoneDecl.level), the one INGEST judged the template by.
        inline = decl.level == "inline"
        if decl.level in ("row", "cell"):
            self._problem(zone, "zone_unsupported_position",
                          "a row- or cell-level content control cannot take generated content; left as it is")
            self.fills[zone.id] = {"kind": zone.kind, "items": 0}
            return

        rpr = wml.rpr_xml(self._run_props(zone))
        fill: dict = {"kind": zone.kind, "items": 0}
        if zone.kind in ("text", "list"):
            items = self._texts(zone, entry, fill)
            content = self._text_content(zone, items, rpr, inline, truncated="truncated_chars" in fill)
        elif zone.kind == "table":
            content = "" if inline else self._table_content(zone, entry, fill, rpr)
            if inline and entry.get("tables"):
                self._problem(zone, "zone_unsupported_position", "a table cannot go inside a line of text")
        else:
            content = self._image_content(zone, entry, fill, inline, sdt_pr is not None and
                                          sdt_pr.find(W.picture) is not None)
        self.fills[zone.id] = fill
        if not fill["items"] and sdt_pr is not None and sdt_pr.find(W.showingPlcHdr) is not None:
            return  # empty, and the template's placeholder text is what Word should show
        if not inline:
            closing = self._prototype_ppr(zone, last=True)
            if not content or (zone.kind in ("table", "image") and closing != self._prototype_ppr(zone, last=False)):
                content += wml.paragraph(closing, "")  # something to stand in, or to carry the section break
        self._place(zone, content, inline)

    def _problem(self, zone: _Zone | None, code: str, detail: str) -> None:
        self.problems.append(BuildProblem(zone.id if zone else None, code, detail))

    # -- text and list zones

    def _texts(self, zone: _Zone, entry: dict, fill: dict) -> list[tuple[str | None, str]]:
        """(speaker, clean text) per utterance, in order, cut at the zone's character cap (which counts each
        speaker's lead)."""
        budget = self.caps.max_zone_chars
        items: list[tuple[str | None, str]] = []
        cut = 0
        for uid in entry.get("utterances") or []:
            utterance = self.utterances.get(uid)
            if utterance is None:
                raise BuildError(f"zone {zone.id!r} lists utterance {uid!r}, which the intent output does not hold")
            text = clean_text(str(utterance.get("text") or ""))
            speaker = clean_text(str(utterance.get("speaker") or "")) if zone.speaker else ""
            lead = len(speaker) + 2 if speaker else 0  # "<speaker>: " is the zone's text too
            if cut or lead >= budget:  # no room left for the lead and some of the text
                cut += lead + len(text)
                continue
            budget -= lead
            text, over = truncate(text, budget)
            budget -= len(text)
            cut += over
            items.append((speaker or None, text))
        fill["items"] = len(items)
        if cut:
            fill["truncated_chars"] = cut
            self._problem(zone, "truncated", f"{cut} characters over the {self.caps.max_zone_chars}-character "
                          "limit of the zone were left out")
        return items

    def _text_content(self, zone: _Zone, items: list[tuple[str | None, str]], rpr: str, inline: bool, *,
                      truncated: bool) -> str:
        speaker_rpr = wml.rpr_xml({**self._run_props(zone), "bold": True})
        note = _truncation_note(self.caps.max_zone_chars) if truncated else ""
        if inline:
            runs = []
            for i, (speaker, text) in enumerate(items):
                if i:
                    runs.append(f"<w:r>{rpr}<w:br/></w:r>")
                if speaker:
                    runs.append(text_runs(f"{speaker}: ", speaker_rpr))
                runs.append(text_runs(text, rpr))
            if note:
                runs.append(text_runs(" " + note, wml.rpr_xml({"italic": True})))
            return "".join(runs)
        ppr_first = self._prototype_ppr(zone, last=False)
        ppr_last = self._prototype_ppr(zone, last=True)
        paragraphs = [wml.text_paragraph(ppr_first, rpr, text, speaker, speaker_rpr) for speaker, text in items]
        if note:
            paragraphs.append(wml.paragraph(ppr_first, text_runs(note, wml.rpr_xml({"italic": True}))))
        if paragraphs and ppr_last != ppr_first:  # the section break stays on the zone's last paragraph
            paragraphs[-1] = paragraphs[-1].replace(ppr_first, ppr_last, 1)
        return "".join(paragraphs)

    # -- table zones

    def _table_content(self, zone: _Zone, entry: dict, fill: dict, rpr: str) -> str:
        tables = []
        for table_id in entry.get("tables") or []:
            table = self.tables.get(table_id)
            if table is None:
                raise BuildError(f"zone {zone.id!r} lists table {table_id!r}, which the intent output does not hold")
            tables.append(table)
        if not tables:
            return ""
        template_table = _first_descendant(zone.decl.element, W.tbl) if zone.decl.declared_by == \
            "content_control" else None
        if template_table is not None and template_table.find(W.tblPr) is not None:
            tbl_pr = fragment_xml(template_table.find(W.tblPr), zone.edit.root.nsmap).decode("utf-8")
        else:
            table_style = zone.style.get("table_style")
            if not self.sheet.exists(table_style):
                table_style = "TableGrid" if self.sheet.exists("TableGrid") else None
            tbl_pr = wml.default_tbl_pr(table_style)
        header_rpr = wml.rpr_xml({**self._run_props(zone), "bold": True})
        width = self._zone_width_twips(zone)
        out = []
        cut_cells = 0
        for n, table in enumerate(tables):
            columns = table.get("columns") or [{"name": h, "type": "text"} for h in table.get("header") or []]
            types = [c.get("type") or "text" for c in columns]
            numeric = [t in NUMERIC_TYPES for t in types]
            header = [self._cell_text(str(c.get("name") or ""))[0] for c in columns]
            rows = []
            for raw in table.get("rows") or []:
                row = []
                for i, value in enumerate(raw[:len(columns)]):
                    text, over = self._cell_text(self.cells.text(types[i], value))
                    cut_cells += over
                    row.append((text, numeric[i]))
                rows.append(row)
            widths = _column_widths(width, [len(h) for h in header], rows)
            if n:
                out.append("<w:p/>")  # two tables side by side would merge into one
            out.append(wml.table(tbl_pr, widths, header, rows, rpr, header_rpr))
            fill["rows"] = fill.get("rows", 0) + len(rows)
        fill["items"] = len(tables)
        if cut_cells:
            self._problem(zone, "cell_truncated", f"{cut_cells} cells cut at {self.caps.max_cell_chars} characters")
        if zone.decl.element.getparent() is not None and zone.decl.element.getparent().tag == W.tc:
            out.append("<w:p/>")  # a cell ends with a paragraph
        return "".join(out)

    def _cell_text(self, text: str) -> tuple[str, int]:
        text, over = truncate(clean_text(text), self.caps.max_cell_chars)
        return (text + "\u2026", 1) if over else (text, 0)

    # -- image zones

    def _size_images(self, zones: list[_Zone], entries: dict[str, dict]) -> None:
        """The pixels each image is prepared to fit: the largest frame among the zones listing it, at the caps'
        resolution. Each image is then decoded once, however many zones show it and at whatever sizes."""
        for zone in zones:
            if zone.kind != "image" or zone.decl.level in ("row", "cell"):
                continue
            box = pixel_box(*self._image_frame(zone), self.caps.image_dpi)
            for name in self._image_names(zone, entries.get(zone.id) or {}):
                known = self.image_boxes.get(name, (0, 0))
                self.image_boxes[name] = (max(known[0], box[0]), max(known[1], box[1]))

    def _image_names(self, zone: _Zone, entry: dict) -> list[str]:
        """The media the intent output lists for the zone, else those its ``accepts.media`` pattern matches."""
        names = entry.get("media")
        if names is None:
            pattern = (self._zone_accepts(zone.id).get("media")) or ""
            names = sorted(n for n in self.media if pattern and fnmatch.fnmatchcase(n, pattern))
        return names

    def _image_frame(self, zone: _Zone) -> tuple[int, int]:
        """The largest picture the zone shows (EMU): its frame's width, else the cell's or text's; the text height."""
        frame = _first_descendant(zone.decl.element, _WP + "extent") if zone.decl.declared_by == \
            "content_control" else None
        frame_cx = _plain_int(frame.get("cx")) if frame is not None else None
        # A frame under a quarter inch is a template's slip, not a size to shrink a photo to.
        max_cx = frame_cx if frame_cx is not None and frame_cx >= _MIN_FRAME_TWIPS * wml.EMU_PER_TWIP else \
            self._zone_width_twips(zone) * wml.EMU_PER_TWIP
        return max_cx, self._text_height_twips() * wml.EMU_PER_TWIP

    def _image_content(self, zone: _Zone, entry: dict, fill: dict, inline: bool, picture_control: bool) -> str:
        names = self._image_names(zone, entry)
        max_cx, max_cy = self._image_frame(zone)
        cap = 1 if picture_control else self.caps.max_images_per_zone
        images: list[PreparedImage] = []
        for name in names:
            if name not in self.media:
                raise BuildError(f"zone {zone.id!r} lists media {name!r}, which the session does not hold")
            if len(images) >= cap:  # before preparing: an image the zone cannot take is never decoded
                self._problem(zone, "image_dropped", f"{name}: " + ("a picture content control holds one picture"
                              if picture_control else f"over {self.caps.max_images_per_zone} images in one zone"))
                continue
            image = self._prepare(zone, name)
            if image is None:
                continue
            part = self._media_part(image)
            if part not in self.media_parts:
                if self.image_bytes + len(image.data) > self.caps.max_document_image_bytes:
                    self._problem(zone, "image_dropped", f"{name}: {len(image.data)} bytes would take the "
                                  f"document's pictures over their {self.caps.max_document_image_bytes}-byte "
                                  "limit")
                    continue
                self.media_parts[part] = image
                self.image_bytes += len(image.data)
            images.append(image)
        fill["items"] = len(images)
        if not images:
            return ""
        runs = []
        for image in images:
            rel_id = self._embed(zone.edit, image)
            cx, cy = _fit(image.width_px, image.height_px, max_cx, max_cy)
            drawing_id = self._new_id()
            runs.append(wml.drawing_run(rel_id, drawing_id, posixpath.basename(self._media_part(image)), cx, cy))
        if inline:
            return "".join(runs)
        ppr = self._prototype_ppr(zone, last=False)
        return "".join(wml.paragraph(ppr, run) for run in runs)

    def _zone_accepts(self, zone_id: str) -> dict:
        for zone in self.zone_map.get("zones") or []:
            if zone["id"] == zone_id:
                return zone.get("accepts") or {}
        return {}

    def _prepare(self, zone: _Zone, name: str) -> PreparedImage | None:
        if name not in self.prepared:
            try:
                self.prepared[name] = prepare_image(self.media[name], max_bytes=self.caps.max_image_bytes,
                                                    max_pixels=self.caps.max_image_pixels,
                                                    fit_within=self.image_boxes[name])
            except ImageRefused as exc:
                self.prepared[name] = None
                self._problem(zone, "image_refused", f"{name}: {exc.reason}: {exc.detail}")
        return self.prepared[name]

    def _media_part(self, image: PreparedImage) -> str:
        """``word/media/astra-<sha256>.<ext>``; if the template already holds a part of that name
        (in any case) with other bytes, the first free ``astra-<sha256>-<n>.<ext>`` beside it."""
        if image.sha256 not in self.part_names:
            stem, n = f"word/media/astra-{image.sha256[:20]}", 1
            part = f"{stem}.{image.extension}"
            while self.pkg.has(part) and not self._template_holds(part, image.data):
                n += 1
                part = f"{stem}-{n}.{image.extension}"
            self.part_names[image.sha256] = part
        return self.part_names[image.sha256]

    def _template_holds(self, part: str, data: bytes) -> bool:
        try:
            return self.pkg.name_of(part) == part and self.pkg.read_part(part) == data
        except PackageError:  # a part too large to read is not this picture
            return False

    def _embed(self, edit: _PartEdit, image: PreparedImage) -> str:
        part = self._media_part(image)
        if part not in edit.image_rels:
            existing = self.pkg.relationships(edit.name) + edit.new_rels
            rel_id = next_relationship_ids(existing, 1)[0]
            target = posixpath.relpath(part, posixpath.dirname(edit.name) or ".")
            edit.new_rels.append(Relationship(rels_part_for(edit.name), edit.name, rel_id, _IMAGE_REL, target, False))
            edit.image_rels[part] = rel_id
        return edit.image_rels[part]

    # ------------------------------------------------------------------ geometry

    def _section(self) -> etree._Element | None:
        body = self.pkg.xml(self.pkg.main_document()).find(W.body)
        return body.find(W.sectPr) if body is not None else None

    def _page_measure(self, size_attr: str, margins: tuple[str, str], default: int) -> int:
        sect = self._section()
        if sect is None:
            return default
        size, margin = sect.find(W.pgSz), sect.find(W.pgMar)
        try:
            total = int(size.get(W(size_attr)))
            used = sum(int(margin.get(W(m)) or 0) for m in margins) if margin is not None else 0
        except (AttributeError, TypeError, ValueError):
            return default
        return total - used if total - used > 720 else default

    def _text_height_twips(self) -> int:
        return self._page_measure("h", ("top", "bottom"), 12960)

    def _zone_width_twips(self, zone: _Zone) -> int:
        cell = zone.decl.element
        while cell is not None and cell.tag != W.tc:
            cell = cell.getparent()
        if cell is not None:
            width = cell.find(f"{W.tcPr}/{W.tcW}")
            twips = _plain_int(width.get(W.w)) if width is not None and width.get(W.type) == "dxa" else None
            if twips is not None and twips >= _MIN_FRAME_TWIPS:
                return twips
        return self._page_measure("w", ("left", "right"), _DEFAULT_TEXT_WIDTH_TWIPS)

    # ------------------------------------------------------------------ placing content

    def _prototype_ppr(self, zone: _Zone, *, last: bool) -> str:
        """The zone paragraph's own properties (no section break unless ``last``, no paragraph-mark
        run properties), else the mapped paragraph style."""
        decl = zone.decl
        if decl.declared_by == "placeholder":
            paragraph = decl.element
        else:
            content = decl.element.find(W.sdtContent)
            paragraph = content.find(W.p) if content is not None else None
        ppr = paragraph.find(W.pPr) if paragraph is not None else None
        if ppr is None:
            return self._mapped_ppr(zone)
        ppr = deepcopy(ppr)
        for child in list(ppr):
            if child.tag in (W.rPr, W.pPrChange) or (child.tag == W.sectPr and not last):
                ppr.remove(child)
        return fragment_xml(ppr, zone.edit.root.nsmap).decode("utf-8")

    def _place(self, zone: _Zone, content: str, inline: bool) -> None:
        decl, edit = zone.decl, zone.edit
        if decl.declared_by == "content_control":
            sdt_pr = deepcopy(decl.element.find(W.sdtPr)) if decl.element.find(W.sdtPr) is not None else None
            if sdt_pr is not None:
                for child in list(sdt_pr):
                    if child.tag == W.lock and _LOCK_KEPT.get(child.get(W.val)):
                        child.set(W.val, _LOCK_KEPT[child.get(W.val)])
                    elif child.tag in _SDT_PR_DROPPED or child.tag == W.lock:
                        sdt_pr.remove(child)
            sdt_pr_xml = fragment_xml(sdt_pr, edit.root.nsmap).decode("utf-8") if sdt_pr is not None else ""
            end_pr = decl.element.find(W.sdtEndPr)
            end_pr_xml = fragment_xml(end_pr, edit.root.nsmap).decode("utf-8") if end_pr is not None else ""
            self._replace(edit, decl, sdt_pr_xml, end_pr_xml, content)
        elif not inline:
            self._replace(edit, decl, wml.new_sdt_pr(zone.id, zone.kind, zone.label, self._new_id()), "",
                          _with_markers(decl.element, content))
        else:
            sdt_xml = wml.sdt(wml.new_sdt_pr(zone.id, zone.kind, zone.label, self._new_id()), "", content,
                              _ns_decls(decl.element.nsmap))
            placed = _parse_fragment(sdt_xml, decl.element.nsmap)
            _replace_placeholder_runs(edit.working(decl), placed)
            edit.placed(placed)
            edit.reserialize.add(top_block(decl.element, edit.container)[0])

    def _replace(self, edit: _PartEdit, decl: ZoneDecl, sdt_pr: str, end_pr: str, content: str) -> None:
        parent = decl.element.getparent()
        index, _ = top_block(decl.element, edit.container)
        xml = wml.sdt(sdt_pr, end_pr, content, _ns_decls(parent.nsmap))
        if parent is edit.container:  # the zone is a whole top-level block: written directly
            edit.replacements[index] = xml.encode("utf-8")
            return
        element = edit.working(decl).element
        placed = _parse_fragment(xml, parent.nsmap)
        element.getparent().replace(element, placed)
        paragraph = next(placed.iterancestors(W.p), None)
        if decl.level == "inline" and paragraph is not None:  # run-level: perhaps in a link or field
            _out_of_links_and_fields(placed, paragraph)
        edit.placed(placed)
        edit.reserialize.add(index)

    # ------------------------------------------------------------------ the package

    def _package(self, edits: dict[str, _PartEdit]) -> BuildResult:
        parts: dict[str, bytes] = {}
        for edit in edits.values():
            if not edit.replacements and not edit.reserialize:
                continue
            replacements = dict(edit.replacements)
            blocks = [child for child in edit.working_container if isinstance(child.tag, str)]
            for index in edit.reserialize:
                replacements[index] = fragment_xml(blocks[index], edit.working_container.nsmap)
            try:
                parts[edit.name] = splice_blocks(self.pkg.read_part(edit.name), replacements)
            except PackageError as exc:
                raise BuildError(f"{edit.name}: {exc}") from None
        new_members: dict[str, bytes] = {}
        for edit in edits.values():
            if edit.new_rels:
                rels_name = rels_part_for(edit.name)
                existing = self.pkg.read_part(rels_name) if self.pkg.has(rels_name) else None
                data = add_relationships(existing, edit.new_rels)
                if existing is None:
                    new_members[rels_name] = data
                else:
                    parts[self.pkg.name_of(rels_name)] = data
        if self.media_parts:
            types = self.pkg.read_part(CONTENT_TYPES_PART)
            parts[self.pkg.name_of(CONTENT_TYPES_PART)] = add_content_type_defaults(
                types, {image.extension: image.content_type for image in self.media_parts.values()})
            taken = {m.lower() for m in self.pkg.members}
            for name, image in self.media_parts.items():
                if name.lower() not in taken:
                    new_members[name] = image.data
        # Members BUILDER did not change are copied as the template stores them, not recompressed.
        members = [(name, parts[name] if name in parts else self.pkg.precompressed(name)) for name in self.pkg.members]
        members += sorted(new_members.items())
        docx = write_package(members)
        return BuildResult(docx, hashlib.sha256(docx).hexdigest(), dict(sorted(self.fills.items())), self.problems)


# --------------------------------------------------------------------------- helpers


def _truncation_note(limit: int) -> str:
    return f"[ASTRA: this section was cut at {limit:,} characters; the rest is in the session record.]"


class _Ids:
    """New ids for controls, drawings and bookmarks, deterministic and valid: counted up from the
    template's highest id while that stays within int32 (Word refuses a document with a larger
    one), then the template's unused ids from 1 up. One sequence for every kind and part: unique
    across them, so unique within each kind as Word needs."""

    def __init__(self, used: frozenset[int]) -> None:
        self.used = used
        self.next = max(used, default=0) + 1
        self.lowest_free = 1

    def new(self) -> int:
        if self.next <= MAX_ID:
            self.next += 1
            return self.next - 1
        # Counting up has reached the top. A template holds far fewer ids than int32 has, so a free one is found
        # below its highest, never one counting up gave.
        while self.lowest_free in self.used:
            self.lowest_free += 1
        self.lowest_free += 1
        return self.lowest_free - 1


def _plain_int(value: str | None) -> int | None:
    """A non-negative number written in ASCII digits (at most 18 of them), else None: a template attribute such as
    `w:id="²"` or one of thousands of digits is not a number to build with (str.isdigit accepts both)."""
    return int(value) if value is not None and _PLAIN_INT.fullmatch(value) else None


def _ns_decls(scope: dict) -> str:
    """xmlns declarations for the prefixes generated XML uses that ``scope`` does not bind as expected."""
    return "".join(f' xmlns:{prefix}="{uri}"' for prefix, uri in _NEEDED_NS.items() if scope.get(prefix) != uri)


def _parse_fragment(xml: str, scope: dict) -> etree._Element:
    return _parse_fragments(xml, scope)[0]


def _outer_text_boxes(el: etree._Element) -> list[etree._Element]:
    """The ``w:txbxContent`` elements under ``el`` that are not inside another one under it, in order."""
    def nested(box: etree._Element) -> bool:
        for ancestor in box.iterancestors():
            if ancestor is el:
                return False
            if ancestor.tag == W.txbxContent:
                return True
        return False

    return [box for box in el.iter(W.txbxContent) if not nested(box)]


def _parse_fragments(xml: str, scope: dict) -> list[etree._Element]:
    """Every element of a run of generated XML, parsed where ``scope``'s namespaces are declared."""
    declared = "".join(f' xmlns:{p}="{uri}"' for p, uri in scope.items() if p and p not in _NEEDED_NS)
    declared += "".join(f' xmlns:{p}="{uri}"' for p, uri in _NEEDED_NS.items())
    wrapper = etree.fromstring(f"<wrapper{declared}>{xml}</wrapper>".encode(), hardened_parser())
    return list(wrapper)


def _first_descendant(el: etree._Element, tag: str) -> etree._Element | None:
    return next(iter(el.iter(tag)), None)


def _column_widths(total: int, header_lengths: list[int], rows: list[list[tuple[str, bool]]]) -> list[int]:
    """Column widths (twips) summing to ``total``, shared by the longest text of each column in
    its header and first rows (a date column gets room for a date), no column under half an
    equal share."""
    count = len(header_lengths)
    if count == 0:
        return []
    longest = list(header_lengths)
    for row in rows[:_WIDTH_SAMPLE_ROWS]:
        for i, (text, _) in enumerate(row[:count]):
            longest[i] = max(longest[i], len(text))
    floor = 0.5 / count
    shares = [max(n, 1) / sum(max(n, 1) for n in longest) for n in longest]
    shares = [max(s, floor) for s in shares]
    widths = [int(total * s / sum(shares)) for s in shares]
    widths[-1] += total - sum(widths)
    return widths


def _fit(width_px: int, height_px: int, max_cx: int, max_cy: int) -> tuple[int, int]:
    """The frame width, and the height keeping the aspect ratio; both shrunk if too tall."""
    cx = max_cx
    cy = round(cx * height_px / width_px)
    if cy > max_cy > 0:
        cx, cy = round(max_cy * width_px / height_px), max_cy
    return max(cx, 1), max(cy, 1)


def _placeholder_pattern(zone_id: str) -> re.Pattern:
    return re.compile(r"\{\{\s*" + re.escape(zone_id) + r"\s*\}\}")


def _with_markers(p: etree._Element, content: str) -> str:
    """Bookmarks and comment ranges of a replaced paragraph kept around the new content (a
    cross-reference to the title's bookmark still finds the title): inside the first and last
    paragraphs when the content starts and ends with one (after its properties, which the schema
    puts first), else beside it (they may stand between blocks too)."""
    starts = [el for el in p if local_name(el.tag) in _MARKERS]
    ends = [el for el in p if local_name(el.tag) in _END_MARKERS]
    if not starts and not ends:
        return content
    blocks = _parse_fragments(content, p.nsmap)
    first = blocks[0] if blocks and blocks[0].tag == W.p else None
    for marker in reversed(starts):
        if first is None:
            blocks.insert(0, deepcopy(marker))
        else:
            first.insert(1 if first.find(W.pPr) is not None else 0, deepcopy(marker))
    last = blocks[-1] if blocks and blocks[-1].tag == W.p else None
    for marker in ends:
        if last is None:
            blocks.append(deepcopy(marker))
        else:
            last.append(deepcopy(marker))
    return "".join(fragment_xml(el, p.nsmap).decode("utf-8") for el in blocks)


def _replace_placeholder_runs(decl: ZoneDecl, sdt: etree._Element) -> None:
    """Put ``sdt`` where the zone scan found ``{{ id }}`` (its span in the paragraph's text as
    :func:`paragraph_text` reads it): the runs it spans are split at its two ends, the pieces inside are removed,
    the text around stays in runs of the same formatting."""
    text, pieces = paragraph_text(decl.element)
    start, end = decl.span
    if _placeholder_pattern(decl.id).fullmatch(text[start:end]) is None:  # pragma: no cover - read as the scan reads
        raise BuildError(f"placeholder of zone {decl.id!r} not found where the zone scan found it")
    spanned = [(piece.element, piece.start) for piece in pieces if piece.start < end and piece.end > start]
    end_t, end_a = spanned[-1]
    after = _split_run(end_t, end - end_a)
    if not any(c.tag != W.rPr and not (c.tag == W.t and not c.text) for c in after):
        after.getparent().remove(after)  # nothing followed the placeholder in that run
    start_t, start_a = spanned[0]
    left = start_t.getparent()
    first = _split_run(start_t, start - start_a)  # the run starting with "{{"
    doomed = [first] + [t.getparent() for t, _ in spanned[1:]]
    first.addprevious(sdt)
    for run in dict.fromkeys(doomed):
        if run.getparent() is not None:
            run.getparent().remove(run)
    if not any(c.tag != W.rPr and not (c.tag == W.t and not c.text) for c in left):
        left.getparent().remove(left)  # nothing was before the placeholder in that run
    _out_of_links_and_fields(sdt, decl.element)


def _out_of_links_and_fields(sdt: etree._Element, p: etree._Element) -> None:
    """Move an inline zone out of the hyperlink or field it sat in, to right after it:
    user content is never a link's text (nothing from the user becomes a hyperlink) nor a field's
    result (which Word replaces when it updates the field). A field ending in a later paragraph
    cannot be stepped out of and keeps the zone. Fields are counted from the paragraph's start as the zone scan and
    the check count them (:func:`astra.ingest.zones.field_depths`): never below none open, so an ``end`` with no
    ``begin`` before it in the paragraph closes a field from an earlier one; none in an ``mc:Fallback`` or a zone."""
    # An empty run at the paragraph's end, removed at once, gives the depth there: whether the fields open at the
    # zone end in this paragraph even when the run closing them is its last.
    paragraph_end = etree.SubElement(p, W.r)
    order = [el for el in p.iter(W.r, W.sdt)
             if el is sdt or (el.tag == W.r and all(a is not sdt for a in el.iterancestors()))]
    depths = field_depths(p, order, _is_zone)
    p.remove(paragraph_end)
    after = order[order.index(sdt) + 1:]
    if depths[sdt]:
        end_run = next((run for run, following in pairwise(after) if depths[following] == 0), None)
        if end_run is not None:
            end_run.addnext(sdt)
    holder = None
    for ancestor in sdt.iterancestors():
        if ancestor is p:
            break
        if ancestor.tag in (W.hyperlink, W.fldSimple):
            holder = ancestor
    if holder is not None:
        holder.addnext(sdt)


def _is_zone(sdt: etree._Element) -> bool:
    return zone_control_id(sdt) is not None


def _split_run(t: etree._Element, offset: int) -> etree._Element:
    """Split the run holding ``t``: ``t`` keeps its first ``offset`` characters, a new run right
    after (same run properties) takes the rest and every later child of the run. Returns it."""
    run = t.getparent()
    text = t.text or ""
    right = etree.Element(W.r)
    rpr = run.find(W.rPr)
    if rpr is not None:
        right.append(deepcopy(rpr))
    rest = etree.SubElement(right, W.t)
    rest.text = text[offset:]
    rest.set(_XML_SPACE, "preserve")
    for sibling in list(t.itersiblings()):
        right.append(sibling)
    t.text = text[:offset]
    t.set(_XML_SPACE, "preserve")
    run.addnext(right)
    return right
