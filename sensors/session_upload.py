"""`session_upload_sensor`: a complete session (its manifest arrived) → a handover run.

Cursor-based (astra.uploads.scan) over `<tenant>/sessions/` only, reacting to manifest.json,
which clients write last. run_key = `<partition key>-<manifest sha256>`: the same manifest twice
runs once. A manifest that fails the schema, names missing files or whose ids break the key
rules produces no run: it is reported as an observation of `upload_quarantine` with the reason,
and the upload is left as it is.
"""

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

from astra.orchestrator.manifest import ManifestRejected, load_manifest
from astra.uploads import scan
from astra_assets.guard import custody_audio
from astra_assets.orchestrator import SessionManifestConfig, session_handover, session_upload, upload_quarantine
from astra_assets.partitions import sessions_partitions
from resources import StorageLayout
from sensors.partitions import add_new_partitions


@sensor(
    name="session_upload_sensor",
    asset_selection=[session_handover, custody_audio],
    minimum_interval_seconds=10,
    default_status=DefaultSensorStatus.RUNNING,
    description="Polls <tenant>/sessions/ in the uploads bucket (cursor-based) and hands over complete sessions.",
)
def session_upload_sensor(context: SensorEvaluationContext, s3: S3Resource, storage: StorageLayout):
    client = s3.get_client()
    result = scan(client, storage.uploads_bucket, "sessions", context.cursor,
                  accept=lambda key: key.endswith("/manifest.json"))
    run_requests, events, partitions = [], [], []
    for obj in result.objects:
        try:
            manifest = load_manifest(client, storage.uploads_bucket, obj.key)
        except ManifestRejected as rejected:
            context.log.warning(f"quarantined {obj.key}: {rejected.reason}")
            events.append(AssetObservation(asset_key=upload_quarantine.key, metadata={
                "key": obj.key, "etag": obj.etag, "reason": rejected.reason, "bucket": storage.uploads_bucket}))
            continue
        except Exception as exc:  # noqa: BLE001 — S3 throttling or an outage: judge it on a later tick
            context.log.warning(f"could not read {obj.key} ({type(exc).__name__}: {exc}); retrying next tick")
            result.retry_later(obj)
            continue
        pk = manifest.session.partition_key
        partitions.append(pk)
        events.append(AssetObservation(asset_key=session_upload.key, partition=pk, metadata={
            "manifest_key": obj.key, "manifest_sha256": manifest.sha256, "files": len(manifest.files)}))
        run_requests.append(RunRequest(
            run_key=f"{pk}-{manifest.sha256}",
            partition_key=pk,
            run_config=RunConfig(ops={"session_handover": SessionManifestConfig(
                manifest_key=obj.key, manifest_sha256=manifest.sha256)}),
            tags={"astra/tenant": manifest.session.tenant, "astra/session": pk},
        ))
    return SensorResult(
        run_requests=run_requests,
        cursor=result.cursor,
        dynamic_partitions_requests=add_new_partitions(context, sessions_partitions, partitions),
        asset_events=events,
        skip_reason=None if run_requests or events else
        SkipReason(f"no new sessions ({len(result.tenants_scanned)} tenants scanned)"),
    )
