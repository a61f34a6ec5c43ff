"""Lossless atomization: corpus round trips, generated documents (hypothesis), edge cases, dedup."""

from __future__ import annotations

import hashlib
import io
import json
import random
import zipfile
from pathlib import Path
from xml.sax.saxutils import escape

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from astra.ingest.atoms import atomize, member_metadata, part_digests, reassemble
from astra.ingest.audit import Code, audit
from astra.ingest.errors import PackageError, ReassemblyError
from astra.ooxml.blocks import split_children

from . import docx_factory as f

CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "datasets" / "docx-corpus"
CORPUS_FILES = sorted(CORPUS.glob("*/*.docx")) if CORPUS.is_dir() else []
# Both link a picture outside the package (TargetMode="External" image relationships).
EXPECTED_REFUSED = {"mammoth/external-picture.docx", "python-docx/shp-inline-shape-access.docx"}


def _corpus_id(path: Path) -> str:
    return path.relative_to(CORPUS).as_posix()


def assert_lossless(original: bytes, pkg) -> bytes:
    """Reassemble ``pkg`` and check it against ``original``; returns the rebuilt zip."""
    for sha, atom in pkg.atoms.items():
        assert hashlib.sha256(atom).hexdigest() == sha
    json.dumps(pkg.manifest)  # JSON-serialisable as is
    rebuilt = reassemble(pkg.manifest, pkg.atoms.__getitem__)
    assert [m["name"] for m in member_metadata(rebuilt)] == [m["name"] for m in member_metadata(original)]
    assert member_metadata(rebuilt) == member_metadata(original)
    assert part_digests(rebuilt) == part_digests(original)
    assert zipfile.ZipFile(io.BytesIO(rebuilt)).testzip() is None  # the stdlib reads it back
    original_zip = zipfile.ZipFile(io.BytesIO(original))
    for member in pkg.manifest["members"]:  # each part is its atoms, concatenated
        assert pkg.part(member["name"]) == original_zip.read(member["name"])
    return rebuilt


# --------------------------------------------------------------------------- corpus

def test_corpus_is_present():
    if not CORPUS.is_dir():
        pytest.skip(f"docx corpus not found at {CORPUS}")
    assert len(CORPUS_FILES) >= 60


@pytest.mark.parametrize("path", CORPUS_FILES, ids=_corpus_id)
def test_corpus_round_trip(path: Path):
    data = path.read_bytes()
    report = audit(data, path.name)
    if _corpus_id(path) in EXPECTED_REFUSED:
        refused = [x for x in report.refusals]
        assert refused and {x.code for x in refused} == {Code.EXTERNAL_RELATIONSHIP}
        assert all(x.location.startswith("word/_rels/document.xml.rels#rId") for x in refused)
        assert all("image" in x.message for x in refused)
        return
    assert report.passed, report.to_dict()
    pkg = atomize(data)
    assert_lossless(data, pkg)
    stories = {m["name"] for m in pkg.manifest["members"] if m["story"]}
    assert "word/document.xml" in stories  # every corpus main document is split, none left whole


def test_corpus_refusals_are_exactly_the_external_pictures():
    if not CORPUS_FILES:
        pytest.skip("docx corpus not present")
    refused = {_corpus_id(p) for p in CORPUS_FILES if not audit(p.read_bytes(), p.name).passed}
    assert refused == EXPECTED_REFUSED


# --------------------------------------------------------------------------- generated documents

_xml_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\ufffe\uffff"),
    max_size=12,
)


@st.composite
def _paragraph(draw, depth: int = 0) -> str:
    """Paragraphs with the constructs a byte scanner can trip on."""
    variant = draw(st.sampled_from(
        ["plain", "styled", "empty", "self_closing", "gt_in_attribute", "comment", "cdata", "pi",
         "spaced_end_tag", "text_box"]
    ))
    text = draw(_xml_text)
    if variant == "plain":
        return f.paragraph(text)
    if variant == "styled":
        return f.paragraph(text, style=draw(st.sampled_from(["Heading1", "a>b", "x/>y", "q'\""])))
    if variant == "empty":
        return "<w:p></w:p>"
    if variant == "self_closing":
        return draw(st.sampled_from(["<w:p/>", "<w:p />", '<w:p w:rsidR="00AB"/>']))
    if variant == "gt_in_attribute":
        return f'<w:p w:rsidR="a>b" w:rsidP=\'/>\'><w:r><w:t>{escape(text)}</w:t></w:r></w:p>'
    if variant == "comment":
        return f"<w:p><!-- </w:p> <w:p> --><w:r><w:t>{escape(text)}</w:t></w:r></w:p>"
    if variant == "cdata":
        return "<w:p><w:r><w:t><![CDATA[</w:p><w:p>]]></w:t></w:r></w:p>"
    if variant == "pi":
        return "<w:p><?astra </w:p> ?><w:r><w:t>pi</w:t></w:r></w:p>"
    if variant == "spaced_end_tag":
        return f"<w:p ><w:r><w:t>{escape(text)}</w:t></w:r></w:p\n>"
    inner = "".join(draw(st.lists(_paragraph(depth + 1) if depth < 2 else st.just(f.paragraph("in box")),
                                  min_size=1, max_size=3)))
    return f.text_box_paragraph(inner)


@st.composite
def _block(draw, depth: int = 0) -> str:
    kinds = ["p", "p", "tbl", "sdt", "bookmark", "customXml", "body_comment", "body_pi"]
    kind = draw(st.sampled_from(kinds if depth < 2 else ["p"]))
    if kind == "p":
        return draw(_paragraph())
    if kind == "tbl":
        rows, cols = draw(st.integers(1, 3)), draw(st.integers(1, 3))
        cell = st.lists(_block(depth + 1), min_size=1, max_size=2).map("".join)
        return f.table([[draw(cell) for _ in range(cols)] for _ in range(rows)])
    if kind == "sdt":
        return f.sdt("".join(draw(st.lists(_block(depth + 1), min_size=1, max_size=3))))
    if kind == "bookmark":
        return '<w:bookmarkStart w:id="0" w:name="b"/>'
    if kind == "customXml":
        return f'<w:customXml w:element="zone">{draw(_paragraph())}</w:customXml>'
    if kind == "body_comment":
        return "<!-- a comment between blocks: <w:p> -->"
    return '<?astra-mark zone="1"?>'


_blocks = st.lists(_block(), min_size=0, max_size=8)
_separator = st.sampled_from(["", "\n", "\r\n  ", " "])


@st.composite
def _documents(draw) -> tuple[bytes, list[str]]:
    """A random valid .docx; returns the zip and the names of its story parts."""
    strict = draw(st.booleans())
    bom = draw(st.booleans())
    encoding = draw(st.sampled_from(["utf-8", "utf-8", "utf-8", "utf-16"]))
    separator = draw(_separator)
    body = draw(_blocks) + ([f.section_properties()] if draw(st.booleans()) else [])
    builder = f.DocxBuilder(document=f.document_xml(body, strict=strict, bom=bom, encoding=encoding,
                                                    separator=separator), strict=strict)
    stories = ["word/document.xml"]
    rel = builder.rel_ns
    for name, root, content_type, rel_type in [
        ("word/header1.xml", "w:hdr", f.CT_HEADER, "header"),
        ("word/footer1.xml", "w:ftr", f.CT_FOOTER, "footer"),
    ]:
        if draw(st.booleans()):
            part = f.story_xml(root, draw(st.lists(_block(), min_size=1, max_size=3)), strict=strict, bom=bom,
                               separator=draw(_separator))
            builder.add_part(name, part, content_type, rel_type=rel + rel_type)
            stories.append(name)
    for name, root, kind, content_type, rel_type in [
        ("word/footnotes.xml", "w:footnotes", "footnote", f.CT_FOOTNOTES, "footnotes"),
        ("word/endnotes.xml", "w:endnotes", "endnote", f.CT_ENDNOTES, "endnotes"),
        ("word/comments.xml", "w:comments", "comment", f.CT_COMMENTS, "comments"),
    ]:
        if draw(st.booleans()):
            notes = [f.note(kind, i, "".join(draw(st.lists(_paragraph(), min_size=1, max_size=2))))
                     for i in range(draw(st.integers(1, 3)))]
            builder.add_part(name, f.story_xml(root, notes, strict=strict, separator=draw(_separator)),
                             content_type, rel_type=rel + rel_type)
            stories.append(name)
    if draw(st.booleans()):
        f.embed(builder, "Microsoft_Excel_Sheet1.xlsx", f.xlsx_bytes())
    if draw(st.booleans()):
        builder.add_part("word/media/image1.png", f.PNG_1PX, rel_type=rel + "image")
    if draw(st.booleans()):
        builder.add_part("customXml/empty.bin", b"")  # an empty part
    rng = random.Random(draw(st.integers(0, 2**32 - 1)))
    data = builder.build(rng=rng, streamed=draw(st.booleans()), comment=draw(st.sampled_from([b"", b"zip comment"])))
    return data, stories


def _children_of_container(part: bytes) -> list[str]:
    """What lxml sees as the story container's children: qnames, 'comment' and 'pi'."""
    root = etree.fromstring(part)
    container = root
    if etree.QName(root).localname == "document":
        container = next(el for el in root if etree.QName(el).localname == "body")
    kinds = []
    for child in container:
        if isinstance(child, etree._Comment):
            kinds.append("comment")
        elif isinstance(child, etree._ProcessingInstruction):
            kinds.append("pi")
        else:
            kinds.append(f"block:{child.prefix}:{etree.QName(child).localname}" if child.prefix
                         else f"block:{etree.QName(child).localname}")
    return kinds


@settings(max_examples=50, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(_documents())
def test_generated_documents_round_trip_losslessly(document):
    data, stories = document
    assert audit(data).passed  # the factory builds valid, harmless packages
    pkg = atomize(data)
    assert_lossless(data, pkg)
    parts = zipfile.ZipFile(io.BytesIO(data))
    members = {m["name"]: m for m in pkg.manifest["members"]}
    for name in stories:
        member = members[name]
        assert member["story"], name
        kinds = [a["kind"] for a in member["atoms"]]
        assert kinds[0] == "prefix" and kinds[-1] == "suffix"
        # the split matches the parser's view of the container's children, one atom each
        assert [k for k in kinds if k not in ("prefix", "suffix", "text")] == _children_of_container(parts.read(name))


# --------------------------------------------------------------------------- edge cases

def _atoms_of(pkg, name: str) -> list[tuple[str, bytes]]:
    member = next(m for m in pkg.manifest["members"] if m["name"] == name)
    return [(a["kind"], pkg.atoms[a["sha256"]]) for a in member["atoms"]]


def test_document_blocks_and_prefix_suffix():
    blocks = [f.paragraph("one"), f.table([[f.paragraph("cell")]]), f.sdt(f.paragraph("zone")),
              f.text_box_paragraph(f.paragraph("in a box")), f.section_properties()]
    data = f.DocxBuilder(blocks).build()
    pkg = atomize(data)
    atoms = _atoms_of(pkg, "word/document.xml")
    assert [k for k, _ in atoms] == ["prefix", "block:w:p", "block:w:tbl", "block:w:sdt", "block:w:p",
                                     "block:w:sectPr", "suffix"]
    assert atoms[0][1].startswith(b"<?xml") and atoms[0][1].endswith(b"<w:body>")
    assert atoms[-1][1] == b"</w:body></w:document>"
    assert atoms[4][1] == f.text_box_paragraph(f.paragraph("in a box")).encode()  # nested w:p kept inside
    assert_lossless(data, pkg)


def test_strict_namespace_bom_and_whitespace():
    document = f.document_xml([f.paragraph("strict"), f.section_properties()], strict=True, bom=True,
                              separator="\n")
    data = f.DocxBuilder(document=document, strict=True).build()
    pkg = atomize(data)
    atoms = _atoms_of(pkg, "word/document.xml")
    assert atoms[0][1].startswith(b"\xef\xbb\xbf<?xml")
    assert [k for k, _ in atoms] == ["prefix", "block:w:p", "text", "block:w:sectPr", "suffix"]
    assert atoms[2][1] == b"\n"
    assert f.W_STRICT_NS.encode() in atoms[0][1]
    assert_lossless(data, pkg)


def test_utf16_document_is_split_at_byte_offsets():
    document = f.document_xml([f.paragraph("ünïcödé 𝄞"), f.section_properties()], encoding="utf-16")
    data = f.DocxBuilder(document=document).build()
    pkg = atomize(data)
    atoms = _atoms_of(pkg, "word/document.xml")
    assert [k for k, _ in atoms] == ["prefix", "block:w:p", "block:w:sectPr", "suffix"]
    assert atoms[1][1] == f.paragraph("ünïcödé 𝄞").encode("utf-16-le")
    assert_lossless(data, pkg)


@pytest.mark.parametrize("document, expected_kinds", [
    (f.document_xml([], self_closing_body=True), ["prefix", "suffix"]),
    (f.document_xml([]), ["prefix", "suffix"]),
    (b"", []),  # empty part: no atoms at all
    (b"not xml at all", ["part"]),
    ('<?xml version="1.0" encoding="UTF-32"?><w:document/>'.encode("utf-32"), ["part"]),
    (b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "b">]><w:document><w:body><w:p/></w:body></w:document>',
     ["part"]),
    (b"<w:document><w:body><w:p><!-- unterminated", ["part"]),
    (b"<w:document><w:body><w:p></w:body></w:document>", ["part"]),  # unclosed block
    (b"\xff\xfe<\x00\x00\xd8", ["part"]),  # broken UTF-16
    (b"<w:document/>", ["part"]),
    (b"<w:document><w:background/></w:document>", ["part"]),  # no body
])
def test_odd_story_parts_never_fail(document, expected_kinds):
    data = f.DocxBuilder(document=document).build()
    pkg = atomize(data)
    assert [k for k, _ in _atoms_of(pkg, "word/document.xml")] == expected_kinds
    assert_lossless(data, pkg)


@settings(max_examples=50, deadline=None, database=None)
@given(st.data())
def test_scanner_tiles_any_mangled_part_or_keeps_it_whole(data):
    """Cut, duplicate or insert bytes anywhere in a story part: the split still tiles it, or is None."""
    part = bytearray(f.document_xml([f.paragraph("a>b"), f.text_box_paragraph(f.paragraph("x")),
                                     "<!-- c -->", f.table([[f.paragraph("t")]]), f.section_properties()],
                                    bom=data.draw(st.booleans()),
                                    encoding=data.draw(st.sampled_from(["utf-8", "utf-16"]))))
    for _ in range(data.draw(st.integers(1, 3))):
        at = data.draw(st.integers(0, len(part)))
        part[at:at + data.draw(st.integers(0, 8))] = data.draw(
            st.sampled_from([b"", b"<", b">", b"/>", b"</w:p>", b"<w:p>", b'"', b"<!--", b"]]>", b"\x00"]))
    part = bytes(part)
    segments = split_children(part, lambda root: ("body",) if root == "document" else ())
    if segments is not None:
        assert b"".join(part[s:e] for _, s, e in segments) == part
        assert segments[0][0] == "prefix" and segments[-1][0] == "suffix"


def test_glossary_is_split_at_doc_parts():
    glossary = f.encode_xml(
        f'<w:glossaryDocument xmlns:w="{f.W_NS}"><w:docParts>'
        f"<w:docPart><w:docPartBody>{f.paragraph('a')}</w:docPartBody></w:docPart>"
        f"<w:docPart><w:docPartBody>{f.paragraph('b')}</w:docPartBody></w:docPart>"
        "</w:docParts></w:glossaryDocument>"
    )
    builder = f.DocxBuilder()
    builder.add_part("word/glossary/document.xml", glossary, f.CT_GLOSSARY, rel_type=f.REL + "glossaryDocument")
    pkg = atomize(builder.build())
    assert [k for k, _ in _atoms_of(pkg, "word/glossary/document.xml")] == [
        "prefix", "block:w:docPart", "block:w:docPart", "suffix"]


def test_non_story_parts_are_one_atom_each():
    pkg = atomize(f.DocxBuilder().build())
    for member in pkg.manifest["members"]:
        if member["name"] != "word/document.xml":
            assert [a["kind"] for a in member["atoms"]] == ["part"]
            assert member["atoms"][0]["sha256"] == member["sha256"]


def test_streamed_zip_keeps_data_descriptors_and_zip64_local_records():
    builder = f.DocxBuilder()
    members = builder.members()
    for m in members:
        m.force_zip64 = True
    for streamed in (False, True):
        data = f.zip_package(members, streamed=streamed)
        pkg = atomize(data)
        local = pkg.manifest["members"][0]["zip"]["local"]
        assert local["zip64"] is True
        assert local["descriptor"] == ("signed" if streamed else None)
        assert_lossless(data, pkg)


# --------------------------------------------------------------------------- dedup, manifest, errors

def test_identical_atoms_across_templates_share_keys():
    shared = f.paragraph("Terms and conditions apply.")
    one = atomize(f.DocxBuilder([f.paragraph("Invoice"), shared, f.section_properties()]).build())
    two = atomize(f.DocxBuilder([f.paragraph("Quote"), shared, shared, f.section_properties()]).build())
    shared_sha = hashlib.sha256(shared.encode()).hexdigest()
    styles_sha = hashlib.sha256(f.STYLES_XML).hexdigest()
    common = one.atoms.keys() & two.atoms.keys()
    assert {shared_sha, styles_sha, hashlib.sha256(f.section_properties().encode()).hexdigest()} <= common
    assert hashlib.sha256(f.paragraph("Invoice").encode()).hexdigest() not in two.atoms
    counts = two.manifest["counts"]
    assert counts["atoms"] == counts["unique_atoms"] + 1  # the repeated paragraph is stored once


def test_manifest_counts_and_format():
    data = f.DocxBuilder().build()
    pkg = atomize(data)
    manifest = json.loads(json.dumps(pkg.manifest))
    assert manifest["format"] == "astra.ingest.atoms/1"
    assert manifest["package"]["sha256"] == hashlib.sha256(data).hexdigest()
    counts = manifest["counts"]
    assert counts["parts"] == counts["members"] == len(zipfile.ZipFile(io.BytesIO(data)).infolist())
    assert counts["atoms"] == sum(len(m["atoms"]) for m in manifest["members"])
    assert counts["unique_atoms"] == len(pkg.atoms)
    assert counts["story_parts"] == 1
    assert reassemble(manifest, pkg.atoms.__getitem__)  # a manifest read back from JSON works


def test_reassemble_refuses_missing_or_corrupted_atoms():
    pkg = atomize(f.DocxBuilder().build())
    victim = next(a["sha256"] for m in pkg.manifest["members"] if m["story"] for a in m["atoms"]
                  if a["kind"] == "block:w:p")
    missing = {k: v for k, v in pkg.atoms.items() if k != victim}
    with pytest.raises(ReassemblyError, match="word/document.xml.*missing"):
        reassemble(pkg.manifest, missing.__getitem__)
    corrupted = {**pkg.atoms, victim: b"<w:p>tampered</w:p>"}
    with pytest.raises(ReassemblyError, match=f"word/document.xml.*{victim}"):
        reassemble(pkg.manifest, corrupted.__getitem__)
    with pytest.raises(ReassemblyError):
        reassemble({**pkg.manifest, "format": "other"}, pkg.atoms.__getitem__)


def test_atomize_rejects_non_zip():
    with pytest.raises(PackageError):
        atomize(b"definitely not a zip")
