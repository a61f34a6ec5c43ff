"""A WordprocessingML story part written in docxtpl's language, as one Jinja source.

:class:`PartSource` reads a part (its bytes) and finds its tags as docxtpl does, on the tree rather than on the
serialized text:

* **Tags** (``{{ }}``, ``{% %}``, ``{# #}``) are found in each paragraph's text as
  :func:`astra.ingest.zones.paragraph_text` reads it (runs joined: a tag Word split over runs, proofing marks or
  bookmarks is one tag; a tab, break or field character ends text, and no tag spans one). Each tag's text moves
  whole into the ``w:t`` where it starts; Word's curly quotes inside a tag become straight ones.
* **docxtpl's forms**: ``{%p %}``/``{#p #}`` replace their paragraph, ``{%tr %}`` their table row, ``{%tc %}``
  their cell, ``{%r %}`` their run (all of it: docxtpl's rule, so a row holding ``{%tr for %}`` is not itself
  repeated); ``{{r x}}`` stands between runs and writes runs with the tag run's properties, ``{{p x}}`` stands
  between blocks and writes paragraphs with the tag paragraph's; ``{%-`` and ``-%}`` merge with the text before
  and after as docxtpl does (everything between the previous ``w:t``'s end and the tag goes; from the tag to the
  next ``w:t``'s start); ``{% vm %}``, ``{% hm %}``, ``{% cellbg c %}``, ``{% colspan n %}`` rewrite their cell.
* **Marks**: a zone's first use at the top of the template becomes an ``astra:`` content control around its
  output (:meth:`PartSource.mark`), so a reader of the document finds the zone as it finds every other.

The source (:meth:`PartSource.source`) is the part's XML with each tag in its place. Everything else is data to
Jinja and never parsed as a tag: ``{`` outside tags is written ``&#123;`` in serialized XML, and a top-level block
holding no tag keeps its bytes, referenced from the source when it holds a ``{`` itself. Each tag ends with a line
end inside it, so the line Jinja reports for a node names one tag (:meth:`PartSource.tag_at`).
"""

from __future__ import annotations

import bisect
import re
import secrets
from copy import deepcopy
from dataclasses import dataclass, field

from lxml import etree

from astra.builder.sanitize import escape_text
from astra.ingest.zones import field_depths, paragraph_text
from astra.ooxml.blocks import split_children
from astra.ooxml.edit import fragment_xml, story_container_path
from astra.ooxml.ns import MC, W, local_name, qname
from astra.ooxml.wordml import element_path, top_block
from astra.ooxml.xml import parse_xml, utf16_encoding

from .errors import TemplateLanguageError

# A tag as Jinja's lexer reads one (without its string-literal subtleties, as docxtpl): never across a separator.
TAG_RE = re.compile(r"\{\{[^\x00]*?\}\}|\{%[^\x00]*?%\}|\{#[^\x00]*?#\}", re.S)
_OPENERS = ("{{", "{%", "{#")
MAX_TAGS = 20_000  # per part
_LEVEL_RE = re.compile(r"(\{[{%#])(tr|tc|p|r) (.*)", re.S)  # docxtpl: "{%p if x %}" -> "{% if x %}" at paragraph
_HELPER_RE = re.compile(r"\{%-?\s*(vm|hm|cellbg|colspan)\b(.*?)-?%\}", re.S)
_TOKEN_RE = re.compile(r"JT[0-9a-f]{12}x[0-9]+x")
_CURLY = str.maketrans({"\u201c": '"', "\u201d": '"', "\u2018": "'", "\u2019": "'"})
_LEVEL_TAGS = {"tr": W.tr, "tc": W.tc, "p": W.p, "r": W.r}
_INLINE_HOLDERS = frozenset({W.p, W.smartTag, W.customXml, W.dir, W.bdo, W.ins, W.moveTo})
_BLOCK_PARENTS = frozenset({W.body, W.hdr, W.ftr, W.tc, W.txbxContent, W.footnote, W.endnote})
_XML_SPACE = "{http://www.w3.org/XML/1998/namespace}space"
# CT_TcPr's sequence, for a property ASTRA adds to a cell (cellbg, colspan, hm, vm) in schema order.
_TC_PR_ORDER = ("cnfStyle", "tcW", "gridSpan", "hMerge", "vMerge", "tcBorders", "shd", "noWrap", "tcMar",
                "textDirection", "tcFitText", "vAlign", "hideMark", "headers", "cellIns", "cellDel", "cellMerge",
                "tcPrChange")


@dataclass
class Tag:
    """One tag of the template, as written and as Jinja reads it."""

    written: str  # as in the document (for messages)
    jinja: str  # what the source holds (docxtpl's prefix removed, curly quotes straightened, ASTRA's filters)
    level: str | None  # "tr", "tc", "p", "r" for docxtpl's forms; None inline
    location: dict  # part, block, path of its paragraph
    token: str
    merge_before: bool = False  # {%- : merge with the text before
    merge_after: bool = False  # -%} : merge with the text after
    paragraph_props: str = ""  # {{p x}}: the tag paragraph's pPr
    run_props: str = ""  # {{r x}}, {{p x}}: the tag run's rPr

    @property
    def opener(self) -> str:
        return self.jinja[:2]

    @property
    def inner(self) -> str:
        """The tag's content without delimiters and whitespace-control marks."""
        inner = self.jinja[2:-2]
        return inner.strip("-+").strip()


@dataclass
class PartSource:
    part: str
    data: bytes
    root: etree._Element
    container: etree._Element
    tags: list[Tag]
    blocks: list[etree._Element]  # the container's original top-level blocks
    nonce: str
    raw: list[str] = field(default_factory=list)  # byte chunks the source references (see the module docstring)
    _count: int = 0
    _lines: list[tuple[int, Tag]] = field(default_factory=list)
    _block_steps: dict[int, tuple[int, str]] = field(default_factory=dict)  # id(block) -> (index, path step)
    _holder_cache: dict[str, etree._Element] = field(default_factory=dict)

    # ------------------------------------------------------------------ reading

    @classmethod
    def read(cls, part: str, data: bytes) -> PartSource | None:
        """The part's tags found and docxtpl's forms applied; None when it holds no tag."""
        root = parse_xml(data, part)
        path = story_container_path(local_name(root.tag))
        container = root
        for step in path:
            container = container.find(W(step))
            if container is None:
                return None
        source = cls(part, data, root, container, [], [c for c in container if isinstance(c.tag, str)],
                     secrets.token_hex(6))
        same: dict[str, int] = {}
        for index, block in enumerate(source.blocks):  # one pass: a location per tag must not rescan the siblings
            source._block_steps[id(block)] = (index, f"{qname(block.tag)}[{same.get(block.tag, 0)}]")
            same[block.tag] = same.get(block.tag, 0) + 1
        for paragraph in list(root.iter(W.p)):
            source._find_tags(paragraph)
        if not source.tags:
            return None
        source._apply_levels()
        source._apply_cell_helpers()
        return source

    def _location(self, el: etree._Element) -> dict:
        part = "/" + self.part.lstrip("/")
        top = el
        while top.getparent() is not None and top.getparent() is not self.container:
            top = top.getparent()
        known = self._block_steps.get(id(top)) if top.getparent() is self.container else None
        if known is None:  # not among the blocks read at first (or the container itself)
            block, _ = top_block(el, self.container) if self.container is not el else (0, el)
            return {"part": part, "block": block, "path": element_path(el, self.container)}
        index, step = known
        inner = element_path(el, top)
        return {"part": part, "block": index, "path": step + ("/" + inner if inner else "")}

    def _find_tags(self, paragraph: etree._Element) -> None:
        text, pieces = paragraph_text(paragraph)
        matches = list(TAG_RE.finditer(text))
        if len(self.tags) + len(matches) > MAX_TAGS:
            raise TemplateLanguageError("jinja_forbidden", f"/{self.part} holds more than {MAX_TAGS:,} tags: a "
                                        "template that long is refused (its read alone would take minutes)",
                                        self._location(paragraph))
        left = TAG_RE.sub("", text)
        for opener in _OPENERS:
            if opener in left:
                at = left.index(opener)
                raise TemplateLanguageError(
                    "jinja_syntax", f"a tag begun with {opener!r} is not closed in its paragraph "
                    f"(…{left[max(0, at - 20):at + 40].replace(chr(0), ' ⏎ ')!r}…, where ⏎ is the tab, break or "
                    f"field that cuts it); a tag cannot span a tab, a break or a field",
                    self._location(paragraph))
        found: list[Tag] = []
        for match in reversed(matches):  # from the end: offsets of earlier tags stay valid
            start, end = match.span()
            spanned = [p for p in pieces if p.start < end and p.end > start and p.element.tag == W.t]
            tag = self._new_tag(match.group(0), paragraph)
            first = spanned[0]
            for piece in spanned:
                t = piece.element
                value = t.text or ""
                lo, hi = max(start - piece.start, 0), min(end - piece.start, len(value))
                t.text = value[:lo] + (tag.token if piece is first else "") + value[hi:]
                if piece is not first and not t.text:
                    _drop_emptied_run(t)
            first.element.set(_XML_SPACE, "preserve")
            tag.run_props = _props_xml(first.element.getparent(), W.rPr)
            tag.paragraph_props = _props_xml(paragraph, W.pPr)
            found.append(tag)
        self.tags.extend(reversed(found))

    def _new_tag(self, written: str, paragraph: etree._Element) -> Tag:
        location = self._location(paragraph)
        if "_astra" in written:
            raise TemplateLanguageError("jinja_forbidden", f"{written!r}: names holding '_astra' are ASTRA's own",
                                        location)
        jinja = written.translate(_CURLY)
        level = None
        match = _LEVEL_RE.fullmatch(jinja)
        if match:
            opener, level, rest = match.groups()
            jinja = f"{opener} {rest}"
        merge_before = jinja.startswith("{%-")
        merge_after = jinja.endswith("-%}")
        if merge_before:
            jinja = "{%" + jinja[3:]
        if merge_after:
            jinja = jinja[:-3] + "%}"
        return Tag(written, jinja, level, location, self._token(), merge_before, merge_after)

    def _token(self) -> str:
        """A name for a tag's place in the tree: ASCII letters and digits (no ``{``), unique, and not guessable
        by the template (a random part per part read)."""
        self._count += 1
        return f"JT{self.nonce}x{self._count}x"

    # ------------------------------------------------------------------ docxtpl's forms

    def _holder(self, tag: Tag) -> etree._Element | None:
        """The ``w:t`` holding the tag's token (None once docxtpl's rules removed it): from the last pass over the
        tree while that still holds (marking one zone splits only its own run)."""
        t = self._holder_cache.get(tag.token)
        if t is None or tag.token not in (t.text or "") or not _attached(t, self.root):
            self._holder_cache = self._holders()
            t = self._holder_cache.get(tag.token)
        return t

    def _holders(self) -> dict[str, etree._Element]:
        """Each token standing in a ``w:t``, and that ``w:t``: one pass over the tree for every tag."""
        found: dict[str, etree._Element] = {}
        for t in self.root.iter(W.t):
            if t.text and f"JT{self.nonce}x" in t.text:
                for token in _TOKEN_RE.findall(t.text):
                    found[token] = t
        return found

    def _apply_levels(self) -> None:
        for level in ("tr", "tc", "p", "r"):
            targets: dict[etree._Element, list[Tag]] = {}
            order: list[etree._Element] = []
            holders = self._holders()  # a level's forms move no token to another w:t before its targets go
            for tag in self.tags:
                if tag.level != level:
                    continue
                t = holders.get(tag.token)
                if t is None:
                    continue  # inside a row, cell or paragraph an earlier form replaced
                if tag.opener == "{{" and level in ("tr", "tc"):
                    raise TemplateLanguageError(
                        "jinja_forbidden", f"{tag.written!r}: docxtpl's {{{{{level} }}}} writes raw XML in place of "
                        f"the {'row' if level == 'tr' else 'cell'}; ASTRA writes only text", tag.location)
                if level == "r":
                    run = _isolate_token(t, tag.token)
                    target = run
                    if tag.opener == "{{":
                        tag.jinja = "{{ (" + tag.inner + ")|_astra_runs(" + _literal(tag.run_props) + ") }}"
                else:
                    target = next((a for a in t.iterancestors(_LEVEL_TAGS[level])), None)
                    if target is None:
                        what = {"tr": "table row", "tc": "table cell", "p": "paragraph"}[level]
                        raise TemplateLanguageError("jinja_syntax", f"{tag.written!r} is not in a {what}",
                                                    tag.location)
                    if tag.opener == "{{":  # {{p x}}
                        tag.jinja = ("{{ (" + tag.inner + ")|_astra_paragraphs(" + _literal(tag.paragraph_props)
                                     + ", " + _literal(tag.run_props) + ") }}")
                if target not in targets:
                    targets[target] = []
                    order.append(target)
                targets[target].append(tag)
            for target in order:
                if target.getparent() is None or not _attached(target, self.root):
                    continue
                _replace_with_text(target, "".join(tag.token for tag in targets[target]))

    def _apply_cell_helpers(self) -> None:
        holders = self._holders()  # a helper rewrites its own cell's text only
        for tag in list(self.tags):  # _generated adds tags of ASTRA's own, which are no helpers
            match = _HELPER_RE.fullmatch(tag.written.translate(_CURLY))
            if not match or tag.level is not None:
                continue
            t = holders.get(tag.token)
            if t is None:
                continue
            name, argument = match.group(1), match.group(2).strip()
            cell = next(t.iterancestors(W.tc), None)
            if cell is None:
                raise TemplateLanguageError("jinja_syntax", f"{tag.written!r} is docxtpl's cell helper: it must be "
                                            "in a table cell", tag.location)
            if name in ("cellbg", "colspan") and not argument:
                raise TemplateLanguageError("jinja_syntax", f"{tag.written!r} needs a value", tag.location)
            if name in ("vm", "hm") and argument:
                raise TemplateLanguageError("jinja_syntax", f"{tag.written!r} takes no value", tag.location)
            t.text = t.text.replace(tag.token, "")
            tag.jinja = ""  # the helper is written as cell properties and Jinja of ASTRA's own below
            tc_pr = _cell_properties(cell)
            if name == "cellbg":
                _set_cell_property(tc_pr, "shd", {W.val: "clear", W.color: "auto",
                                                  W.fill: self._generated("{{ (" + argument + ")|_astra_fill }}",
                                                                          tag)})
                _drop_emptied_run(t)
            elif name == "colspan":
                _set_cell_property(tc_pr, "gridSpan", {W.val: self._generated(
                    "{{ (" + argument + ")|_astra_span }}", tag)})
                _drop_emptied_run(t)
            elif name == "vm":
                _set_cell_property(tc_pr, "vMerge", {W.val: self._generated(
                    "{% if loop.first %}restart{% else %}continue{% endif %}", tag)})
                t.text = (self._generated("{% if loop.first %}", tag) + (t.text or "")
                          + self._generated("{% endif %}", tag))
            else:  # hm
                span = tc_pr.find(W.gridSpan)
                if span is not None and (span.get(W.val) or "").isdigit():
                    span.set(W.val, self._generated("{{ " + span.get(W.val) + " * loop.length }}", tag))
                else:
                    _set_cell_property(tc_pr, "gridSpan", {W.val: self._generated("{{ loop.length }}", tag)})
                _surround(cell, self._generated("{% if loop.first %}", tag), self._generated("{% endif %}", tag))

    def _generated(self, jinja: str, cause: Tag) -> str:
        """A tag ASTRA writes for a helper (docxtpl's own expansion), placed by its token; errors name ``cause``."""
        tag = Tag(cause.written, jinja, None, cause.location, self._token())
        self.tags.append(tag)
        return tag.token

    # ------------------------------------------------------------------ marks

    def mark_inline(self, tag: Tag, zone_id: str, kind: str, label: str, sdt_id: int) -> bool:
        """Wrap the output of an inline ``{{ X }}`` (alone in its run, split out) or of ``{{r X}}`` in an inline
        control. False when the tag is not where it can be wrapped."""
        sdt = _new_sdt(zone_id, kind, label, sdt_id)
        content = sdt[-1]
        t = self._holder(tag)
        if t is not None and tag.level is None:
            paragraph = next(t.iterancestors(W.p), None)
            if paragraph is None or not _inline_control_fits(t.getparent(), paragraph):
                return False
            run = _isolate_token(t, tag.token)
            run.addprevious(sdt)
            sdt.tail, run.tail = run.tail, None  # what follows the run (another tag's place) stays outside
            content.append(run)
            return True
        return self._wrap_loose_token(tag.token, sdt, block=False)

    def mark_block(self, tag: Tag, zone_id: str, kind: str, label: str, sdt_id: int) -> bool:
        """Wrap the paragraphs of ``{{p X}}`` in a block-level control."""
        return self._wrap_loose_token(tag.token, _new_sdt(zone_id, kind, label, sdt_id), block=True)

    def mark_range(self, start: Tag, end: Tag, zone_id: str, kind: str, label: str, sdt_id: int) -> bool:
        """Wrap a ``{%p for %}`` … ``{%p endfor %}`` pair standing among the same blocks in a block-level control."""
        a, b = self._loose_place(start.token), self._loose_place(end.token)
        if a is None or b is None or a[0] is not b[0] or a[0].tag not in _BLOCK_PARENTS or any(
                x.tag in (MC.AlternateContent, MC.Choice, MC.Fallback) for x in a[0].iterancestors()):
            return False
        parent, first, last = a[0], a[1], b[1]
        children = list(parent)
        sdt = _new_sdt(zone_id, kind, label, sdt_id)
        content = sdt[-1]
        head, _, rest = _text_before(parent, first).partition(start.token)
        _set_text_before(parent, first, head)
        if last == first:  # no block between the two tags
            middle, _, after = rest.partition(end.token)
            content.text = start.token + middle + end.token
        else:
            content.text = start.token + rest
            for child in children[first:last]:
                content.append(child)
            middle, _, after = (content[-1].tail or "").partition(end.token)
            content[-1].tail = middle + end.token
        sdt.tail = after
        parent.insert(first, sdt)
        return True

    def mark_table(self, tag: Tag, zone_id: str, kind: str, label: str, sdt_id: int) -> bool:
        """Wrap the table whose rows the ``{%tr for %}`` tag repeats in a block-level control."""
        place = self._loose_place(tag.token)
        if place is None or place[0].tag != W.tbl or place[0].getparent().tag not in _BLOCK_PARENTS or any(
                x.tag in (MC.AlternateContent, MC.Choice, MC.Fallback) for x in place[0].iterancestors()):
            return False
        table = place[0]
        sdt = _new_sdt(zone_id, kind, label, sdt_id)
        sdt.tail, table.tail = table.tail, None
        table.addprevious(sdt)
        sdt[-1].append(table)
        return True

    def _loose_place(self, token: str) -> tuple[etree._Element, int] | None:
        """(parent, index of the first child after it) of a token standing among elements (a tail or a text)."""
        for el in self.root.iter():
            if not isinstance(el.tag, str) or el.tag == W.t:
                continue
            if el.text and token in el.text:
                return el, 0
            if el.tail and token in el.tail:
                parent = el.getparent()
                return parent, parent.index(el) + 1
        return None

    def _wrap_loose_token(self, token: str, sdt: etree._Element, *, block: bool) -> bool:
        place = self._loose_place(token)
        if place is None:
            return False
        parent, index = place
        if block and parent.tag not in _BLOCK_PARENTS:
            return False
        if not block and (parent.tag != W.p or not _inline_control_fits(parent, parent)):
            return False
        if any(a.tag in (MC.AlternateContent, MC.Choice, MC.Fallback) for a in parent.iterancestors()):
            return False
        before = _text_before(parent, index)
        head, _, after = before.partition(token)
        _set_text_before(parent, index, head)
        sdt[-1].text = token
        sdt.tail = after
        parent.insert(index, sdt)
        return True

    # ------------------------------------------------------------------ the source

    def source(self) -> str:
        """The Jinja source of the part (see the module docstring); sets the line of each tag."""
        segments = None if utf16_encoding(self.data) else split_children(self.data, story_container_path)
        kept = self._kept_blocks()
        self.raw = []
        pieces: list[str] = []
        if segments is None or any(tag.merge_before or tag.merge_after for tag in self.tags):
            kept = {}
            pieces.append('<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n')
            pieces.append(self._serialized(self.root))
        else:
            spans = [(start, end) for kind, start, end in segments if kind.startswith("block:")]
            prefix = next(self.data[s:e] for k, s, e in segments if k == "prefix")
            suffix = next(self.data[s:e] for k, s, e in segments if k == "suffix")
            pieces.append(self._bytes(prefix))
            pieces.append(self._text(self.container.text))
            for child in self.container:
                if isinstance(child.tag, str) and id(child) in kept:
                    start, end = spans[kept[id(child)]]
                    pieces.append(self._bytes(self.data[start:end]))
                elif isinstance(child.tag, str):
                    pieces.append(self._serialized(child, with_tail=False))
                pieces.append(self._text(child.tail))
            pieces.append(self._bytes(suffix))
        text = "".join(pieces)
        text = self._merge(text)
        self._check_nesting(text)
        return self._place_tags(text)

    def _kept_blocks(self) -> dict[int, int]:
        """id(block) -> its index among the original blocks, for each original block still in the container
        that holds no tag (so its bytes are kept)."""
        kept = {}
        marker = f"JT{self.nonce}x"  # every token of this part begins so
        for index, block in enumerate(self.blocks):
            if block.getparent() is not self.container:
                continue
            xml = etree.tostring(block, encoding="unicode", with_tail=False)
            if marker not in xml and _unescape_delimiters(xml) == xml:
                kept[id(block)] = index
        return kept

    def _bytes(self, data: bytes) -> str:
        text = data.decode("utf-8")
        if "{" not in text:
            return text
        self.raw.append(text)
        return "{{ _astra_raw[" + str(len(self.raw) - 1) + "] }}"

    @staticmethod
    def _text(text: str | None) -> str:
        return _unescape_delimiters(escape_text(text or "")).replace("{", "&#123;")

    def _serialized(self, el: etree._Element, *, with_tail: bool = True) -> str:
        if el is self.root:
            xml = etree.tostring(el, encoding="unicode")
        else:
            copy = deepcopy(el)
            if not with_tail:
                copy.tail = None
            xml = fragment_xml(copy, self.container.nsmap).decode("utf-8")
        return _unescape_delimiters(xml).replace("{", "&#123;")

    def _merge(self, text: str) -> str:
        """docxtpl's whitespace control on the XML: every ``{%-`` first takes away everything from the previous
        ``</w:t>`` to the tag, then every ``-%}`` everything from the tag to the next ``w:t``'s start — as docxtpl
        does, except that neither ever takes away another tag (docxtpl's would drop it silently); a tag whose
        text before or after holds another is not merged on that side. One pass each: the spans are disjoint (each
        ends at a tag, or begins at one, and holds no other)."""
        before = {tag.token for tag in self.tags if tag.merge_before}
        after = {tag.token for tag in self.tags if tag.merge_after}
        token = f"JT{self.nonce}x[0-9]+x"
        if before:
            text = re.sub(r"</w:t>(?:(?!</w:t>|" + token + r").)*?(" + token + ")",
                          lambda m: m.group(1) if m.group(1) in before else m.group(0), text, flags=re.S)
        if after:
            text = re.sub("(" + token + r")(?:(?!<w:t[ >]|" + token + r").)*?<w:t[^>]*?>",
                          lambda m: m.group(1) if m.group(1) in after else m.group(0), text, flags=re.S)
        return text

    def _check_nesting(self, text: str) -> None:
        """Refuse a block tag (``for``, ``if``, ``with``, ``set``…``endset``) whose parts stand in different places
        of the XML: its body is repeated or dropped whole, so it must leave the document's elements as it found
        them (what a paragraph opens in it, it closes; it may close one paragraph and open the next). A loop that
        opens in the body and ends in a table cell would write broken XML at every render."""
        text = _RAW_REF.sub(lambda m: self.raw[int(m.group(1))], text)
        stacks: dict[str, tuple[str, ...]] = {}
        positions: dict[str, int] = {}
        stack: list[str] = []
        by_token = {tag.token: tag for tag in self.tags}
        last: Tag | None = None
        for match in _XML_OR_TOKEN.finditer(text):
            token, closing, name, empty = match.group("token"), match.group("close"), match.group("name"), \
                match.group("empty")
            if token:
                stacks[token] = tuple(stack)
                positions[token] = match.start()
                last = by_token.get(token, last)
            elif name and closing:
                if not stack or stack[-1] != name:
                    # Read in order (every if taken, every loop once), the XML does not nest: a merge or a tag
                    # took away part of an element.
                    where = f"after {last.written!r}" if last else "before its first tag"
                    raise TemplateLanguageError(
                        "jinja_syntax", f"the template's tags leave its XML broken {where}: </{name}> closes "
                        f"{_place(tuple(stack))} (a whitespace merge '{{%-' or '-%}}' reaching across a paragraph, "
                        "or a tag cutting an element)", last.location if last else {"part": "/" + self.part})
                stack.pop()
            elif name and not empty:
                stack.append(name)
        open_blocks: list[list[Tag]] = []
        for tag in (by_token[t] for t in stacks if t in by_token):  # in the order the scan met them
            word = _block_word(tag.jinja)
            if word in _BLOCK_OPENERS:
                open_blocks.append([tag])
            elif word in ("elif", "else") and open_blocks:
                open_blocks[-1].append(tag)
            elif word is not None and word.startswith("end") and open_blocks:
                block = [*open_blocks.pop(), tag]
                first = block[0]
                if first.jinja.lstrip("{%-+ ").startswith("for") and _NOTE_ANCHOR.search(
                        text, positions[first.token], positions[tag.token]):
                    raise TemplateLanguageError(
                        "jinja_forbidden", f"{first.written!r}: a footnote, endnote or comment inside a loop would be "
                        "repeated with one id (Word repairs the document; LibreOffice drops copies): keep it out of "
                        "the loop", first.location)
                for other in block[1:]:
                    if stacks[other.token] != stacks[first.token]:
                        raise TemplateLanguageError(
                            "jinja_syntax", f"{first.written!r} opens in {_place(stacks[first.token])} and "
                            f"{other.written!r} stands in {_place(stacks[other.token])}: a block tag must end where "
                            "it begins (for whole paragraphs, rows or cells use docxtpl's {%p %}, {%tr %}, {%tc %})",
                            first.location)

    def _place_tags(self, text: str) -> str:
        """Each token replaced by its tag's Jinja text, a line end inside the tag before its closing delimiter
        (so each tag begins on a line of its own); the line of each tag recorded."""
        by_token = {tag.token: tag for tag in self.tags}
        pattern = re.compile("|".join(re.escape(token) for token in by_token))
        out: list[str] = []
        self._lines = []
        line = 1
        position = 0
        for match in pattern.finditer(text):
            out.append(text[position:match.start()])
            line += text.count("\n", position, match.start())
            tag = by_token[match.group(0)]
            jinja = tag.jinja
            if jinja:
                closing = jinja[-2:]
                body = jinja[:-2]
                trim = body.endswith(("-", "+")) and not body.endswith(("--", "++"))
                if trim:
                    body, mark = body[:-1], body[-1]
                else:
                    mark = ""
                placed = body + "\n" + mark + closing
                self._lines.append((line, tag))
                line += placed.count("\n")
                out.append(placed)
            position = match.end()
        out.append(text[position:])
        return "".join(out)

    def tag_at(self, line: int | None) -> Tag | None:
        """The tag Jinja's line number ``line`` falls in (the last one begun at or before it)."""
        if line is None:
            return None
        index = bisect.bisect_right(self._lines, line, key=lambda entry: entry[0]) - 1
        return self._lines[index][1] if index >= 0 else None

    def tags_in_source(self) -> list[Tag]:
        """The tags the last :meth:`source` holds, in source order."""
        return [tag for _, tag in self._lines]


# --------------------------------------------------------------------------- tree helpers


_RAW_REF = re.compile(r"\{\{ _astra_raw\[(\d+)\] \}\}")
# An element's start or end tag (attribute values quoted), skipping comments, CDATA and processing instructions;
# or a tag's token.
_XML_OR_TOKEN = re.compile(
    r"<!--.*?-->|<!\[CDATA\[.*?\]\]>|<[?!][^>]*>"
    r"|<(?P<close>/)?(?P<name>[^\s/>]+)(?:\s+[^\s=>]+\s*=\s*(?:\"[^\"]*\"|'[^']*'))*\s*(?P<empty>/)?>"
    r"|(?P<token>JT[0-9a-f]{12}x[0-9]+x)", re.S)
# What a loop cannot repeat: a note's or comment's anchor points at one note by its id.
_NOTE_ANCHOR = re.compile(r"<w:(?:footnoteReference|endnoteReference|commentReference|commentRangeStart)\b")
_BLOCK_OPENERS = frozenset({"for", "if", "with", "filter", "macro", "call", "block", "autoescape"})
_BLOCK_WORD = re.compile(r"\{%[-+]?\s*([a-z]+)")
# The containers a tag's place is named by in a message (the innermost one holding it).
_PLACES = {"w:tc": "a table cell", "w:body": "the body", "w:sdtContent": "a content control", "w:hdr": "the header",
           "w:ftr": "the footer", "w:footnote": "a footnote", "w:txbxContent": "a text box"}


def _block_word(jinja: str) -> str | None:
    """``for``, ``endif``, ``else``… of a statement tag; ``set`` only in its block form (no ``=``)."""
    match = _BLOCK_WORD.match(jinja)
    if match is None:
        return None
    word = match.group(1)
    if word == "set":
        return "for" if "=" not in jinja else None  # a block assignment opens like any block
    return word


def _place(stack: tuple[str, ...]) -> str:
    """Where a tag stands, for a message: the innermost cell, body, control… holding it, and the path to it."""
    named = [_PLACES.get(name, name) for name in stack if name in _PLACES]
    return (named[-1] if named else "the part") + " (" + "/".join(stack[1:] or stack) + ")"


def _unescape_delimiters(xml: str) -> str:
    """docxtpl's escaped delimiters: ``{_{``, ``}_}``, ``{_%``, ``%_}`` written in a template are ``{{``, ``}}``,
    ``{%``, ``%}`` in the document (text, never a tag)."""
    return xml.replace("{_{", "{{").replace("}_}", "}}").replace("{_%", "{%").replace("%_}", "%}")


def _literal(value: str) -> str:
    """A Jinja string literal of ``value`` (ASTRA's own XML: properties of the tag's run or paragraph)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'").replace("\n", " ") + "'"


def _props_xml(el: etree._Element | None, tag: str) -> str:
    if el is None:
        return ""
    props = el.find(tag)
    if props is None:
        return ""
    return fragment_xml(props, el.nsmap).decode("utf-8")


def _attached(el: etree._Element, root: etree._Element) -> bool:
    for ancestor in el.iterancestors():
        if ancestor is root:
            return True
    return el is root


def _replace_with_text(el: etree._Element, text: str) -> None:
    """Put ``text`` where ``el`` is (the previous sibling's tail, or the parent's text); ``el`` removed."""
    parent = el.getparent()
    previous = el.getprevious()
    text += el.tail or ""
    if previous is not None:
        previous.tail = (previous.tail or "") + text
    else:
        parent.text = (parent.text or "") + text
    parent.remove(el)


def _surround(el: etree._Element, before: str, after: str) -> None:
    """``before`` just before ``el`` and ``after`` just after it, as text among its siblings."""
    previous = el.getprevious()
    if previous is not None:
        previous.tail = (previous.tail or "") + before
    else:
        parent = el.getparent()
        parent.text = (parent.text or "") + before
    el.tail = after + (el.tail or "")


def _isolate_token(t: etree._Element, token: str) -> etree._Element:
    """The run holding ``t`` split so that the token is alone in a run of its own (same properties); returns that
    run. The text before and after stays in runs of the same properties."""
    run = t.getparent()
    before, _, after = (t.text or "").partition(token)
    siblings_before = [c for c in run if c is not t and c.tag != W.rPr and run.index(c) < run.index(t)]
    siblings_after = [c for c in run if run.index(c) > run.index(t)]
    rpr = run.find(W.rPr)
    if before or siblings_before:
        left = etree.Element(W.r)
        if rpr is not None:
            left.append(deepcopy(rpr))
        for child in siblings_before:
            left.append(child)
        if before:
            lt = etree.SubElement(left, W.t)
            lt.text = before
            lt.set(_XML_SPACE, "preserve")
        run.addprevious(left)
    if after or siblings_after:
        right = etree.Element(W.r)
        if rpr is not None:
            right.append(deepcopy(rpr))
        if after:
            rt = etree.SubElement(right, W.t)
            rt.text = after
            rt.set(_XML_SPACE, "preserve")
        for child in siblings_after:
            right.append(child)
        right.tail, run.tail = run.tail, None
        run.addnext(right)
    t.text = token
    return run


def _inline_control_fits(el: etree._Element, paragraph: etree._Element) -> bool:
    """Whether a zone's inline control can stand at ``el`` (a run, or the paragraph itself) so that BUILDER's check
    accepts it: nothing but plain run containers up to the paragraph (not a hyperlink or simple field, whose text
    user content never becomes; not alternate content, deleted or moved text, ruby), and no complex field open in
    the paragraph (Word replaces a field's result when it updates it)."""
    if el is not paragraph:
        for ancestor in [el, *el.iterancestors()]:
            if ancestor is paragraph:
                break
            if ancestor.getparent() is None or ancestor.getparent().tag not in _INLINE_HOLDERS:
                return False
    if any(a.tag in (MC.AlternateContent, MC.Choice, MC.Fallback) for a in paragraph.iterancestors()):
        return False
    if el is paragraph:
        return paragraph.find(f".//{W.fldChar}") is None and paragraph.find(f".//{W.fldSimple}") is None
    return field_depths(paragraph, [el], lambda sdt: False).get(el, 0) == 0


def _drop_emptied_run(t: etree._Element) -> None:
    """A run left with an empty text by a helper tag goes (docxtpl removes it too)."""
    run = t.getparent()
    if (t.text or "") == "" and run.tag == W.r and all(c.tag in (W.rPr, W.t) and not (c.text or "") or c.tag == W.rPr
                                                          for c in run):
        _replace_with_text(run, "")


def _cell_properties(cell: etree._Element) -> etree._Element:
    tc_pr = cell.find(W.tcPr)
    if tc_pr is None:
        tc_pr = etree.Element(W.tcPr)
        cell.insert(0, tc_pr)
    return tc_pr


def _set_cell_property(tc_pr: etree._Element, name: str, attributes: dict[str, str]) -> None:
    """``w:<name>`` with ``attributes`` in the cell's properties, replacing one there, in schema order."""
    existing = tc_pr.find(W(name))
    if existing is not None:
        tc_pr.remove(existing)
    element = etree.Element(W(name))
    for key, value in attributes.items():
        element.set(key, value)
    rank = _TC_PR_ORDER.index(name)
    for index, child in enumerate(tc_pr):
        if isinstance(child.tag, str) and local_name(child.tag) in _TC_PR_ORDER and \
                _TC_PR_ORDER.index(local_name(child.tag)) > rank:
            tc_pr.insert(index, element)
            return
    tc_pr.append(element)


def _new_sdt(zone_id: str, kind: str, label: str, sdt_id: int) -> etree._Element:
    sdt = etree.Element(W.sdt)
    pr = etree.SubElement(sdt, W.sdtPr)
    etree.SubElement(pr, W.alias).set(W.val, label)
    etree.SubElement(pr, W.tag).set(W.val, f"astra:{zone_id};kind={kind}")
    etree.SubElement(pr, W.id).set(W.val, str(sdt_id))
    etree.SubElement(pr, W.lock).set(W.val, "sdtLocked")
    etree.SubElement(sdt, W.sdtContent)
    return sdt


def _text_before(parent: etree._Element, index: int) -> str:
    """The text standing in ``parent`` before its child ``index`` (the previous child's tail, or its text)."""
    return (parent[index - 1].tail if index > 0 else parent.text) or ""


def _set_text_before(parent: etree._Element, index: int, text: str) -> None:
    if index > 0:
        parent[index - 1].tail = text
    else:
        parent.text = text


__all__ = ["TAG_RE", "PartSource", "Tag"]
