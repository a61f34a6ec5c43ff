"""Client side of a session upload: every file first, `manifest.json` last (its arrival = complete).

What is uploaded is exactly what the manifest names. A folder the manifest could not name one to
one (two audio files, a file of no role, a nested or unsupported data file, a symlink out of the
folder, nothing at all) is refused before the first byte is written: an unnamed file would never
be handed over or held in custody, and would sit in the uploads bucket for good. So is a version
folder already used (`refuse_a_used_version`): session versions are immutable.

Files are streamed from disk (a 3 GB recording is never in memory). If S3 fails part way, the
files this run wrote are deleted again, so no half upload without a manifest is left unsaid.
"""

from __future__ import annotations

import io
import json
import os
import stat
from collections import defaultdict
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path

from boto3.exceptions import S3UploadFailedError
from boto3.s3.transfer import TransferConfig
from botocore.exceptions import BotoCoreError, ClientError

from astra.orchestrator.handover import handover_record_key, upload_as_next_version
from astra.orchestrator.manifest import file_patterns, media_type, parse_manifest
from astra.s3 import delete_if_unchanged, head
from astra.tenancy import SessionKey

SINGLE_ROLES = ("audio", "transcript")  # one file at most: the manifest has one field for each
# Large files go multipart, 16 MB parts, 4 at a time, read from disk part by part: memory does not
# grow with the file's size.
TRANSFER = TransferConfig(multipart_threshold=16 << 20, multipart_chunksize=16 << 20, max_concurrency=4)
ROLE_RULES = ("audio.<wav|ogg|mp3|m4a>, transcript.<txt|json|vtt>, data/<name>.<csv|json|xlsx>, "
              "media/<name>.<png|jpg|jpeg|gif|webp>")


class UnsupportedSession(ValueError):
    """Files the manifest could not name exactly, or a version folder already used; nothing was uploaded."""


class UploadFailed(RuntimeError):
    """S3 failed part way; the message says what this run deleted again or left behind."""


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


def read_session_folder(folder: Path) -> dict[str, Path]:
    """The files of a session folder by their path in the session, judged; their bytes are read
    only while they are uploaded."""
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
    return found


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


def refuse_a_used_version(s3, uploads_bucket: str, assets_bucket: str, session: SessionKey,
                          clone_of: int | None = None) -> None:
    """Refuse a version folder that holds anything or was handed over, and a clone of a version not
    handed over. A second upload into a used folder would replace its manifest, and the first
    recording would be left unnamed, never in custody."""
    if s3.list_objects_v2(Bucket=uploads_bucket, Prefix=session.upload_prefix, MaxKeys=1).get("KeyCount"):
        raise UnsupportedSession(f"s3://{uploads_bucket}/{session.upload_prefix} already holds an upload: "
                                 f"{upload_as_next_version(session)}")
    if head(s3, assets_bucket, handover_record_key(session), checksum=False) is not None:
        raise UnsupportedSession(f"{session.partition_key} was already handed over: {upload_as_next_version(session)}")
    if clone_of is not None and clone_of < session.version:
        parent = SessionKey(session.tenant, session.session_id, clone_of)
        if head(s3, assets_bucket, handover_record_key(parent), checksum=False) is None:
            raise UnsupportedSession(f"--clone-of {clone_of}: {parent.partition_key} was never handed over "
                                     "(upload the clone once it is)")


def upload_session(s3, bucket: str, session: SessionKey, template: str, files: dict[str, bytes | Path],
                   clone_of: int | None = None, locale: str | None = None,
                   progress: Callable[[int], None] | None = None) -> str:
    """Upload the files (streamed: a file is never read whole into memory), then the manifest;
    returns the manifest key. The files and the manifest are judged (roles, then the published
    schema) before anything is written. If S3 fails part way, what this run uploaded is deleted
    again (ETag-guarded) and `UploadFailed` says whether anything was left behind."""
    prefix = session.upload_prefix
    doc = build_manifest(session, template, files, clone_of, locale)
    raw = json.dumps(doc, indent=2, sort_keys=True).encode()
    manifest = parse_manifest(prefix + "manifest.json", raw)  # refuse locally what the sensor would refuse
    unnamed = set(files) - {f.path for f in manifest.files}
    if unnamed:  # session_roles should make this impossible; never upload what no handover would take
        raise UnsupportedSession(f"the manifest would not name: {', '.join(sorted(unnamed))}")
    uploaded: list[tuple[str, str]] = []  # (key, ETag) written by this run
    current = manifest.key
    try:
        for path, body in files.items():
            current = prefix + path
            uploaded.append((current, _put(s3, bucket, current, body, progress)))
        current = manifest.key
        _put(s3, bucket, current, raw, None)
    except (ClientError, BotoCoreError, S3UploadFailedError, OSError, UploadFailed) as exc:
        raise UploadFailed(_failure(s3, bucket, current, exc, uploaded)) from exc
    return manifest.key


def _put(s3, bucket: str, key: str, body: bytes | Path, progress: Callable[[int], None] | None) -> str:
    """Stream one file to S3 (multipart when large, with S3 checking each part's SHA-256); its ETag."""
    extra = {"ContentType": media_type(key), "ChecksumAlgorithm": "SHA256"}
    if isinstance(body, Path):  # by name: parts are read from disk as they are sent, not buffered ahead
        s3.upload_file(str(body), bucket, key, ExtraArgs=extra, Config=TRANSFER, Callback=progress)
    else:
        s3.upload_fileobj(io.BytesIO(body), bucket, key, ExtraArgs=extra, Config=TRANSFER, Callback=progress)
    written = head(s3, bucket, key, checksum=False)
    if written is None:
        raise UploadFailed(f"s3://{bucket}/{key} is not there after its upload")
    return written["ETag"]


def _failure(s3, bucket: str, failed_key: str, exc: Exception, uploaded: list[tuple[str, str]]) -> str:
    """The one line of an upload that failed part way, after deleting what this run wrote
    (only while it is still what this run wrote: a newer object under a key is someone's)."""
    reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
    left = []
    for key, etag in uploaded:
        try:
            if not delete_if_unchanged(s3, bucket, key, etag):
                left.append(key)
        except (ClientError, BotoCoreError):
            left.append(key)
    said = f"upload failed at {failed_key} ({reason}); no manifest was written"
    if left:
        return f"{said}, and these files of this run could not be deleted and are left behind: {', '.join(left)}"
    return f"{said}; the {len(uploaded)} files uploaded before it were deleted again: nothing is left"


def total_size(files: dict[str, bytes | Path]) -> int:
    return sum(len(body) if isinstance(body, bytes) else body.stat().st_size for body in files.values())
