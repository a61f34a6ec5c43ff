"""`template_upload_sensor`: new or changed templates in the uploads bucket → template runs.

Cursor-based (astra.uploads.scan): one page of tenants per tick, only their templates/ area.
run_key = tenant + template sha256 (+ sidecar sha256): the same bytes re-uploaded run once, a
changed template or sidecar runs again.
"""

import base64
import hashlib

from dagster import (
    AssetObservation,
    DefaultSensorStatus,
    RunConfig,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)
from dagster_aws.s3 import S3Resource

from astra.ingest.template_ingest import SIDECAR_SUFFIX, TemplateRef
from astra.tenancy import InvalidKey, validate_slug
from astra.uploads import scan
from astra_assets.config import tenant_config
from astra.ingest.audit import AuditLimits
from astra_assets.ingest import TemplateUploadConfig, template_atoms, template_upload
from astra_assets.orchestrator import upload_quarantine
from astra_assets.partitions import tenants_partitions
from resources import StorageLayout
from sensors.partitions import add_new_partitions


def object_sha256(client, bucket: str, key: str) -> str | None:
    """The object's SHA-256: its S3 checksum when it carries a full-object one, else hashed here.
    None when the object is gone; other S3 errors raise."""
    try:
        head = client.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
    except client.exceptions.ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return None
        raise
    checksum = head.get("ChecksumSHA256")
    if checksum and "-" not in checksum and head.get("ChecksumType", "FULL_OBJECT") == "FULL_OBJECT":
        return base64.b64decode(checksum).hex()
    digest = hashlib.sha256()
    for chunk in client.get_object(Bucket=bucket, Key=key)["Body"].iter_chunks(1 << 20):
        digest.update(chunk)
    return digest.hexdigest()


def _accept(key: str) -> bool:
    return key.endswith(".docx") or key.endswith(SIDECAR_SUFFIX)


@sensor(
    name="template_upload_sensor",
    asset_selection=[template_atoms, tenant_config],
    minimum_interval_seconds=10,
    default_status=DefaultSensorStatus.RUNNING,
    description="Polls <tenant>/templates/ in the uploads bucket (cursor-based) and ingests new templates.",
)
def template_upload_sensor(context: SensorEvaluationContext, s3: S3Resource, storage: StorageLayout):
    client = s3.get_client()
    result = scan(client, storage.uploads_bucket, "templates", context.cursor, accept=_accept)
    templates: dict[str, TemplateRef] = {}
    observations: list[AssetObservation] = []

    def quarantine(obj, reason: str) -> None:
        context.log.warning(f"quarantined {obj.key}: {reason}")
        observations.append(AssetObservation(asset_key=upload_quarantine.key, metadata={
            "key": obj.key, "etag": obj.etag, "bucket": storage.uploads_bucket, "reason": reason}))

    limit = AuditLimits().max_upload_bytes
    for obj in result.objects:
        key = obj.key[: -len(SIDECAR_SUFFIX)] + ".docx" if obj.key.endswith(SIDECAR_SUFFIX) else obj.key
        try:
            ref = TemplateRef.parse(key)
            validate_slug(ref.tenant)
        except (ValueError, InvalidKey) as exc:
            quarantine(obj, str(exc))
            continue
        if obj.key == key and obj.size > limit:  # never hashed or read: refused as it stands
            quarantine(obj, f"template is {obj.size} bytes, over the {limit}-byte upload limit")
            continue
        templates[key] = ref

    run_requests, tenants = [], set()
    for key, ref in sorted(templates.items()):
        try:
            sha = object_sha256(client, storage.uploads_bucket, key)
            sidecar_sha = object_sha256(client, storage.uploads_bucket, ref.sidecar_key) if sha else None
        except Exception as exc:  # noqa: BLE001 — throttling or an outage: judge it on a later tick
            context.log.warning(f"could not read {key} ({type(exc).__name__}: {exc}); retrying next tick")
            for obj in result.objects:
                if obj.key in (key, ref.sidecar_key):
                    result.retry_later(obj)
            continue
        if sha is None:
            continue  # a sidecar without its template (yet)
        run_key = f"{ref.tenant}-{sha}" + (f"-{sidecar_sha}" if sidecar_sha else "")
        tenants.add(ref.tenant)
        observations.append(AssetObservation(
            asset_key=template_upload.key, partition=ref.tenant,
            metadata={"key": key, "sha256": sha, "sidecar_sha256": sidecar_sha or "none"},
        ))
        run_requests.append(RunRequest(
            run_key=run_key,
            partition_key=ref.tenant,
            run_config=RunConfig(ops={"template_atoms": TemplateUploadConfig(key=key, sha256=sha)}),
            tags={"astra/tenant": ref.tenant, "astra/template-tenant": ref.tenant, "astra/template_key": key,
                  "astra/template_sha256": sha},
        ))
    if not run_requests and not observations:
        return SensorResult(skip_reason=SkipReason(f"no new templates ({len(result.tenants_scanned)} tenants scanned)"),
                            cursor=result.cursor)
    return SensorResult(
        run_requests=run_requests,
        cursor=result.cursor,
        dynamic_partitions_requests=add_new_partitions(context, tenants_partitions, sorted(tenants)),
        asset_events=observations,
    )
