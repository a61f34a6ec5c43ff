"""Style map: the styles in effect at each zone and their resolved formatting.

Resolution follows WordprocessingML's style hierarchy (ECMA-376 Part 1, 17.7.2/17.7.3):

* paragraph properties (``alignment``)::

      docDefaults/pPrDefault < table style < paragraph style < direct w:pPr

* run properties (``font``, ``size_pt``, ``color``, ``underline``)::

      docDefaults/rPrDefault < table style < paragraph style < character style < direct w:rPr

  where every style contributes its whole ``basedOn`` chain (the nearest definition in a
  chain wins; cycles and chains deeper than 32 are cut).
* ``bold`` and ``italic`` are *toggle* properties: the docDefaults value is the starting
  state, each style *type* (table, paragraph, character — each resolved along its own
  basedOn chain first) that turns the property on flips the state, and direct formatting
  sets it absolutely.
* ``font`` is the ``w:rFonts`` ASCII slot: the most specific level that sets ``w:ascii`` or
  ``w:asciiTheme`` wins; at one level the theme attribute beats the explicit one (as Word
  does). Theme fonts (``minorHAnsi``, ``majorAscii``...) resolve through the theme part's
  ``a:minorFont``/``a:majorFont`` ``a:latin`` typeface (``…EastAsia`` -> ``a:ea``,
  ``…Bidi`` -> ``a:cs``); with no theme part the level's explicit ``w:ascii`` is used.
* ``size_pt`` = ``w:sz`` half-points / 2; ``color`` = ``w:color/@w:val`` (6 hex digits,
  upper-cased, or ``auto``); ``underline`` = any ``w:u`` other than ``none``;
  ``alignment`` = ``w:jc`` with ``start``->``left``, ``end``->``right``, the kashida
  variants -> ``both``, ``thaiDistribute`` -> ``distribute``.

``null`` in the output always means *no level of the hierarchy says* (the consumer applies
the application default). A package with no styles part resolves only direct formatting.

The "direct run formatting" of a zone is the ``w:rPr`` of its first run. For a content
control showing its placeholder (``w:showingPlcHdr``) it is the control's ``w:sdtPr/w:rPr``
instead, and the *Placeholder Text* character style is never reported as the zone's run
style (it is what Word shows in an empty control, not what the content will wear). An empty
zone paragraph uses the paragraph mark's run properties (``w:pPr/w:rPr``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from lxml import etree

from astra.ooxml.ns import A, W
from astra.ooxml.wordml import on_off, wval

FORMATTING_KEYS = ("font", "size_pt", "color", "bold", "italic", "underline", "alignment")
_TOGGLES = ("bold", "italic")
_MAX_CHAIN = 32
_HEX6 = re.compile(r"^[0-9A-Fa-f]{6}$")
_ALIGN = {
    "left": "left",
    "start": "left",
    "right": "right",
    "end": "right",
    "center": "center",
    "both": "both",
    "distribute": "distribute",
    "lowKashida": "both",
    "mediumKashida": "both",
    "highKashida": "both",
    "thaiDistribute": "distribute",
}


def empty_formatting() -> dict:
    return {key: None for key in FORMATTING_KEYS}


# --------------------------------------------------------------------------- property readers


def _half_points(val: str | None) -> float | None:
    if val is None:
        return None
    val = val.strip()
    try:
        if val.endswith("pt"):  # Strict allows a universal measure
            pts = float(val[:-2])
        else:
            pts = int(val) / 2
    except ValueError:
        return None
    if not 1 <= pts <= 1638:
        return None
    return float(pts)


def rpr_props(rpr: etree._Element | None) -> dict:
    """The formatting a ``w:rPr`` sets (only the keys it sets). ``font`` is a
    ``(theme_name | None, ascii | None)`` pair until resolved."""
    out: dict = {}
    if rpr is None:
        return out
    fonts = rpr.find(W.rFonts)
    if fonts is not None:
        theme, ascii_ = fonts.get(W.asciiTheme), fonts.get(W.ascii)
        if theme or ascii_:
            out["font"] = (theme or None, ascii_ or None)
    sz = rpr.find(W.sz)
    if sz is not None:
        size = _half_points(wval(sz))
        if size is not None:
            out["size_pt"] = size
    color = rpr.find(W.color)
    if color is not None:
        val = (wval(color) or "").strip()
        if val == "auto":
            out["color"] = "auto"
        elif _HEX6.match(val):
            out["color"] = val.upper()
    for key, tag in (("bold", W.b), ("italic", W.i)):
        value = on_off(rpr.find(tag))
        if value is not None:
            out[key] = value
    u = rpr.find(W.u)
    if u is not None:
        val = wval(u)
        out["underline"] = (val or "single").strip() != "none"
    return out


def ppr_props(ppr: etree._Element | None) -> dict:
    out: dict = {}
    if ppr is None:
        return out
    jc = ppr.find(W.jc)
    if jc is not None:
        align = _ALIGN.get((wval(jc) or "").strip())
        if align is not None:
            out["alignment"] = align
    return out


# --------------------------------------------------------------------------- style sheet


class StyleSheet:
    """styles.xml (+ theme fonts) with basedOn chain resolution. Both roots may be None."""

    def __init__(self, styles_root: etree._Element | None, theme_root: etree._Element | None = None):
        self.present = styles_root is not None
        self.styles: dict[str, etree._Element] = {}
        self.defaults: dict[str, str] = {}
        self.doc_rpr: etree._Element | None = None
        self.doc_ppr: etree._Element | None = None
        self.theme_fonts: dict[str, str] = {}
        if styles_root is not None:
            for style in styles_root.iter(W.style):
                sid = style.get(W.styleId)
                if not sid or sid in self.styles:
                    continue
                self.styles[sid] = style
                stype = style.get(W.type) or "paragraph"
                if on_off_attr(style.get(W("default"))) and stype not in self.defaults:
                    self.defaults[stype] = sid
            dd = styles_root.find(W.docDefaults)
            if dd is not None:
                self.doc_rpr = dd.find(f"{W.rPrDefault}/{W.rPr}")
                self.doc_ppr = dd.find(f"{W.pPrDefault}/{W.pPr}")
        if theme_root is not None:
            scheme = theme_root.find(f".//{A.fontScheme}")
            if scheme is not None:
                for major in ("major", "minor"):
                    font = scheme.find(A(f"{major}Font"))
                    if font is None:
                        continue
                    for script in ("latin", "ea", "cs"):
                        face = font.find(A(script))
                        typeface = face.get("typeface") if face is not None else None
                        if typeface:
                            self.theme_fonts[f"{major}:{script}"] = typeface

    # -- lookups
    def exists(self, style_id: str | None) -> bool:
        return bool(style_id) and style_id in self.styles

    def name(self, style_id: str) -> str | None:
        style = self.styles.get(style_id)
        return wval(style.find(W.name)) if style is not None else None

    def is_placeholder_text(self, style_id: str | None) -> bool:
        if not style_id:
            return False
        if style_id == "PlaceholderText":
            return True
        return (self.name(style_id) or "").strip().lower() == "placeholder text"

    def chain(self, style_id: str | None) -> list[etree._Element]:
        """The style and its basedOn ancestors, most specific first."""
        out: list[etree._Element] = []
        seen: set[str] = set()
        while style_id and style_id in self.styles and style_id not in seen and len(out) < _MAX_CHAIN:
            seen.add(style_id)
            style = self.styles[style_id]
            out.append(style)
            style_id = wval(style.find(W.basedOn))
        return out

    def chain_props(self, style_id: str | None, which: str) -> dict:
        """Formatting a style sets through its basedOn chain (``which`` = 'r' or 'p')."""
        merged: dict = {}
        for style in reversed(self.chain(style_id)):
            if which == "r":
                merged.update(rpr_props(style.find(W.rPr)))
            else:
                merged.update(ppr_props(style.find(W.pPr)))
        return merged

    def has_numbering(self, style_id: str | None) -> bool:
        """Whether the paragraph style (through its chain) applies numbering."""
        for style in self.chain(style_id):
            num = style.find(f"{W.pPr}/{W.numPr}")
            if num is not None:
                num_id = wval(num.find(W.numId))
                return num_id is not None and num_id.strip() != "0"
        return False

    def paragraph_style_for(self, style_id: str | None) -> str | None:
        """The paragraph style that actually applies (unknown/absent -> default)."""
        if self.exists(style_id):
            return style_id
        return self.defaults.get("paragraph")

    # -- resolution
    def theme_font(self, name: str) -> str | None:
        major = "major" if name.startswith("major") else "minor"
        script = "ea" if name.endswith("EastAsia") else "cs" if name.endswith("Bidi") else "latin"
        return self.theme_fonts.get(f"{major}:{script}")

    def resolve(
        self,
        *,
        paragraph_style: str | None,
        run_style: str | None = None,
        table_style: str | None = None,
        direct_ppr: etree._Element | None = None,
        direct_rpr: etree._Element | None = None,
    ) -> dict:
        """Resolved formatting (all :data:`FORMATTING_KEYS`, None = unspecified)."""
        pstyle = self.paragraph_style_for(paragraph_style)
        rstyle = run_style if self.exists(run_style) else None
        tstyle = table_style if self.exists(table_style) else None

        para: dict = {}
        para.update(ppr_props(self.doc_ppr))
        para.update(self.chain_props(tstyle, "p"))
        para.update(self.chain_props(pstyle, "p"))
        para.update(ppr_props(direct_ppr))

        base = rpr_props(self.doc_rpr)
        layers = [self.chain_props(tstyle, "r"), self.chain_props(pstyle, "r"), self.chain_props(rstyle, "r")]
        direct = rpr_props(direct_rpr)

        run: dict = dict(base)
        for layer in layers + [direct]:
            for key, value in layer.items():
                if key not in _TOGGLES:
                    run[key] = value
        for key in _TOGGLES:
            state = base.get(key)
            for layer in layers:
                value = layer.get(key)
                if value is True:
                    state = True if state is None else not state
                elif value is False and state is None:
                    state = False
            if key in direct:
                state = direct[key]
            run[key] = state

        out = empty_formatting()
        out["alignment"] = para.get("alignment")
        for key in ("size_pt", "color", "bold", "italic", "underline"):
            out[key] = run.get(key)
        font = run.get("font")
        if font is not None:
            theme, ascii_ = font
            resolved = self.theme_font(theme) if theme else None
            out["font"] = resolved or ascii_
        return out

    def document_defaults(self) -> dict:
        """docDefaults resolved together with the default paragraph style."""
        return self.resolve(paragraph_style=None)


def on_off_attr(val: str | None) -> bool:
    return val is not None and val.strip().lower() in ("1", "true", "on")


# --------------------------------------------------------------------------- zone styles


@dataclass(frozen=True)
class StyleAnchor:
    """Where a zone's formatting is read from (elements of the parsed story part)."""

    paragraph: etree._Element | None
    run: etree._Element | None = None
    table: etree._Element | None = None
    sdt: etree._Element | None = None


def zone_style(sheet: StyleSheet, anchor: StyleAnchor) -> dict:
    """The style-map entry for one zone."""
    ppr = anchor.paragraph.find(W.pPr) if anchor.paragraph is not None else None
    pstyle_raw = wval(ppr.find(W.pStyle)) if ppr is not None else None
    paragraph_style = pstyle_raw or sheet.defaults.get("paragraph")

    sdt_pr = anchor.sdt.find(W.sdtPr) if anchor.sdt is not None else None
    showing_placeholder = sdt_pr is not None and on_off(sdt_pr.find(W.showingPlcHdr)) is True
    if showing_placeholder:
        direct_rpr = sdt_pr.find(W.rPr)
    elif anchor.run is not None:
        direct_rpr = anchor.run.find(W.rPr)
    else:
        direct_rpr = None
        if sdt_pr is not None:
            direct_rpr = sdt_pr.find(W.rPr)
        if direct_rpr is None and ppr is not None:
            direct_rpr = ppr.find(W.rPr)  # paragraph mark: what typed text would wear
    run_style = wval(direct_rpr.find(W.rStyle)) if direct_rpr is not None else None
    if sheet.is_placeholder_text(run_style):
        run_style = None

    table_style = None
    if anchor.table is not None:
        table_style = wval(anchor.table.find(f"{W.tblPr}/{W.tblStyle}")) or sheet.defaults.get("table")

    resolved = sheet.resolve(
        paragraph_style=pstyle_raw,
        run_style=run_style,
        table_style=table_style,
        direct_ppr=ppr,
        direct_rpr=direct_rpr,
    )
    return {
        "paragraph_style": paragraph_style,
        "run_style": run_style,
        "table_style": table_style,
        "resolved": resolved,
    }
