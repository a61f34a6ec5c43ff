"""The demo template: deterministic bytes, expected zones and styles, opens in python-docx."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path

import docx
import pytest
from jsonschema import Draft202012Validator

from astra.ingest.zones import extract_maps, load_known_intents, scan_zones, validate_sidecar
from astra.samples.templates import build_sample_template, minimal_docx, sample_sidecar

REPO = Path(__file__).resolve().parents[2]
SCHEMAS = REPO / "astra" / "config_svc" / "schemas"
CLINC_DOMAINS = Path("/work/shared/datasets/clinc150/domains.json")


@pytest.fixture(scope="module")
def template() -> bytes:
    return build_sample_template()


@pytest.fixture(scope="module")
def maps(template):
    return extract_maps(template, sample_sidecar(), load_known_intents(CLINC_DOMAINS))


def test_byte_identical_across_builds(template):
    again = build_sample_template()
    assert again == template
    assert hashlib.sha256(again).digest() == hashlib.sha256(template).digest()
    assert {info.date_time for info in zipfile.ZipFile(io.BytesIO(template)).infolist()} == {(2024, 1, 15, 9, 0, 0)}


def test_fixed_core_properties(template):
    core = docx.Document(io.BytesIO(template)).core_properties
    assert core.created.isoformat().startswith("2024-01-15T09:00:00")
    assert core.modified == core.created
    assert core.title == "Field inspection report"


def test_outputs_validate_against_published_schemas(maps):
    for name, doc in (("zone_map", maps.zone_map), ("style_map", maps.style_map)):
        validator = Draft202012Validator(json.loads((SCHEMAS / f"{name}.schema.json").read_text()))
        errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(doc)]
        assert not errors, errors


def test_expected_zones(maps):
    got = {z["id"]: (z["kind"], z["declared_by"], z["location"]["part"]) for z in maps.zone_map["zones"]}
    assert got == {
        "title": ("text", "placeholder", "/word/document.xml"),
        "summary": ("text", "content_control", "/word/document.xml"),
        "action_items": ("list", "content_control", "/word/document.xml"),
        "measurements": ("table", "content_control", "/word/document.xml"),
        "site_photo": ("image", "content_control", "/word/document.xml"),
        "notes": ("text", "content_control", "/word/document.xml"),
        "report_ref": ("text", "placeholder", "/word/header1.xml"),
    }
    assert [z["id"] for z in maps.zone_map["zones"]][-1] == "report_ref"  # headers after the body
    assert maps.zone_map["fallback_zone"] == "notes"


def test_zone_details(maps):
    by = {z["id"]: z for z in maps.zone_map["zones"]}
    assert by["title"]["label"] == "Report title"
    assert by["title"]["location"] == {"part": "/word/document.xml", "block": 0, "path": "w:p[0]"}
    assert by["summary"]["label"] == "Inspection summary"
    assert by["summary"]["accepts"]["domains"] == ["travel", "banking"]  # sidecar override
    assert "travel.book_flight" in by["summary"]["accepts"]["intents"]
    assert by["measurements"]["accepts"]["data"] == "data/*.csv"
    assert by["site_photo"]["accepts"]["media"] == "media/*.png"
    assert by["notes"]["label"] == "Inspector notes"
    assert by["notes"]["accepts"]["fallback"] is True
    assert by["report_ref"]["label"] == "Report reference"


def test_bindings_are_real_clinc150_names(maps):
    domains = json.loads(CLINC_DOMAINS.read_text())
    for zone in maps.zone_map["zones"]:
        for name in zone["accepts"]["intents"]:
            domain, _, intent = name.partition(".")
            assert intent in domains[domain], name
        for domain in zone["accepts"]["domains"]:
            assert domain in domains


def test_title_placeholder_is_split_across_runs(template):
    xml = zipfile.ZipFile(io.BytesIO(template)).read("word/document.xml").decode()
    assert "{{ title }}" not in xml
    [title] = [d for d in scan_zones(template) if d.id == "title"]
    assert len(title.runs) == 3
    assert title.element.find(".//{*}proofErr") is not None
    header = zipfile.ZipFile(io.BytesIO(template)).read("word/header1.xml").decode()
    assert "{{ report_ref }}" not in header


def test_expected_styles(maps):
    zones = maps.style_map["zones"]
    assert zones["title"]["paragraph_style"] == "Title"
    assert zones["title"]["resolved"]["font"] == "Georgia"
    assert zones["title"]["resolved"]["color"] == "1F4E79"
    assert zones["title"]["resolved"]["size_pt"] == 26.0
    assert zones["summary"] == {
        "paragraph_style": "ZoneBody",
        "run_style": None,  # the control shows Placeholder Text: not the zone's run style
        "table_style": None,
        "resolved": {
            "font": "Arial",
            "size_pt": 10.5,
            "color": "333333",
            "bold": None,
            "italic": None,
            "underline": None,
            "alignment": None,
        },
    }
    assert zones["action_items"]["paragraph_style"] == "ListBullet"
    assert zones["action_items"]["run_style"] == "ZoneAccent"
    assert zones["action_items"]["resolved"]["bold"] is True
    assert zones["action_items"]["resolved"]["color"] == "C0504D"
    assert zones["measurements"]["table_style"] == "InspectionTable"
    assert zones["measurements"]["resolved"]["size_pt"] == 9.0
    assert zones["measurements"]["resolved"]["color"] == "1F3864"
    assert zones["site_photo"]["resolved"]["alignment"] == "center"
    assert zones["report_ref"]["paragraph_style"] == "Header"
    assert zones["report_ref"]["resolved"]["alignment"] == "right"
    assert zones["report_ref"]["resolved"]["size_pt"] == 8.0
    assert maps.style_map["defaults"]["font"]  # theme minor font
    assert maps.style_map["defaults"]["size_pt"] == 11.0


def test_without_sidecar(template):
    maps = extract_maps(template)
    by = {z["id"]: z for z in maps.zone_map["zones"]}
    assert maps.zone_map["fallback_zone"] == "notes"  # the tag's fallback flag
    assert by["title"]["label"] == "Title"
    assert by["report_ref"]["label"] == "Report Ref"
    assert by["summary"]["accepts"]["domains"] == ["travel"]


def test_sample_sidecar_is_valid_and_stable():
    assert validate_sidecar(sample_sidecar()) == sample_sidecar()
    assert sample_sidecar() is not sample_sidecar()


def test_opens_in_python_docx_with_embedded_image(template):
    document = docx.Document(io.BytesIO(template))
    assert any(p.style.name == "Title" for p in document.paragraphs)
    names = zipfile.ZipFile(io.BytesIO(template)).namelist()
    assert any(n.startswith("word/media/") and n.endswith(".png") for n in names)
    assert "word/header1.xml" in names


def test_minimal_docx_is_deterministic():
    assert minimal_docx("<w:p/>", styles="", theme_fonts=("A", "B"), headers=["<w:p/>"]) == minimal_docx(
        "<w:p/>", styles="", theme_fonts=("A", "B"), headers=["<w:p/>"]
    )
