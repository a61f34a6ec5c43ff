"""Build .docx packages in code for the INGEST tests: no binary fixtures, every byte explained.

Namespaces, content types, relationship and content-type parts come from :mod:`astra.ooxml` (as
do :func:`astra.samples.templates.minimal_docx` packages). Only the zip container is written
here with :mod:`zipfile`, on purpose: the atomizer and the audit must face zips as *other*
writers make them (random header fields, data descriptors, zip64 records, duplicate names),
which :func:`astra.ooxml.package.write_package` never produces.

* XML snippets: :func:`paragraph`, :func:`table`, :func:`sdt`, :func:`text_box_paragraph`,
  :func:`section_properties`, and whole story parts (:func:`document_xml`, :func:`story_xml`,
  :func:`settings_xml`); fields piece by piece (:func:`fld_char`, :func:`instr_run`, :func:`tracked`
  changes, :func:`alternate_content`, :func:`quote_codes`) for the readings a hostile file plays on.
* :class:`DocxBuilder`: a minimal valid package (content types, package and part relationships,
  main document) to which tests add parts, relationships and content types, then ``build()``
  with a chosen member order, compression per member, timestamps, extra fields, zip64 local
  records or streamed (data-descriptor) members.
* :func:`zip_package`: raw zips from (name, bytes) members, for names and layouts no valid
  package has (duplicates, absolute names, ...); :func:`patch_declared_size` makes a zip lie
  about a member's size; :func:`xlsx_bytes` builds an embeddable workbook, with or without a
  VBA project; :data:`OLE_HEADER` starts an OLE compound file.
"""

from __future__ import annotations

import io
import random
import struct
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from xml.sax.saxutils import escape, quoteattr

from astra.ooxml import rels as ooxml_rels
from astra.ooxml.ns import CT_DOCM_MAIN as CT_DOCM
from astra.ooxml.ns import CT_DOCUMENT_MAIN as CT_DOCUMENT
from astra.ooxml.ns import CT_RELATIONSHIPS as CT_RELS
from astra.ooxml.ns import CT_WML, MC_NS, R_NS, R_STRICT_NS, SML_NS, V_NS, W_NS, W_STRICT_NS
from astra.ooxml.ns import RT_MS as REL_MS
from astra.ooxml.ns import RT_STRICT as REL_STRICT
from astra.ooxml.ns import RT_TRANSITIONAL as REL
from astra.ooxml.partname import rels_part_for as rels_part_name
from astra.ooxml.rels import XML_DECLARATION, content_types_xml

W14_NS = "http://schemas.microsoft.com/office/word/2010/wordml"
CT_STYLES = CT_WML + "styles+xml"
CT_HEADER = CT_WML + "header+xml"
CT_FOOTER = CT_WML + "footer+xml"
CT_FOOTNOTES = CT_WML + "footnotes+xml"
CT_ENDNOTES = CT_WML + "endnotes+xml"
CT_COMMENTS = CT_WML + "comments+xml"
CT_GLOSSARY = CT_WML + "document.glossary+xml"
CT_SETTINGS = CT_WML + "settings+xml"
CT_XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
CT_XLSX_MAIN = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"
CT_XLSM_MAIN = "application/vnd.ms-excel.sheet.macroEnabled.main+xml"
CT_VBA = "application/vnd.ms-office.vbaProject"
CT_ACTIVEX = "application/vnd.ms-office.activeX+xml"
CT_OLE = "application/vnd.openxmlformats-officedocument.oleObject"

OLE_HEADER = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
XML_DECL = XML_DECLARATION
STYLES_XML = (XML_DECL + f'<w:styles xmlns:w="{W_NS}"><w:style w:type="paragraph" w:styleId="Normal">'
              '<w:name w:val="Normal"/></w:style></w:styles>').encode()
PNG_1PX = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c63000100000500010d0a2db40000000049454e44ae426082"
)


# --------------------------------------------------------------------------- XML snippets

def paragraph(text: str = "", *, style: str | None = None, prefix: str = "w") -> str:
    ppr = f'<{prefix}:pPr><{prefix}:pStyle {prefix}:val={quoteattr(style)}/></{prefix}:pPr>' if style else ""
    run = f'<{prefix}:r><{prefix}:t xml:space="preserve">{escape(text)}</{prefix}:t></{prefix}:r>' if text else ""
    return f"<{prefix}:p>{ppr}{run}</{prefix}:p>"


def table(cells: list[list[str]]) -> str:
    """A table whose cells hold the given blocks (at least one paragraph each, as Word requires)."""
    rows = "".join(
        "<w:tr>" + "".join(f"<w:tc><w:tcPr/>{cell or paragraph()}</w:tc>" for cell in row) + "</w:tr>"
        for row in cells
    )
    return f'<w:tbl><w:tblPr><w:tblW w:w="0" w:type="auto"/></w:tblPr>{rows}</w:tbl>'


def sdt(inner: str, tag: str = "zone") -> str:
    return f"<w:sdt><w:sdtPr><w:tag w:val={quoteattr(tag)}/></w:sdtPr><w:sdtContent>{inner}</w:sdtContent></w:sdt>"


def text_box_paragraph(inner_paragraphs: str) -> str:
    """A paragraph holding a VML text box: w:p nested inside w:p, as Word writes it."""
    return (
        '<w:p><w:r><w:pict><v:shape style="width:100pt;height:50pt">'
        f"<v:textbox><w:txbxContent>{inner_paragraphs}</w:txbxContent></v:textbox>"
        "</v:shape></w:pict></w:r></w:p>"
    )


def simple_field(instruction: str, result: str = "1") -> str:
    """A paragraph holding ``<w:fldSimple w:instr=...>`` with a result run."""
    return (f"<w:p><w:fldSimple w:instr={quoteattr(instruction)}><w:r><w:t>{escape(result)}</w:t></w:r>"
            "</w:fldSimple></w:p>")


def field_runs(*pieces: str, result: str = "1") -> str:
    """The runs of a complex field whose instruction is split into ``pieces`` (one w:instrText run each).

    A piece that is itself a list of runs (from another ``field_runs`` call, marked by starting
    with ``<``) is inserted as is: that is how fields nest."""
    runs = ['<w:r><w:fldChar w:fldCharType="begin"/></w:r>']
    for piece in pieces:
        runs.append(piece if piece.startswith("<") else
                    f'<w:r><w:instrText xml:space="preserve">{escape(piece)}</w:instrText></w:r>')
    runs.append('<w:r><w:fldChar w:fldCharType="separate"/></w:r>')
    runs.append(f"<w:r><w:t>{escape(result)}</w:t></w:r>")
    runs.append('<w:r><w:fldChar w:fldCharType="end"/></w:r>')
    return "".join(runs)


def complex_field(*pieces: str, result: str = "1") -> str:
    """A paragraph holding one complex field (see :func:`field_runs`)."""
    return f"<w:p>{field_runs(*pieces, result=result)}</w:p>"


def fld_char(kind: str) -> str:
    """A run holding a fldChar of type ``kind`` (begin, separate, end)."""
    return f'<w:r><w:fldChar w:fldCharType="{kind}"/></w:r>'


def instr_run(text: str, *, tag: str = "instrText") -> str:
    """A run holding field instruction text (``tag="delInstrText"`` for deleted text)."""
    return f'<w:r><w:{tag} xml:space="preserve">{escape(text)}</w:{tag}></w:r>'


def tracked(kind: str, runs: str, revision: int = 1) -> str:
    """``runs`` inside a tracked change: kind "ins" or "del" (also "moveTo", "moveFrom")."""
    return f'<w:{kind} w:id="{revision}" w:author="t" w:date="2024-01-01T00:00:00Z">{runs}</w:{kind}>'


def alternate_content(choice: str, fallback: str, requires: str = "w14") -> str:
    """An mc:AlternateContent whose Choice (for readers knowing ``requires``) and Fallback hold the given XML."""
    ns = f'xmlns:mc="{MC_NS}" xmlns:w14="{W14_NS}"'
    return (f'<mc:AlternateContent {ns}><mc:Choice Requires="{requires}">{choice}</mc:Choice>'
            f"<mc:Fallback>{fallback}</mc:Fallback></mc:AlternateContent>")


def quote_codes(text: str) -> str:
    """A QUOTE field instruction spelling ``text`` as character codes (QUOTE 68 68 69 ...)."""
    return "QUOTE " + " ".join(str(ord(c)) for c in text)


def settings_xml(inner: str) -> bytes:
    """A word/settings.xml part holding ``inner``."""
    return encode_xml(f'<w:settings xmlns:w="{W_NS}" xmlns:r="{R_NS}">{inner}</w:settings>')


def section_properties() -> str:
    return '<w:sectPr><w:pgSz w:w="11906" w:h="16838"/><w:pgMar w:top="1440" w:bottom="1440"/></w:sectPr>'


def _namespaces(strict: bool) -> str:
    w, r = (W_STRICT_NS, R_STRICT_NS) if strict else (W_NS, R_NS)
    return f'xmlns:w="{w}" xmlns:r="{r}" xmlns:v="{V_NS}"'


def encode_xml(text: str, *, bom: bool = False, encoding: str = "utf-8") -> bytes:
    """Encode an XML document (``text`` starts after the declaration) with its declaration."""
    if encoding == "utf-8":
        return (b"\xef\xbb\xbf" if bom else b"") + (XML_DECL + text).encode("utf-8")
    if encoding == "utf-16":  # Python's utf-16 codec writes a BOM
        return ('<?xml version="1.0" encoding="UTF-16" standalone="yes"?>\r\n' + text).encode("utf-16")
    raise ValueError(encoding)


def document_xml(blocks: list[str] | str, *, strict: bool = False, bom: bool = False, encoding: str = "utf-8",
                 separator: str = "", self_closing_body: bool = False) -> bytes:
    body_content = blocks if isinstance(blocks, str) else separator.join(blocks)
    body = "<w:body/>" if self_closing_body else f"<w:body>{body_content}</w:body>"
    return encode_xml(f"<w:document {_namespaces(strict)}>{body}</w:document>", bom=bom, encoding=encoding)


def story_xml(root: str, children: list[str], *, strict: bool = False, bom: bool = False,
              encoding: str = "utf-8", separator: str = "") -> bytes:
    """A header/footer/notes/comments part: ``root`` (e.g. "w:hdr") holding ``children`` directly."""
    return encode_xml(f"<{root} {_namespaces(strict)}>{separator.join(children)}</{root}>", bom=bom, encoding=encoding)


def note(kind: str, note_id: int, blocks: str) -> str:
    """A w:footnote / w:endnote / w:comment element."""
    extra = ' w:author="t" w:initials="t"' if kind == "comment" else ""
    return f'<w:{kind} w:id="{note_id}"{extra}>{blocks or paragraph()}</w:{kind}>'


@dataclass
class Rel:
    id: str
    type: str
    target: str
    external: bool = False


def relationships_xml(rels: list[Rel]) -> bytes:
    return ooxml_rels.relationships_xml([ooxml_rels.Relationship("", "", r.id, r.type, r.target, r.external)
                                         for r in rels])


# --------------------------------------------------------------------------- zips

@dataclass
class ZipMember:
    name: str
    data: bytes
    compress_type: int = zipfile.ZIP_DEFLATED
    compresslevel: int | None = None
    date_time: tuple = (2024, 5, 17, 10, 30, 0)
    external_attr: int = 0
    create_system: int = 0
    comment: bytes = b""
    extra: bytes = b""
    force_zip64: bool = False  # write a zip64 record in the local header


class _Unseekable(io.RawIOBase):
    """A write-only stream: zipfile then streams members with data descriptors (flag bit 3)."""

    def __init__(self) -> None:
        self.buffer = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        self.buffer += b
        return len(b)


def zip_package(members: list[ZipMember], *, comment: bytes = b"", streamed: bool = False) -> bytes:
    sink = _Unseekable() if streamed else io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # duplicate names are deliberate in some tests
        with zipfile.ZipFile(sink, "w") as zf:
            for m in members:
                info = zipfile.ZipInfo(m.name, date_time=m.date_time)
                info.compress_type = m.compress_type
                info.external_attr = m.external_attr
                info.create_system = m.create_system
                info.comment = m.comment
                info.extra = m.extra
                if m.compresslevel is not None:
                    info._compresslevel = m.compresslevel  # zipfile has no public per-member level
                with zf.open(info, "w", force_zip64=m.force_zip64) as out:
                    out.write(m.data)
            zf.comment = comment
    return bytes(sink.buffer) if streamed else sink.getvalue()


def patch_declared_size(data: bytes, name: str, declared: int) -> bytes:
    """Make the local and central headers of member ``name`` declare ``declared`` uncompressed bytes."""
    buf = bytearray(data)
    zf = zipfile.ZipFile(io.BytesIO(data))
    info = zf.getinfo(name)
    struct.pack_into("<L", buf, info.header_offset + 22, declared)
    pos = zf.start_dir
    while buf[pos:pos + 4] == b"PK\x01\x02":
        nlen, xlen, clen = struct.unpack_from("<HHH", buf, pos + 28)
        if bytes(buf[pos + 46:pos + 46 + nlen]) == name.encode():
            struct.pack_into("<L", buf, pos + 24, declared)
        pos += 46 + nlen + xlen + clen
    return bytes(buf)


# --------------------------------------------------------------------------- packages

class DocxBuilder:
    """A minimal valid .docx (content types, relationships, main document, styles) to extend."""

    def __init__(self, blocks: list[str] | None = None, *, strict: bool = False, bom: bool = False,
                 encoding: str = "utf-8", main_content_type: str = CT_DOCUMENT, document: bytes | None = None,
                 with_styles: bool = True) -> None:
        self.strict = strict
        self.rel_ns = REL_STRICT if strict else REL
        self.parts: dict[str, bytes] = {}
        self.defaults: dict[str, str] = {"rels": CT_RELS, "xml": "application/xml", "png": "image/png"}
        self.overrides: dict[str, str] = {}
        self.rels: dict[str, list[Rel]] = {}
        if document is None:
            blocks = [paragraph("Hello"), section_properties()] if blocks is None else blocks
            document = document_xml(blocks, strict=strict, bom=bom, encoding=encoding)
        self.add_part("word/document.xml", document, main_content_type,
                      rel_type=self.rel_ns + "officeDocument", source="")
        if with_styles:
            self.add_part("word/styles.xml", STYLES_XML, CT_STYLES, rel_type=self.rel_ns + "styles")

    def add_relationship(self, source: str, rel_type: str, target: str, *, external: bool = False) -> str:
        rels = self.rels.setdefault(source, [])
        rel_id = f"rId{len(rels) + 1}"
        rels.append(Rel(rel_id, rel_type, target, external))
        return rel_id

    def add_part(self, name: str, data: bytes, content_type: str | None = None, *, rel_type: str | None = None,
                 source: str = "word/document.xml") -> str | None:
        """Add a part, its content type override and (with ``rel_type``) a relationship from ``source``."""
        self.parts[name] = data
        if content_type is not None:
            self.overrides[name] = content_type
        if rel_type is None:
            return None
        base = source.rpartition("/")[0]
        target = name[len(base) + 1:] if base and name.startswith(base + "/") else "/" + name
        return self.add_relationship(source, rel_type, target)

    def members(self) -> list[ZipMember]:
        members = [ZipMember("[Content_Types].xml", content_types_xml(self.defaults, self.overrides))]
        members += [ZipMember(rels_part_name(src), relationships_xml(rels)) for src, rels in self.rels.items()]
        members += [ZipMember(name, data) for name, data in self.parts.items()]
        return members

    def build(self, *, rng: random.Random | None = None, order: list[str] | None = None,
              compression: Callable[[str], int] | None = None, streamed: bool = False,
              comment: bytes = b"") -> bytes:
        """Zip the package. With ``rng``: random member order, compression, levels, timestamps,
        attributes, extra fields, comments and zip64 local records, to exercise every header field."""
        members = self.members()
        if order is not None:
            by_name = {m.name: m for m in members}
            members = [by_name[n] for n in order] + [m for m in members if m.name not in order]
        if compression is not None:
            for m in members:
                m.compress_type = compression(m.name)
        if rng is not None:
            rng.shuffle(members)
            for m in members:
                m.compress_type = rng.choice([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
                m.compresslevel = rng.choice([None, 1, 9])
                m.date_time = (rng.randint(1980, 2107), rng.randint(1, 12), rng.randint(1, 28),
                               rng.randint(0, 23), rng.randint(0, 59), rng.randrange(0, 60, 2))
                m.external_attr = rng.choice([0, 0o644 << 16, 0x20])
                m.create_system = rng.choice([0, 3])
                m.comment = rng.choice([b"", b"member comment"])
                m.extra = rng.choice([b"", b"\xfe\xca\x00\x00", struct.pack("<HHBL", 0x5455, 5, 1, 1700000000)])
                m.force_zip64 = rng.random() < 0.2
        return zip_package(members, comment=comment, streamed=streamed)


def xlsx_bytes(*, with_macros: bool = False) -> bytes:
    """A minimal workbook; ``with_macros`` makes it an .xlsm with a VBA project."""
    main_ct = CT_XLSM_MAIN if with_macros else CT_XLSX_MAIN
    workbook = (XML_DECL + f'<workbook xmlns="{SML_NS}" '
                f'xmlns:r="{R_NS}"><sheets><sheet name="Sheet1" sheetId="1" r:id="rId1"/></sheets></workbook>')
    sheet = (XML_DECL + f'<worksheet xmlns="{SML_NS}">'
             '<sheetData><row r="1"><c r="A1"><v>42</v></c></row></sheetData></worksheet>')
    overrides = {
        "xl/workbook.xml": main_ct,
        "xl/worksheets/sheet1.xml": "application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml",
    }
    wb_rels = [Rel("rId1", REL + "worksheet", "worksheets/sheet1.xml")]
    members = [
        ZipMember("xl/workbook.xml", workbook.encode()),
        ZipMember("xl/worksheets/sheet1.xml", sheet.encode()),
    ]
    if with_macros:
        overrides["xl/vbaProject.bin"] = CT_VBA
        wb_rels.append(Rel("rId2", REL_MS + "vbaProject", "vbaProject.bin"))
        members.append(ZipMember("xl/vbaProject.bin", OLE_HEADER + bytes(504)))
    members = [
        ZipMember("[Content_Types].xml", content_types_xml({"rels": CT_RELS, "xml": "application/xml"}, overrides)),
        ZipMember("_rels/.rels", relationships_xml([Rel("rId1", REL + "officeDocument", "xl/workbook.xml")])),
        ZipMember("xl/_rels/workbook.xml.rels", relationships_xml(wb_rels)),
        *members,
    ]
    return zip_package(members)


def docm_bytes() -> bytes:
    """A macro-enabled Word document (macro main content type and a VBA project)."""
    builder = DocxBuilder(main_content_type=CT_DOCM)
    builder.add_part("word/vbaProject.bin", OLE_HEADER + bytes(504), CT_VBA, rel_type=REL_MS + "vbaProject")
    return builder.build()


def embed(builder: DocxBuilder, name: str, data: bytes, content_type: str = CT_XLSX) -> str | None:
    """Embed a package under word/embeddings with the .../package relationship."""
    return builder.add_part(f"word/embeddings/{name}", data, content_type, rel_type=REL + "package")
