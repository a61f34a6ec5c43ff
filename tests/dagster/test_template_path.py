"""The template path end to end: upload → sensor → template_atoms + checks → tenant_config → CONFIG_SVC."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile

import pytest
from dagster import AssetKey, AssetRecordsFilter

from astra.runtime import config_service
from astra.samples.templates import build_sample_template, sample_sidecar
from astra.settings import Settings
from astra_assets.local_runner import tick

pytestmark = pytest.mark.integration
SENSOR = "template_upload_sensor"


def upload(s3, settings, tenant, data: bytes, name="report.docx", sidecar: dict | None = None):
    if sidecar is not None:
        s3.put_object(Bucket=settings.uploads_bucket, Key=f"{tenant}/templates/{name[:-5]}.zones.json",
                      Body=json.dumps(sidecar).encode())
    s3.put_object(Bucket=settings.uploads_bucket, Key=f"{tenant}/templates/{name}", Body=data,
                  ChecksumAlgorithm="SHA256")


def runs_for(outcome, tenant: str) -> list:
    """The tick's runs for one tenant (the shared test bucket holds other tests' tenants too)."""
    return [r for r in outcome.results if r.dagster_run.tags.get("astra/tenant") == tenant]


def latest(instance, key: str, partition: str) -> dict:
    records = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=AssetKey(key), asset_partitions=[partition]), limit=1).records
    return {k: v.value for k, v in records[0].asset_materialization.metadata.items()} if records else {}


def with_macro(data: bytes) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for item in src.infolist():
            dst.writestr(item, src.read(item.filename))
        dst.writestr("word/vbaProject.bin", b"\xd0\xcf\x11\xe0 macro")
    return out.getvalue()


def test_template_upload_becomes_a_config_version(defs, dagster_instance, s3, run_settings, tenant):
    template = build_sample_template()
    upload(s3, run_settings, tenant, template, sidecar=sample_sidecar())

    first = runs_for(tick(defs, dagster_instance, SENSOR), tenant)
    assert len(first) == 1 and first[0].success
    assert dagster_instance.has_dynamic_partition("tenants", tenant)
    atoms = latest(dagster_instance, "template_atoms", tenant)
    assert atoms["sha256"] == hashlib.sha256(template).hexdigest()
    assert atoms["audit_verdict"] == "pass" and atoms["atoms"] > atoms["parts"]
    checks = {e.check_name: e.passed for e in first[0].get_asset_check_evaluations()}
    assert checks == {"template_roundtrip_lossless": True, "template_audit_passed": True}
    cfg = latest(dagster_instance, "tenant_config", tenant)
    assert cfg["config_version"] == 1
    snap = config_service(Settings.from_env()).snapshot(tenant)
    assert snap.version == 1 and snap.template_sha256 == atoms["sha256"]
    assert {"title", "summary", "measurements", "notes"} <= {z["id"] for z in snap.zone_map["zones"]}
    assert snap.zone_map["fallback_zone"] == "notes"

    # Nothing new: no run. The same bytes under another name: same run key, no run.
    assert runs_for(tick(defs, dagster_instance, SENSOR), tenant) == []
    upload(s3, run_settings, tenant, template, name="copy.docx", sidecar=sample_sidecar())
    again = tick(defs, dagster_instance, SENSOR)
    assert runs_for(again, tenant) == [] and [k for k in again.skipped_run_keys if k.startswith(tenant)]

    # A changed sidecar is a change: it runs again, and the unchanged atoms are stored once.
    side = sample_sidecar()
    side["zones"]["notes"]["label"] = "Inspector notes, revised"
    upload(s3, run_settings, tenant, template, sidecar=side)
    third = runs_for(tick(defs, dagster_instance, SENSOR), tenant)
    assert len(third) == 1 and third[0].success
    assert latest(dagster_instance, "template_atoms", tenant)["atoms_written"] == 1  # only the new sidecar blob
    assert config_service(Settings.from_env()).snapshot(tenant).version == 2


def test_a_refused_template_fails_visibly_and_keeps_the_previous_config(
    defs, dagster_instance, s3, run_settings, tenant
):
    upload(s3, run_settings, tenant, build_sample_template(), sidecar=sample_sidecar())
    assert runs_for(tick(defs, dagster_instance, SENSOR), tenant)[0].success
    bad = with_macro(build_sample_template())
    upload(s3, run_settings, tenant, bad)
    refused = runs_for(tick(defs, dagster_instance, SENSOR), tenant)
    assert len(refused) == 1 and not refused[0].success
    failure = next(e for e in refused[0].all_events if e.event_type_value == "STEP_FAILURE")
    message = failure.step_failure_data.error.message
    assert "audit" in message and "vbaProject" in message
    assert config_service(Settings.from_env()).snapshot(tenant).version == 1
    sha = hashlib.sha256(bad).hexdigest()
    report_object = s3.get_object(Bucket=run_settings.assets_bucket, Key=f"{tenant}/reports/audit/{sha}.json")
    report = json.loads(report_object["Body"].read())
    assert report["passed"] is False
    with pytest.raises(s3.exceptions.NoSuchKey):
        s3.get_object(Bucket=run_settings.assets_bucket, Key=f"{tenant}/atoms/{sha}.json")


def test_template_with_no_zones_fails_in_tenant_config(defs, dagster_instance, s3, run_settings, tenant):
    from astra.samples.templates import minimal_docx

    upload(s3, run_settings, tenant, minimal_docx("<w:p><w:r><w:t>No zones here.</w:t></w:r></w:p>"))
    (result,) = runs_for(tick(defs, dagster_instance, SENSOR), tenant)
    assert not result.success
    failures = [e.step_failure_data.error.message for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert "no_zones" in str(failures)
    from astra.config_svc import TenantNotFound

    with pytest.raises(TenantNotFound):
        config_service(Settings.from_env()).snapshot(tenant)


def test_an_oversized_template_is_quarantined_unread(defs, dagster_instance, s3, run_settings, tenant, monkeypatch):
    import sensors.template_upload as sensor_module
    from astra.ingest.audit import AuditLimits

    monkeypatch.setattr(sensor_module, "AuditLimits", lambda: AuditLimits(max_upload_bytes=10_000))
    upload(s3, run_settings, tenant, build_sample_template())  # ~20 kB: over this limit
    outcome = tick(defs, dagster_instance, SENSOR)
    assert runs_for(outcome, tenant) == [] and outcome.events_reported == 1
    record = dagster_instance.fetch_observations(AssetKey("upload_quarantine"), limit=10).records[0]
    assert "over the 10000-byte upload limit" in record.asset_observation.metadata["reason"].value


def test_a_template_under_a_bad_tenant_key_is_quarantined(defs, dagster_instance, s3, run_settings):
    s3.put_object(Bucket=run_settings.uploads_bucket, Key="Bad_Tenant/templates/x.docx", Body=build_sample_template())
    outcome = tick(defs, dagster_instance, SENSOR)
    assert outcome.results == [] and outcome.events_reported == 1
    record = dagster_instance.fetch_observations(AssetKey("upload_quarantine"), limit=10).records[0]
    meta = {k: v.value for k, v in record.asset_observation.metadata.items()}
    assert meta["key"] == "Bad_Tenant/templates/x.docx" and "invalid tenant" in meta["reason"]
