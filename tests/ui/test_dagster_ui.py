"""The Dagster UI of `astra dev`, checked in a real browser (Debian's Chromium, Playwright) as an operator uses it.

One `astra dev` over the test services for the module: a template upload, a session upload and a refused upload
(a manifest that is not JSON) go into its uploads bucket as a user's client puts them there (`astra ingest
template`, `astra session upload`, a plain S3 put); the daemon's sensors do the rest. GraphQL is polled only to
wait for the runs to end; every assertion is made on what the pages show. Screenshots: $ASTRA_TEST_ARTIFACTS/ui
(default tests/artifacts/ui).
"""

from __future__ import annotations

import hashlib
import re
import time
from pathlib import Path

import pytest
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import Page, expect

from tests.ui.conftest import CHROMIUM, NO_CHROMIUM

expect.set_options(timeout=30_000)


# Skipped (saying why) before `astra dev` is started for nothing.
pytestmark = [pytest.mark.integration, pytest.mark.ui,
              pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=NO_CHROMIUM)]

# ARCHITECTURE §3: every asset and its group.
ASSET_GROUPS = {
    "upload_quarantine": "orchestrator",
    "template_upload": "ingest",
    "template_atoms": "ingest",
    "tenant_config": "config",
    "session_upload": "orchestrator",
    "session_handover": "orchestrator",
    "custody_audio": "guard",
    "transcript": "core",
    "intent_output": "core",
    "document_binary": "builder",
    "v2_clone_binary": "builder",
    "feedback_upload": "learn",
    "comparison_report": "learn",
    "intent_model": "learn",
}
BLOCKING_CHECKS = ("document_opens", "no_forbidden_construct", "every_zone_present")
RUN_STATUSES = ("Success", "Failure", "Canceled", "Started", "Queued", "Starting", "Canceling")
CHECK_STATUSES = ("Succeeded", "Failed", "Not evaluated", "Running", "Execution failed", "Skipped")
def open_page(page: Page, url: str) -> None:
    page.goto(url)
    try:  # the UI's data queries answered; a page that keeps polling is judged by the auto-waiting expects below
        page.wait_for_load_state("networkidle", timeout=15_000)
    except PlaywrightError:
        pass
    nux = page.get_by_role("button", name="Skip")  # "Join the Dagster community", once per browser profile
    if nux.is_visible():
        nux.click()


def shot(page: Page, artifacts, name: str) -> None:
    page.screenshot(path=str(artifacts / f"{name}.png"))


def entry_of(page: Page, text: str, statuses: tuple[str, ...]):
    """The row of a list (runs, checks) that shows `text`: the nearest box around it that also shows a status."""
    status = " or ".join(f"normalize-space()='{s}'" for s in statuses)
    return page.get_by_text(text, exact=True).first.locator(f"xpath=ancestor::*[.//*[{status}]][1]")


def metadata_value(page: Page, label: str) -> str:
    """The value cell of a metadata table row, by its label."""
    cell = page.locator(f"xpath=//tr[td[normalize-space()='{label}']]/td[2]").first
    expect(cell).to_be_visible()
    return cell.inner_text().strip()


def test_the_asset_graph_shows_every_asset_in_its_group(dev_ui, page, artifacts):
    open_page(page, f"{dev_ui.url}/asset-groups")
    graph = page.locator("svg").filter(has=page.get_by_text("orchestrator", exact=True)).first
    expect(graph.get_by_text("orchestrator", exact=True).first).to_be_visible()
    page.keyboard.press("Alt+e")  # the graph's "Expand all groups" (⌥E): each group drawn as a box of its assets
    for asset in ASSET_GROUPS:
        node = graph.get_by_text(asset, exact=True)
        expect(node, f"{asset} in the asset graph").to_have_count(1)
        expect(node).to_be_visible()
    shot(page, artifacts, "01-asset-graph")
    group_boxes = {}
    for group in set(ASSET_GROUPS.values()):
        header = graph.get_by_text(group, exact=True)
        expect(header, f"group {group} in the asset graph").to_have_count(1)
        group_boxes[group] = header.locator("xpath=ancestor::*[local-name()='foreignObject'][1]").bounding_box()
    for asset, group in ASSET_GROUPS.items():
        box = graph.get_by_text(asset, exact=True).bounding_box()
        inside = [g for g, b in group_boxes.items()
                  if b["x"] <= box["x"] and box["x"] + box["width"] <= b["x"] + b["width"]
                  and b["y"] <= box["y"] and box["y"] + box["height"] <= b["y"] + b["height"]]
        assert inside == [group], f"{asset} drawn inside {inside}, expected the {group} group"


@pytest.mark.parametrize("which, sensor, assets", [("template_run", "template_upload_sensor", 2),
                                                   ("session_run", "session_upload_sensor", 5)])
def test_an_upload_makes_a_sensor_run_that_succeeds(dev_ui, uploaded, page, artifacts, which, sensor, assets):
    run_id = uploaded[which]["runId"]
    open_page(page, f"{dev_ui.url}/runs")
    row = entry_of(page, run_id[:8], RUN_STATUSES)
    expect(row).to_contain_text(sensor)
    expect(row).to_contain_text(dev_ui.tenant)
    expect(row).to_contain_text(f"{assets} assets")
    expect(row.get_by_text("Success", exact=True)).to_be_visible()
    shot(page, artifacts, f"02-runs-{which}")

    open_page(page, f"{dev_ui.url}/runs/{run_id}")
    expect(page.get_by_text(sensor, exact=True).first).to_be_visible()
    expect(page.get_by_text("Success", exact=True).first).to_be_visible()
    expect(page.get_by_text(f"Succeeded ({assets})", exact=True)).to_be_visible()
    expect(page.get_by_text("Errored (0)", exact=True)).to_be_visible()
    shot(page, artifacts, f"03-run-{which}")


def test_document_binary_shows_its_metadata_and_passed_blocking_checks(dev_ui, uploaded, page, artifacts, s3,
                                                                       sample_intents_model):
    partition, run_id = uploaded["partition"], uploaded["session_run"]["runId"]
    # What the page must show, read from S3 itself: the stored document's hash and S3 version.
    bucket = dev_ui.env["ASTRA_ASSETS_BUCKET"]
    key = f"{dev_ui.tenant}/documents/visit-1/v1.docx"
    stored = s3.get_object(Bucket=bucket, Key=key)
    sha256, version_id = hashlib.sha256(stored["Body"].read()).hexdigest(), stored["VersionId"]

    open_page(page, f"{dev_ui.url}/assets/document_binary?view=events&partition={partition}")
    expect(page.get_by_text(re.compile(rf"materialized in run\s*{run_id[:8]}"))).to_be_visible()
    assert metadata_value(page, "sha256") == sha256
    assert metadata_value(page, "version_id") == version_id
    assert metadata_value(page, "uri") == f"s3://{bucket}/{key}"
    assert metadata_value(page, "config_version") == "1"
    assert metadata_value(page, "model_version") == sample_intents_model[1].version
    assert metadata_value(page, "source_partition") == partition
    shot(page, artifacts, "04-document-binary-metadata")

    open_page(page, f"{dev_ui.url}/assets/document_binary?view=checks")
    expect(page.get_by_text(f"Checks ({len(BLOCKING_CHECKS)})", exact=True)).to_be_visible()
    for check in BLOCKING_CHECKS:
        open_page(page, f"{dev_ui.url}/assets/document_binary?view=checks&checkDetail={check}")
        # In the list of checks, the check's own entry says Succeeded.
        entry = entry_of(page, check, CHECK_STATUSES)
        expect(entry.get_by_text("Succeeded", exact=True)).to_be_visible()
        assert not [c for c in BLOCKING_CHECKS if c != check and entry.get_by_text(c, exact=True).count()]
        expect(page.get_by_text(re.compile(r"This is a\s*blocking\s*asset check"))).to_be_visible()
        expect(page.get_by_text("Passed", exact=True)).to_be_visible()
        shot(page, artifacts, f"05-document-binary-check-{check}")

    # The session run's own log: each blocking check evaluated on this partition's materialization, and passed.
    open_page(page, f"{dev_ui.url}/runs/{run_id}?logs=type%3AASSET_CHECK_EVALUATION")
    for check in BLOCKING_CHECKS:
        expect(page.get_by_text(f"Check {check} succeeded for materialization of document_binary.")).to_be_visible()
    shot(page, artifacts, "06-session-run-check-evaluations")


def test_a_refused_upload_appears_in_upload_quarantine(dev_ui, uploaded, page, artifacts):
    url = f"{dev_ui.url}/assets/upload_quarantine?view=events"
    deadline = time.monotonic() + 90  # reported by the session sensor's tick, maybe after the run was requested
    while True:
        open_page(page, url)
        found = page.locator("xpath=//tr[td[normalize-space()='key']]"
                             f"/td[2][normalize-space()='{uploaded['refused']}']")
        if found.count() or time.monotonic() > deadline:
            break
        time.sleep(3)
    expect(found).to_be_visible()
    assert metadata_value(page, "bucket") == dev_ui.env["ASTRA_UPLOADS_BUCKET"]
    assert metadata_value(page, "reason").startswith("not valid JSON")
    expect(page.get_by_text("Observed", exact=True)).to_be_visible()
    shot(page, artifacts, "07-upload-quarantine")
