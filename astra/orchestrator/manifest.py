"""Session manifests: the published JSON Schema, parsing, and the rules a key must follow.

A manifest is judged before any run exists: it must be JSON, pass the schema, agree with the
key it was uploaded under (tenant, session id, version), fit the partition key rules, and every
file it names must be in the bucket. A manifest that fails gets a `ManifestRejected` with the
reason; the caller records it and leaves the upload untouched. Patterns are applied whole
(`fullmatch`), and a control character anywhere (a key, any string of the manifest) is refused,
so `v1\n` never aliases `v1`. Versions are integers as written: JSON Schema takes `1.0` for the
integer 1, this module does not. Audio is optional: a data-only session is a session.
"""

from __future__ import annotations

import hashlib
import json
import mimetypes
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from botocore.exceptions import ClientError
from jsonschema import Draft202012Validator, FormatChecker

from astra.s3 import head, is_missing
from astra.tenancy import InvalidKey, SessionKey, control_characters

FOLDER_PAGES = 3  # listings of a session's folder before the files still unaccounted for are HEADed

SCHEMA_PATH = Path(__file__).with_name("schemas") / "session_manifest.schema.json"
MANIFEST_KEY = re.compile(r"(?P<tenant>[^/]+)/sessions/(?P<session>[^/]+)/(?P<folder>[^/]+)/manifest\.json")
VERSION_FOLDER = re.compile(r"v(?P<version>[1-9][0-9]*)", re.ASCII)  # v1, v2…: not v01, not other digits
VERSION_FIELDS = (("version",), ("clone_of", "version"))
MAX_MANIFEST_BYTES = 1 << 20
MEDIA_TYPES = {".wav": "audio/wav", ".ogg": "audio/ogg", ".mp3": "audio/mpeg", ".m4a": "audio/mp4",
               ".csv": "text/csv", ".json": "application/json", ".txt": "text/plain", ".vtt": "text/vtt",
               ".xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"}


class ManifestRejected(ValueError):
    def __init__(self, key: str, reason: str):
        super().__init__(f"{key}: {reason}")
        self.key, self.reason = key, reason


@lru_cache(maxsize=1)
def validator() -> Draft202012Validator:
    schema = json.loads(SCHEMA_PATH.read_text())
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, format_checker=FormatChecker())


@dataclass(frozen=True)
class SessionFile:
    role: str  # audio | transcript | data | media
    path: str  # relative to the version folder, e.g. data/readings.csv
    key: str  # full key in the uploads bucket
    media_type: str


@dataclass(frozen=True)
class SessionManifest:
    key: str  # the manifest's key in the uploads bucket
    sha256: str
    document: dict
    session: SessionKey

    @property
    def prefix(self) -> str:
        return self.key[: -len("manifest.json")]

    @property
    def files(self) -> list[SessionFile]:
        doc = self.document
        named = [("audio", doc.get("audio")), ("transcript", doc.get("transcript"))]
        named += [("data", p) for p in doc["data"]] + [("media", p) for p in doc["media"]]
        return [SessionFile(role, path, self.prefix + path, media_type(path)) for role, path in named if path]

    @property
    def audio(self) -> SessionFile | None:
        return next((f for f in self.files if f.role == "audio"), None)


def media_type(path: str) -> str:
    suffix = Path(path).suffix.lower()
    return MEDIA_TYPES.get(suffix) or mimetypes.guess_type(path)[0] or "application/octet-stream"


def file_patterns() -> dict[str, re.Pattern]:
    """The schema's pattern for each role's paths (audio, transcript, data, media), to fullmatch."""
    props = validator().schema["properties"]
    return {role: re.compile((props[role].get("items") or props[role])["pattern"])
            for role in ("audio", "transcript", "data", "media")}


def manifest_session(key: str) -> SessionKey:
    """The session a manifest key names, checked against the partition key rules."""
    if control_characters(key):
        raise ManifestRejected(key, f"the key holds control characters ({', '.join(control_characters(key))})")
    m = MANIFEST_KEY.fullmatch(key)
    if not m:
        raise ManifestRejected(key, "not a manifest key: expected <tenant>/sessions/<session_id>/v<n>/manifest.json")
    folder = VERSION_FOLDER.fullmatch(m["folder"])
    if not folder:
        raise ManifestRejected(key, f"version folder {m['folder']!r} is not v<n> (n = 1, 2, … without leading zeros)")
    try:
        return SessionKey(m["tenant"], m["session"], int(folder["version"]))
    except InvalidKey as exc:
        raise ManifestRejected(key, str(exc)) from None


def parse_manifest(key: str, raw: bytes) -> SessionManifest:
    """Judge a manifest by itself and its key (not yet whether its files exist)."""
    session = manifest_session(key)
    if len(raw) > MAX_MANIFEST_BYTES:
        raise ManifestRejected(key, f"manifest is {len(raw)} bytes, more than {MAX_MANIFEST_BYTES}")
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # bad UTF-8 or JSON; absurd nesting
        raise ManifestRejected(key, f"not valid JSON: {type(exc).__name__}: {str(exc)[:200]}") from None
    check_schema(key, doc)
    for field, in_key in (("tenant", session.tenant), ("session_id", session.session_id), ("version", session.version)):
        if doc[field] != in_key:
            raise ManifestRejected(key, f"{field} {doc[field]!r} does not match the upload key ({in_key!r})")
    clone = doc.get("clone_of")
    if clone and clone["version"] >= session.version:
        raise ManifestRejected(key, f"clone_of version {clone['version']} must be lower than {session.version}")
    return SessionManifest(key, hashlib.sha256(raw).hexdigest(), doc, session)


def _control_characters_anywhere(value, where: str = "") -> list[str]:
    """`where: characters` for each string (member names too) of the document holding a control character."""
    if isinstance(value, str):
        return [f"{where or '(root)'}: {', '.join(control_characters(value))}"] if control_characters(value) else []
    if isinstance(value, list):
        return [bad for i, item in enumerate(value)
                for bad in _control_characters_anywhere(item, f"{where}/{i}".lstrip("/"))]
    if isinstance(value, dict):
        found = []
        for name, item in value.items():
            path = f"{where}/{name}".lstrip("/")
            found += _control_characters_anywhere(name, f"{path} (the name)") + _control_characters_anywhere(item, path)
        return found
    return []


def _fractional_versions(doc: dict) -> list[str]:
    """Version fields written as a float (`1.0`): the schema's "integer" lets them through."""
    found = []
    for path in VERSION_FIELDS:
        value = doc
        for name in path:
            value = value.get(name) if isinstance(value, dict) else None
        if isinstance(value, float):
            found.append(f"{'/'.join(path)}: {value!r} is not an integer (write {int(value)})"
                         if value.is_integer() else f"{'/'.join(path)}: {value!r} is not an integer")
    return found


def check_schema(key: str, doc) -> None:
    """The published schema, with a readable reason for its two least readable refusals, and the two
    rules JSON Schema cannot state: no control character anywhere, versions as integers."""
    if bad := _control_characters_anywhere(doc):
        raise ManifestRejected(key, f"schema: control characters in {'; '.join(bad)}")
    problems = sorted(validator().iter_errors(doc), key=lambda e: list(e.absolute_path))
    if problems:
        first = problems[0]
        where = "/".join(str(p) for p in first.absolute_path) or "(root)"
        if first.validator == "anyOf" and not first.absolute_path:
            raise ManifestRejected(key, "schema: names no file: a session has audio, a transcript, data or media")
        raise ManifestRejected(key, f"schema: {where}: {first.message}")
    if fractional := _fractional_versions(doc):
        raise ManifestRejected(key, f"schema: {'; '.join(fractional)}")


def absent_files(s3, bucket: str, manifest: SessionManifest) -> list[str]:
    """The named files that are not in the bucket, found by listing the version folder (one
    request for a real session, however many files a manifest names); only files still
    unaccounted for after FOLDER_PAGES pages are HEADed. Only S3's "not found" counts as absent:
    a throttle or an outage raises, and the caller judges the manifest again later."""
    wanted = {f.key: f.path for f in manifest.files}
    kwargs = {"Bucket": bucket, "Prefix": manifest.prefix}
    for _ in range(FOLDER_PAGES):
        page = s3.list_objects_v2(**kwargs)
        for obj in page.get("Contents", []):
            wanted.pop(obj["Key"], None)
        if not wanted or not page.get("IsTruncated"):
            return sorted(wanted.values())
        kwargs["ContinuationToken"] = page["NextContinuationToken"]
    return sorted(path for key, path in wanted.items() if head(s3, bucket, key, checksum=False) is None)


def load_manifest(s3, bucket: str, key: str) -> SessionManifest:
    """The manifest under `key`, judged: key, size, schema, ids, and every named file present.
    The sensor judges with it before launching a run, and the handover again before it acts."""
    manifest_session(key)  # judge the key before reading anything
    try:
        obj = s3.get_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if is_missing(exc):
            raise ManifestRejected(key, "the manifest is gone") from None
        raise
    if obj["ContentLength"] > MAX_MANIFEST_BYTES:
        obj["Body"].close()
        raise ManifestRejected(key, f"manifest is {obj['ContentLength']} bytes, more than {MAX_MANIFEST_BYTES}")
    manifest = parse_manifest(key, obj["Body"].read())
    missing = absent_files(s3, bucket, manifest)
    if missing:
        raise ManifestRejected(key, f"names files that are not uploaded: {', '.join(missing)}")
    return manifest
