"""Reading a package (parts, relationships, hardened XML) and writing one deterministically."""

from __future__ import annotations

import io
import zipfile

import pytest

from astra.ooxml.errors import PackageError
from astra.ooxml.fields import NESTED, computed_name, field_instructions, field_name
from astra.ooxml.ns import CT_DOCUMENT_MAIN, CT_RELATIONSHIPS, MC_NS, W_NS, W_STRICT_NS, W, rel_types
from astra.ooxml.package import Package, main_document_part, write_package
from astra.ooxml.rels import Relationship, content_types_xml, parse_relationships, relationships_xml
from astra.ooxml.wordml import story_parts, styles_part
from astra.ooxml.xml import ForbiddenDtd, parse_xml
from astra.ooxml.zip import FIXED_DATE_TIME, read_zip

RT = next(iter(sorted(rel_types("x"))))[:-1]  # the transitional relationship-type prefix
DOCUMENT = f'<w:document xmlns:w="{W_NS}"><w:body><w:p/></w:body></w:document>'.encode()


def rel(source: str, rel_id: str, kind: str, target: str, external: bool = False) -> Relationship:
    return Relationship("", source, rel_id, RT + kind, target, external)


def docx(document_rels: list[Relationship], extra: list[tuple[str, bytes]] = ()) -> bytes:
    return write_package([
        ("[Content_Types].xml", content_types_xml({"rels": CT_RELATIONSHIPS, "xml": "application/xml"},
                                                  {"word/document.xml": CT_DOCUMENT_MAIN})),
        ("_rels/.rels", relationships_xml([rel("", "rId1", "officeDocument", "word/document.xml")])),
        ("word/_rels/document.xml.rels", relationships_xml(document_rels)),
        ("word/document.xml", DOCUMENT),
        *extra,
    ])


def test_write_package_is_deterministic_and_keeps_the_given_order():
    parts = [("b.xml", b"<b/>"), ("a.xml", b"<a/>"), ("word/\u00e9.xml", b"<e/>")]
    first, second = write_package(parts), write_package(list(parts))
    assert first == second
    with zipfile.ZipFile(io.BytesIO(first)) as zf:
        assert zf.namelist() == ["b.xml", "a.xml", "word/\u00e9.xml"]
        assert all(info.date_time == FIXED_DATE_TIME for info in zf.infolist())
        assert zf.read("a.xml") == b"<a/>"
    assert [e.name for e in read_zip(first).entries] == ["b.xml", "a.xml", "word/\u00e9.xml"]
    assert write_package(parts, date_time=(2030, 1, 1, 0, 0, 0)) != first


def test_package_reads_parts_and_relationships():
    data = docx([rel("word/document.xml", "rId1", "styles", "styles.xml")],
                [("word/styles.xml", f'<w:styles xmlns:w="{W_NS}"/>'.encode())])
    pkg = Package.read(data)
    assert pkg.main_document() == "word/document.xml"
    assert styles_part(pkg) == "word/styles.xml"
    assert pkg.xml("WORD/Document.xml").tag == W.document  # part names are case-insensitive
    assert pkg.content_types().of("word/document.xml") == CT_DOCUMENT_MAIN
    assert [r.target_part for r in pkg.relationships("word/document.xml")] == ["word/styles.xml"]


def test_a_relationship_escaping_the_package_is_not_followed():
    # The old WordPackage resolved ../../evil.xml to /evil.xml and read it as a header.
    evil = f'<w:hdr xmlns:w="{W_NS}"><w:p/></w:hdr>'.encode()
    pkg = Package.read(docx([rel("word/document.xml", "rId1", "header", "../../evil.xml")], [("evil.xml", evil)]))
    assert pkg.related("word/document.xml", "header") == []
    assert story_parts(pkg) == ["word/document.xml"]


def test_missing_part_and_non_zip_are_package_errors():
    with pytest.raises(PackageError):
        Package.read(b"not a zip")
    with pytest.raises(PackageError, match="missing part"):
        Package.read(docx([])).read_part("word/nope.xml")


def test_part_size_cap_is_enforced_while_inflating():
    pkg = Package.read(docx([], [("word/big.xml", b"<a>" + b"x" * 10_000 + b"</a>")]), max_part_bytes=1000)
    with pytest.raises(PackageError, match="too large|beyond"):
        pkg.read_part("word/big.xml")


@pytest.mark.parametrize("data", [
    b'<!DOCTYPE x [<!ENTITY e "boom">]><x>&e;</x>',
    '<?xml version="1.0" encoding="UTF-16"?><!DOCTYPE x><x/>'.encode("utf-16"),
    b'<!ENTITY e SYSTEM "file:///etc/passwd"><x/>',
])
def test_dtds_are_refused_before_parsing(data):
    with pytest.raises(ForbiddenDtd):
        parse_xml(data)


def test_malformed_xml_is_a_package_error():
    with pytest.raises(PackageError, match="malformed"):
        parse_xml(b"<a><b></a>", "word/document.xml")


def test_strict_namespaces_are_normalised_on_parse():
    root = parse_xml(f'<w:document xmlns:w="{W_STRICT_NS}" w:conformance="strict"><w:body/></w:document>'.encode())
    assert root.tag == W.document and root.find(W.body) is not None
    assert root.get(W.conformance) == "strict"
    kept = parse_xml(f'<w:document xmlns:w="{W_STRICT_NS}"/>'.encode(), normalise_strict=False)
    assert kept.tag == f"{{{W_STRICT_NS}}}document"


def test_relationships_xml_round_trips():
    rels = [rel("word/document.xml", "rId1", "hyperlink", "https://example.com/?a=1&b=\"2\"", external=True),
            rel("word/document.xml", "rId2", "styles", "styles.xml")]
    parsed = parse_relationships("word/_rels/document.xml.rels", parse_xml(relationships_xml(rels)))
    assert [(r.id, r.type, r.target, r.external, r.source_part) for r in parsed] == [
        (r.id, r.type, r.target, r.external, "word/document.xml") for r in rels]


def test_field_instructions_nested_split_and_stray():
    w = f'xmlns:w="{W_NS}"'
    begin, sep, end = (f'<w:r><w:fldChar w:fldCharType="{k}"/></w:r>' for k in ("begin", "separate", "end"))
    instr = '<w:r><w:instrText>{}</w:instrText></w:r>'.format
    body = (f"<w:body {w}><w:p>{begin}{instr('INCLUDE')}{instr('TEXT &quot;')}"
            f"{begin}{instr('FILE')}{instr('NAME')}{sep}<w:r><w:t>x</w:t></w:r>{end}"
            f"{instr('&quot;')}{sep}{end}<w:fldSimple w:instr=' PAGE '/>{instr('stray')}</w:p></w:body>")
    found = field_instructions(parse_xml(body.encode()))
    assert [(x.name, x.instruction, x.simple) for x in found] == [
        ("FILENAME", "FILENAME", False), ("INCLUDETEXT", 'INCLUDETEXT ""', False), ("PAGE", " PAGE ", True),
        ("STRAY", "stray", False)]


def test_field_readings_keep_tracked_changes_and_alternate_branches_apart():
    w = f'xmlns:w="{W_NS}" xmlns:mc="{MC_NS}"'
    begin, sep, end = (f'<w:r><w:fldChar w:fldCharType="{k}"/></w:r>' for k in ("begin", "separate", "end"))
    instr = '<w:r><w:instrText>{}</w:instrText></w:r>'.format
    body = (f"<w:body {w}><w:p>{begin}<w:del w:id='1'><w:r><w:delInstrText>PAGE </w:delInstrText></w:r></w:del>"
            f"{instr('DDE x')}{end}</w:p>"
            f"<w:p><mc:AlternateContent><mc:Choice Requires='w14'>{begin}</mc:Choice>"
            f"<mc:Fallback>{begin}{instr('PAGE ')}</mc:Fallback></mc:AlternateContent>{instr('LINK y')}{sep}{end}</w:p>"
            f"</w:body>")
    found = field_instructions(parse_xml(body.encode()))
    tracked = found[0]
    assert tracked.revisions() == [0] and tracked.variants() == ["DDE x", "PAGE DDE x"]
    codes = {x.code for x in found}
    assert {"DDE x", "LINK y", "PAGE LINK y"} <= codes  # each AlternateContent branch read on its own
    assert {"PAGE DDE x", NESTED} <= codes  # and all of them together (two begins: one nests in the other)


@pytest.mark.parametrize("code, name, computed", [
    ("PAGE", "PAGE", False), ('"DDEAUTO" x', "DDEAUTO", False), ("=2*3", "=", False),
    (f"={NESTED}*2", "=", False), (f" {NESTED} x", "", True), (f"DD{NESTED}AUTO", "", True),
    (f'"{NESTED}"', "", True), (f"IF {NESTED} = 1", "IF", False), ("", "", False),
])
def test_field_names_and_names_built_by_nested_fields(code, name, computed):
    assert (field_name(code), computed_name(code)) == (name, computed)


def test_main_document_is_found_through_the_one_resolver():
    """An officeDocument target written with percent-escapes names the decoded part, for Package as
    for the audit (both choose through main_document_part)."""
    def package(target: str) -> Package:
        return Package.read(write_package([
            ("_rels/.rels", relationships_xml([rel("", "rId1", "officeDocument", target)])),
            ("word/document.xml", DOCUMENT), ("word/doc.xml", DOCUMENT),
        ]))

    aliased = package("word/%64oc.xml")
    assert aliased.main_document() == "word/doc.xml"
    assert main_document_part(aliased.relationships(""), aliased.has) == "word/doc.xml"
    assert main_document_part(package("%2e%2e/word/doc.xml").relationships(""), aliased.has) is None
