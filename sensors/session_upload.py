"""`session_upload_sensor`: a complete session (its manifest arrived) → a run that hands it over, then reads
what was said (`transcript`), binds it to the template's zones (`intent_output`) and builds the document
(`document_binary`): no manual step. A V2 clone's run (`clone_of` in its manifest) hands it over and builds its
document from its parent version's inputs (`v2_clone_binary`) instead: the run selects per manifest, so each
run shows exactly the assets its session gets.

Scans `<tenant>/sessions/` with `astra.uploads.scan` (bounded work per tick, tenants in turn),
reacting to manifest.json, which clients write last. run_key = `<partition key>-<manifest
sha256>`: the same manifest twice runs once. A manifest that fails the schema, names missing files
or whose ids break the key rules produces no run: it is reported once as an observation of
`upload_quarantine` with the reason, and the upload is left as it is.

A tenant with no config yet gets no run (it could only fail): its sessions wait, the sensor says
so (a log line, the skip reason, and one `upload_quarantine` observation when the tenant starts
waiting), and they are handed over on the first tick after the tenant's config is published.
Runs that failed for a transient reason are offered again (sensors/reoffer.py).
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

from astra.config_svc import TenantNotFound
from astra.orchestrator.manifest import ManifestRejected, load_manifest
from astra.tenancy import InvalidKey, validate_slug
from astra.uploads import MeteredS3, UploadObject, scan
from astra_assets.builder import document_binary, v2_clone_binary
from astra_assets.core import intent_output, transcript
from astra_assets.guard import custody_audio
from astra_assets.orchestrator import SessionManifestConfig, session_handover, session_upload
from astra_assets.partitions import sessions_partitions
from resources import ConfigStoreResource, StorageLayout
from sensors.cursor import UploadCursor
from sensors.partitions import add_new_partitions
from sensors.quarantine import RefusedBefore, quarantine_event
from sensors.reoffer import reoffers

NO_CONFIG = "no config yet: ingest the tenant's template first"
SESSION_ASSETS = [session_handover, custody_audio, transcript, intent_output, document_binary]
# A clone's words, data and media are its parent's: it gets no transcript or intent output of its own.
CLONE_ASSETS = [session_handover, custody_audio, v2_clone_binary]


class ConfigGate:
    """`ready(tenant)` for the scanner: why a tenant's sessions must wait, or None. One CONFIG_SVC
    read per tenant per tick (Redis, else Postgres)."""

    def __init__(self, config_store: ConfigStoreResource):
        self.config_store = config_store
        self.service = None
        self.answers: dict[str, str | None] = {}

    def __call__(self, tenant: str) -> str | None:
        if tenant not in self.answers:
            self.answers[tenant] = self.check(tenant)
        return self.answers[tenant]

    def check(self, tenant: str) -> str | None:
        try:
            validate_slug(tenant)
        except InvalidKey:
            return None  # its manifests are refused on their keys: let them be judged
        try:
            self.service = self.service or self.config_store.service()
            self.service.snapshot(tenant)
        except TenantNotFound:
            return NO_CONFIG
        except Exception as exc:  # noqa: BLE001 — Postgres down: a run would fail too; ask next tick
            return f"cannot read the tenant's config ({type(exc).__name__}: {exc}); retrying next tick"
        return None


class SessionJudge:
    """Judges each new manifest: a run request, or a quarantine observation."""

    def __init__(self, context: SensorEvaluationContext, client: MeteredS3, bucket: str):
        self.context, self.client, self.bucket = context, client, bucket
        self.run_requests: list[RunRequest] = []
        self.events: list[AssetObservation] = []
        self.partitions: list[str] = []

    def __call__(self, obj: UploadObject) -> bool:
        try:
            manifest = load_manifest(self.client, self.bucket, obj.key)
        except ManifestRejected as rejected:
            self.context.log.warning(f"quarantined {obj.key}: {rejected.reason}")
            self.events.append(quarantine_event(self.bucket, obj.key, rejected.reason, etag=obj.etag))
            return True
        except Exception as exc:  # noqa: BLE001 — S3 throttling or an outage: judge it on a later sweep
            self.context.log.warning(f"could not read {obj.key} ({type(exc).__name__}: {exc}); retrying later")
            return False
        pk = manifest.session.partition_key
        self.partitions.append(pk)
        self.events.append(AssetObservation(asset_key=session_upload.key, partition=pk, metadata={
            "manifest_key": obj.key, "manifest_sha256": manifest.sha256, "files": len(manifest.files)}))
        selected = CLONE_ASSETS if manifest.document.get("clone_of") else SESSION_ASSETS
        self.run_requests.append(RunRequest(
            run_key=f"{pk}-{manifest.sha256}",
            partition_key=pk,
            asset_selection=[a.key for a in selected],
            run_config=RunConfig(ops={"session_handover": SessionManifestConfig(
                manifest_key=obj.key, manifest_sha256=manifest.sha256)}),
            tags={"astra/tenant": manifest.session.tenant, "astra/session": pk},
        ))
        return True


def waiting_observations(context: SensorEvaluationContext, bucket: str, result) -> list[AssetObservation]:
    """Say which tenants' sessions wait and why: a log line every tick, an observation once."""
    events = []
    for tenant, why in sorted(result.waiting.items()):
        context.log.warning(f"sessions of tenant {tenant!r} wait: {why}")
        if tenant in result.newly_waiting:
            events.append(quarantine_event(bucket, f"{tenant}/sessions/", f"tenant {tenant!r}: {why}", waiting=True))
    return events


def skip_reason(result) -> SkipReason:
    waiting = "; ".join(f"tenant {t!r} waits: {why}" for t, why in sorted(result.waiting.items()))
    budget = " (tick budget spent: continuing next tick)" if result.out_of_budget else ""
    return SkipReason(f"no new sessions ({len(result.tenants_visited)} tenants visited){budget}"
                      + (f"; {waiting}" if waiting else ""))


@sensor(
    name="session_upload_sensor",
    asset_selection=list(dict.fromkeys(SESSION_ASSETS + CLONE_ASSETS)),
    minimum_interval_seconds=10,
    default_status=DefaultSensorStatus.RUNNING,
    description="Polls <tenant>/sessions/ in the uploads bucket (bounded, fair across tenants) and hands over "
    "complete sessions of tenants that have a config; the same run reads what was said (transcript), binds it "
    "to the template's zones (intent_output) and builds the document (document_binary). A V2 clone's run builds "
    "v2_clone_binary from its parent version's inputs instead.",
)
def session_upload_sensor(context: SensorEvaluationContext, s3: S3Resource, storage: StorageLayout,
                          config_store: ConfigStoreResource):
    cursor = UploadCursor.load(context.cursor)
    client = MeteredS3(s3.get_client())
    judge = SessionJudge(context, client, storage.uploads_bucket)
    result = scan(client, storage.uploads_bucket, "sessions", cursor.scan, judge=judge,
                  accept=lambda key: key.endswith("/manifest.json"), ready=ConfigGate(config_store),
                  settled=RefusedBefore(context.instance))
    retries, cursor.reoffer = reoffers(context, cursor.reoffer)
    events = judge.events + waiting_observations(context, storage.uploads_bucket, result)
    run_requests = judge.run_requests + retries
    return SensorResult(
        run_requests=run_requests,
        cursor=cursor.dump(),
        dynamic_partitions_requests=add_new_partitions(context, sessions_partitions, judge.partitions),
        asset_events=events,
        skip_reason=None if run_requests or events else skip_reason(result),
    )
