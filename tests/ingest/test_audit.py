"""Upload audit: one test per refusal kind, each on a document built in code (docx_factory)."""

from __future__ import annotations

import io
import json
import struct
import zipfile
import zlib

import pytest

from astra.ingest.audit import INFO, REFUSE, AuditLimits, Code, audit, audit_or_raise
from astra.ingest.errors import AuditRefused
from astra.ooxml import ns

from . import docx_factory as f

MiB = 1024 * 1024


def refused(report, code: str, location: str):
    """The refusal with this code at this location (and the report is refused)."""
    assert not report.passed
    matches = [x for x in report.findings if x.code == code and x.location == location]
    assert matches, f"no {code} at {location!r}: {[(x.code, x.location) for x in report.findings]}"
    assert matches[0].severity == REFUSE and matches[0].message
    json.dumps(report.to_dict())
    return matches[0]


def with_members(extra: list[f.ZipMember], builder: f.DocxBuilder | None = None) -> bytes:
    """A valid package plus raw members appended as is."""
    return f.zip_package((builder or f.DocxBuilder()).members() + extra)


# --------------------------------------------------------------------------- baseline

def test_minimal_document_passes():
    report = audit(f.DocxBuilder().build(), "template.docx")
    assert report.passed and report.findings == []
    assert report.to_dict()["passed"] is True
    assert audit_or_raise(f.DocxBuilder().build()).passed


def test_audit_or_raise_names_the_first_refusal():
    with pytest.raises(AuditRefused) as caught:
        audit_or_raise(b"plain text", "notes.docx")
    assert caught.value.report.codes() == {Code.NOT_A_ZIP}
    assert "notes.docx" in str(caught.value) and "not a zip" in str(caught.value)


# --------------------------------------------------------------------------- not a package

def test_oversized_upload():
    report = audit(f.DocxBuilder().build(), "big.docx", AuditLimits(max_upload_bytes=100))
    refused(report, Code.UPLOAD_TOO_LARGE, "big.docx")
    assert report.sha256 is None


def test_ole_compound_file_is_encrypted_or_legacy():
    finding = refused(audit(f.OLE_HEADER + bytes(1024), "secret.docx"), Code.OLE_COMPOUND_FILE, "secret.docx")
    assert "encrypted or legacy binary document" in finding.message


def test_not_a_zip():
    refused(audit(b"%PDF-1.7 pretending", "fake.docx"), Code.NOT_A_ZIP, "fake.docx")


# --------------------------------------------------------------------------- zip structure

def test_leading_and_trailing_bytes_are_refused():
    data = f.DocxBuilder().build()
    refused(audit(b"MZ polyglot prefix" + data), Code.ZIP_UNREFERENCED_DATA, "[Content_Types].xml")
    refused(audit(data + b"<script>trailer</script>"), Code.ZIP_UNREFERENCED_DATA, "upload.docx")


def test_overlapping_members():
    data = bytearray(f.zip_package([f.ZipMember("a.xml", b"<a/>"), f.ZipMember("b.xml", b"<b/>")]))
    cd = zipfile.ZipFile(io.BytesIO(bytes(data))).start_dir
    second = cd + 46 + len("a.xml")
    struct.pack_into("<L", data, second + 42, 0)  # b.xml's central entry now points at a.xml's data
    report = audit(bytes(data))
    refused(report, Code.ZIP_OVERLAPPING_MEMBERS, "b.xml")


def test_too_many_members():
    report = audit(f.DocxBuilder().build(), limits=AuditLimits(max_members=3))
    refused(report, Code.ZIP_TOO_MANY_MEMBERS, "upload.docx")


def test_encrypted_member():
    data = bytearray(f.DocxBuilder().build())
    zf = zipfile.ZipFile(io.BytesIO(bytes(data)))
    info = zf.getinfo("word/styles.xml")
    struct.pack_into("<H", data, info.header_offset + 6, info.flag_bits | 1)
    pos = zf.start_dir
    while data[pos:pos + 4] == b"PK\x01\x02":
        nlen, xlen, clen = struct.unpack_from("<HHH", data, pos + 28)
        if data[pos + 46:pos + 46 + nlen] == b"word/styles.xml":
            struct.pack_into("<H", data, pos + 8, info.flag_bits | 1)
        pos += 46 + nlen + xlen + clen
    refused(audit(bytes(data)), Code.ZIP_ENCRYPTED_MEMBER, "word/styles.xml")


def test_unsupported_compression():
    data = with_members([f.ZipMember("word/extra.xml", b"<x/>", compress_type=zipfile.ZIP_BZIP2)])
    refused(audit(data), Code.ZIP_UNSUPPORTED_COMPRESSION, "word/extra.xml")


def test_crc_mismatch():
    data = bytearray(with_members([f.ZipMember("word/extra.xml", b"<x>abc</x>", compress_type=zipfile.ZIP_STORED)]))
    at = bytes(data).index(b"<x>abc</x>")
    data[at + 3] = ord("z")
    refused(audit(bytes(data)), Code.ZIP_CRC_MISMATCH, "word/extra.xml")


# --------------------------------------------------------------------------- zip bombs

def test_zip_bomb_ratio():
    data = with_members([f.ZipMember("word/media/zeros.bin", bytes(2 * MiB))])  # ~1000:1
    finding = refused(audit(data), Code.ZIP_BOMB_RATIO, "word/media/zeros.bin")
    assert "ratio" in finding.message


def test_zip_bomb_per_member():
    data = with_members([f.ZipMember("word/media/big.bin", bytes(300_000), compress_type=zipfile.ZIP_STORED)])
    report = audit(data, limits=AuditLimits(max_member_uncompressed=256 * 1024))
    refused(report, Code.ZIP_BOMB_MEMBER, "word/media/big.bin")


def test_zip_bomb_total():
    members = [f.ZipMember(f"word/media/part{i}.bin", bytes(200_000)) for i in range(3)]
    report = audit(with_members(members), limits=AuditLimits(max_total_uncompressed=500_000, max_ratio=1e9))
    refused(report, Code.ZIP_BOMB_TOTAL, "upload.docx")


def test_lying_header_sizes_are_caught_while_inflating():
    honest = with_members([f.ZipMember("word/media/zeros.bin", bytes(3 * MiB))])
    liar = f.patch_declared_size(honest, "word/media/zeros.bin", 1000)
    # The headers alone look harmless: 1000 bytes, far below every cap and the ratio floor.
    assert zipfile.ZipFile(io.BytesIO(liar)).getinfo("word/media/zeros.bin").file_size == 1000
    report = audit(liar, limits=AuditLimits(max_member_uncompressed=1 * MiB))
    refused(report, Code.ZIP_BOMB_MEMBER, "word/media/zeros.bin")
    refused(report, Code.ZIP_SIZE_MISMATCH, "word/media/zeros.bin")
    # Under the default caps the stream is inflated in full: the real ratio and size give it away.
    report = audit(liar)
    refused(report, Code.ZIP_SIZE_MISMATCH, "word/media/zeros.bin")
    refused(report, Code.ZIP_BOMB_RATIO, "word/media/zeros.bin")


def test_lying_headers_cannot_exceed_the_total_cap():
    members = [f.ZipMember(f"word/media/z{i}.bin", bytes(400_000)) for i in range(3)]
    data = with_members(members)
    for i in range(3):
        data = f.patch_declared_size(data, f"word/media/z{i}.bin", 10)
    report = audit(data, limits=AuditLimits(max_total_uncompressed=1_000_000, max_ratio=1e9))
    assert Code.ZIP_BOMB_TOTAL in report.codes(REFUSE)
    refused(report, Code.ZIP_BOMB_TOTAL, "word/media/z2.bin")


# --------------------------------------------------------------------------- member names

@pytest.mark.parametrize("name, code", [
    ("/word/evil.xml", Code.MEMBER_NAME_ABSOLUTE),
    ("C:/evil.xml", Code.MEMBER_NAME_ABSOLUTE),
    ("../evil.xml", Code.MEMBER_NAME_TRAVERSAL),
    ("word/../../evil.xml", Code.MEMBER_NAME_TRAVERSAL),
    ("word\\evil.xml", Code.MEMBER_NAME_BACKSLASH),
])
def test_dangerous_member_names(name, code):
    refused(audit(with_members([f.ZipMember(name, b"<x/>")])), code, name)


@pytest.mark.parametrize("duplicate", ["word/document.xml", "Word/Document.XML"])
def test_duplicate_members(duplicate):
    data = with_members([f.ZipMember(duplicate, f.document_xml([f.paragraph("second body")]))])
    finding = refused(audit(data), Code.MEMBER_NAME_DUPLICATE, duplicate)
    assert "word/document.xml" in finding.message


# --------------------------------------------------------------------------- OPC structure

def test_missing_content_types():
    members = [m for m in f.DocxBuilder().members() if m.name != "[Content_Types].xml"]
    refused(audit(f.zip_package(members)), Code.MISSING_CONTENT_TYPES, "[Content_Types].xml")


def test_missing_main_document_part():
    members = [m for m in f.DocxBuilder().members() if m.name != "word/document.xml"]
    refused(audit(f.zip_package(members)), Code.MISSING_MAIN_DOCUMENT, "word/document.xml")
    members = [m for m in f.DocxBuilder().members() if m.name != "_rels/.rels"]
    refused(audit(f.zip_package(members)), Code.MISSING_MAIN_DOCUMENT, "_rels/.rels")


def test_workbook_renamed_to_docx_is_not_a_word_document():
    refused(audit(f.xlsx_bytes(), "book.docx"), Code.MISSING_MAIN_DOCUMENT, "xl/workbook.xml")


# --------------------------------------------------------------------------- active content

def test_vba_project():
    builder = f.DocxBuilder()
    rel_id = builder.add_part("word/vbaProject.bin", f.OLE_HEADER + bytes(504), f.CT_VBA,
                              rel_type=f.REL_MS + "vbaProject")
    report = audit(builder.build())
    refused(report, Code.MACRO_VBA_PROJECT, "word/vbaProject.bin")
    refused(report, Code.MACRO_VBA_PROJECT, f"word/_rels/document.xml.rels#{rel_id}")
    assert Code.OLE_OBJECT not in report.codes()  # one finding per member: the most specific


def test_vba_data_part_without_content_type():
    refused(audit(with_members([f.ZipMember("word/vbaData.xml", b"<wne:vbaSuppData xmlns:wne='urn:x'/>")])),
            Code.MACRO_VBA_PROJECT, "word/vbaData.xml")


def test_docm_content_type_and_name():
    report = audit(f.DocxBuilder(main_content_type=f.CT_DOCM).build(), "letter.docm")
    refused(report, Code.MACRO_ENABLED_CONTENT_TYPE, "word/document.xml")
    refused(report, Code.MACRO_ENABLED_FILENAME, "letter.docm")


@pytest.mark.parametrize("name, package, inner", [
    ("Microsoft_Word_Macro.docm", f.docm_bytes(), "word/vbaProject.bin"),
    ("Microsoft_Excel_Macro.xlsm", f.xlsx_bytes(with_macros=True), "xl/vbaProject.bin"),
])
def test_embedded_packages_with_macros(name, package, inner):
    builder = f.DocxBuilder()
    f.embed(builder, name, package, "application/vnd.ms-excel.sheet.macroEnabled.12")
    report = audit(builder.build())
    location = f"word/embeddings/{name}"
    refused(report, Code.EMBEDDED_PACKAGE_WITH_MACROS, location)
    refused(report, Code.MACRO_VBA_PROJECT, f"{location}!{inner}")


def test_macros_hidden_two_levels_down_under_an_innocent_name():
    inner = f.DocxBuilder()
    f.embed(inner, "Book.xlsx", f.xlsx_bytes(with_macros=True))  # a .xlsx name, xlsm inside
    outer = f.DocxBuilder()
    f.embed(outer, "Document.docx", inner.build(), ns.CT_DOCX)
    report = audit(outer.build())
    refused(report, Code.EMBEDDED_PACKAGE_WITH_MACROS, "word/embeddings/Document.docx")
    refused(report, Code.EMBEDDED_PACKAGE_WITH_MACROS, "word/embeddings/Document.docx!word/embeddings/Book.xlsx")
    refused(report, Code.MACRO_VBA_PROJECT, "word/embeddings/Document.docx!word/embeddings/Book.xlsx!xl/vbaProject.bin")


def test_nesting_depth_is_capped():
    level2 = f.DocxBuilder()
    f.embed(level2, "Book.xlsx", f.xlsx_bytes())  # depth 3 from the upload
    level1 = f.DocxBuilder()
    f.embed(level1, "Inner.docx", level2.build(), ns.CT_DOCX)  # depth 2
    top = f.DocxBuilder()
    f.embed(top, "Outer.docx", level1.build(), ns.CT_DOCX)  # depth 1
    package = top.build()
    assert audit(package).passed  # three levels: within the default cap
    report = audit(package, limits=AuditLimits(max_nesting=2))
    refused(report, Code.EMBEDDED_NESTING_TOO_DEEP,
            "word/embeddings/Outer.docx!word/embeddings/Inner.docx!word/embeddings/Book.xlsx")


def test_embedded_plain_xlsx_is_allowed_and_recorded():
    builder = f.DocxBuilder()
    f.embed(builder, "Microsoft_Excel_Sheet1.xlsx", f.xlsx_bytes())
    report = audit(builder.build())
    assert report.passed, report.to_dict()
    infos = [x for x in report.findings if x.code == Code.EMBEDDED_PACKAGE]
    assert [(x.severity, x.location) for x in infos] == [(INFO, "word/embeddings/Microsoft_Excel_Sheet1.xlsx")]


def test_unreadable_embedded_zip():
    builder = f.DocxBuilder()
    f.embed(builder, "broken.xlsx", b"PK\x03\x04 truncated")
    refused(audit(builder.build()), Code.EMBEDDED_PACKAGE_UNREADABLE, "word/embeddings/broken.xlsx")


def test_activex_control():
    builder = f.DocxBuilder()
    rel_id = builder.add_part("word/activeX/activeX1.xml", b'<ax:ocx xmlns:ax="urn:ax" ax:classid="{X}"/>',
                              f.CT_ACTIVEX, rel_type=f.REL + "control")
    builder.add_part("word/activeX/activeX1.bin", f.OLE_HEADER + bytes(504), "application/vnd.ms-office.activeX",
                     rel_type=f.REL_MS + "activeXControlBinary", source="word/activeX/activeX1.xml")
    report = audit(builder.build())
    refused(report, Code.ACTIVEX_CONTROL, "word/activeX/activeX1.xml")
    refused(report, Code.ACTIVEX_CONTROL, "word/activeX/activeX1.bin")
    refused(report, Code.ACTIVEX_CONTROL, f"word/_rels/document.xml.rels#{rel_id}")
    refused(report, Code.ACTIVEX_CONTROL, "word/activeX/_rels/activeX1.xml.rels#rId1")


def test_ole_object_binary():
    builder = f.DocxBuilder()
    rel_id = builder.add_part("word/embeddings/oleObject1.bin", f.OLE_HEADER + bytes(504), f.CT_OLE,
                              rel_type=f.REL + "oleObject")
    report = audit(builder.build())
    refused(report, Code.OLE_OBJECT, "word/embeddings/oleObject1.bin")
    refused(report, Code.OLE_OBJECT, f"word/_rels/document.xml.rels#{rel_id}")


def test_embedded_legacy_binary_document_is_an_ole_object():
    builder = f.DocxBuilder()
    builder.add_part("word/embeddings/Microsoft_Word_97_-_2003_Document.doc", f.OLE_HEADER + bytes(504),
                     "application/msword", rel_type=f.REL + "package")
    refused(audit(builder.build()), Code.OLE_OBJECT, "word/embeddings/Microsoft_Word_97_-_2003_Document.doc")


# --------------------------------------------------------------------------- relationships

@pytest.mark.parametrize("source, rel_type, target", [
    ("word/document.xml", f.REL + "image", "file:///C:/secret/logo.png"),
    ("word/webSettings.xml", f.REL + "frame", "http://evil.example/frame.html"),
    ("word/document.xml", f.REL + "oleObject", "\\\\smb-host\\share\\object.bin"),
    ("word/document.xml", f.REL + "subDocument", "http://evil.example/sub.docx"),
    ("word/document.xml", "http://example.com/custom/relationship", "https://tracker.example/pixel"),
])
def test_external_relationships_other_than_hyperlinks(source, rel_type, target):
    builder = f.DocxBuilder()
    if source != "word/document.xml":
        builder.add_part(source, f"<w:settings xmlns:w='{f.W_NS}'/>".encode(), None, rel_type=f.REL + "settings")
    rel_id = builder.add_relationship(source, rel_type, target, external=True)
    location = f"{f.rels_part_name(source)}#{rel_id}"
    finding = refused(audit(builder.build()), Code.EXTERNAL_RELATIONSHIP, location)
    assert rel_type in finding.message and target in finding.message


def test_internal_target_with_a_uri_is_treated_as_external():
    builder = f.DocxBuilder()
    rel_id = builder.add_relationship("word/document.xml", f.REL + "image", "http://evil.example/x.png")
    refused(audit(builder.build()), Code.EXTERNAL_RELATIONSHIP, f"word/_rels/document.xml.rels#{rel_id}")


def test_internal_target_outside_the_package():
    builder = f.DocxBuilder()
    rel_id = builder.add_relationship("word/document.xml", f.REL + "image", "../../../etc/passwd")
    refused(audit(builder.build()), Code.RELATIONSHIP_TARGET_OUTSIDE_PACKAGE, f"word/_rels/document.xml.rels#{rel_id}")


def test_hyperlinks_are_recorded_not_refused():
    builder = f.DocxBuilder()
    one = builder.add_relationship("word/document.xml", f.REL + "hyperlink", "https://example.com/a", external=True)
    two = builder.add_relationship("word/document.xml", f.REL_STRICT + "hyperlink", "mailto:x@example.com",
                                   external=True)
    report = audit(builder.build())
    assert report.passed, report.to_dict()
    assert [(h.location, h.target, h.source_part) for h in report.hyperlinks] == [
        (f"word/_rels/document.xml.rels#{one}", "https://example.com/a", "word/document.xml"),
        (f"word/_rels/document.xml.rels#{two}", "mailto:x@example.com", "word/document.xml"),
    ]
    assert {(x.code, x.severity) for x in report.findings} == {(Code.HYPERLINK_EXTERNAL, INFO)}
    assert report.to_dict()["hyperlinks"][0]["target"] == "https://example.com/a"


# --------------------------------------------------------------------------- XML

XXE = (b'<?xml version="1.0"?>\n<!DOCTYPE w:document [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>\n'
       b'<w:document xmlns:w="' + f.W_NS.encode() + b'"><w:body><w:p><w:r><w:t>&xxe;</w:t></w:r></w:p>'
       b"</w:body></w:document>")
BILLION_LAUGHS = (b'<?xml version="1.0"?>\n<!DOCTYPE lolz [<!ENTITY lol "lol">'
                  + b"".join(b'<!ENTITY lol%d "%s">' % (i, (b"&lol%d;" % (i - 1) if i > 1 else b"&lol;") * 10)
                             for i in range(1, 10))
                  + b"]>\n<lolz>&lol9;</lolz>")


def test_xxe_in_main_document():
    refused(audit(f.DocxBuilder(document=XXE).build()), Code.XML_DTD, "word/document.xml")


def test_billion_laughs_in_custom_xml():
    data = with_members([f.ZipMember("customXml/item1.xml", BILLION_LAUGHS)])
    refused(audit(data), Code.XML_DTD, "customXml/item1.xml")


def test_doctype_in_utf16_part():
    utf16 = '<?xml version="1.0" encoding="UTF-16"?><!DOCTYPE x SYSTEM "http://evil.example/x.dtd"><x/>'
    data = with_members([f.ZipMember("customXml/item2.xml", utf16.encode("utf-16"))])
    refused(audit(data), Code.XML_DTD, "customXml/item2.xml")


def test_malformed_xml():
    data = f.DocxBuilder(document=b'<?xml version="1.0"?><w:document><w:body><w:p></w:body>').build()
    finding = refused(audit(data), Code.XML_MALFORMED, "word/document.xml")
    assert "malformed" in finding.message


def test_binary_parts_are_not_parsed_as_xml():
    # printer settings blobs contain '<!DOCTYPE' bytes (plist) in real Word files: they are not XML parts
    builder = f.DocxBuilder()
    builder.defaults["bin"] = "application/vnd.openxmlformats-officedocument.wordprocessingml.printerSettings"
    builder.add_part("word/printerSettings/printerSettings1.bin", b"\x00\x01<!DOCTYPE plist>\x00" + zlib.compress(b"x"),
                     rel_type=f.REL + "printerSettings")
    assert audit(builder.build()).passed
