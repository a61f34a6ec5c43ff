"""A docxtpl template (issue 11) on the real stack: uploaded through the template path (its zone map in docxtpl's
language), a session upload's one sensor run ends with its document built by rendering the template with the
session's intent output (a row loop over the session's CSV, text zones, a flag), stored and passing every blocking
check (python-docx, LibreOffice, forbidden constructs, every marked zone present)."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import docx
import pytest

from astra.builder.check import check_document
from astra.orchestrator.upload import upload_session
from astra.runtime import config_service
from astra.samples import session_files
from astra.settings import Settings
from astra.tenancy import SessionKey
from astra_assets.builder import NO_FORBIDDEN, OPENS, ZONES_PRESENT
from astra_assets.local_runner import tick
from tests.dagster.test_document_asset import TEMPLATE_SENSOR, checks_of, stored
from tests.dagster.test_intent_output_asset import FLIGHT, TRANSFER
from tests.dagster.test_session_path import SENSOR, latest
from tests.template_language.docxtpl_fixtures import _runs, _save, _table, document_text

pytestmark = pytest.mark.integration
TEMPLATE_NAME = "pump_report"
SIDECAR = {"version": 1, "zones": {
    "summary": {"label": "Summary", "domains": ["travel", "banking"]},
    "follow_up": {"label": "Follow-up needed", "intents": ["reminder"]},
    "readings": {"label": "Readings", "data": "data/readings.csv"},
}, "fallback_zone": "notes"}
# Set, the folder the stored document is copied to, to be converted and looked at by hand.
LOOK_DIR = os.environ.get("ASTRA_LOOK_DIR")


def pump_report() -> bytes:
    """A docxtpl template as a tenant brings it: a heading, a summary paragraph zone, an inline notes zone, a
    paragraph shown only when a flag is set, and a table whose row loop reads the session's CSV by column."""
    doc = docx.Document()
    doc.sections[0].header.paragraphs[0].text = "North pumping station - inspection"
    doc.add_paragraph("Inspection report", style="Title")
    doc.add_paragraph("Summary", style="Heading 1")
    doc.add_paragraph("{{p summary }}")
    _runs(doc.add_paragraph(), ("Notes: ", {"bold": True}), "{{ notes }}")
    doc.add_paragraph("{%p if follow_up %}")
    doc.add_paragraph("A follow-up is needed: see the reminders in the session record.", style="Intense Quote")
    doc.add_paragraph("{%p endif %}")
    doc.add_paragraph("Pressure readings", style="Heading 1")
    _table(doc, [["Sensor", "Location", "Pressure (kPa)", "Temperature (°C)"],
                 ["{%tr for r in readings %}", "", "", ""],
                 ["{{ r.sensor }}", "{{ r.location|title }}", "{{ r.pressure_kpa }}", "{{ r.temperature_c }}"],
                 ["{%tr endfor %}", "", "", ""]])
    doc.add_paragraph("{{ readings|length }} readings recorded.")
    return _save(doc)


@pytest.fixture
def jinja_tenant(tenant, defs, dagster_instance, s3, run_settings) -> str:
    """A tenant whose config v1 comes from the docxtpl template through the template path."""
    prefix = f"{tenant}/templates/{TEMPLATE_NAME}"
    s3.put_object(Bucket=run_settings.uploads_bucket, Key=f"{prefix}.zones.json", Body=json.dumps(SIDECAR).encode())
    s3.put_object(Bucket=run_settings.uploads_bucket, Key=f"{prefix}.docx", Body=pump_report(),
                  ChecksumAlgorithm="SHA256")
    runs = tick(defs, dagster_instance, TEMPLATE_SENSOR).results
    assert [r.success for r in runs] == [True]
    return tenant


def test_a_session_on_a_docxtpl_template_builds_a_document_that_passes_its_checks(
        defs, dagster_instance, s3, run_settings, jinja_tenant, core_server):
    snapshot = config_service(Settings.from_env()).snapshot(jinja_tenant)
    zone_map = snapshot.zone_map
    assert zone_map["language"] == "jinja"
    assert {z["id"]: (z["kind"], z["marked"]) for z in zone_map["zones"]} == {
        "summary": ("text", True), "notes": ("text", True), "follow_up": ("flag", False),
        "readings": ("table", True)}

    session = SessionKey(jinja_tenant, f"s-{uuid.uuid4().hex[:6]}", 1)
    upload_session(s3, run_settings.uploads_bucket, session, TEMPLATE_NAME, session_files())
    (run,) = tick(defs, dagster_instance, SENSOR).results
    assert run.success
    assert checks_of(run) == {"custody_audio:custody_verified": True, f"document_binary:{OPENS}": True,
                              f"document_binary:{NO_FORBIDDEN}": True, f"document_binary:{ZONES_PRESENT}": True}
    meta = latest(dagster_instance, "document_binary", session.partition_key)
    data = stored(s3, meta["uri"], meta["version_id"])
    assert meta["fills"]["readings"] == 1 and meta["fills"]["summary"] >= 2 and meta["problems"] == []
    assert meta["fills"]["follow_up"] == 1  # the sample session asks for a reminder
    template = pump_report()
    assert check_document(data, zone_map, template=template).passed

    text = "\n".join(document_text(data))
    assert TRANSFER in text and FLIGHT in text
    assert "p: P-101" in text and "p: North Inlet" in text and "p: 412.5" in text
    assert "p: A follow-up is needed" in text and "readings recorded." in text
    assert "{{" not in text and "{%" not in text
    if LOOK_DIR:
        (Path(LOOK_DIR) / "document.docx").write_bytes(data)
