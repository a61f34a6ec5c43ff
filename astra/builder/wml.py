"""WordprocessingML that BUILDER writes, as strings (fast enough for 5,000-row tables).

Every piece of user text reaching these functions is already clean (:func:`sanitize.clean_text`)
and is escaped here; attribute values are escaped with :func:`sanitize.escape_attr`. Nothing here
writes a field, a hyperlink or an external reference. Children follow the schema's order
(CT_RPr: rStyle, rFonts, b, i, color, sz, szCs, u), which Word enforces.
"""

from __future__ import annotations

from astra.ooxml.ns import A_NS, PIC_NS

from .sanitize import escape_attr, escape_text, text_runs

EMU_PER_TWIP = 635
# Data tables are compact: no paragraph spacing inside cells (the body style's space after
# would make every row a line and a half high); numbers right-aligned.
_CELL_LEFT = '<w:pPr><w:spacing w:before="0" w:after="0"/></w:pPr>'
_CELL_RIGHT = '<w:pPr><w:spacing w:before="0" w:after="0"/><w:jc w:val="right"/></w:pPr>'


def rpr_xml(props: dict) -> str:
    """A ``w:rPr`` from formatting keys (``run_style``, ``font``, ``bold``, ``italic``, ``color``,
    ``size_pt``, ``underline``); "" when there is nothing to say."""
    parts = []
    if props.get("run_style"):
        parts.append(f'<w:rStyle w:val="{escape_attr(props["run_style"])}"/>')
    if props.get("font"):
        font = escape_attr(props["font"])
        parts.append(f'<w:rFonts w:ascii="{font}" w:hAnsi="{font}" w:cs="{font}"/>')
    for key, tag in (("bold", "b"), ("italic", "i")):
        if props.get(key) is not None:
            parts.append(f"<w:{tag}/>" if props[key] else f'<w:{tag} w:val="0"/>')
    if props.get("color"):
        parts.append(f'<w:color w:val="{escape_attr(props["color"])}"/>')
    if props.get("size_pt"):
        half_points = round(props["size_pt"] * 2)
        parts.append(f'<w:sz w:val="{half_points}"/><w:szCs w:val="{half_points}"/>')
    if props.get("underline") is not None:
        parts.append(f'<w:u w:val="{"single" if props["underline"] else "none"}"/>')
    return f"<w:rPr>{''.join(parts)}</w:rPr>" if parts else ""


def ppr_xml(paragraph_style: str | None = None, alignment: str | None = None) -> str:
    parts = []
    if paragraph_style:
        parts.append(f'<w:pStyle w:val="{escape_attr(paragraph_style)}"/>')
    if alignment:
        parts.append(f'<w:jc w:val="{escape_attr(alignment)}"/>')
    return f"<w:pPr>{''.join(parts)}</w:pPr>" if parts else ""


def paragraph(ppr: str, runs: str) -> str:
    return f"<w:p>{ppr}{runs}</w:p>"


def text_paragraph(ppr: str, rpr: str, text: str, speaker: str | None = None, speaker_rpr: str = "") -> str:
    """One paragraph of clean text, optionally led by "<speaker>: " in the speaker's run properties."""
    lead = text_runs(f"{speaker}: ", speaker_rpr) if speaker else ""
    return f"<w:p>{ppr}{lead}{text_runs(text, rpr)}</w:p>"


def table(tbl_pr: str, widths: list[int], header: list[str], rows: list[list[tuple[str, bool]]],
          cell_rpr: str, header_rpr: str) -> str:
    """A table: ``header`` (repeated on every page), then ``rows`` of (clean text, right-aligned)."""
    grid = "".join(f'<w:gridCol w:w="{w}"/>' for w in widths)
    out = [f"<w:tbl>{tbl_pr}<w:tblGrid>{grid}</w:tblGrid><w:tr><w:trPr><w:tblHeader/></w:trPr>"]
    out.extend(f"<w:tc><w:p>{_CELL_LEFT}{text_runs(name, header_rpr)}</w:p></w:tc>" for name in header)
    out.append("</w:tr>")
    for row in rows:
        out.append("<w:tr>")
        for text, numeric in row:
            ppr = _CELL_RIGHT if numeric else _CELL_LEFT
            if not text:
                out.append(f"<w:tc><w:p>{ppr}</w:p></w:tc>")
            elif "\n" in text or "\t" in text:
                out.append(f"<w:tc><w:p>{ppr}{text_runs(text, cell_rpr)}</w:p></w:tc>")
            else:  # the common case, inlined: a 5,000-row table is 25,000 of these
                out.append(f'<w:tc><w:p>{ppr}<w:r>{cell_rpr}<w:t xml:space="preserve">'
                           f"{escape_text(text)}</w:t></w:r></w:p></w:tc>")
        out.append("</w:tr>")
    out.append("</w:tbl>")
    return "".join(out)


def default_tbl_pr(table_style: str | None) -> str:
    """Table properties when the template gives no table to copy: its style, full width, header
    row look; plain single borders when there is no style to draw them."""
    style = f'<w:tblStyle w:val="{escape_attr(table_style)}"/>' if table_style else ""
    borders = "" if table_style else "<w:tblBorders>" + "".join(
        f'<w:{side} w:val="single" w:sz="4" w:space="0" w:color="auto"/>'
        for side in ("top", "left", "bottom", "right", "insideH", "insideV")) + "</w:tblBorders>"
    return (f'<w:tblPr>{style}<w:tblW w:w="5000" w:type="pct"/>{borders}'
            '<w:tblLook w:val="04A0" w:firstRow="1" w:lastRow="0" w:firstColumn="0" w:lastColumn="0" '
            'w:noHBand="0" w:noVBand="1"/></w:tblPr>')


def drawing_run(rel_id: str, drawing_id: int, name: str, cx: int, cy: int) -> str:
    """A run holding one inline picture (``rel_id`` names the embedded image part)."""
    name = escape_attr(name)
    return (
        f'<w:r><w:drawing><wp:inline distT="0" distB="0" distL="0" distR="0"><wp:extent cx="{cx}" cy="{cy}"/>'
        f'<wp:docPr id="{drawing_id}" name="Picture {drawing_id}"/>'
        f'<wp:cNvGraphicFramePr><a:graphicFrameLocks xmlns:a="{A_NS}" noChangeAspect="1"/></wp:cNvGraphicFramePr>'
        f'<a:graphic xmlns:a="{A_NS}"><a:graphicData uri="{PIC_NS}"><pic:pic xmlns:pic="{PIC_NS}">'
        f'<pic:nvPicPr><pic:cNvPr id="0" name="{name}"/><pic:cNvPicPr/></pic:nvPicPr>'
        f'<pic:blipFill><a:blip r:embed="{escape_attr(rel_id)}"/><a:stretch><a:fillRect/></a:stretch></pic:blipFill>'
        f'<pic:spPr><a:xfrm><a:off x="0" y="0"/><a:ext cx="{cx}" cy="{cy}"/></a:xfrm>'
        f'<a:prstGeom prst="rect"><a:avLst/></a:prstGeom></pic:spPr></pic:pic></a:graphicData></a:graphic>'
        f"</wp:inline></w:drawing></w:r>"
    )


def sdt(sdt_pr: str, sdt_end_pr: str, content: str, ns_decls: str = "") -> str:
    return f"<w:sdt{ns_decls}>{sdt_pr}{sdt_end_pr}<w:sdtContent>{content}</w:sdtContent></w:sdt>"


def new_sdt_pr(zone_id: str, kind: str, label: str, sdt_id: int) -> str:
    """Properties of the content control that marks a placeholder zone in the output: tagged with
    the zone grammar (``astra:<id>;kind=<kind>``) so the zone is found again by the same rules,
    locked against deletion (its content stays editable)."""
    return (f'<w:sdtPr><w:alias w:val="{escape_attr(label)}"/>'
            f'<w:tag w:val="astra:{escape_attr(zone_id)};kind={escape_attr(kind)}"/>'
            f'<w:id w:val="{sdt_id}"/><w:lock w:val="sdtLocked"/></w:sdtPr>')
