"""The OOXML layer's editing side (astra/ooxml/edit.py, Precompressed members): what BUILDER writes through."""

from __future__ import annotations

import io
import zipfile

import pytest
from lxml import etree

from astra.ooxml.edit import (
    add_content_type_defaults,
    add_relationships,
    fragment_xml,
    next_relationship_ids,
    splice_blocks,
)
from astra.ooxml.errors import PackageError
from astra.ooxml.ns import PKG_REL_NS, RT_TRANSITIONAL, W_NS
from astra.ooxml.package import Package, write_package
from astra.ooxml.rels import Relationship, parse_content_types, parse_relationships
from astra.ooxml.xml import parse_xml
from astra.ooxml.zip import STORED

DOC = (f'<?xml version="1.0"?>\n<w:document xmlns:w="{W_NS}"><w:body>\n  <w:p><w:r><w:t>one</w:t></w:r></w:p>'
       "<!-- kept -->\n  <w:p w:rsidR='00AB'><w:r><w:t>two</w:t></w:r></w:p><w:sectPr/></w:body></w:document>")


def test_splice_replaces_only_the_named_blocks():
    part = DOC.encode()
    out = splice_blocks(part, {1: b"<w:p><w:r><w:t>TWO</w:t></w:r></w:p>"})
    assert out == part.replace(b"<w:p w:rsidR='00AB'><w:r><w:t>two</w:t></w:r></w:p>",
                               b"<w:p><w:r><w:t>TWO</w:t></w:r></w:p>")
    assert splice_blocks(part, {}) == part


def test_splice_keeps_utf16_parts_utf16():
    part = DOC.replace('version="1.0"', 'version="1.0" encoding="UTF-16"').encode("utf-16")
    out = splice_blocks(part, {0: "<w:p><w:r><w:t>ünï</w:t></w:r></w:p>".encode()})
    assert "ünï" in out.decode("utf-16") and "two" in out.decode("utf-16")


def test_splice_refuses_what_it_cannot_do():
    with pytest.raises(PackageError, match="no block 7"):
        splice_blocks(DOC.encode(), {7: b"<w:p/>"})
    with pytest.raises(PackageError, match="cannot be split"):
        splice_blocks(b"<w:document><w:body><w:p>", {0: b"<w:p/>"})


def test_fragment_declares_nothing_its_place_already_declares():
    root = etree.fromstring(DOC.encode())
    p = root[0][0]
    assert fragment_xml(p) == b"<w:p><w:r><w:t>one</w:t></w:r></w:p>"
    assert b"xmlns" in fragment_xml(p, {})  # out of context, it declares what it needs


def _rel(rid: str, target: str) -> Relationship:
    return Relationship("word/_rels/document.xml.rels", "word/document.xml", rid, RT_TRANSITIONAL + "image",
                        target, False)


def test_add_relationships_appends_and_keeps_existing_entries():
    existing = (f'<?xml version="1.0"?><Relationships xmlns="{PKG_REL_NS}"><Relationship Id="rId1" '
                f'Type="{RT_TRANSITIONAL}styles" Target="styles.xml"/></Relationships>\n').encode()
    out = add_relationships(existing, [_rel("rId2", "media/a.png")])
    assert existing[existing.index(b"<Relationship "):existing.index(b"</Relationships>")] in out
    rels = parse_relationships("word/_rels/document.xml.rels", parse_xml(out))
    assert [(r.id, r.target) for r in rels] == [("rId1", "styles.xml"), ("rId2", "media/a.png")]
    prefixed = f'<r:Relationships xmlns:r="{PKG_REL_NS}"></r:Relationships>'.encode()
    out = add_relationships(prefixed, [_rel("rId1", "a.png")])
    assert b"<r:Relationship " in out
    assert [r.target for r in parse_relationships("x", parse_xml(out))] == ["a.png"]
    fresh = parse_relationships("x", parse_xml(add_relationships(None, [_rel("rId1", "b.png")])))
    assert [r.target for r in fresh] == ["b.png"]


RELS_UTF16 = f'<?xml version="1.0" encoding="UTF-16"?><Relationships xmlns="{PKG_REL_NS}"/>'.encode("utf-16")
RELS_TRAILING = f'<Relationships xmlns="{PKG_REL_NS}"/><!-- end --><?producer x?>\n'.encode()


@pytest.mark.parametrize("part", [RELS_UTF16, RELS_TRAILING], ids=["utf16", "trailing-comment-and-pi"])
def test_add_relationships_to_any_wellformed_part(part):
    out = add_relationships(part, [_rel("rId1", "media/a.png")])
    assert [r.target for r in parse_relationships("x", parse_xml(out))] == ["media/a.png"]
    if part is RELS_UTF16:
        assert out.startswith(b"\xff\xfe") and "media/a.png" in out.decode("utf-16")
    else:
        assert out.rstrip().endswith(b"<!-- end --><?producer x?>")


def test_add_entries_refuses_what_is_not_the_part():
    with pytest.raises(PackageError, match="not <Relationships>"):
        add_relationships(b"<Types/>", [_rel("rId1", "a.png")])
    with pytest.raises(PackageError, match="malformed"):
        add_content_type_defaults(b"<Types>", {"png": "image/png"})


CT_NS = "http://schemas.openxmlformats.org/package/2006/content-types"


def test_add_content_type_defaults_only_missing_ones():
    types = (f'<Types xmlns="{CT_NS}">'
             '<Default Extension="PNG" ContentType="image/png"/></Types>').encode()
    out = add_content_type_defaults(types, {"png": "image/png", "jpeg": "image/jpeg"})
    parsed = parse_content_types(parse_xml(out))
    assert parsed.defaults == {"png": "image/png", "jpeg": "image/jpeg"}
    assert add_content_type_defaults(out, {"jpeg": "image/jpeg"}) == out


@pytest.mark.parametrize("types", [
    f'<Types xmlns="{CT_NS}"><!-- <Default Extension="png" ContentType="image/png"/> --></Types>'.encode(),
    f'<?xml version="1.0" encoding="UTF-16"?><Types xmlns="{CT_NS}"/><!-- Extension="png" -->'.encode("utf-16"),
    f'<ct:Types xmlns:ct="{CT_NS}"/><?pi Extension="png"?>'.encode(),
], ids=["commented-out-entry", "utf16-trailing-comment", "prefixed-trailing-pi"])
def test_a_comment_or_pi_is_not_a_content_type(types):
    out = add_content_type_defaults(types, {"png": "image/png"})
    assert parse_content_types(parse_xml(out)).defaults == {"png": "image/png"}


def test_next_relationship_ids():
    assert next_relationship_ids([_rel("rId3", "a"), _rel("rId10", "b"), _rel("rIdX", "c")], 2) == ["rId11", "rId12"]
    assert next_relationship_ids([], 1) == ["rId1"]


def test_precompressed_members_are_copied_as_stored():
    source = write_package([("a.xml", b"<a>" + b"x" * 1000 + b"</a>"), ("b.bin", b"\x00\x01")], compress_type=STORED)
    pkg = Package.read(source)
    copied = write_package([("a.xml", pkg.precompressed("a.xml")), ("b.bin", pkg.precompressed("b.bin")),
                            ("c.txt", b"new")])
    with zipfile.ZipFile(io.BytesIO(copied)) as zf:
        assert zf.testzip() is None
        assert zf.read("a.xml") == pkg.read_part("a.xml") and zf.read("c.txt") == b"new"
        assert zf.getinfo("a.xml").compress_type == STORED
