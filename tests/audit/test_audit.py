"""`astra audit` on sessions the platform built (template path, session sensor run, document built and checked):
every hop verifies on an untouched session, and each tampered hop fails with a line naming it and exit 1.

Each tamper is done the way it would happen: S3 objects overwritten with other bytes (a new S3 version), a database
row rewritten (the custody ledger by a superuser with its append-only triggers off), a custody copy hidden by a
delete marker. The audit engine is also asserted on directly: only the tampered hop fails."""

from __future__ import annotations

import json
import re
import uuid
from xml.etree import ElementTree

import pytest
from sqlalchemy import text

from astra.audit import Auditor, BadTarget
from astra.db import make_engine
from astra.guard import verify as guard_verify
from astra.ingest.store import blob_key
from astra.runtime import config_service
from astra.samples import session_files
from astra.settings import Settings
from astra.tenancy import SessionKey
from resources.audit import DagsterMaterializations
from tests.conftest import run_cli
from tests.dagster.test_document_asset import upload_and_run
from tests.dagster.test_session_path import latest
from tests.guard.conftest import superuser_sql

pytestmark = pytest.mark.integration

HOPS = ["document", "materialization", "intent_output", "model", "transcript", "config", "template", "custody",
        "manifest"]


@pytest.fixture
def built(template_tenant, defs, dagster_instance, s3, run_settings):
    """A session handed over and built by the session sensor's run; its custody anchored by `guard verify`."""
    session = SessionKey(template_tenant, f"s-{uuid.uuid4().hex[:6]}", 1)
    upload_and_run(s3, run_settings.uploads_bucket, session, session_files(), defs, dagster_instance)
    settings = Settings.from_env()
    engine = make_engine(settings.database_url)
    assert guard_verify(engine, s3, settings, template_tenant).ok  # writes the tenant's first checkpoint
    return session, latest(dagster_instance, "document_binary", session.partition_key)


def auditor(dagster_instance, s3) -> Auditor:
    settings = Settings.from_env()
    return Auditor(s3, settings, make_engine(settings.database_url), DagsterMaterializations(dagster_instance),
                   config_service(settings))


def cli(dagster_instance, *args: str):
    return run_cli("audit", *args, "--dagster-home", dagster_instance.root_directory)


def failed_hops(report) -> set[str]:
    return {h.id for h in report.hops if not h.ok}


def test_the_built_session_verifies_end_to_end(built, dagster_instance, s3, tmp_path):
    session, meta = built
    report = auditor(dagster_instance, s3).audit(session.partition_key)
    assert [h.id for h in report.hops] == HOPS
    assert report.ok, report.failure_lines()
    hops = {h.id: h for h in report.hops}
    assert hops["materialization"].facts["partition"] == session.partition_key
    assert hops["materialization"].facts["run_id"]
    assert hops["custody"].facts["covered_by_checkpoint"] is True
    assert hops["materialization"].facts["run_status"] == "SUCCESS"
    checked = {c.name for c in hops["materialization"].checks}
    assert {"document_binary checks passed", "custody_audio checks passed"} <= checked
    assert hops["transcript"].facts["source"] == "manifest"
    assert all(c.ok for h in report.hops for c in h.checks) and all(len(h.checks) >= 1 for h in report.hops)

    # The CLI: by partition key (rich table), by sha256 (--json), by S3 URI (--html): the same document, exit 0.
    result = cli(dagster_instance, session.partition_key)
    assert result.returncode == 0, result.stderr
    assert "every hop verified" in result.stdout and "audio under custody" in result.stdout
    result = cli(dagster_instance, meta["sha256"], "--json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["ok"] is True and doc["partition"] == session.partition_key and doc["failures"] == []
    assert [h["id"] for h in doc["hops"]] == HOPS
    page = tmp_path / "audit.html"
    result = cli(dagster_instance, meta["uri"], "--html", str(page))
    assert result.returncode == 0, result.stderr
    html = page.read_text()
    assert html.count("<svg") == 1 and "every hop verified" in html and session.partition_key in html
    # Self-contained: no script, nothing fetched (no src/href, no url(http…) in the CSS).
    assert "<script" not in html and not re.search(r"\b(src|href)=", html) and "url(http" not in html
    svg = ElementTree.fromstring(html[html.index("<svg"):html.index("</svg>") + len("</svg>")])  # well-formed
    assert len(svg.findall(".//{http://www.w3.org/2000/svg}rect")) == len(HOPS)


def test_bad_arguments_exit_2(built, dagster_instance, s3):
    session, _ = built
    for arg, said in [("not-a-thing", "neither a document sha256"), ("0" * 64, "no document with sha256"),
                      (f"{session.tenant}--nosuch--v1", "no document was built"),
                      ("s3://bucket/some/key", "not a document of ASTRA's"), ("Bad--Key--v1", "invalid")]:
        result = cli(dagster_instance, arg)
        assert result.returncode == 2, (arg, result.stdout, result.stderr)
        assert said in result.stderr and result.stderr.count("\n") == 1, result.stderr
    with pytest.raises(BadTarget):
        auditor(dagster_instance, s3).resolve(f"s3://{session.tenant}/documents/x/v1.docx")


def _put(s3, uri: str, body: bytes) -> None:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    s3.put_object(Bucket=bucket, Key=key, Body=body)


def tamper_document(ctx):
    _put(ctx.s3, ctx.meta["uri"], b"PK\x03\x04 another document")


def tamper_intent_output(ctx):
    ctx.s3.put_object(Bucket=ctx.settings.assets_bucket, Key=blob_key(ctx.tenant, ctx.meta["intent_output_sha256"]),
                      Body=b'{"model_version": "forged"}')


def tamper_transcript(ctx):
    ctx.s3.put_object(Bucket=ctx.settings.assets_bucket, Key=blob_key(ctx.tenant, ctx.meta["transcript_sha256"]),
                      Body=b'{"utterances": []}')


def tamper_registry(ctx):
    with ctx.engine.begin() as conn:
        # The row the audit reads: the session's tenant's or the base's, the newest (other tests' tenants may have
        # published the same model version under their own names).
        row = conn.execute(text("SELECT tenant_id, version, sha256 FROM model_registry WHERE uri LIKE :u "
                                "AND tenant_id IN (:t, 'base') ORDER BY created_at DESC LIMIT 1"),
                           {"u": f"%/models/%/{ctx.meta['model_version']}/", "t": ctx.tenant}).one()
        conn.execute(text("UPDATE model_registry SET sha256 = :s WHERE tenant_id = :t AND version = :v"),
                     {"s": "0" * 64, "t": row.tenant_id, "v": row.version})

    def undo():
        with ctx.engine.begin() as conn:
            conn.execute(text("UPDATE model_registry SET sha256 = :s WHERE tenant_id = :t AND version = :v"),
                         {"s": row.sha256, "t": row.tenant_id, "v": row.version})

    ctx.restore.append(undo)


def tamper_config(ctx):
    with ctx.engine.begin() as conn:  # the summary zone now also takes cooking intents: a quiet change of the row
        conn.execute(text("UPDATE tenant_config_versions SET zone_map = jsonb_set(zone_map, '{fallback_zone}', "
                          "to_jsonb('summary'::text)) WHERE tenant_id = :t AND version = 1"), {"t": ctx.tenant})


def tamper_template(ctx):
    manifest = json.loads(ctx.s3.get_object(Bucket=ctx.settings.assets_bucket,
                                            Key=f"{ctx.tenant}/atoms/{ctx.meta['template_sha256']}.json")["Body"].read())
    atom = next(a["sha256"] for m in manifest["members"] if m["name"] == "word/document.xml" for a in m["atoms"])
    ctx.s3.put_object(Bucket=ctx.settings.assets_bucket, Key=blob_key(ctx.tenant, atom), Body=b"<w:p>forged</w:p>")


def tamper_ledger(ctx):
    seq = ctx.record_custody["ledger_seq"]
    superuser_sql(ctx.engine, (
        "UPDATE custody_ledger SET entry = replace(entry, '\"retention_mode\":\"COMPLIANCE\"', "
        "'\"retention_mode\":\"GOVERNANCE\"') WHERE tenant_id = :t AND seq = :s", {"t": ctx.tenant, "s": seq}))


def tamper_custody_object(ctx):
    ctx.s3.delete_object(Bucket=ctx.record_custody["bucket"], Key=ctx.record_custody["key"])  # a delete marker


def tamper_manifest(ctx):
    ctx.s3.put_object(Bucket=ctx.settings.assets_bucket, Key=blob_key(ctx.tenant, ctx.record["manifest"]["sha256"]),
                      Body=b'{"tenant": "someone-else"}')


def tamper_handover_record(ctx):
    record = dict(ctx.record, config_version=7)
    ctx.s3.put_object(Bucket=ctx.settings.assets_bucket,
                      Key=f"{ctx.tenant}/sessions/{ctx.session.session_id}/v1/handover.json",
                      Body=json.dumps(record).encode())


def tamper_event_log(ctx):
    """An insider who can reach the Dagster instance: new bytes at the document's key and blob, and a materialization
    reported outside any run (Dagster's public report_runless_asset_event) carrying their sha256 and version."""
    import hashlib

    from dagster import AssetKey, AssetMaterialization

    body = b"PK\x03\x04 a forged document"
    sha = hashlib.sha256(body).hexdigest()
    bucket, _, key = ctx.meta["uri"].removeprefix("s3://").partition("/")
    version = ctx.s3.put_object(Bucket=bucket, Key=key, Body=body)["VersionId"]
    blob = blob_key(ctx.tenant, sha)
    ctx.s3.put_object(Bucket=ctx.settings.assets_bucket, Key=blob, Body=body)
    metadata = {k: v for k, v in ctx.meta.items() if isinstance(v, (str, int, float, bool))}
    metadata.update(sha256=sha, size=len(body), version_id=version, blob_uri=f"s3://{ctx.settings.assets_bucket}/{blob}")
    ctx.instance.report_runless_asset_event(AssetMaterialization(
        AssetKey("document_binary"), partition=ctx.session.partition_key, metadata=metadata,
        tags={"dagster/data_version": sha}))


TAMPERS = {
    # hop that must fail: (tamper, the check named in its failure line)
    "document": (tamper_document, "key serves it"),
    "intent_output": (tamper_intent_output, "artifact re-hashed"),
    "model": (tamper_registry, "manifest re-hashed"),
    "transcript": (tamper_transcript, "artifact re-hashed"),
    "config": (tamper_config, "maps = materialization"),
    "template": (tamper_template, "atoms re-assembled"),
    "custody": (tamper_ledger, "chain"),
    "custody-object": (tamper_custody_object, "guard object re-hashed"),
    "manifest": (tamper_manifest, "manifest re-hashed"),
    "materialization": (tamper_handover_record, "handover record = its materialization"),
    "materialization-runless": (tamper_event_log, "made by a run"),
}


class Ctx:
    def __init__(self, **kw):
        self.__dict__.update(kw)
        self.restore = []


@pytest.mark.parametrize("name", list(TAMPERS))
def test_each_tampered_hop_fails_clearly(name, built, dagster_instance, s3):
    session, meta = built
    settings = Settings.from_env()
    engine = make_engine(settings.database_url)
    from astra.orchestrator.handover import load_record

    record = load_record(s3, settings.assets_bucket, session)
    ctx = Ctx(s3=s3, settings=settings, engine=engine, meta=meta, tenant=session.tenant, session=session,
              record=record, record_custody=record["custody"], instance=dagster_instance)
    tamper, check = TAMPERS[name]
    hop = name.split("-")[0]
    assert auditor(dagster_instance, s3).audit(session.partition_key).ok  # untouched: it verifies
    tamper(ctx)
    try:
        report = auditor(dagster_instance, s3).audit(session.partition_key)
        assert not report.ok
        assert hop in failed_hops(report), report.failure_lines()
        # A tamper of a stored input is named at its own hop; the handover record feeds every later hop.
        if not name.startswith("materialization"):
            assert failed_hops(report) == {hop}, report.failure_lines()
        result = cli(dagster_instance, session.partition_key)
        assert result.returncode == 1, (result.stdout, result.stderr)
        line = f"FAILED {session.partition_key} {hop}: {check}: "
        assert line in result.stderr, result.stderr
        assert "every hop verified" not in result.stdout
        doc = json.loads(cli(dagster_instance, session.partition_key, "--json").stdout)
        assert doc["ok"] is False and any(f.startswith(f"{session.partition_key} {hop}: {check}: ")
                                          for f in doc["failures"])
    finally:
        for undo in ctx.restore:
            undo()


def test_a_v2_clone_walks_its_parent(built, defs, dagster_instance, s3, run_settings):
    session, parent_meta = built
    clone = SessionKey(session.tenant, session.session_id, 2)
    upload_and_run(s3, run_settings.uploads_bucket, clone, {"transcript.txt": b"the clone's own words"}, defs,
                   dagster_instance, clone_of=1)
    report = auditor(dagster_instance, s3).audit(clone.partition_key)
    assert report.asset == "v2_clone_binary" and report.ok, report.failure_lines()
    assert {h.id for h in report.hops} >= {"parent", "comparison_reports"}
    assert report.parent is not None and report.parent.partition == session.partition_key and report.parent.ok
    # The parent's document overwritten: the clone's audit fails at its parent hop and in the parent's walk.
    _put(s3, parent_meta["uri"], b"PK\x03\x04 another document")
    report = auditor(dagster_instance, s3).audit(clone.partition_key)
    assert "parent" in failed_hops(report) and failed_hops(report.parent) == {"document"}
    assert any(line.startswith(f"{session.partition_key} document: key serves it") for line in report.failure_lines())


def test_a_session_heard_by_asr_reverifies_the_acoustic_model_and_the_lm(template_tenant, defs, dagster_instance, s3,
                                                                         run_settings, tmp_path_factory, monkeypatch):
    from astra.settings import ENV

    state = tmp_path_factory.mktemp("state")
    monkeypatch.setenv(ENV["state_dir"], str(state))  # the run builds the in-domain LM here; the audit reads it
    session = SessionKey(template_tenant, f"s-{uuid.uuid4().hex[:6]}", 1)
    files = {k: v for k, v in session_files().items() if k != "transcript.txt"}
    upload_and_run(s3, run_settings.uploads_bucket, session, files, defs, dagster_instance)
    # Its custody entry is newer than every checkpoint: only the database vouches for it yet, and that is not enough.
    report = auditor(dagster_instance, s3).audit(session.partition_key)
    assert failed_hops(report) == {"custody"}
    assert any("custody: chain up to a checkpoint: " in line and "not yet anchored" in line
               for line in report.failure_lines())
    settings = Settings.from_env()
    assert guard_verify(make_engine(settings.database_url), s3, settings, template_tenant).ok
    report = auditor(dagster_instance, s3).audit(session.partition_key)
    assert report.ok, report.failure_lines()
    transcript = next(h for h in report.hops if h.id == "transcript")
    assert transcript.facts["source"] == "asr"
    checks = {c.name: c for c in transcript.checks}
    assert checks["acoustic model re-hashed"].ok and checks["language model re-hashed"].ok
    assert "re-hashed:" in checks["language model re-hashed"].detail  # read from the cache, not just recorded
    # The cached LM altered: that hop fails, naming the file.
    (arpa,) = state.glob("lm-cache/*/lm.arpa")
    arpa.write_bytes(arpa.read_bytes() + b"\n")
    report = auditor(dagster_instance, s3).audit(session.partition_key)
    assert failed_hops(report) == {"transcript"}
    assert any("transcript: language model re-hashed: " in line and str(arpa) in line
               for line in report.failure_lines())


def test_a_document_whose_record_was_wiped_fails_not_a_typo(built, dagster_instance, s3):
    """An insider wipes the document's materializations (the UI's wipe): the .docx is still in S3, so the audit fails
    (exit 1) saying the record is gone, rather than answering that no such document was built (exit 2)."""
    from dagster import AssetKey

    session, _ = built
    dagster_instance.wipe_assets([AssetKey("document_binary")])  # the test instance's storage wipes whole assets
    result = cli(dagster_instance, session.partition_key)
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "its record is gone" in result.stderr and result.stderr.count("\n") == 1, result.stderr
