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

``python -m astra.ingest.sample_template DIR`` writes ``field_inspection.docx`` and
``field_inspection.zones.json`` into DIR.
"""

from __future__ import annotations

import datetime as _dt
import io
import struct
import zipfile
import zlib

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
    """Rewrite the zip with fixed timestamps/attributes so the bytes are reproducible."""
    src = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            fixed = zipfile.ZipInfo(info.filename, date_time=_ZIP_DATE)
            fixed.compress_type = zipfile.ZIP_DEFLATED
            fixed.external_attr = 0o644 << 16
            fixed.create_system = 3
            dst.writestr(fixed, src.read(info.filename), compress_type=zipfile.ZIP_DEFLATED, compresslevel=6)
    return out.getvalue()


# --------------------------------------------------------------------------- minimal packages

WORDML_NAMESPACES = {
    "w": "http://schemas.openxmlformats.org/wordprocessingml/2006/main",
    "r": "http://schemas.openxmlformats.org/officeDocument/2006/relationships",
    "mc": "http://schemas.openxmlformats.org/markup-compatibility/2006",
    "wp": "http://schemas.openxmlformats.org/drawingml/2006/wordprocessingDrawing",
    "a": "http://schemas.openxmlformats.org/drawingml/2006/main",
    "pic": "http://schemas.openxmlformats.org/drawingml/2006/picture",
    "wps": "http://schemas.microsoft.com/office/word/2010/wordprocessingShape",
    "v": "urn:schemas-microsoft-com:vml",
    "w14": "http://schemas.microsoft.com/office/word/2010/wordml",
}
_XMLNS = " ".join(f'xmlns:{p}="{uri}"' for p, uri in WORDML_NAMESPACES.items())
_DECL = '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
_REL = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
_CT_MAIN = "application/vnd.openxmlformats-officedocument.wordprocessingml"


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
    :data:`WORDML_NAMESPACES` are declared on every root. Deterministic bytes.
    """
    parts: dict[str, str] = {}
    overrides = [("/word/document.xml", f"{_CT_MAIN}.document.main+xml")]
    rels = []
    parts["word/document.xml"] = f"{_DECL}<w:document {_XMLNS}><w:body>{body}</w:body></w:document>"
    if styles is not None:
        parts["word/styles.xml"] = f"{_DECL}<w:styles {_XMLNS}>{styles}</w:styles>"
        overrides.append(("/word/styles.xml", f"{_CT_MAIN}.styles+xml"))
        rels.append(("styles", "styles.xml"))
    if theme_fonts is not None:
        major, minor = theme_fonts
        a = WORDML_NAMESPACES["a"]
        parts["word/theme/theme1.xml"] = (
            f'{_DECL}<a:theme xmlns:a="{a}" name="Test"><a:themeElements>'
            f'<a:fontScheme name="Test"><a:majorFont><a:latin typeface="{major}"/><a:ea typeface=""/>'
            f'<a:cs typeface=""/></a:majorFont><a:minorFont><a:latin typeface="{minor}"/>'
            f'<a:ea typeface=""/><a:cs typeface=""/></a:minorFont></a:fontScheme>'
            f"</a:themeElements></a:theme>"
        )
        overrides.append(("/word/theme/theme1.xml", "application/vnd.openxmlformats-officedocument.theme+xml"))
        rels.append(("theme", "theme/theme1.xml"))
    for kind, root, items in (("header", "hdr", headers), ("footer", "ftr", footers)):
        for n, inner in enumerate(items, start=1):
            parts[f"word/{kind}{n}.xml"] = f"{_DECL}<w:{root} {_XMLNS}>{inner}</w:{root}>"
            overrides.append((f"/word/{kind}{n}.xml", f"{_CT_MAIN}.{kind}+xml"))
            rels.append((kind, f"{kind}{n}.xml"))
    ct = "".join(f'<Override PartName="{name}" ContentType="{ctype}"/>' for name, ctype in overrides)
    parts["[Content_Types].xml"] = (
        f'{_DECL}<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
        '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
        '<Default Extension="xml" ContentType="application/xml"/>'
        f"{ct}</Types>"
    )
    parts["_rels/.rels"] = (
        f'{_DECL}<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
        f'<Relationship Id="rId1" Type="{_REL}/officeDocument" Target="word/document.xml"/></Relationships>'
    )
    doc_rels = "".join(
        f'<Relationship Id="rId{i}" Type="{_REL}/{kind}" Target="{target}"/>' for i, (kind, target) in enumerate(rels, 1)
    )
    parts["word/_rels/document.xml.rels"] = (
        f'{_DECL}<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
        f"{doc_rels}</Relationships>"
    )
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for name in ["[Content_Types].xml", "_rels/.rels", "word/_rels/document.xml.rels"] + sorted(
            n for n in parts if not n.endswith(".rels") and n != "[Content_Types].xml"
        ):
            info = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, parts[name].encode("utf-8"))
    return out.getvalue()


# --------------------------------------------------------------------------- the demo template


def build_sample_template() -> bytes:
    """Build the demo template (.docx bytes), deterministically."""
    import docx
    from docx.enum.style import WD_STYLE_TYPE
    from docx.enum.text import WD_ALIGN_PARAGRAPH
    from docx.oxml import OxmlElement
    from docx.oxml.ns import qn
    from docx.shared import Pt, RGBColor

    doc = docx.Document()
    styles = doc.styles

    def el(tag: str, **attrs) -> object:
        node = OxmlElement(tag)
        for key, value in attrs.items():
            node.set(qn(f"w:{key}"), str(value))
        return node

    def set_font(style, name: str) -> None:
        """An explicit font: drop theme font attributes (they would win over w:ascii)."""
        rpr = style.element.get_or_add_rPr()
        fonts = rpr.find(qn("w:rFonts"))
        if fonts is None:
            fonts = el("w:rFonts")
            rpr.insert(0, fonts)
        for attr in ("asciiTheme", "hAnsiTheme", "eastAsiaTheme", "cstheme"):
            fonts.attrib.pop(qn(f"w:{attr}"), None)
        for attr in ("ascii", "hAnsi", "cs"):
            fonts.set(qn(f"w:{attr}"), name)

    # ---- styles
    title = styles["Title"]
    set_font(title, "Georgia")
    title.font.color.rgb = RGBColor(0x1F, 0x4E, 0x79)

    body = styles.add_style("Zone Body", WD_STYLE_TYPE.PARAGRAPH)
    body.base_style = styles["Normal"]
    set_font(body, "Arial")
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

    # ---- core properties (fixed: no "now" anywhere)
    core = doc.core_properties
    core.author = "ASTRA demo tenant"
    core.last_modified_by = "ASTRA"
    core.title = "Field inspection report"
    core.subject = "Demo template"
    core.keywords = "astra; template; inspection"
    core.comments = "Generated by astra.ingest.sample_template"
    core.category = "template"
    core.revision = 1
    core.created = FIXED_TIMESTAMP
    core.modified = FIXED_TIMESTAMP
    core.last_printed = FIXED_TIMESTAMP

    sdt_ids = iter(range(101, 200))

    def wrap_in_sdt(blocks: list, tag: str, alias: str, *, picture: bool = False, showing_placeholder: bool = False):
        first = blocks[0]
        sdt = el("w:sdt")
        pr = el("w:sdtPr")
        pr.append(el("w:alias", val=alias))
        pr.append(el("w:tag", val=tag))
        pr.append(el("w:id", val=next(sdt_ids)))
        if showing_placeholder:
            pr.append(el("w:showingPlcHdr"))
        if picture:
            pr.append(el("w:picture"))
        sdt.append(pr)
        sdt.append(el("w:sdtEndPr"))
        content = el("w:sdtContent")
        first.addprevious(sdt)
        for block in blocks:
            content.append(block)
        sdt.append(content)
        return sdt

    # ---- header: "Field inspection report - ref. {{ report_ref }}" (2-run split)
    section = doc.sections[0]
    header_p = section.header.paragraphs[0]
    header_p.style = styles["Header"]
    header_p.alignment = WD_ALIGN_PARAGRAPH.RIGHT
    header_p.add_run("Field inspection report \u2014 ref. ")
    run = header_p.add_run("{{ report")
    run.font.size = Pt(8)
    run = header_p.add_run("_ref }}")
    run.font.size = Pt(8)
    run.bold = True

    # ---- title: {{ title }} split over 3 runs with proofErr + bookmark in between
    tp = doc.add_paragraph(style="Title")
    tp.add_run("{")
    tp._p.append(el("w:proofErr", type="spellStart"))
    run = tp.add_run("{ ti")
    run.bold = True
    tp._p.append(el("w:bookmarkStart", id=0, name="report_title"))
    tp._p.append(el("w:proofErr", type="spellEnd"))
    run = tp.add_run("tle }}")
    run.italic = True
    run.font.color.rgb = RGBColor(0xC0, 0x50, 0x4D)
    tp._p.append(el("w:bookmarkEnd", id=0))

    intro = doc.add_paragraph(
        "This report records one site visit. Sections in grey are filled in by ASTRA from "
        "the inspector's recording, readings and photos.",
        style="Zone Body",
    )
    intro.runs[0].italic = True

    # ---- summary (text, CLINC150 intents)
    doc.add_heading("Summary", level=1)
    p = doc.add_paragraph(style="Zone Body")
    run = p.add_run("Click here to enter the inspection summary.")
    run.style = styles["Placeholder Text"]
    wrap_in_sdt(
        [p._p],
        "astra:summary;kind=text;intents=" + ",".join(SUMMARY_INTENTS) + ";domains=travel",
        "Inspection summary",
        showing_placeholder=True,
    )

    # ---- action items (list inferred from List Bullet's numbering)
    doc.add_heading("Action items", level=1)
    p = doc.add_paragraph(style="List Bullet")
    run = p.add_run("Action item")
    run.style = styles["Zone Accent"]
    wrap_in_sdt(
        [p._p],
        "astra:action_items;intents=" + ",".join(ACTION_ITEM_INTENTS) + ";domains=home,work",
        "Action items",
    )

    # ---- measurements (table zone wrapping a table)
    doc.add_heading("Measurements", level=1)
    table = doc.add_table(rows=2, cols=3)
    table.style = styles["Inspection Table"]
    for cell, text in zip(table.rows[0].cells, ("Point", "Reading", "Unit")):
        cell.paragraphs[0].add_run(text)
    wrap_in_sdt([table._tbl], "astra:measurements;kind=table;data=data/*.csv", "Measurements")

    # ---- site photo (picture content control)
    doc.add_heading("Site photo", level=1)
    p = doc.add_paragraph()
    p.alignment = WD_ALIGN_PARAGRAPH.CENTER
    p.add_run().add_picture(io.BytesIO(_png()), width=Pt(192))
    wrap_in_sdt([p._p], "astra:site_photo;media=media/*.png", "Site photo", picture=True)

    # ---- notes (fallback)
    doc.add_heading("Notes", level=1)
    p = doc.add_paragraph("Anything the other sections do not cover.", style="Zone Body")
    wrap_in_sdt([p._p], "astra:notes;kind=text;fallback", "Notes")

    out = io.BytesIO()
    doc.save(out)
    return _repack(out.getvalue())


if __name__ == "__main__":  # pragma: no cover - convenience: write the demo files
    import json
    import sys

    target = sys.argv[1] if len(sys.argv) > 1 else "."
    with open(f"{target}/{SAMPLE_TEMPLATE_NAME}.docx", "wb") as fh:
        fh.write(build_sample_template())
    with open(f"{target}/{SAMPLE_TEMPLATE_NAME}.zones.json", "w", encoding="utf-8") as fh:
        json.dump(sample_sidecar(), fh, indent=2)
