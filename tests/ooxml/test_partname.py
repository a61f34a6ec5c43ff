"""One resolver for relationship targets: it names a member or refuses; it never clamps to the root."""

from __future__ import annotations

import pytest

from astra.ooxml.partname import member_name_problems, rels_part_for, rels_source, resolve_target
from astra.ooxml.rels import Relationship


@pytest.mark.parametrize("source, target, expected", [
    ("word/document.xml", "styles.xml", "word/styles.xml"),
    ("word/document.xml", "media/image1.png", "word/media/image1.png"),
    ("word/document.xml", "../customXml/item1.xml", "customXml/item1.xml"),
    ("word/document.xml", "/word/styles.xml", "word/styles.xml"),
    ("word/document.xml", "./theme/../styles.xml", "word/styles.xml"),
    ("", "word/document.xml", "word/document.xml"),
    ("word/document.xml", "styles.xml#frag", "word/styles.xml"),
    ("", "word/%64oc.xml", "word/doc.xml"),  # decoded here, once, before resolving
    ("word/document.xml", "media/a%20b.png", "word/media/a b.png"),
])
def test_targets_inside_the_package_resolve(source, target, expected):
    assert resolve_target(source, target) == expected


@pytest.mark.parametrize("source, target", [
    ("word/document.xml", "../../evil.xml"),  # one level above the root
    ("word/document.xml", "../../../etc/passwd"),
    ("", "../evil.xml"),
    ("word/document.xml", "/../evil.xml"),
    ("word/document.xml", "media\\..\\..\\evil.xml"),  # backslashes are separators to Windows tools
    ("word/document.xml", "media\\image1.png"),
    ("word/document.xml", "http://evil.example/x.xml"),
    ("word/document.xml", "C:/Windows/evil.xml"),
    ("word/document.xml", "#only-a-fragment"),
    ("word/document.xml", ".."),
    ("", "%2e%2e/x.xml"),  # escapes decoded before resolving: '..' above the root
    ("word/document.xml", "..%2f..%2fevil.xml"),
    ("word/document.xml", "media%5cimage1.png"),  # an escaped backslash
    ("word/document.xml", "//evil.example/s/t.dotm"),  # a network-path reference, not a part
    ("word/document.xml", "%2f%2fevil.example/s/t.dotm"),
    ("word/document.xml", " file:///c:/x"),  # a scheme behind a blank
    ("word/document.xml", "\tjavascript:alert(1)"),
    ("word/document.xml", "%ff.xml"),  # escapes that are not UTF-8
])
def test_targets_escaping_the_package_are_refused(source, target):
    assert resolve_target(source, target) is None


def test_relationship_target_part_uses_the_one_resolver():
    evil = Relationship("word/_rels/document.xml.rels", "word/document.xml", "rId1", "t", "../../evil.xml", False)
    assert evil.target_part is None
    fine = Relationship("word/_rels/document.xml.rels", "word/document.xml", "rId2", "t", "styles.xml", False)
    assert fine.target_part == "word/styles.xml"
    external = Relationship("word/_rels/document.xml.rels", "word/document.xml", "rId3", "t", "https://x", True)
    assert external.target_part is None


@pytest.mark.parametrize("name, problems", [
    ("word/document.xml", []),
    ("/word/document.xml", ["absolute"]),
    ("\\word\\document.xml", ["absolute", "backslash"]),
    ("C:/word/document.xml", ["absolute"]),
    ("word/../../evil.xml", ["traversal"]),
    ("word\\..\\evil.xml", ["traversal", "backslash"]),
    ("word/doc\x00.xml", ["invalid"]),
    ("", ["invalid"]),
])
def test_member_name_problems(name, problems):
    assert member_name_problems(name) == problems


def test_rels_part_names_round_trip():
    for source in ("", "word/document.xml", "word/glossary/document.xml"):
        assert rels_source(rels_part_for(source)) == source
    assert rels_source("word/document.xml") is None
    assert rels_source("word/rels/document.xml.rels") is None
