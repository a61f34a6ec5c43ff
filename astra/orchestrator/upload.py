"""Client side of a session upload: every file first, `manifest.json` last (its arrival = complete)."""

from __future__ import annotations

import json
from datetime import datetime, timezone

from astra.orchestrator.manifest import media_type, parse_manifest
from astra.tenancy import SessionKey


def build_manifest(session: SessionKey, template: str, files: dict[str, bytes], clone_of: int | None = None,
                   locale: str | None = None) -> dict:
    doc: dict = {
        "tenant": session.tenant, "session_id": session.session_id, "version": session.version,
        "template": template, "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "data": sorted(p for p in files if p.startswith("data/")),
        "media": sorted(p for p in files if p.startswith("media/")),
    }
    for path in files:
        if path.startswith("audio."):
            doc["audio"] = path
        elif path.startswith("transcript."):
            doc["transcript"] = path
    if clone_of is not None:
        doc["clone_of"] = {"version": clone_of}
    if locale:
        doc["locale"] = locale
    return doc


def upload_session(s3, bucket: str, session: SessionKey, template: str, files: dict[str, bytes],
                   clone_of: int | None = None, locale: str | None = None) -> str:
    """Upload the files, then the manifest; returns the manifest key. The manifest is checked
    against the published schema before anything is written."""
    prefix = f"{session.tenant}/sessions/{session.session_id}/v{session.version}/"
    doc = build_manifest(session, template, files, clone_of, locale)
    raw = json.dumps(doc, indent=2, sort_keys=True).encode()
    parse_manifest(prefix + "manifest.json", raw)  # refuse locally what the sensor would refuse
    for path, body in files.items():
        s3.put_object(Bucket=bucket, Key=prefix + path, Body=body, ContentType=media_type(path),
                      ChecksumAlgorithm="SHA256")
    s3.put_object(Bucket=bucket, Key=prefix + "manifest.json", Body=raw, ContentType="application/json",
                  ChecksumAlgorithm="SHA256")
    return prefix + "manifest.json"
