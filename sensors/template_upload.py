"""`template_upload_sensor`: new or changed templates in the uploads bucket → template runs.

Scans `<tenant>/templates/` with `astra.uploads.scan` (bounded work per tick, tenants in turn).
run_key = tenant + template sha256 (+ sidecar sha256): the same bytes re-uploaded run once, a
changed template or sidecar runs again. Keys outside the rules and oversized templates are
quarantined (an `upload_quarantine` observation) without being read. Runs that failed for a
transient reason are offered again (sensors/reoffer.py).
"""

from __future__ import annotations

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

from astra.ingest.audit import AuditLimits
from astra.ingest.template_ingest import SIDECAR_SUFFIX, TemplateRef
from astra.s3 import object_sha256
from astra.tenancy import InvalidKey, validate_slug
from astra.uploads import MeteredS3, UploadObject, scan
from astra_assets.config import tenant_config
from astra_assets.ingest import TemplateUploadConfig, template_atoms, template_upload
from astra_assets.partitions import tenants_partitions
from resources import StorageLayout
from sensors.cursor import UploadCursor
from sensors.partitions import add_new_partitions
from sensors.quarantine import RefusedBefore, quarantine_event
from sensors.reoffer import reoffers


def _accept(key: str) -> bool:
    return key.endswith(".docx") or key.endswith(SIDECAR_SUFFIX)


def _template_key(key: str) -> str:
    return key[: -len(SIDECAR_SUFFIX)] + ".docx" if key.endswith(SIDECAR_SUFFIX) else key


class TemplateJudge:
    """Judges each new template or sidecar: a run request for its template, or a quarantine."""

    def __init__(self, context: SensorEvaluationContext, client: MeteredS3, bucket: str):
        self.context, self.client, self.bucket = context, client, bucket
        self.limit = AuditLimits().max_upload_bytes
        self.requests: dict[str, RunRequest] = {}  # template key -> its run request this tick
        self.events: list[AssetObservation] = []
        self.tenants: set[str] = set()

    def quarantine(self, obj: UploadObject, reason: str) -> bool:
        self.context.log.warning(f"quarantined {obj.key}: {reason}")
        self.events.append(quarantine_event(self.bucket, obj.key, reason, etag=obj.etag))
        return True

    def __call__(self, obj: UploadObject) -> bool:
        key = _template_key(obj.key)
        try:
            ref = TemplateRef.parse(key)
            validate_slug(ref.tenant)
        except (ValueError, InvalidKey) as exc:
            return self.quarantine(obj, str(exc))
        if obj.key == key and obj.size > self.limit:  # never hashed or read: refused as it stands
            return self.quarantine(obj, f"template is {obj.size} bytes, over the {self.limit}-byte upload limit")
        if key in self.requests:
            return True  # its template or sidecar was judged a moment ago
        try:
            sha = object_sha256(self.client, self.bucket, key)
            sidecar_sha = object_sha256(self.client, self.bucket, ref.sidecar_key) if sha else None
        except Exception as exc:  # noqa: BLE001 — throttling or an outage: judge it on a later sweep
            self.context.log.warning(f"could not read {key} ({type(exc).__name__}: {exc}); retrying later")
            return False
        if sha is None:
            return True  # a sidecar without its template (yet): the template's arrival is judged then
        self.request(key, ref, sha, sidecar_sha)
        return True

    def request(self, key: str, ref: TemplateRef, sha: str, sidecar_sha: str | None) -> None:
        self.tenants.add(ref.tenant)
        self.events.append(AssetObservation(
            asset_key=template_upload.key, partition=ref.tenant,
            metadata={"key": key, "sha256": sha, "sidecar_sha256": sidecar_sha or "none"},
        ))
        self.requests[key] = RunRequest(
            run_key=f"{ref.tenant}-{sha}" + (f"-{sidecar_sha}" if sidecar_sha else ""),
            partition_key=ref.tenant,
            run_config=RunConfig(ops={"template_atoms": TemplateUploadConfig(key=key, sha256=sha)}),
            tags={"astra/tenant": ref.tenant, "astra/template-tenant": ref.tenant, "astra/template_key": key,
                  "astra/template_sha256": sha},
        )


@sensor(
    name="template_upload_sensor",
    asset_selection=[template_atoms, tenant_config],
    minimum_interval_seconds=10,
    default_status=DefaultSensorStatus.RUNNING,
    description="Polls <tenant>/templates/ in the uploads bucket (bounded, fair across tenants) and ingests "
    "new templates.",
)
def template_upload_sensor(context: SensorEvaluationContext, s3: S3Resource, storage: StorageLayout):
    cursor = UploadCursor.load(context.cursor)
    client = MeteredS3(s3.get_client())
    judge = TemplateJudge(context, client, storage.uploads_bucket)
    result = scan(client, storage.uploads_bucket, "templates", cursor.scan, judge=judge, accept=_accept,
                  settled=RefusedBefore(context.instance))
    retries, cursor.reoffer = reoffers(context, cursor.reoffer)
    run_requests = [judge.requests[k] for k in sorted(judge.requests)] + retries
    skip = None if run_requests or judge.events else SkipReason(
        f"no new templates ({len(result.tenants_visited)} tenants visited)"
        + (" (tick budget spent: continuing next tick)" if result.out_of_budget else ""))
    return SensorResult(
        run_requests=run_requests,
        cursor=cursor.dump(),
        dynamic_partitions_requests=add_new_partitions(context, tenants_partitions, sorted(judge.tenants)),
        asset_events=judge.events,
        skip_reason=skip,
    )
