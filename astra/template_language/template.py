"""A .docx written in docxtpl's template language: read (refused or accepted, with its zones) and rendered.

:meth:`JinjaTemplate.read` finds the tags of the main document, headers, footers and footnotes
(:mod:`~astra.template_language.source`), parses each part with Jinja's parser, refuses what the allow-list does not
hold (:mod:`~astra.template_language.analysis`), finds the zones, marks each zone's first use at the top of the
template with an ``astra:`` content control, and compiles each part once in the sandbox
(:mod:`~astra.template_language.sandbox`). :meth:`JinjaTemplate.render` renders a context of plain data: every part
without a tag is copied as stored, every rendered part is checked well-formed XML, and a loop that repeated
pictures or content controls gets fresh ids (Word repairs a document whose drawings share one).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

from jinja2 import Template, TemplateError, TemplateSyntaxError
from lxml import etree
from markupsafe import Markup

from astra.ingest.zones import paragraph_text
from astra.ooxml.errors import PackageError
from astra.ooxml.ns import WP_NS, W
from astra.ooxml.package import Package, write_package
from astra.ooxml.wordml import numeric_ids, story_parts, wval
from astra.ooxml.xml import parse_xml

from .analysis import ZoneUse, check_allowed, find_zones
from .errors import RenderError, TemplateLanguageError
from .sandbox import RenderBudget, TemplateEnvironment, bounded
from .source import TAG_RE, PartSource

MiB = 1024 * 1024
_PLACEHOLDER = re.compile(r"\{\{\s*[A-Za-z_][A-Za-z0-9_]*\s*\}\}")
_DOC_PR = etree.XPath("//wp:docPr", namespaces={"wp": WP_NS})
# Tracked changes: each carries an id of its own, which a loop would repeat.
_REVISIONS = tuple(W(name) for name in ("ins", "del", "moveFrom", "moveTo", "rPrChange", "pPrChange", "sectPrChange",
                                        "tblPrChange", "trPrChange", "tcPrChange", "tblGridChange", "cellIns",
                                        "cellDel", "cellMerge", "numberingChange"))
_ENVIRONMENT = TemplateEnvironment()


@dataclass(frozen=True)
class JinjaZone:
    id: str
    kind: str  # text | list | table | flag | record
    fields: tuple[str, ...]
    marked: bool  # the rendered document holds it in an astra:<id> content control
    location: dict  # part, block, path of its first use


@dataclass(frozen=True)
class RenderCaps:
    max_iterations: int = 100_000  # every loop's items, summed over the document
    max_part_chars: int = 32 * MiB  # rendered XML of one part
    max_document_chars: int = 32 * MiB  # rendered XML of every part together (a template may have many parts)
    max_filter_items: int = 10_000_000  # the items filters walk (sort, join, map…), summed over the document
    max_made_chars: int = 32 * MiB  # text the template itself makes (~, +, *, replace, join…), summed
    max_seconds: float = 30.0  # the whole render


@dataclass(frozen=True)
class _Part:
    name: str
    template: Template
    raw: tuple[Markup, ...]  # the template's own bytes the source references: written as they are


def template_parts(pkg: Package) -> list[str]:
    """The parts docxtpl renders: main document, headers, footers, then footnotes."""
    parts = story_parts(pkg)
    parts += [name for name in pkg.related(pkg.main_document(), "footnotes") if name not in parts]
    return parts


def uses_jinja(docx: bytes) -> bool:
    """Whether the template is written in docxtpl's language: a whole tag (``{% … %}``, ``{# … #}``, or ``{{ … }}``
    around anything but a bare name, none across a tab, break or field) in the text of a part docxtpl renders.
    (``{{ name }}`` alone is also ASTRA's placeholder; text such as ``{{ x<tab>}}`` is no tag to either.)"""
    try:
        pkg = Package.read(docx)
        for name in template_parts(pkg):
            for paragraph in pkg.xml(name).iter(W.p):
                for match in TAG_RE.finditer(paragraph_text(paragraph)[0]):
                    if not _PLACEHOLDER.fullmatch(match.group(0)):
                        return True
    except PackageError:
        return False
    return False


class JinjaTemplate:
    def __init__(self, pkg: Package, parts: dict[str, _Part], zones: tuple[JinjaZone, ...],
                 first_free_id: int) -> None:
        self.pkg, self.parts, self.zones, self.first_free_id = pkg, parts, zones, first_free_id

    @classmethod
    def read(cls, docx: bytes) -> JinjaTemplate:
        """Parse and analyse the template; raises :class:`TemplateLanguageError`."""
        try:
            pkg = Package.read(docx)
            names = template_parts(pkg)
            sources = [s for s in (PartSource.read(name, pkg.read_part(name)) for name in names) if s is not None]
            first_free_id = _first_free_id(pkg, names)
        except PackageError as exc:
            raise TemplateLanguageError("invalid_package", str(exc)) from None
        for source in sources:
            _refuse_astra_controls(source)
        zones: dict[str, ZoneUse] = {}
        for source in sources:
            with _too_deep(source):
                template = _parse(source)
                check_allowed(template, source)
                find_zones(template, source, zones)
        next_id = first_free_id
        marked: set[str] = set()
        marked_parts: set[str] = set()
        by_part = {source.part: source for source in sources}
        for zone in zones.values():
            if zone.mark is None or zone.part not in by_part or "footnotes" in zone.part.lower():
                continue
            source = by_part[zone.part]
            label = zone.id.replace("_", " ").strip().title() or zone.id
            form, *tags, kind = zone.mark
            if form == "inline":
                done = source.mark_inline(tags[0], zone.id, kind, label, next_id)
            elif form == "block":
                done = source.mark_block(tags[0], zone.id, kind, label, next_id)
            elif form == "range":
                done = source.mark_range(tags[0], tags[1], zone.id, kind, label, next_id)
            else:
                done = source.mark_table(tags[0], zone.id, kind, label, next_id)
            if done:
                marked.add(zone.id)
                marked_parts.add(zone.part)
                next_id += 1
        for index, source in enumerate(sources):
            if source.part not in marked_parts:
                continue
            try:
                source.source()
            except TemplateLanguageError:
                # A mark placed where a whitespace merge ('{%-', '-%}') reaches into it: that part goes unmarked
                # (the same part read without marks parsed above).
                sources[index] = PartSource.read(source.part, pkg.read_part(source.part))
                marked -= {zone.id for zone in zones.values() if zone.part == source.part}
        parts = {}
        for source in sources:
            with _too_deep(source):
                template = bounded(_parse(source))
                code = _ENVIRONMENT.compile(template, name=source.part)
            parts[source.part] = _Part(source.part, Template.from_code(_ENVIRONMENT, code, _ENVIRONMENT.make_globals(
                None)), tuple(Markup(chunk) for chunk in source.raw))
        result = tuple(JinjaZone(z.id, z.kind, tuple(z.fields), z.id in marked,
                                 z.tag.location if z.tag else {"part": "/" + z.part, "block": 0, "path": ""})
                       for z in zones.values())
        return cls(pkg, parts, result, next_id)

    def render(self, context: Mapping[str, object], caps: RenderCaps = RenderCaps()) -> bytes:
        """The document for ``context`` (plain data: mappings, lists, strings, numbers, booleans, None)."""
        if not isinstance(context, Mapping):
            raise RenderError("the context is not a mapping of names to values")
        if any(not isinstance(key, str) or key.startswith("_astra") for key in context):
            raise RenderError("context names are strings, and none begins with '_astra'")
        rendered: dict[str, bytes] = {}
        ids = _FreshIds(self.first_free_id)
        written = [0]  # characters rendered so far, every part
        with RenderBudget(iterations=caps.max_iterations, items=caps.max_filter_items, chars=caps.max_made_chars,
                          seconds=caps.max_seconds):
            for name, part in self.parts.items():
                rendered[name] = self._render_part(part, dict(context), caps, ids, written)
        members = [(m, rendered[m] if m in rendered else self.pkg.precompressed(m)) for m in self.pkg.members]
        return write_package(members)

    def _render_part(self, part: _Part, context: dict, caps: RenderCaps, ids: _FreshIds, written: list[int]) -> bytes:
        context["_astra_raw"] = part.raw
        chunks: list[str] = []
        size = 0
        try:
            for chunk in part.template.generate(context):
                size += len(chunk)
                written[0] += len(chunk)
                if size > caps.max_part_chars:
                    raise RenderError(f"/{part.name}: the rendered part passed {caps.max_part_chars:,} characters")
                if written[0] > caps.max_document_chars:
                    raise RenderError(f"/{part.name}: the rendered document passed {caps.max_document_chars:,} "
                                      "characters")
                chunks.append(chunk)
        except RenderError:
            raise
        except (TemplateError, TypeError, ValueError, ArithmeticError, LookupError) as exc:
            raise RenderError(f"/{part.name}: {type(exc).__name__}: {exc}") from None
        data = "".join(chunks).encode("utf-8")
        try:
            root = parse_xml(data, part.name, normalise_strict=False)
        except PackageError as exc:
            raise RenderError(f"/{part.name}: the template's tags do not nest with the document's structure "
                              f"(a paragraph, row or cell tag closes elsewhere than it opens): {exc}") from None
        if _whole_tables(root) | ids.refresh(root) | _fit_table_grids(root):
            data = etree.tostring(root, xml_declaration=True, encoding="UTF-8", standalone=True)
        return data


@contextmanager
def _too_deep(source: PartSource) -> Iterator[None]:
    """An expression nested past Python's recursion (``((((…))))``, a chain of thousands of filters) or blocks past
    its compiler's nesting: refused like any other construct, not a crash."""
    try:
        yield
    except (RecursionError, SyntaxError, MemoryError) as exc:
        raise TemplateLanguageError("jinja_forbidden", f"an expression or block nested too deeply to compile "
                                    f"({type(exc).__name__})", {"part": "/" + source.part}) from None


def _parse(source: PartSource):
    text = source.source()
    try:
        return _ENVIRONMENT.parse(text, name=source.part)
    except TemplateSyntaxError as exc:
        tag = source.tag_at(exc.lineno)
        written = f"{tag.written!r}: " if tag else ""
        raise TemplateLanguageError("jinja_syntax", written + str(exc.message),
                                    tag.location if tag else {"part": "/" + source.part}) from None


def _first_free_id(pkg: Package, parts: list[str]) -> int:
    """One past the highest id of the parts that hold content (controls, bookmarks, comments, revisions, drawings):
    a mark or a repeated drawing numbered from here repeats none. (Not every XML part, as BUILDER reads: styles,
    numbering and themes hold no such id, and parsing them cost more than the rest of a small template's read.)"""
    main = pkg.main_document()
    names = list(parts) + [n for kind in ("endnotes", "comments") for n in pkg.related(main, kind)]
    return max(numeric_ids(pkg.xml(name) for name in names), default=0) + 1


def _refuse_astra_controls(source: PartSource) -> None:
    for sdt in source.root.iter(W.sdt):
        value = wval(sdt.find(f"{W.sdtPr}/{W.tag}")) or ""
        if value.strip().lower().startswith("astra:"):
            raise TemplateLanguageError(
                "mixed_template_languages", f"the template uses docxtpl's tags and also an ASTRA content control "
                f"({value!r}): write its zones one way", {"part": "/" + source.part})


class _FreshIds:
    """Drawings, content controls and tracked changes a loop repeated get ids no other element of the document has
    (bookmarks a fresh id and name: :meth:`_refresh_bookmarks`)."""

    def __init__(self, first_free: int) -> None:
        self.seen: set[object] = set()
        self.next = first_free

    def refresh(self, root: etree._Element) -> bool:
        changed = self._refresh_bookmarks(root)
        for el, attribute in [(d, "id") for d in _DOC_PR(root)] + [
                (i, W.val) for i in root.iter(W.id) if i.getparent() is not None and i.getparent().tag == W.sdtPr] + [
                (r, W.id) for r in root.iter(*_REVISIONS) if r.get(W.id) is not None]:
            value = el.get(attribute)
            if value in self.seen:
                el.set(attribute, str(self.next))
                self.next += 1
                changed = True
            else:
                self.seen.add(value)
        return changed


    def _refresh_bookmarks(self, root: etree._Element) -> bool:
        """A bookmark a loop repeated: a fresh id for its start and the end that closes it, and a fresh name."""
        changed = False
        renamed: dict[str, str] = {}  # old id -> new id, from a repeated start to its end
        for el in root.iter(W.bookmarkStart, W.bookmarkEnd):
            value = el.get(W.id)
            if el.tag == W.bookmarkEnd:
                if value in renamed:
                    el.set(W.id, renamed.pop(value))
                    changed = True
                continue
            name = el.get(W.name)
            if ("b", value) in self.seen:
                renamed[value] = str(self.next)
                el.set(W.id, str(self.next))
                self.next += 1
                changed = True
            self.seen.add(("b", el.get(W.id)))
            if name is not None and ("n", name) in self.seen:
                count = 2
                while ("n", f"{name}_{count}") in self.seen:
                    count += 1
                name = f"{name}_{count}"
                el.set(W.name, name)
                changed = True
            self.seen.add(("n", name))
        return changed


def _whole_tables(root: etree._Element) -> bool:
    """What a loop that ran no time can leave and Word repairs: a row with no cell and a table with no row go, and
    a cell with no paragraph, or ending in a table, gets an empty one."""
    changed = False
    for row in list(root.iter(W.tr)):
        if row.find(W.tc) is None and row.getparent() is not None:
            row.getparent().remove(row)
            changed = True
    for table in list(root.iter(W.tbl)):
        if table.find(W.tr) is None and table.getparent() is not None:
            table.getparent().remove(table)
            changed = True
    for cell in root.iter(W.tc):
        blocks = [child for child in cell if child.tag in (W.p, W.tbl, W.sdt)]
        if not blocks or blocks[-1].tag == W.tbl or (blocks[-1].tag == W.sdt and next(
                blocks[-1].iter(W.p), None) is None):
            etree.SubElement(cell, W.p)
            changed = True
    return changed


def _fit_table_grids(root: etree._Element) -> bool:
    """A table whose column loop (``{%tc for %}``) made rows of another width than its grid gets a grid of that
    many columns sharing the old total width (docxtpl's fix_tables, more simply)."""
    changed = False
    for table in root.iter(W.tbl):
        grid = table.find(W.tblGrid)
        if grid is None:
            continue
        columns = grid.findall(W.gridCol)
        widest = 0
        for row in table.findall(W.tr):
            span = 0
            for cell in row.findall(W.tc):
                value = wval(cell.find(f"{W.tcPr}/{W.gridSpan}"))
                span += int(value) if value and value.isdigit() else 1
            widest = max(widest, span)
        if widest and widest != len(columns):
            total = sum(int(c.get(W.w)) for c in columns if (c.get(W.w) or "").isdigit()) or 9360
            for column in columns:
                grid.remove(column)
            for _ in range(widest):
                etree.SubElement(grid, W.gridCol).set(W.w, str(total // widest))
            changed = True
    return changed
