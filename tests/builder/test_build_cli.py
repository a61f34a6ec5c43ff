"""`astra build --data`: exit 0 and the document written; exit 2, one line and nothing written on bad input."""

from __future__ import annotations

import json

import pytest

from astra.builder.check import check_document
from astra.ingest.zones import extract_maps
from astra.samples import HERE as SAMPLES
from astra.samples.templates import build_sample_template, minimal_docx, sample_sidecar
from tests.conftest import run_cli

from .helpers import zone_paragraphs

CONTEXT = {
    "title": "Pump station 7 & <annex>",
    "report_ref": "R-2026-117",
    "summary": "All sensors within tolerance.\nNo leaks found.",
    "action_items": ["Replace the gasket on P-102", "Book a follow-up visit"],
    "measurements": [{"sensor": "P-101", "pressure_kpa": 412.5, "checked": "2026-11-20"},
                     {"sensor": "P-102", "pressure_kpa": 398.1, "checked": "2026-11-21"}],
    "site_photo": "site.png",
}


@pytest.fixture
def files(tmp_path):
    (tmp_path / "field_inspection.docx").write_bytes(build_sample_template())
    (tmp_path / "field_inspection.zones.json").write_text(json.dumps(sample_sidecar()))
    (tmp_path / "site.png").write_bytes((SAMPLES / "site.png").read_bytes())
    (tmp_path / "context.json").write_text(json.dumps(CONTEXT))
    return tmp_path


def _build(files, data: str = "context.json", template: str = "field_inspection.docx", *extra: str):
    return run_cli("build", "--template", str(files / template), "--sidecar",
                   str(files / "field_inspection.zones.json"), "--data", str(files / data),
                   "--out", str(files / "out.docx"), *extra)


def test_builds_the_demo_template(files):
    res = _build(files, "context.json", "field_inspection.docx", "--locale", "en-GB", "--json")
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    built = (files / "out.docx").read_bytes()
    assert summary["size"] == len(built) and summary["problems"] == []
    assert summary["fills"]["measurements"] == {"kind": "table", "items": 1, "rows": 2}
    assert zone_paragraphs(built, "title") == ["Pump station 7 & <annex>"]
    assert zone_paragraphs(built, "summary") == ["All sensors within tolerance.\nNo leaks found."]
    assert zone_paragraphs(built, "action_items") == ["Replace the gasket on P-102", "Book a follow-up visit"]
    template = (files / "field_inspection.docx").read_bytes()
    assert check_document(built, extract_maps(template, sample_sidecar()).zone_map, template=template).passed
    again = _build(files, "context.json", "field_inspection.docx", "--locale", "en-GB")
    assert again.returncode == 0 and "wrote" in again.stdout
    assert (files / "out.docx").read_bytes() == built  # same inputs, same bytes


def _bad(files, name: str, content) -> str:
    (files / name).write_text(content if isinstance(content, str) else json.dumps(content))
    return name


@pytest.mark.parametrize(("setup", "message"), [
    (lambda f: ("context.json", _bad(f, "t.docx", "not a zip")), "template refused: not_a_zip"),
    (lambda f: ("context.json", "missing.docx"), "template not found"),
    (lambda f: (_bad(f, "d.json", {"ghost": "x"}), "field_inspection.docx"), "zone 'ghost'"),
    (lambda f: (_bad(f, "d.json", {"title": ["a", "b"]}), "field_inspection.docx"), "zone 'title' needs a string"),
    (lambda f: (_bad(f, "d.json", {"action_items": "one"}), "field_inspection.docx"), "needs a list of strings"),
    (lambda f: (_bad(f, "d.json", {"measurements": [1, 2]}), "field_inspection.docx"), "list of objects"),
    (lambda f: (_bad(f, "d.json", {"site_photo": "nope.png"}), "field_inspection.docx"), "not found"),
    (lambda f: (_bad(f, "d.json", {"site_photo": "d.json"}), "field_inspection.docx"), "image refused"),
    (lambda f: (_bad(f, "d.json", ["not", "an object"]), "field_inspection.docx"), "JSON object"),
    (lambda f: (_bad(f, "d.json", "{broken"), "field_inspection.docx"), "not valid JSON"),
])
def test_bad_input_exits_2_and_writes_nothing(files, setup, message):
    data, template = setup(files)
    res = _build(files, data, template)
    assert res.returncode == 2, (res.stdout, res.stderr)
    assert message in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert not (files / "out.docx").exists()
    assert not list(files.glob(".astra-build-*"))


def test_refused_templates(files):
    (files / "dde.docx").write_bytes(minimal_docx(
        '<w:p><w:r><w:t>{{ notes }}</w:t></w:r></w:p><w:p><w:fldSimple w:instr="DDEAUTO cmd /c calc"/></w:p>'))
    (files / "nozones.docx").write_bytes(minimal_docx("<w:p><w:r><w:t>no zones here</w:t></w:r></w:p>"))
    for name, code in (("dde.docx", "field_dde"), ("nozones.docx", "no_zones")):
        res = run_cli("build", "--template", str(files / name), "--data", str(files / "context.json"),
                      "--out", str(files / "out.docx"))
        assert res.returncode == 2 and f"template refused: {code}" in res.stderr, res.stderr
        assert not (files / "out.docx").exists()
