"""Style map: basedOn chains, docDefaults, theme fonts, toggles, direct formatting."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from astra.ingest.styles import FORMATTING_KEYS, StyleSheet, rpr_props
from astra.ingest.zones import TemplateMaps, extract_maps
from astra.ooxml.package import Package
from astra.ooxml.wordml import styles_part, theme_part
from astra.ooxml.xml import parse_xml
from astra.samples.templates import minimal_docx

REPO = Path(__file__).resolve().parents[2]
STYLE_SCHEMA = json.loads((REPO / "astra" / "config_svc" / "schemas" / "style_map.schema.json").read_text())
STYLE_MAP = Draft202012Validator(STYLE_SCHEMA)
CORPUS = Path("/work/shared/datasets/docx-corpus")

DOC_DEFAULTS = (
    "<w:docDefaults>"
    '<w:rPrDefault><w:rPr><w:rFonts w:asciiTheme="minorHAnsi" w:hAnsiTheme="minorHAnsi"/>'
    '<w:sz w:val="20"/><w:color w:val="111111"/></w:rPr></w:rPrDefault>'
    '<w:pPrDefault><w:pPr><w:jc w:val="end"/></w:pPr></w:pPrDefault>'
    "</w:docDefaults>"
)

STYLES = DOC_DEFAULTS + (
    # default paragraph style: sets nothing but its name
    '<w:style w:type="paragraph" w:default="1" w:styleId="Normal"><w:name w:val="Normal"/></w:style>'
    # chain: Base <- Middle <- Leaf
    '<w:style w:type="paragraph" w:styleId="Base"><w:name w:val="Base"/><w:basedOn w:val="Normal"/>'
    '<w:rPr><w:rFonts w:ascii="Verdana"/><w:sz w:val="24"/></w:rPr></w:style>'
    '<w:style w:type="paragraph" w:styleId="Middle"><w:name w:val="Middle"/><w:basedOn w:val="Base"/>'
    '<w:pPr><w:jc w:val="center"/></w:pPr><w:rPr><w:color w:val="00ff00"/><w:b/></w:rPr></w:style>'
    '<w:style w:type="paragraph" w:styleId="Leaf"><w:name w:val="Leaf"/><w:basedOn w:val="Middle"/>'
    '<w:rPr><w:i/><w:u w:val="double"/></w:rPr></w:style>'
    # a heading using the major theme font, bold
    '<w:style w:type="paragraph" w:styleId="Heading1"><w:name w:val="heading 1"/><w:basedOn w:val="Normal"/>'
    '<w:rPr><w:rFonts w:ascii="Ignored" w:asciiTheme="majorHAnsi"/><w:b/><w:sz w:val="32"/></w:rPr></w:style>'
    # Leaf un-bolding its parent (within a chain the nearest definition wins)
    '<w:style w:type="paragraph" w:styleId="Plain"><w:name w:val="Plain"/><w:basedOn w:val="Middle"/>'
    '<w:rPr><w:b w:val="0"/></w:rPr></w:style>'
    # character styles
    '<w:style w:type="character" w:default="1" w:styleId="DefaultParagraphFont">'
    '<w:name w:val="Default Paragraph Font"/></w:style>'
    '<w:style w:type="character" w:styleId="Strong"><w:name w:val="Strong"/>'
    '<w:rPr><w:b/><w:color w:val="C00000"/></w:rPr></w:style>'
    '<w:style w:type="character" w:styleId="Ph"><w:name w:val="Placeholder Text"/>'
    '<w:rPr><w:color w:val="808080"/></w:rPr></w:style>'
    # table styles
    '<w:style w:type="table" w:default="1" w:styleId="TableNormal"><w:name w:val="Normal Table"/></w:style>'
    '<w:style w:type="table" w:styleId="Grid"><w:name w:val="Grid"/><w:basedOn w:val="TableNormal"/>'
    '<w:pPr><w:jc w:val="left"/></w:pPr><w:rPr><w:sz w:val="16"/><w:i/></w:rPr></w:style>'
    # a basedOn cycle must not hang
    '<w:style w:type="paragraph" w:styleId="LoopA"><w:name w:val="LoopA"/><w:basedOn w:val="LoopB"/>'
    '<w:rPr><w:sz w:val="18"/></w:rPr></w:style>'
    '<w:style w:type="paragraph" w:styleId="LoopB"><w:name w:val="LoopB"/><w:basedOn w:val="LoopA"/>'
    '<w:rPr><w:color w:val="ABCDEF"/></w:rPr></w:style>'
)

THEME = ("Major Sans", "Minor Serif")


def p(text: str = "{{ z }}", ppr: str = "", rpr: str = "") -> str:
    ppr_xml = f"<w:pPr>{ppr}</w:pPr>" if ppr else ""
    rpr_xml = f"<w:rPr>{rpr}</w:rPr>" if rpr else ""
    return f'<w:p>{ppr_xml}<w:r>{rpr_xml}<w:t xml:space="preserve">{text}</w:t></w:r></w:p>'


def style_of(body: str, zone: str = "z", *, styles: str | None = STYLES, theme=THEME) -> dict:
    maps = extract_maps(minimal_docx(body, styles=styles, theme_fonts=theme))
    check(maps)
    return maps.style_map["zones"][zone]


def check(maps: TemplateMaps) -> None:
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in STYLE_MAP.iter_errors(maps.style_map)]
    assert not errors, errors
    for entry in [maps.style_map["defaults"]] + [z["resolved"] for z in maps.style_map["zones"].values()]:
        assert tuple(entry) == FORMATTING_KEYS


def test_defaults_are_doc_defaults_plus_default_paragraph_style():
    maps = extract_maps(minimal_docx(p(), styles=STYLES, theme_fonts=THEME))
    assert maps.style_map["defaults"] == {
        "font": "Minor Serif",  # asciiTheme=minorHAnsi through the theme part
        "size_pt": 10.0,
        "color": "111111",
        "bold": None,
        "italic": None,
        "underline": None,
        "alignment": "right",  # jc=end
    }


def test_default_paragraph_style_when_no_pstyle():
    entry = style_of(p())
    assert entry == {
        "paragraph_style": "Normal",
        "run_style": None,
        "table_style": None,
        "resolved": {
            "font": "Minor Serif",
            "size_pt": 10.0,
            "color": "111111",
            "bold": None,
            "italic": None,
            "underline": None,
            "alignment": "right",
        },
    }


def test_based_on_chain_and_doc_defaults():
    entry = style_of(p(ppr='<w:pStyle w:val="Leaf"/>'))
    assert entry["paragraph_style"] == "Leaf"
    assert entry["resolved"] == {
        "font": "Verdana",  # Base (explicit ascii beats the inherited docDefaults theme font)
        "size_pt": 12.0,  # Base
        "color": "00FF00",  # Middle, upper-cased
        "bold": True,  # Middle
        "italic": True,  # Leaf
        "underline": True,  # Leaf: double
        "alignment": "center",  # Middle beats docDefaults' end
    }


def test_nearest_definition_in_a_chain_wins():
    assert style_of(p(ppr='<w:pStyle w:val="Plain"/>'))["resolved"]["bold"] is False


def test_theme_font_beats_explicit_ascii_at_same_level():
    entry = style_of(p(ppr='<w:pStyle w:val="Heading1"/>'))
    assert entry["resolved"]["font"] == "Major Sans"
    assert entry["resolved"]["size_pt"] == 16.0


def test_without_theme_part_the_explicit_font_of_the_level_is_used():
    assert style_of(p(ppr='<w:pStyle w:val="Heading1"/>'), theme=None)["resolved"]["font"] == "Ignored"
    assert style_of(p(), theme=None)["resolved"]["font"] is None  # docDefaults: theme only


def test_direct_formatting_beats_styles():
    entry = style_of(
        p(
            ppr='<w:pStyle w:val="Leaf"/><w:jc w:val="start"/>',
            rpr='<w:rFonts w:ascii="Courier New"/><w:sz w:val="19"/><w:color w:val="auto"/>'
            '<w:b w:val="false"/><w:u w:val="none"/>',
        )
    )
    assert entry["resolved"] == {
        "font": "Courier New",
        "size_pt": 9.5,
        "color": "auto",
        "bold": False,
        "italic": True,
        "underline": False,
        "alignment": "left",
    }


def test_direct_theme_font_on_run():
    entry = style_of(p(rpr='<w:rFonts w:asciiTheme="majorAscii"/>'))
    assert entry["resolved"]["font"] == "Major Sans"


def test_character_style_and_toggle_semantics():
    # Heading1 is bold, Strong is bold: toggles across style types cancel out (ECMA-376 17.7.3)
    entry = style_of(p(ppr='<w:pStyle w:val="Heading1"/>', rpr='<w:rStyle w:val="Strong"/>'))
    assert entry["run_style"] == "Strong"
    assert entry["resolved"]["bold"] is False
    assert entry["resolved"]["color"] == "C00000"  # character style beats paragraph style
    # direct formatting is absolute
    entry = style_of(p(ppr='<w:pStyle w:val="Heading1"/>', rpr='<w:rStyle w:val="Strong"/><w:b/>'))
    assert entry["resolved"]["bold"] is True
    # Strong on a non-bold paragraph: bold
    assert style_of(p(rpr='<w:rStyle w:val="Strong"/>'))["resolved"]["bold"] is True


def test_toggle_starts_from_doc_defaults():
    styles = STYLES.replace('<w:color w:val="111111"/>', '<w:color w:val="111111"/><w:b/>')
    assert style_of(p(), styles=styles)["resolved"]["bold"] is True
    assert style_of(p(rpr='<w:rStyle w:val="Strong"/>'), styles=styles)["resolved"]["bold"] is False


def test_table_style_of_enclosing_table():
    table = (
        '<w:tbl><w:tblPr><w:tblStyle w:val="Grid"/></w:tblPr><w:tr><w:tc>'
        + p(ppr='<w:pStyle w:val="Base"/>')
        + "</w:tc></w:tr></w:tbl>"
    )
    entry = style_of(table + p("{{ notes }}"))  # a text zone: the fallback a template must have
    assert entry["table_style"] == "Grid"
    assert entry["paragraph_style"] == "Base"
    resolved = entry["resolved"]
    assert resolved["size_pt"] == 12.0  # paragraph style beats table style
    assert resolved["italic"] is True  # from the table style
    assert resolved["alignment"] == "left"  # table style pPr beats docDefaults


def test_default_table_style_when_table_has_none():
    table = "<w:tbl><w:tblPr/><w:tr><w:tc>" + p() + "</w:tc></w:tr></w:tbl>"
    assert style_of(table + p("{{ notes }}"))["table_style"] == "TableNormal"


def test_unknown_paragraph_style_reported_as_written_resolved_as_default():
    entry = style_of(p(ppr='<w:pStyle w:val="Ghost"/>', rpr='<w:rStyle w:val="GhostChar"/>'))
    assert entry["paragraph_style"] == "Ghost"
    assert entry["run_style"] == "GhostChar"
    assert entry["resolved"]["size_pt"] == 10.0


def test_based_on_cycle_terminates():
    resolved = style_of(p(ppr='<w:pStyle w:val="LoopA"/>'))["resolved"]
    assert resolved["size_pt"] == 9.0
    assert resolved["color"] == "ABCDEF"


def test_missing_styles_part_gives_nulls_but_keeps_direct_formatting():
    maps = extract_maps(minimal_docx(p(rpr='<w:b/><w:sz w:val="28"/>'), styles=None, theme_fonts=None))
    check(maps)
    assert maps.style_map["defaults"] == dict.fromkeys(FORMATTING_KEYS)
    entry = maps.style_map["zones"]["z"]
    assert entry["paragraph_style"] is None
    assert entry["table_style"] is None
    assert entry["resolved"] == dict(dict.fromkeys(FORMATTING_KEYS), bold=True, size_pt=14.0)


def test_content_control_showing_placeholder_uses_sdt_run_properties():
    body = (
        '<w:sdt><w:sdtPr><w:rPr><w:rStyle w:val="Strong"/><w:sz w:val="26"/></w:rPr>'
        '<w:tag w:val="astra:z"/><w:showingPlcHdr/></w:sdtPr><w:sdtContent>'
        + p("Click here", ppr='<w:pStyle w:val="Base"/>', rpr='<w:rStyle w:val="Ph"/>')
        + "</w:sdtContent></w:sdt>"
    )
    entry = style_of(body)
    assert entry["run_style"] == "Strong"
    assert entry["resolved"]["size_pt"] == 13.0
    assert entry["resolved"]["color"] == "C00000"


def test_placeholder_text_style_is_never_the_run_style():
    body = (
        '<w:sdt><w:sdtPr><w:tag w:val="astra:z"/></w:sdtPr><w:sdtContent>'
        + p("Click here", rpr='<w:rStyle w:val="Ph"/><w:i/>')
        + "</w:sdtContent></w:sdt>"
    )
    entry = style_of(body)
    assert entry["run_style"] is None
    assert entry["resolved"]["color"] == "111111"  # not the placeholder grey
    assert entry["resolved"]["italic"] is True


def test_empty_zone_uses_paragraph_mark_properties():
    body = (
        '<w:sdt><w:sdtPr><w:tag w:val="astra:z"/></w:sdtPr><w:sdtContent>'
        '<w:p><w:pPr><w:pStyle w:val="Base"/><w:rPr><w:color w:val="0000FF"/></w:rPr></w:pPr></w:p>'
        "</w:sdtContent></w:sdt>"
    )
    entry = style_of(body)
    assert entry["paragraph_style"] == "Base"
    assert entry["resolved"]["color"] == "0000FF"
    assert entry["resolved"]["size_pt"] == 12.0


@pytest.mark.parametrize(
    "rpr,expected",
    [
        ('<w:color w:val="red"/>', {}),
        ('<w:color w:val="12345"/>', {}),
        ('<w:color w:val="abcdef"/>', {"color": "ABCDEF"}),
        ('<w:sz w:val="0"/>', {}),
        ('<w:sz w:val="big"/>', {}),
        ('<w:sz w:val="99999"/>', {}),
        ('<w:sz w:val="3276"/>', {"size_pt": 1638.0}),
        ('<w:sz w:val="12pt"/>', {"size_pt": 12.0}),
        ("<w:b/>", {"bold": True}),
        ('<w:b w:val="off"/>', {"bold": False}),
        ('<w:i w:val="1"/>', {"italic": True}),
        ("<w:u/>", {"underline": True}),
        ('<w:u w:val="wave"/>', {"underline": True}),
        ('<w:u w:val="none"/>', {"underline": False}),
        ('<w:rFonts w:hAnsi="OnlyHAnsi"/>', {}),
        ('<w:rFonts w:ascii="A" w:asciiTheme="minorAscii"/>', {"font": ("minorAscii", "A")}),
    ],
)
def test_run_property_parsing(rpr, expected):
    el = parse_xml(f'<w:rPr xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main">{rpr}</w:rPr>'.encode())
    assert rpr_props(el) == expected


@pytest.mark.parametrize(
    "jc,expected",
    [
        ("start", "left"),
        ("end", "right"),
        ("left", "left"),
        ("right", "right"),
        ("center", "center"),
        ("both", "both"),
        ("distribute", "distribute"),
        ("mediumKashida", "both"),
        ("thaiDistribute", "distribute"),
        ("numTab", "right"),  # unknown value: the docDefaults' end still applies
    ],
)
def test_alignment_mapping(jc, expected):
    assert style_of(p(ppr=f'<w:jc w:val="{jc}"/>'))["resolved"]["alignment"] == expected


def test_style_sheet_with_nothing():
    sheet = StyleSheet(None, None)
    assert sheet.document_defaults() == dict.fromkeys(FORMATTING_KEYS)
    assert sheet.chain("Anything") == []


@pytest.mark.parametrize(
    "name",
    ["python-docx/sty-having-styles-part.docx", "python-docx/par-known-styles.docx", "mammoth/strict-format.docx"],
)
def test_real_documents_resolve_defaults(name):
    pkg = Package.read((CORPUS / name).read_bytes())
    styles, theme = styles_part(pkg), theme_part(pkg)
    sheet = StyleSheet(pkg.xml(styles), pkg.xml(theme) if theme else None)
    defaults = sheet.document_defaults()
    assert STYLE_MAP.is_valid({"defaults": defaults, "zones": {}})
    assert defaults["font"] and defaults["size_pt"]
    assert sheet.defaults.get("paragraph")


def test_no_styles_corpus_document():
    pkg = Package.read((CORPUS / "python-docx/sty-having-no-styles-part.docx").read_bytes())
    assert styles_part(pkg) is None


def test_block_control_reads_its_first_paragraph_not_a_later_run():
    body = (
        '<w:sdt><w:sdtPr><w:tag w:val="astra:z"/></w:sdtPr><w:sdtContent>'
        '<w:p><w:pPr><w:rPr><w:i/></w:rPr></w:pPr></w:p>'
        + p("later", rpr="<w:b/>")
        + "</w:sdtContent></w:sdt>"
    )
    resolved = style_of(body)["resolved"]
    assert resolved["italic"] is True
    assert resolved["bold"] is None
