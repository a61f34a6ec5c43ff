"""A deterministic demo template: a *field inspection report* for the demo tenant.

:func:`build_sample_template` returns the .docx bytes (identical on every call: fixed core
properties, fixed zip timestamps and member order, a generated PNG) and
:func:`sample_sidecar` the matching ``field_inspection.zones.json``. Zones:

=============  ================  =====================================================
zone           declared by       notes
=============  ================  =====================================================
report_ref     placeholder       in the header, split across 2 runs
title          placeholder       ``Title`` paragraph, split across 3 runs (different
                                 formatting, a proofErr and a bookmark in between)
summary        content control   ``kind=text``, CLINC150 travel/banking intents,
                                 domain ``travel``; shows its placeholder text
action_items   content control   ``List Bullet`` paragraph -> kind ``list`` inferred;
                                 home/work intents
measurements   content control   wraps a table (``InspectionTable`` style),
                                 ``kind=table``, bound to ``data/*.csv``
site_photo     content control   picture control -> kind ``image``, ``media/*.png``
notes          content control   ``fallback`` flag (the sidecar names it too)
=============  ================  =====================================================

Custom styles: ``Title`` in Georgia 1F4E79, ``ZoneBody`` (Arial 10.5 pt 333333, based on
Normal), ``ZoneAccent`` (bold C0504D character style), ``InspectionTable`` (table style
based on Table Grid, 9 pt 1F3864) and Word's ``PlaceholderText``.

:func:`minimal_docx` builds a bare package from raw WordprocessingML fragments (no
python-docx), for tests and hand-made samples.

A fixture builder, not engine code: it writes packages through :mod:`astra.ooxml`, the same
layer INGEST reads them with.

``python -m astra.samples.templates DIR`` writes ``field_inspection.docx`` and
``field_inspection.zones.json`` into DIR.
"""

from __future__ import annotations

import datetime as _dt
import io
import struct
import zlib

from astra.ooxml.ns import A_NS, CT_RELATIONSHIPS, CT_THEME, CT_WML, NSMAP, RT_TRANSITIONAL
from astra.ooxml.package import Package, write_package
from astra.ooxml.rels import XML_DECLARATION, Relationship, content_types_xml, relationships_xml

SAMPLE_TEMPLATE_NAME = "field_inspection"
FIXED_TIMESTAMP = _dt.datetime(2024, 1, 15, 9, 0, 0)
_ZIP_DATE = (2024, 1, 15, 9, 0, 0)

SUMMARY_INTENTS = (
    "travel.book_flight",
    "travel.book_hotel",
    "travel.car_rental",
    "travel.travel_alert",
    "banking.pay_bill",
    "banking.transfer",
)
ACTION_ITEM_INTENTS = ("home.todo_list_update", "home.reminder", "work.schedule_meeting")


def sample_sidecar() -> dict:
    """The sidecar uploaded next to the sample template (``field_inspection.zones.json``)."""
    return {
        "version": 1,
        "zones": {
            "report_ref": {"label": "Report reference"},
            "title": {"label": "Report title", "kind": "text"},
            "summary": {"domains": ["travel", "banking"]},
            "notes": {"label": "Inspector notes"},
        },
        "fallback_zone": "notes",
    }


def _png(width: int = 64, height: int = 48) -> bytes:
    """A small deterministic RGB PNG (a grey-blue gradient)."""
    raw = bytearray()
    for y in range(height):
        raw.append(0)  # filter: none
        for x in range(width):
            raw += bytes((40 + x * 2, 80 + y * 2, 140))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    phys = struct.pack(">IIB", 3780, 3780, 1)  # 96 dpi
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"pHYs", phys)
        + chunk(b"IDAT", zlib.compress(bytes(raw), 9))
        + chunk(b"IEND", b"")
    )


def _repack(data: bytes) -> bytes:
    """Rewrite the zip with fixed timestamps and plain headers so the bytes are reproducible."""
    pkg = Package.read(data)
    return write_package(((name, pkg.read_part(name)) for name in pkg.members), date_time=_ZIP_DATE)


# --------------------------------------------------------------------------- minimal packages

_XMLNS = " ".join(f'xmlns:{prefix}="{uri}"' for prefix, uri in NSMAP.items())


def minimal_docx(
    body: str,
    *,
    styles: str | None = None,
    theme_fonts: tuple[str, str] | None = None,
    headers: list[str] | tuple[str, ...] = (),
    footers: list[str] | tuple[str, ...] = (),
) -> bytes:
    """A minimal, valid .docx from raw WordprocessingML fragments (for samples and tests).

    ``body`` is the inner XML of ``w:body``; ``styles`` the inner XML of ``w:styles``
    (None: no styles part at all); ``theme_fonts`` = (major latin, minor latin) typefaces
    of a generated theme part (None: no theme part); ``headers``/``footers`` the inner XML
    of each ``w:hdr``/``w:ftr`` (parts header1.xml..., footer1.xml...). The prefixes of
    :data:`astra.ooxml.ns.NSMAP` are declared on every root. Deterministic bytes.
    """
    parts = {"word/document.xml": f"<w:document {_XMLNS}><w:body>{body}</w:body></w:document>"}
    overrides = {"word/document.xml": CT_WML + "document.main+xml"}
    rels = []
    if styles is not None:
        parts["word/styles.xml"] = f"<w:styles {_XMLNS}>{styles}</w:styles>"
        overrides["word/styles.xml"] = CT_WML + "styles+xml"
        rels.append(("styles", "styles.xml"))
    if theme_fonts is not None:
        parts["word/theme/theme1.xml"] = _theme_xml(*theme_fonts)
        overrides["word/theme/theme1.xml"] = CT_THEME
        rels.append(("theme", "theme/theme1.xml"))
    for kind, root, items in (("header", "hdr", headers), ("footer", "ftr", footers)):
        for n, inner in enumerate(items, start=1):
            parts[f"word/{kind}{n}.xml"] = f"<w:{root} {_XMLNS}>{inner}</w:{root}>"
            overrides[f"word/{kind}{n}.xml"] = f"{CT_WML}{kind}+xml"
            rels.append((kind, f"{kind}{n}.xml"))
    package_rels = [Relationship("_rels/.rels", "", "rId1", RT_TRANSITIONAL + "officeDocument", "word/document.xml",
                                 False)]
    document_rels = [Relationship("word/_rels/document.xml.rels", "word/document.xml", f"rId{i}",
                                  RT_TRANSITIONAL + kind, target, False) for i, (kind, target) in enumerate(rels, 1)]
    return write_package([
        ("[Content_Types].xml", content_types_xml({"rels": CT_RELATIONSHIPS, "xml": "application/xml"}, overrides)),
        ("_rels/.rels", relationships_xml(package_rels)),
        ("word/_rels/document.xml.rels", relationships_xml(document_rels)),
        *((name, (XML_DECLARATION + parts[name]).encode("utf-8")) for name in sorted(parts)),
    ], date_time=_ZIP_DATE)


def _theme_xml(major: str, minor: str) -> str:
    """A theme part whose font scheme has the given major and minor latin typefaces."""
    return (
        f'<a:theme xmlns:a="{A_NS}" name="Test"><a:themeElements>'
        f'<a:fontScheme name="Test"><a:majorFont><a:latin typeface="{major}"/><a:ea typeface=""/>'
        f'<a:cs typeface=""/></a:majorFont><a:minorFont><a:latin typeface="{minor}"/>'
        f'<a:ea typeface=""/><a:cs typeface=""/></a:minorFont></a:fontScheme>'
        f"</a:themeElements></a:theme>"
    )


# --------------------------------------------------------------------------- the demo template


def build_sample_template() -> bytes:
    """Build the demo template (.docx bytes), deterministically: styles, core properties, header,
    title, then one section per zone."""
    import docx

    doc = docx.Document()
    _add_styles(doc)
    _set_core_properties(doc)
    _add_header(doc)
    _add_title_and_intro(doc)
    sdt_ids = iter(range(101, 200))
    _add_summary(doc, sdt_ids)
    _add_action_items(doc, sdt_ids)
    _add_measurements(doc, sdt_ids)
    _add_site_photo(doc, sdt_ids)
    _add_notes(doc, sdt_ids)
    out = io.BytesIO()
    doc.save(out)
    return _repack(out.getvalue())


def _el(tag: str, **attrs):
    """A w: element with w: attributes."""
    from docx.oxml import OxmlElement
    from docx.oxml.ns import qn

    node = OxmlElement(tag)
    for key, value in attrs.items():
        node.set(qn(f"w:{key}"), str(value))
    return node


def _set_font(style, name: str) -> None:
    """An explicit font: drop theme font attributes (they would win over w:ascii)."""
    from docx.oxml.ns import qn

    rpr = style.element.get_or_add_rPr()
    fonts = rpr.find(qn("w:rFonts"))
    if fonts is None:
        fonts = _el("w:rFonts")
        rpr.insert(0, fonts)
    for attr in ("asciiTheme", "hAnsiTheme", "eastAsiaTheme", "cstheme"):
        fonts.attrib.pop(qn(f"w:{attr}"), None)
    for attr in ("ascii", "hAnsi", "cs"):
        fonts.set(qn(f"w:{attr}"), name)


def _add_styles(doc) -> None:
    from docx.enum.style import WD_STYLE_TYPE
    from docx.shared import Pt, RGBColor

    styles = doc.styles
    title = styles["Title"]
    _set_font(title, "Georgia")
    title.font.color.rgb = RGBColor(0x1F, 0x4E, 0x79)

    body = styles.add_style("Zone Body", WD_STYLE_TYPE.PARAGRAPH)
    body.base_style = styles["Normal"]
    _set_font(body, "Arial")
    body.font.size = Pt(10.5)
    body.font.color.rgb = RGBColor(0x33, 0x33, 0x33)

    accent = styles.add_style("Zone Accent", WD_STYLE_TYPE.CHARACTER)
    accent.font.bold = True
    accent.font.color.rgb = RGBColor(0xC0, 0x50, 0x4D)

    placeholder = styles.add_style("Placeholder Text", WD_STYLE_TYPE.CHARACTER)
    placeholder.font.color.rgb = RGBColor(0x80, 0x80, 0x80)

    table_style = styles.add_style("Inspection Table", WD_STYLE_TYPE.TABLE)
    table_style.base_style = styles["Table Grid"]
    table_style.font.size = Pt(9)
    table_style.font.color.rgb = RGBColor(0x1F, 0x38, 0x64)


def _set_core_properties(doc) -> None:
    """Fixed: no "now" anywhere."""
    core = doc.core_properties
    core.author = "ASTRA demo tenant"
    core.last_modified_by = "ASTRA"
    core.title = "Field inspection report"
    core.subject = "Demo template"
    core.keywords = "astra; template; inspection"
    core.comments = "Generated by astra.samples.templates"
    core.category = "template"
    core.revision = 1
    core.created = FIXED_TIMESTAMP
    core.modified = FIXED_TIMESTAMP
    core.last_printed = FIXED_TIMESTAMP


def _wrap_in_sdt(blocks: list, tag: str, alias: str, sdt_id: int, *, picture: bool = False,
                 showing_placeholder: bool = False):
    """Move ``blocks`` into a new content control (tag, alias) placed where the first one was."""
    first = blocks[0]
    sdt = _el("w:sdt")
    pr = _el("w:sdtPr")
    pr.append(_el("w:alias", val=alias))
    pr.append(_el("w:tag", val=tag))
    pr.append(_el("w:id", val=sdt_id))
    if showing_placeholder:
        pr.append(_el("w:showingPlcHdr"))
    if picture:
        pr.append(_el("w:picture"))
    sdt.append(pr)
    sdt.append(_el("w:sdtEndPr"))
    content = _el("w:sdtContent")
    first.addprevious(sdt)
    for block in blocks:
        content.append(block)
    sdt.append(content)
    return sdt


def _add_header(doc) -> None:
    """"Field inspection report - ref. {{ report_ref }}", the placeholder split over 2 runs."""
    from docx.enum.text import WD_ALIGN_PARAGRAPH
    from docx.shared import Pt

    header_p = doc.sections[0].header.paragraphs[0]
    header_p.style = doc.styles["Header"]
    header_p.alignment = WD_ALIGN_PARAGRAPH.RIGHT
    header_p.add_run("Field inspection report \u2014 ref. ")
    run = header_p.add_run("{{ report")
    run.font.size = Pt(8)
    run = header_p.add_run("_ref }}")
    run.font.size = Pt(8)
    run.bold = True


def _add_title_and_intro(doc) -> None:
    """{{ title }} split over 3 runs with a proofErr and a bookmark in between, then an intro line."""
    from docx.shared import RGBColor

    tp = doc.add_paragraph(style="Title")
    tp.add_run("{")
    tp._p.append(_el("w:proofErr", type="spellStart"))
    run = tp.add_run("{ ti")
    run.bold = True
    tp._p.append(_el("w:bookmarkStart", id=0, name="report_title"))
    tp._p.append(_el("w:proofErr", type="spellEnd"))
    run = tp.add_run("tle }}")
    run.italic = True
    run.font.color.rgb = RGBColor(0xC0, 0x50, 0x4D)
    tp._p.append(_el("w:bookmarkEnd", id=0))

    intro = doc.add_paragraph(
        "This report records one site visit. Sections in grey are filled in by ASTRA from "
        "the inspector's recording, readings and photos.",
        style="Zone Body",
    )
    intro.runs[0].italic = True


def _add_summary(doc, sdt_ids) -> None:
    """Text zone bound to CLINC150 intents, showing its placeholder text."""
    doc.add_heading("Summary", level=1)
    p = doc.add_paragraph(style="Zone Body")
    run = p.add_run("Click here to enter the inspection summary.")
    run.style = doc.styles["Placeholder Text"]
    _wrap_in_sdt([p._p], "astra:summary;kind=text;intents=" + ",".join(SUMMARY_INTENTS) + ";domains=travel",
                 "Inspection summary", next(sdt_ids), showing_placeholder=True)


def _add_action_items(doc, sdt_ids) -> None:
    """List zone: kind inferred from List Bullet's numbering."""
    doc.add_heading("Action items", level=1)
    p = doc.add_paragraph(style="List Bullet")
    run = p.add_run("Action item")
    run.style = doc.styles["Zone Accent"]
    _wrap_in_sdt([p._p], "astra:action_items;intents=" + ",".join(ACTION_ITEM_INTENTS) + ";domains=home,work",
                 "Action items", next(sdt_ids))


def _add_measurements(doc, sdt_ids) -> None:
    """Table zone wrapping a table, bound to data/*.csv."""
    doc.add_heading("Measurements", level=1)
    table = doc.add_table(rows=2, cols=3)
    table.style = doc.styles["Inspection Table"]
    for cell, text in zip(table.rows[0].cells, ("Point", "Reading", "Unit"), strict=True):
        cell.paragraphs[0].add_run(text)
    _wrap_in_sdt([table._tbl], "astra:measurements;kind=table;data=data/*.csv", "Measurements", next(sdt_ids))


def _add_site_photo(doc, sdt_ids) -> None:
    """Picture content control bound to media/*.png."""
    from docx.enum.text import WD_ALIGN_PARAGRAPH
    from docx.shared import Pt

    doc.add_heading("Site photo", level=1)
    p = doc.add_paragraph()
    p.alignment = WD_ALIGN_PARAGRAPH.CENTER
    p.add_run().add_picture(io.BytesIO(_png()), width=Pt(192))
    _wrap_in_sdt([p._p], "astra:site_photo;media=media/*.png", "Site photo", next(sdt_ids), picture=True)


def _add_notes(doc, sdt_ids) -> None:
    """The fallback zone."""
    doc.add_heading("Notes", level=1)
    p = doc.add_paragraph("Anything the other sections do not cover.", style="Zone Body")
    _wrap_in_sdt([p._p], "astra:notes;kind=text;fallback", "Notes", next(sdt_ids))


if __name__ == "__main__":  # pragma: no cover - convenience: write the demo files
    import json
    import sys

    target = sys.argv[1] if len(sys.argv) > 1 else "."
    with open(f"{target}/{SAMPLE_TEMPLATE_NAME}.docx", "wb") as fh:
        fh.write(build_sample_template())
    with open(f"{target}/{SAMPLE_TEMPLATE_NAME}.zones.json", "w", encoding="utf-8") as fh:
        json.dump(sample_sidecar(), fh, indent=2)
