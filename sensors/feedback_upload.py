"""`feedback_upload_sensor`: a user's edited document → a run of `comparison_report` for its session version.

Scans `<tenant>/feedback/` with `astra.uploads.scan` (bounded work per tick, tenants in turn), reacting to
`<tenant>/feedback/<session_id>/v<n>.docx`. An optional `v<n>.corrections.json` beside it is written BEFORE the
.docx: the .docx arriving means the feedback is complete (as manifest.json for a session), so the sensor reads
whatever corrections are there when it sees the .docx and pins both (ETag, and S3 version when the bucket keeps
versions); a corrections file changed later is not read by that run. To send other corrections, upload the
corrections and then the .docx again.

run_key = `<partition key>-feedback-<.docx ETag>[-<corrections ETag>]`: the same upload twice runs once. Refused
before any run, as one `upload_quarantine` observation with the reason (the upload left as it is): a key that is not
a feedback key or names no valid session version, a .docx over the upload limit, and feedback on a session version
that has no document (neither document_binary nor v2_clone_binary materialized). Runs that failed for a transient
reason are offered again (sensors/reoffer.py).
"""

from __future__ import annotations

from dagster import (
    AssetObservation,
    AssetRecordsFilter,
    DagsterInstance,
    DefaultSensorStatus,
    RunConfig,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)
from dagster_aws.s3 import S3Resource

from astra.s3 import head
from astra.tenancy import InvalidKey, SessionKey
from astra.uploads import MeteredS3, UploadObject, scan
from astra_assets.builder import document_binary, v2_clone_binary
from astra_assets.learn import (
    MAX_FEEDBACK_BYTES,
    FeedbackConfig,
    comparison_report,
    corrections_key,
    feedback_session,
    feedback_upload,
)
from astra_assets.partitions import sessions_partitions
from resources import StorageLayout
from sensors.cursor import UploadCursor
from sensors.quarantine import RefusedBefore, quarantine_event
from sensors.reoffer import reoffers


def _accept(key: str) -> bool:
    return key.endswith(".docx")


def has_document(instance: DagsterInstance, partition: str) -> bool:
    """Whether the session version's document was built (what its feedback is compared with)."""
    if not instance.has_dynamic_partition(sessions_partitions.name, partition):
        return False
    return any(instance.fetch_materializations(AssetRecordsFilter(asset_key=key, asset_partitions=[partition]),
                                               limit=1).records
               for key in (document_binary.key, v2_clone_binary.key))


class FeedbackJudge:
    """Judges each new feedback document: a run request, or a quarantine observation."""

    def __init__(self, context: SensorEvaluationContext, client: MeteredS3, bucket: str):
        self.context, self.client, self.bucket = context, client, bucket
        self.run_requests: list[RunRequest] = []
        self.events: list[AssetObservation] = []

    def quarantine(self, obj: UploadObject, reason: str) -> bool:
        self.context.log.warning(f"quarantined {obj.key}: {reason}")
        self.events.append(quarantine_event(self.bucket, obj.key, reason, etag=obj.etag))
        return True

    def __call__(self, obj: UploadObject) -> bool:
        try:
            session = feedback_session(obj.key)
        except InvalidKey as exc:
            return self.quarantine(obj, str(exc))
        if obj.size > MAX_FEEDBACK_BYTES:  # never read: refused as it stands
            return self.quarantine(obj, f"feedback is {obj.size} bytes, over the {MAX_FEEDBACK_BYTES}-byte limit")
        pk = session.partition_key
        if not has_document(self.context.instance, pk):
            return self.quarantine(obj, f"session version {pk} has no document (neither document_binary nor "
                                   "v2_clone_binary): feedback is compared with the binary its version produced")
        try:
            found = head(self.client, self.bucket, obj.key, checksum=False)
            sidecar = head(self.client, self.bucket, corrections_key(obj.key), checksum=False)
        except Exception as exc:  # noqa: BLE001 — S3 throttling or an outage: judge it on a later sweep
            self.context.log.warning(f"could not read {obj.key} ({type(exc).__name__}: {exc}); retrying later")
            return False
        if found is None:
            return True  # deleted since the listing: nothing to compare
        if found["ETag"].strip('"') != obj.etag:
            return False  # replaced since the listing: the next sweep sees the new one
        self.request(obj, session, found, sidecar)
        return True

    def request(self, obj: UploadObject, session: SessionKey, found: dict, sidecar: dict | None) -> None:
        pk = session.partition_key
        sidecar_etag = sidecar["ETag"].strip('"') if sidecar else None
        config = FeedbackConfig(
            feedback_key=obj.key, etag=obj.etag, version_id=found.get("VersionId"),
            corrections_key=corrections_key(obj.key) if sidecar else None, corrections_etag=sidecar_etag,
            corrections_version_id=sidecar.get("VersionId") if sidecar else None)
        self.events.append(AssetObservation(asset_key=feedback_upload.key, partition=pk, metadata={
            "key": obj.key, "etag": obj.etag, "size": obj.size, "corrections_key": config.corrections_key or "none"}))
        self.run_requests.append(RunRequest(
            run_key=f"{pk}-feedback-{obj.etag}" + (f"-{sidecar_etag}" if sidecar_etag else ""),
            partition_key=pk,
            asset_selection=[comparison_report.key],
            run_config=RunConfig(ops={"comparison_report": config}),
            tags={"astra/tenant": session.tenant, "astra/session": pk},
        ))


@sensor(
    name="feedback_upload_sensor",
    asset_selection=[comparison_report],
    minimum_interval_seconds=10,
    default_status=DefaultSensorStatus.RUNNING,
    description="Polls <tenant>/feedback/ in the uploads bucket (bounded, fair across tenants) and compares each "
    "edited document with the binary its session version produced.",
)
def feedback_upload_sensor(context: SensorEvaluationContext, s3: S3Resource, storage: StorageLayout):
    cursor = UploadCursor.load(context.cursor)
    client = MeteredS3(s3.get_client())
    judge = FeedbackJudge(context, client, storage.uploads_bucket)
    result = scan(client, storage.uploads_bucket, "feedback", cursor.scan, judge=judge, accept=_accept,
                  settled=RefusedBefore(context.instance))
    retries, cursor.reoffer = reoffers(context, cursor.reoffer)
    run_requests = judge.run_requests + retries
    skip = None if run_requests or judge.events else SkipReason(
        f"no new feedback ({len(result.tenants_visited)} tenants visited)"
        + (" (tick budget spent: continuing next tick)" if result.out_of_budget else ""))
    return SensorResult(run_requests=run_requests, cursor=cursor.dump(), asset_events=judge.events, skip_reason=skip)
