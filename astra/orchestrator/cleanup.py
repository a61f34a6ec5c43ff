"""Temp clean-up: delete what is left of uploads whose handover is recorded and whose custody
verifies. The handover deletes its upload itself; this catches the ones it could not (a crash
between the record and the deletion, an S3 error), and never touches anything else.
`delete_temp_upload` verifies custody itself before any delete, on this path as on the others."""

from __future__ import annotations

from dataclasses import dataclass, field

from astra.orchestrator.handover import Handover, HandoverError, delete_temp_upload, load_record
from astra.orchestrator.manifest import ManifestRejected, manifest_session


@dataclass
class CleanupReport:
    cleaned: dict[str, list[str]] = field(default_factory=dict)  # partition key -> keys deleted
    kept: dict[str, str] = field(default_factory=dict)  # manifest key -> why it stays
    strays_kept: dict[str, list[str]] = field(default_factory=dict)  # partition key -> unnamed keys left


def clean_verified_uploads(h: Handover) -> CleanupReport:
    report = CleanupReport()
    pages = h.s3.get_paginator("list_objects_v2").paginate(Bucket=h.settings.uploads_bucket)
    manifests = [o["Key"] for page in pages for o in page.get("Contents", []) if o["Key"].endswith("/manifest.json")]
    for key in manifests:
        try:
            session = manifest_session(key)
        except ManifestRejected as exc:
            report.kept[key] = f"not a session key: {exc.reason}"
            continue
        record = load_record(h.s3, h.settings.assets_bucket, session)
        if record is None:
            report.kept[key] = "not handed over"
            continue
        try:
            cleanup = delete_temp_upload(h, record)
        except HandoverError as exc:
            report.kept[key] = str(exc)
            continue
        report.cleaned[session.partition_key] = cleanup.deleted
        if cleanup.strays_kept:
            report.strays_kept[session.partition_key] = cleanup.strays_kept
    return report
