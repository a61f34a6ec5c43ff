"""Temp clean-up: delete what is left of uploads whose handover is recorded and whose custody
verifies. The handover deletes its upload itself; this catches the ones it could not (a crash
between the record and the deletion, an S3 error), and never touches anything else."""

from __future__ import annotations

from dataclasses import dataclass, field

from astra.guard.custody import check_custody, prepare_client
from astra.orchestrator.handover import Handover, HandoverError, delete_temp_upload, load_record
from astra.orchestrator.manifest import ManifestRejected, manifest_session


@dataclass
class CleanupReport:
    cleaned: dict[str, list[str]] = field(default_factory=dict)  # partition key -> keys deleted
    kept: dict[str, str] = field(default_factory=dict)  # manifest key -> why it stays


def clean_verified_uploads(h: Handover) -> CleanupReport:
    report = CleanupReport()
    s3 = prepare_client(h.s3)
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=h.settings.uploads_bucket)
    manifests = [o["Key"] for page in pages for o in page.get("Contents", []) if o["Key"].endswith("/manifest.json")]
    for key in manifests:
        try:
            session = manifest_session(key)
        except ManifestRejected as exc:
            report.kept[key] = f"not a session key: {exc.reason}"
            continue
        record = load_record(s3, h.settings.assets_bucket, session)
        if record is None:
            report.kept[key] = "not handed over"
            continue
        if record["custody"] is not None:
            problems = check_custody(s3, h.settings, h.engine, record["custody"]["key"])
            if problems:
                report.kept[key] = "custody not verified: " + "; ".join(problems)
                continue
        try:
            report.cleaned[session.partition_key] = delete_temp_upload(h, record)
        except HandoverError as exc:
            report.kept[key] = str(exc)
    return report
