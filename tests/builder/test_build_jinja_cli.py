"""`astra build` with a docxtpl template (issue 11): ``--data`` renders the JSON object as the template's context, as
it is; ``--session`` builds through CORE and BUILDER like any template. Bad input exits 2 with one line and writes
nothing."""

from __future__ import annotations

import json

import docx
import pytest

from astra.builder.check import check_document
from astra.core.transcript import split_sentences
from astra.ingest.zones import extract_maps
from astra.samples import HERE as SAMPLES
from astra.template_language import JinjaTemplate
from tests.conftest import run_cli
from tests.core.test_model_store import tiny_encoder, tiny_models  # noqa: F401 — fixtures
from tests.template_language.docxtpl_fixtures import _save, _table, document_text, invoice

from .helpers import zone_paragraphs
from .test_jinja_build import SIDECAR, jinja_template


@pytest.fixture
def work(tmp_path):
    template, context = invoice()
    (tmp_path / "invoice.docx").write_bytes(template)
    (tmp_path / "context.json").write_text(json.dumps(context))
    return tmp_path


def _build(work, *args: str, template: str = "invoice.docx", state=None):
    return run_cli("build", "--template", str(work / template), "--out", str(work / "out.docx"), *args,
                   env={"ASTRA_STATE_DIR": str(state or work)})


def _refused(res, work, message: str) -> None:
    assert res.returncode == 2, res.stdout
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], res.stderr
    assert not (work / "out.docx").exists() and not list(work.glob(".astra-build-*"))


def test_data_renders_the_json_object_as_the_templates_context(work):
    res = _build(work, "--data", str(work / "context.json"), "--json")
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    built = (work / "out.docx").read_bytes()
    template, context = invoice()
    assert built == JinjaTemplate.read(template).render(context)  # the context as it is, nothing added
    assert summary["size"] == len(built) and summary["problems"] == []
    assert summary["fills"]["items"] == {"kind": "table", "items": 3}
    assert summary["fills"]["paid"] == {"kind": "flag", "items": 0}
    text = "\n".join(document_text(built))
    assert "Smith & Sons <Leeds>" in text and "INV-2024-042" in text and "Due within 30 days." in text
    assert (_build(work, "--data", str(work / "context.json")).returncode, (work / "out.docx").read_bytes()) == (
        0, built)  # again: the same bytes


def test_a_name_the_template_does_not_read_is_a_warning(work):
    _, context = invoice()
    (work / "context.json").write_text(json.dumps({**context, "compnay": "typo"}))
    res = _build(work, "--data", str(work / "context.json"))
    assert res.returncode == 0, res.stderr
    assert "warning: compnay: the template reads no name 'compnay': left out" in res.stdout


def test_a_template_the_platform_refuses_for_want_of_a_fallback_zone_still_renders(work):
    """No text or list zone: no zone map for the platform (no_fallback_zone), but --data needs none."""
    doc = docx.Document()
    _table(doc, [["Item"], ["{%tr for r in rows %}"], ["{{ r.name }}"], ["{%tr endfor %}"]])
    (work / "rows.docx").write_bytes(_save(doc))
    (work / "rows.json").write_text(json.dumps({"rows": [{"name": "one & two"}, {"name": "three"}]}))
    res = _build(work, "--data", str(work / "rows.json"), template="rows.docx")
    assert res.returncode == 0, res.stderr
    assert "rows: 2 table item(s)" in res.stdout
    text = "\n".join(document_text((work / "out.docx").read_bytes()))
    assert "p: one & two" in text and "p: three" in text


@pytest.mark.parametrize("paragraph, context, message", [
    ("{{ name.__class__ }}", {"name": "x"}, "template refused: jinja_forbidden"),
    ("{{ name|shell }}", {"name": "x"}, "template refused: jinja_forbidden"),
    ("{% for x in rows %}{{ x }}", {"rows": []}, "template refused: jinja_syntax"),
    ("{{ total / count }}", {"total": 1, "count": 0}, "cannot be rendered with this data: division by zero"),
    ("{{ a }} {{ b }}", ["not", "an", "object"], "must hold a JSON object"),
])
def test_bad_input_exits_2_with_one_line(work, paragraph, context, message):
    doc = docx.Document()
    doc.add_paragraph(paragraph)
    doc.add_paragraph("{% if ok %}ok{% endif %}")
    (work / "bad.docx").write_bytes(_save(doc))
    (work / "bad.json").write_text(json.dumps(context))
    _refused(_build(work, "--data", str(work / "bad.json"), template="bad.docx"), work, message)


def test_data_takes_no_sidecar_or_locale(work):
    (work / "side.json").write_text(json.dumps({"version": 1}))
    _refused(_build(work, "--data", str(work / "context.json"), "--sidecar", str(work / "side.json")), work,
             "--sidecar is for --session with a docxtpl template")
    _refused(_build(work, "--data", str(work / "context.json"), "--locale", "en-GB"), work,
             "--locale formats a session's table cells")


@pytest.fixture
def session_work(tmp_path):
    (tmp_path / "report.docx").write_bytes(jinja_template())
    (tmp_path / "report.zones.json").write_text(json.dumps(SIDECAR))
    folder = tmp_path / "session" / "data"
    folder.mkdir(parents=True)
    (folder / "readings.csv").write_bytes((SAMPLES / "readings.csv").read_bytes())
    return tmp_path


def _session_build(work, *args: str):
    return _build(work, "--sidecar", str(work / "report.zones.json"), "--session", str(work / "session"), *args,
                  template="report.docx")


def test_session_builds_a_docxtpl_template_through_the_platform_builder(session_work):
    res = _session_build(session_work, "--json")
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    assert summary["fills"]["readings"] == {"kind": "table", "items": 1, "rows": 3}
    assert summary["fills"]["urgent"] == {"kind": "flag", "items": 0} and summary["fallback_zone"] == "notes"
    built = (session_work / "out.docx").read_bytes()
    template = (session_work / "report.docx").read_bytes()
    assert check_document(built, extract_maps(template, SIDECAR).zone_map, template=template).passed
    text = "\n".join(document_text(built))
    assert "p: P-101" in text and "p: north outlet" in text and "p: 412.5" in text  # fields matched to headers


def test_session_with_a_transcript_puts_every_sentence_in_a_zone(session_work, tiny_models):  # noqa: F811
    transcript = (SAMPLES / "session_transcript.txt").read_text()
    (session_work / "session" / "transcript.txt").write_text(transcript)
    res = _session_build(session_work, "--model", str(tiny_models[0][0]), "--json")
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    built = (session_work / "out.docx").read_bytes()
    shown = [line for zone in ("summary", "notes", "actions") for p in zone_paragraphs(built, zone)
             for line in p.split("\n") if line]
    said = {zone: summary["fills"][zone]["items"] for zone in ("summary", "notes", "actions", "urgent")}
    assert sum(said.values()) == summary["transcript"]["utterances"] > 0  # every sentence bound to one zone
    assert len(shown) == sum(said.values()) - said["urgent"]  # and shown there, but a flag's: it only decides
    assert set(shown) <= set(split_sentences(transcript))


def test_data_renders_a_template_of_bare_placeholders_with_a_name_used_twice(work):
    doc = docx.Document()
    doc.add_paragraph("Dear {{ client }},")
    doc.add_paragraph("Regards to {{ client }}.")
    (work / "twice.docx").write_bytes(_save(doc))
    (work / "twice.json").write_text(json.dumps({"client": "Ada & Co"}))
    res = _build(work, "--data", str(work / "twice.json"), template="twice.docx")
    assert res.returncode == 0, res.stderr
    assert document_text((work / "out.docx").read_bytes())[1:] == ["p: Dear Ada & Co,", "p: Regards to Ada & Co."]
