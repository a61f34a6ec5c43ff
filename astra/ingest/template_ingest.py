"""The template path of INGEST as plain functions: audit, atomize and store; then zone/style maps.

`ingest_template` runs before anything reaches CONFIG_SVC: it audits the upload (writing only
the audit report when it refuses), stores the atoms content-addressed and writes the atoms
manifest. `template_maps` rebuilds the template from its stored atoms — the durable copy, so the
temporary upload may be gone — and extracts the zone and style maps.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import re
from dataclasses import dataclass

from botocore.exceptions import ClientError

from astra.ingest.atoms import atomize, part_digests, reassemble
from astra.ingest.audit import AuditLimits, audit
from astra.ingest.errors import AuditRefused
from astra.ingest.store import BlobStore, atoms_manifest_key, blob_uri
from astra.ingest.zones import TemplateMaps, extract_maps
from astra.s3 import head, is_missing

# The names a session manifest may give as its `template` (session_manifest.schema.json): a template
# under any other name could never be used by a session.
TEMPLATE_NAME = r"[A-Za-z0-9][A-Za-z0-9._-]{0,119}"
TEMPLATE_KEY = re.compile(rf"(?P<tenant>[^/]+)/templates/(?P<name>{TEMPLATE_NAME})\.docx")
SIDECAR_SUFFIX = ".zones.json"


class TemplateInputError(ValueError):
    """The upload is not where or what it should be (wrong key, changed bytes, bad sidecar)."""


@dataclass(frozen=True)
class TemplateRef:
    tenant: str
    key: str
    name: str

    @classmethod
    def parse(cls, key: str) -> TemplateRef:
        m = TEMPLATE_KEY.fullmatch(key)
        if not m:
            raise TemplateInputError(f"not a template upload key: {key!r} (expected <tenant>/templates/<name>.docx, "
                                     "the name letters, digits, '.', '_' and '-')")
        return cls(m["tenant"], key, m["name"])

    @property
    def sidecar_key(self) -> str:
        return posixpath.join(posixpath.dirname(self.key), self.name + SIDECAR_SUFFIX)


@dataclass(frozen=True)
class TemplateIngestResult:
    tenant: str
    template_sha256: str
    size: int
    manifest: dict
    manifest_uri: str
    audit_report: dict
    audit_uri: str
    atoms_written: int
    atoms_already_stored: int
    bytes_written: int
    sidecar_sha256: str | None
    roundtrip_problems: list[str]  # empty: the stored atoms rebuild every part byte-identical


def _get(s3, bucket: str, key: str) -> bytes | None:
    """The object's bytes, or None when it is missing (a throttle or outage is raised, not "missing")."""
    try:
        return s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except ClientError as exc:
        if is_missing(exc):
            return None
        raise


def audit_report_key(tenant: str, sha256: str) -> str:
    return f"{tenant}/reports/audit/{sha256}.json"


def ingest_template(s3, uploads_bucket: str, assets_bucket: str, key: str, expected_sha256: str | None = None,
                    limits: AuditLimits = AuditLimits()) -> TemplateIngestResult:
    ref = TemplateRef.parse(key)
    found = head(s3, uploads_bucket, key, checksum=False)
    if found is None:
        raise TemplateInputError(f"s3://{uploads_bucket}/{key} is gone")
    size = found["ContentLength"]
    if size > limits.max_upload_bytes:  # refused before a byte of it is read into memory
        raise TemplateInputError(f"{key} is {size} bytes, over the {limits.max_upload_bytes}-byte upload limit")
    data = _get(s3, uploads_bucket, key)
    if data is None:
        raise TemplateInputError(f"s3://{uploads_bucket}/{key} is gone")
    sha = hashlib.sha256(data).hexdigest()
    if expected_sha256 and sha != expected_sha256:
        raise TemplateInputError(
            f"{key} changed since it was seen (sha256 {sha[:12]}…, expected {expected_sha256[:12]}…)"
        )
    store = BlobStore(s3, assets_bucket, ref.tenant)

    report = audit(data, filename=posixpath.basename(key), limits=limits)
    report_doc = {"template": key, "sha256": sha, "size": len(data), **report.to_dict()}
    audit_meta = store.put_json(audit_report_key(ref.tenant, sha), report_doc)
    if not report.passed:
        raise AuditRefused(report)

    sidecar_bytes = _get(s3, uploads_bucket, ref.sidecar_key)
    sidecar_sha = None
    if sidecar_bytes is not None:
        try:
            json.loads(sidecar_bytes)
        except (ValueError, RecursionError) as exc:
            raise TemplateInputError(f"sidecar {ref.sidecar_key} is not valid JSON: {exc}") from exc
        sidecar_sha = hashlib.sha256(sidecar_bytes).hexdigest()

    package = atomize(data)
    blobs = dict(package.atoms)
    if sidecar_bytes is not None:
        blobs[sidecar_sha] = sidecar_bytes
    stats = store.put_many(blobs)
    manifest = {
        **package.manifest,
        "tenant": ref.tenant,
        "template": {"key": key, "name": ref.name, "sha256": sha, "size": len(data)},
        "sidecar": {
            "key": ref.sidecar_key,
            "sha256": sidecar_sha,
            "uri": blob_uri(assets_bucket, ref.tenant, sidecar_sha),
        }
        if sidecar_sha
        else None,
        "audit": {"passed": True, "uri": audit_meta["uri"]},
    }
    manifest_meta = store.put_json(atoms_manifest_key(ref.tenant, sha), manifest)
    # Prove it from what was stored, not from memory: fetch the atoms back and rebuild.
    problems = roundtrip_problems(data, rebuild_template(s3, assets_bucket, ref.tenant, manifest))
    return TemplateIngestResult(
        tenant=ref.tenant,
        template_sha256=sha,
        size=len(data),
        manifest=manifest,
        manifest_uri=manifest_meta["uri"],
        audit_report=report_doc,
        audit_uri=audit_meta["uri"],
        atoms_written=stats.written,
        atoms_already_stored=stats.already_stored,
        bytes_written=stats.bytes_written,
        sidecar_sha256=sidecar_sha,
        roundtrip_problems=problems,
    )


def load_manifest(s3, assets_bucket: str, tenant: str, template_sha256: str) -> dict:
    return BlobStore(s3, assets_bucket, tenant).get_json(atoms_manifest_key(tenant, template_sha256))


def rebuild_template(s3, assets_bucket: str, tenant: str, manifest: dict) -> bytes:
    store = BlobStore(s3, assets_bucket, tenant)
    atoms = store.get_many([a["sha256"] for m in manifest["members"] for a in m["atoms"]])
    return reassemble(manifest, atoms.__getitem__)


def roundtrip_problems(original: bytes, rebuilt: bytes) -> list[str]:
    """Why a rebuilt package is not lossless (empty when every part and the member order match)."""
    a, b = part_digests(original), part_digests(rebuilt)
    problems = []
    if list(a) != list(b):
        problems.append(f"member order or names differ: {list(a)[:5]}… vs {list(b)[:5]}…")
    problems += [f"{name}: bytes differ" for name in a if name in b and a[name] != b[name]]
    return problems


def template_maps(
    s3, assets_bucket: str, tenant: str, template_sha256: str, known_intents: set[str] | None
) -> tuple[TemplateMaps, dict]:
    manifest = load_manifest(s3, assets_bucket, tenant, template_sha256)
    # Rebuilt from the durable atoms (reassemble checks every part's sha256); the zip container
    # may be re-deflated, so its own hash can differ from template_sha256 while the parts do not.
    data = rebuild_template(s3, assets_bucket, tenant, manifest)
    sidecar = None
    if manifest.get("sidecar"):
        sidecar = json.loads(BlobStore(s3, assets_bucket, tenant).get(manifest["sidecar"]["sha256"]))
    return extract_maps(data, sidecar, known_intents), manifest
