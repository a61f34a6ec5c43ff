"""Temp clean-up: delete what is left of uploads whose handover is recorded and whose custody
verifies. The handover deletes its upload itself; this catches the ones it could not (a crash
between the record and the deletion, an S3 error), and never touches anything else.
`delete_temp_upload` verifies custody itself before any delete, on this path as on the others.
It also reports version folders with files but no manifest for longer than a day (an upload that
died part way and could not delete its files): they are never handed over, and they are not
deleted here either, since nothing says whose they are or whether an upload is still under way."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from astra.orchestrator.handover import Handover, HandoverError, delete_temp_upload, load_record
from astra.orchestrator.manifest import ManifestRejected, manifest_session

UNFINISHED_AFTER = timedelta(days=1)


@dataclass
class CleanupReport:
    cleaned: dict[str, list[str]] = field(default_factory=dict)  # partition key -> keys deleted
    kept: dict[str, str] = field(default_factory=dict)  # manifest key -> why it stays
    strays_kept: dict[str, list[str]] = field(default_factory=dict)  # partition key -> unnamed keys left
    unfinished: dict[str, list[str]] = field(default_factory=dict)  # version folder -> keys, no manifest for a day


def clean_verified_uploads(h: Handover, unfinished_after: timedelta = UNFINISHED_AFTER) -> CleanupReport:
    report = CleanupReport()
    pages = h.s3.get_paginator("list_objects_v2").paginate(Bucket=h.settings.uploads_bucket)
    objects = [o for page in pages for o in page.get("Contents", [])]
    report.unfinished = unfinished_uploads(objects, datetime.now(UTC) - unfinished_after)
    manifests = [o["Key"] for o in objects if o["Key"].endswith("/manifest.json")]
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


def unfinished_uploads(objects: list[dict], written_before: datetime) -> dict[str, list[str]]:
    """Session version folders (`<tenant>/sessions/<id>/v<n>/`) holding files and no manifest,
    none of them written since `written_before`."""
    folders: dict[str, list[dict]] = defaultdict(list)
    for o in objects:
        parts = o["Key"].split("/", 4)
        if len(parts) == 5 and parts[1] == "sessions":
            folders["/".join(parts[:4]) + "/"].append(o)
    return {prefix: sorted(o["Key"] for o in found) for prefix, found in folders.items()
            if not any(o["Key"] == prefix + "manifest.json" for o in found)
            and max(o["LastModified"] for o in found) < written_before}
