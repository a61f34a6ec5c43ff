"""Client side of a session upload: every file first, `manifest.json` last (its arrival = complete).

What is uploaded is exactly what the manifest names. A folder the manifest could not name one to
one (two audio files, a file of no role, a nested or unsupported data file, a symlink out of the
folder, nothing at all) is refused before the first byte is written: an unnamed file would never
be handed over or held in custody, and would sit in the uploads bucket for good.
"""

from __future__ import annotations

import json
import os
import stat
from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

from astra.orchestrator.manifest import file_patterns, media_type, parse_manifest
from astra.tenancy import SessionKey

SINGLE_ROLES = ("audio", "transcript")  # one file at most: the manifest has one field for each
ROLE_RULES = ("audio.<wav|ogg|mp3|m4a>, transcript.<txt|json|vtt>, data/<name>.<csv|json|xlsx>, "
              "media/<name>.<png|jpg|jpeg|gif|webp>")


class UnsupportedSession(ValueError):
    """Files the manifest could not name exactly; nothing was uploaded."""


def session_roles(paths: Iterable[str]) -> dict[str, list[str]]:
    """Paths by role; refuses unknown paths, a role given twice, and an empty session."""
    patterns = file_patterns()
    by_role: dict[str, list[str]] = defaultdict(list)
    for path in sorted(paths):
        role = next((r for r, pattern in patterns.items() if pattern.fullmatch(path)), "unknown")
        by_role[role].append(path)
    problems = []
    if by_role["unknown"]:
        problems.append(f"not session files ({ROLE_RULES}): {', '.join(map(repr, by_role['unknown']))}")
    problems += [f"more than one {role}, the manifest names one: {', '.join(by_role[role])}"
                 for role in SINGLE_ROLES if len(by_role[role]) > 1]
    if not any(by_role.values()):
        problems.append(f"no session file ({ROLE_RULES})")
    if problems:
        raise UnsupportedSession("; ".join(problems))
    return dict(by_role)


def read_session_folder(folder: Path) -> dict[str, bytes]:
    """The files of a session folder by their path in the session, judged before anything is read."""
    root = folder.resolve()
    if not root.is_dir():
        raise UnsupportedSession(f"{folder} is not a folder")
    found, problems = {}, []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames + filenames):
            path = Path(dirpath, name)
            rel = path.relative_to(root).as_posix()
            problem = _entry_problem(root, path, rel)
            if problem:
                problems.append(problem)
            elif not path.is_dir():
                found[rel] = path
    if problems:
        raise UnsupportedSession(f"{folder}: {'; '.join(problems)}")
    session_roles(found)
    return {rel: path.read_bytes() for rel, path in found.items()}


def _entry_problem(root: Path, path: Path, rel: str) -> str | None:
    """Why a folder entry cannot be part of the session (None: it can, or it is a plain folder)."""
    if path.is_symlink():
        target = path.resolve()
        if not target.is_relative_to(root):
            return f"symlink {rel!r} leads out of the folder (to {target})"
        if not target.exists():
            return f"symlink {rel!r} leads nowhere"
        if target.is_dir():
            return f"symlink {rel!r} is a folder: link files, not folders"
        return None
    mode = path.lstat().st_mode
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        return f"{rel!r} is not a regular file"
    return None


def build_manifest(session: SessionKey, template: str, files: Iterable[str], clone_of: int | None = None,
                   locale: str | None = None) -> dict:
    by_role = session_roles(files)
    doc: dict = {
        "tenant": session.tenant, "session_id": session.session_id, "version": session.version,
        "template": template, "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "data": by_role.get("data", []), "media": by_role.get("media", []),
    }
    for role in SINGLE_ROLES:
        if by_role.get(role):
            doc[role] = by_role[role][0]
    if clone_of is not None:
        doc["clone_of"] = {"version": clone_of}
    if locale:
        doc["locale"] = locale
    return doc


def upload_session(s3, bucket: str, session: SessionKey, template: str, files: dict[str, bytes],
                   clone_of: int | None = None, locale: str | None = None) -> str:
    """Upload the files, then the manifest; returns the manifest key. The files and the manifest
    are judged (roles, then the published schema) before anything is written."""
    prefix = session.upload_prefix
    doc = build_manifest(session, template, files, clone_of, locale)
    raw = json.dumps(doc, indent=2, sort_keys=True).encode()
    manifest = parse_manifest(prefix + "manifest.json", raw)  # refuse locally what the sensor would refuse
    unnamed = set(files) - {f.path for f in manifest.files}
    if unnamed:  # session_roles should make this impossible; never upload what no handover would take
        raise UnsupportedSession(f"the manifest would not name: {', '.join(sorted(unnamed))}")
    for path, body in files.items():
        s3.put_object(Bucket=bucket, Key=prefix + path, Body=body, ContentType=media_type(path),
                      ChecksumAlgorithm="SHA256")
    s3.put_object(Bucket=bucket, Key=prefix + "manifest.json", Body=raw, ContentType="application/json",
                  ChecksumAlgorithm="SHA256")
    return prefix + "manifest.json"
