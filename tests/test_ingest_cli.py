"""`astra ingest …` as users and acceptance checks call it (exit codes are part of the contract)."""

from __future__ import annotations

import json
import re

import pytest

from astra.samples.templates import build_sample_template, sample_sidecar
from tests.conftest import SHARED_DATASETS, run_cli

CORPUS = SHARED_DATASETS / "docx-corpus"
REFUSED = {"external-picture.docx", "shp-inline-shape-access.docx"}


def test_roundtrip_over_the_whole_corpus():
    files = sorted(CORPUS.rglob("*.docx"))
    assert len(files) == 62
    res = run_cli("ingest", "roundtrip", *map(str, files))
    lines = [json.loads(line) for line in res.stdout.splitlines()]
    assert len(lines) == 62
    refused = {report["file"].rsplit("/", 1)[1] for report in lines if report.get("refused")}
    assert refused == REFUSED
    assert all(
        report["lossless"] and report["atoms"] >= report["parts"] > 0 for report in lines if not report.get("refused")
    )
    assert res.returncode == 2  # some were refused by the audit


def test_roundtrip_exit_0_when_all_lossless(tmp_path):
    path = tmp_path / "sample.docx"
    path.write_bytes(build_sample_template())
    res = run_cli("ingest", "roundtrip", str(path))
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["lossless"] is True


def test_audit_exit_codes():
    ok = run_cli("ingest", "audit", str(CORPUS / "python-docx" / "having-images.docx"))
    assert ok.returncode == 0 and json.loads(ok.stdout)["passed"] is True
    bad = run_cli("ingest", "audit", str(CORPUS / "mammoth" / "external-picture.docx"))
    assert bad.returncode == 2
    report = json.loads(bad.stdout)
    assert report["passed"] is False and any(f["code"] == "external_relationship" for f in report["findings"])


def test_missing_file_is_one_error_line(tmp_path):
    res = run_cli("ingest", "audit", str(tmp_path / "nope.docx"))
    assert res.returncode == 1 and res.stderr.strip().startswith("error:") and len(res.stderr.strip().splitlines()) == 1


def test_zones_json_prints_both_maps(tmp_path):
    path = tmp_path / "field_inspection.docx"
    path.write_bytes(build_sample_template())
    side = tmp_path / "field_inspection.zones.json"
    side.write_text(json.dumps(sample_sidecar()))
    res = run_cli("ingest", "zones", str(path), "--sidecar", str(side), "--json")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["zone_map"]["fallback_zone"] == "notes"
    assert set(out["style_map"]["zones"]) == {z["id"] for z in out["zone_map"]["zones"]}


def table_rows(stdout: str) -> dict[str, list[str]]:
    """The rows of a rich table printed without colour (the header's too), by their first cell."""
    rows = [[cell.strip() for cell in re.split("[│┃]", line)[1:-1]] for line in stdout.splitlines()
            if line[:1] in ("│", "┃")]
    return {row[0]: row[1:] for row in rows}


def test_zones_lists_a_grammar_templates_zones_as_a_table(tmp_path):
    path = tmp_path / "field_inspection.docx"
    path.write_bytes(build_sample_template())
    side = tmp_path / "field_inspection.zones.json"
    side.write_text(json.dumps(sample_sidecar()))
    res = run_cli("ingest", "zones", str(path), "--sidecar", str(side), env={"COLUMNS": "250"})
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines()[0] == "field_inspection.docx: ASTRA zone grammar, 7 zones, fallback zone notes"
    rows = table_rows(res.stdout)
    assert rows["zone"] == ["kind", "declared by", "accepts", "where"]
    assert rows["notes"] == ["text", "content_control", "fallback", "/word/document.xml block 11"]
    assert rows["title"][:3] == ["text", "placeholder", "-"]
    assert rows["measurements"][0] == "table" and "data data/*.csv" in rows["measurements"][2]


def test_zones_refusal_exits_2(tmp_path):
    from astra.samples.templates import minimal_docx

    path = tmp_path / "plain.docx"
    path.write_bytes(minimal_docx("<w:p><w:r><w:t>nothing</w:t></w:r></w:p>"))
    res = run_cli("ingest", "zones", str(path))
    assert res.returncode == 2 and "no_zones" in res.stderr


@pytest.mark.integration
def test_template_upload_puts_sidecar_then_template(use_stack_env, s3, settings, tenant, tmp_path):
    path = tmp_path / "report.docx"
    path.write_bytes(build_sample_template())
    side = tmp_path / "report.zones.json"
    side.write_text(json.dumps(sample_sidecar()))
    res = run_cli("ingest", "template", "--tenant", tenant, str(path), "--sidecar", str(side), "--json")
    assert res.returncode == 0, res.stderr
    info = json.loads(res.stdout)
    assert info["keys"] == [f"{tenant}/templates/report.zones.json", f"{tenant}/templates/report.docx"]
    head = s3.head_object(Bucket=settings.uploads_bucket, Key=f"{tenant}/templates/report.docx", ChecksumMode="ENABLED")
    assert head["ChecksumSHA256"]
    bad = run_cli("ingest", "template", "--tenant", "Bad_Tenant", str(path))
    assert bad.returncode == 1 and "invalid tenant" in bad.stderr


def test_roundtrip_reports_every_file_even_after_an_unreadable_one(tmp_path):
    path = tmp_path / "sample.docx"
    path.write_bytes(build_sample_template())
    res = run_cli("ingest", "roundtrip", str(tmp_path / "missing.docx"), str(path))
    lines = [json.loads(line) for line in res.stdout.splitlines()]
    assert [("error" in report, report.get("lossless")) for report in lines] == [(True, None), (False, True)]
    assert res.returncode == 2


# --------------------------------------------------------------------------- item 1.12: sidecar errors, local checks

def _one_error_line(res) -> str:
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), res.stderr
    return lines[0]


@pytest.mark.parametrize("command", ["zones", "template"])
def test_a_sidecar_that_is_not_json_is_named(command, tmp_path):
    path = tmp_path / "report.docx"
    path.write_bytes(build_sample_template())
    side = tmp_path / "report.zones.json"
    side.write_text("{not json")
    extra = ["--tenant", "acme"] if command == "template" else []
    res = run_cli("ingest", command, str(path), "--sidecar", str(side), *extra)
    assert res.returncode == 1
    assert str(side) in _one_error_line(res)


def test_a_sidecar_the_schema_refuses_is_named(tmp_path):
    path = tmp_path / "report.docx"
    path.write_bytes(build_sample_template())
    side = tmp_path / "report.zones.json"
    side.write_text(json.dumps({"version": 1, "zones": {"summary": {"kind": "video"}}}))
    res = run_cli("ingest", "zones", str(path), "--sidecar", str(side))
    assert res.returncode == 2
    line = _one_error_line(res)
    assert str(side) in line and "invalid_sidecar" in line


def _hostile_template(tmp_path):
    from tests.ingest import docx_factory as f

    path = tmp_path / "hostile.docx"
    path.write_bytes(f.DocxBuilder([f.simple_field("DDEAUTO cmd"), f.section_properties()]).build())
    return path


def _uploads_of(s3, settings, tenant):
    return s3.list_objects_v2(Bucket=settings.uploads_bucket, Prefix=f"{tenant}/").get("Contents", [])


@pytest.mark.integration
def test_template_refused_by_the_audit_uploads_nothing(use_stack_env, s3, settings, tenant, tmp_path):
    side = tmp_path / "hostile.zones.json"
    side.write_text(json.dumps(sample_sidecar()))
    res = run_cli("ingest", "template", "--tenant", tenant, str(_hostile_template(tmp_path)), "--sidecar", str(side))
    assert res.returncode == 2
    assert "field_dde" in _one_error_line(res)
    assert _uploads_of(s3, settings, tenant) == []


@pytest.mark.integration
def test_template_refused_by_the_zone_rules_uploads_nothing(use_stack_env, s3, settings, tenant, tmp_path):
    from astra.samples.templates import minimal_docx

    path = tmp_path / "plain.docx"
    path.write_bytes(minimal_docx("<w:p><w:r><w:t>no zones here</w:t></w:r></w:p>"))
    res = run_cli("ingest", "template", "--tenant", tenant, str(path))
    assert res.returncode == 2
    assert "no_zones" in _one_error_line(res)
    assert _uploads_of(s3, settings, tenant) == []


@pytest.mark.integration
@pytest.mark.parametrize("name", ["bad name.docx", "..docx", "-lead.docx", "r\u202eport.docx"])
def test_a_template_name_no_session_could_name_is_refused_before_upload(use_stack_env, s3, settings, tenant,
                                                                       tmp_path, name):
    from astra.samples.templates import build_sample_template

    path = tmp_path / name
    path.write_bytes(build_sample_template())
    res = run_cli("ingest", "template", "--tenant", tenant, str(path))
    assert res.returncode == 2
    assert "not a template upload key" in _one_error_line(res)
    assert _uploads_of(s3, settings, tenant) == []


def test_template_keys_follow_the_session_manifest_name_rule():
    from astra.ingest.template_ingest import TemplateInputError, TemplateRef

    assert TemplateRef.parse("acme/templates/field_inspection.v2.docx").name == "field_inspection.v2"
    for bad in ("acme/templates/a b.docx", "acme/templates/.hidden.docx", "acme/templates/x.docx\n"):
        with pytest.raises(TemplateInputError):
            TemplateRef.parse(bad)


# --------------------------------------------------------------------------- docxtpl templates (issue 11)


def test_zones_lists_a_docxtpl_templates_kinds_fields_and_marks(tmp_path):
    from tests.ingest.test_jinja_zones import docxtpl_template

    path = tmp_path / "invoice.docx"
    path.write_bytes(docxtpl_template())
    side = tmp_path / "invoice.zones.json"
    side.write_text(json.dumps({"zones": {"items": {"data": "data/*.csv"}, "paid": {"intents": ["pay_bill"]}}}))
    res = run_cli("ingest", "zones", str(path), "--sidecar", str(side), env={"COLUMNS": "250"})
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines()[0] == "invoice.docx: docxtpl (Jinja), 7 zones, fallback zone notes_2"
    rows = table_rows(res.stdout)
    assert rows.pop("zone") == ["kind", "fields", "marked", "accepts", "where"]
    assert rows == {
        "Client": ["record", "name, city", "no", "-", "/word/document.xml block 0"],
        "items": ["table", "desc, Unit price", "yes", "data data/*.csv", "/word/document.xml block 1"],
        "steps": ["list", "text", "yes", "-", "/word/document.xml block 2"],
        "paid": ["flag", "-", "no", "intents pay_bill", "/word/document.xml block 5"],
        "summary": ["text", "-", "yes", "-", "/word/document.xml block 6"],
        "notes_2": ["text", "-", "yes", "fallback", "/word/document.xml block 7"],
        "footer_Note": ["text", "-", "yes", "-", "/word/footer1.xml block 0"],
    }
    res = run_cli("ingest", "zones", str(path), "--json")
    assert res.returncode == 0, res.stderr
    zone_map = json.loads(res.stdout)["zone_map"]
    assert zone_map["language"] == "jinja"
    assert [(z["id"], z["kind"], z.get("fields"), z["marked"]) for z in zone_map["zones"]][:2] == [
        ("Client", "record", ["name", "city"], False), ("items", "table", ["desc", "Unit price"], True)]


@pytest.mark.parametrize("command", ["zones", "template"])
def test_a_forbidden_construct_is_one_line_naming_the_tag_and_where(command, tmp_path):
    from astra.samples.templates import minimal_docx

    path = tmp_path / "hostile.docx"
    path.write_bytes(minimal_docx('<w:p><w:r><w:t>{{ notes }}</w:t></w:r></w:p>'
                                  '<w:p><w:r><w:t>{{ notes.__class__.__mro__ }}</w:t></w:r></w:p>'))
    extra = ["--tenant", "acme"] if command == "template" else []
    res = run_cli("ingest", command, str(path), *extra)
    assert res.returncode == 2 and res.stdout == ""
    line = _one_error_line(res)
    assert line.startswith(f"error: {path}: jinja_forbidden: ") and "__class__" in line
    assert line.endswith("(at part=/word/document.xml block=1 path=w:p[1])")
