"""Handover over the real stack: moto S3 (Object Lock), Postgres ledger, gRPC registry on loopback."""

from __future__ import annotations

import hashlib
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import boto3
import pytest
from botocore.awsrequest import AWSResponse
from botocore.config import Config
from botocore.exceptions import ClientError
from sqlalchemy import func, select, text

from astra.config_svc import TenantNotFound
from astra.db import make_engine
from astra.db.schema import custody_ledger
from astra.ingest.registry import AssetRegistry, registry_engine
from astra.ingest.registry_server import serve
from astra.ingest.store import blob_key
from astra.orchestrator import handover as ho
from astra.orchestrator.manifest import load_manifest
from astra.orchestrator.reconcile import pending_count, reconcile
from astra.orchestrator.registry_client import RegistryClient
from astra.orchestrator.upload import upload_session
from astra.samples import session_files
from astra.tenancy import SessionKey
from tests.orchestrator.conftest import make_handover

pytestmark = pytest.mark.integration


def new_session(s3, settings, tenant: str, version: int = 1, files: dict | None = None, session_id: str | None = None):
    session = SessionKey(tenant, session_id or f"s-{uuid.uuid4().hex[:8]}", version)
    key = upload_session(s3, settings.uploads_bucket, session, "field_inspection", files or session_files())
    return session, key


def upload_keys(s3, settings, session: SessionKey) -> list[str]:
    prefix = f"{session.tenant}/sessions/{session.session_id}/v{session.version}/"
    listing = s3.list_objects_v2(Bucket=settings.uploads_bucket, Prefix=prefix)
    return sorted(o["Key"] for o in listing.get("Contents", []))


def ledger_count(pg_url, tenant) -> int:
    with make_engine(pg_url).connect() as conn:
        return conn.execute(select(func.count()).select_from(custody_ledger)
                            .where(custody_ledger.c.tenant_id == tenant)).scalar_one()


def guard_versions(s3, settings, tenant) -> list[dict]:
    return s3.list_object_versions(Bucket=settings.guard_bucket, Prefix=f"{tenant}/audio/").get("Versions", [])


def test_handover_end_to_end(handover, s3, settings, configured_tenant, pg_url):
    tenant = configured_tenant
    session, key = new_session(s3, settings, tenant)
    result = ho.hand_over(handover, key)
    rec = result.record
    assert rec["config_version"] == 1 and rec["dedup"] == {"status": "registered"}
    assert {f["path"]: f["dedup"] for f in rec["files"]} == {
        "audio.wav": "NEW", "transcript.txt": "NEW", "data/readings.csv": "NEW", "media/site.png": "NEW"}
    for f in rec["files"]:
        body = s3.get_object(Bucket=settings.assets_bucket, Key=blob_key(tenant, f["sha256"]))["Body"].read()
        assert hashlib.sha256(body).hexdigest() == f["sha256"]
    audio_sha = hashlib.sha256(session_files()["audio.wav"]).hexdigest()
    custody = rec["custody"]
    assert custody["key"] == f"{tenant}/audio/{session.session_id}/v1/{audio_sha}.wav"
    head = s3.head_object(Bucket=settings.guard_bucket, Key=custody["key"])
    assert head["ObjectLockMode"] == "COMPLIANCE"
    assert ledger_count(pg_url, tenant) == 1
    assert upload_keys(s3, settings, session) == []  # temp gone, only after all of the above
    assert len(result.temp_deleted) == 5

    # The same files in another session of the tenant: all DUPLICATE, nothing copied again.
    session2, key2 = new_session(s3, settings, tenant)
    rec2 = ho.hand_over(handover, key2).record
    assert {f["dedup"] for f in rec2["files"]} == {"DUPLICATE"}
    assert not any(f["blob_copied"] for f in rec2["files"])


def test_dedup_never_crosses_tenants(handover, s3, settings, configured_tenant, config_service):
    from tests.config_svc.maps import SHA, maps

    other = configured_tenant + "-b"
    config_service.publish(other, *maps(), SHA, "test")
    _, key_a = new_session(s3, settings, configured_tenant)
    _, key_b = new_session(s3, settings, other)
    ho.hand_over(handover, key_a)
    rec_b = ho.hand_over(handover, key_b).record
    assert {f["dedup"] for f in rec_b["files"]} == {"NEW"}
    assert all(f["blob_uri"].startswith(f"s3://{settings.assets_bucket}/{other}/") for f in rec_b["files"])


def test_registry_down_fails_open_then_reconciles(dead_registry_handover, handover, s3, settings, configured_tenant,
                                                  pg_url):
    tenant = configured_tenant
    session, key = new_session(s3, settings, tenant)
    rec = ho.hand_over(dead_registry_handover, key).record
    assert rec["dedup"] == {"status": "skipped", "reason": "unavailable"}
    assert {f["dedup"] for f in rec["files"]} == {"skipped"}
    assert rec["custody"] is not None and upload_keys(s3, settings, session) == []
    assert pending_count(make_engine(pg_url), tenant) == 1
    outcome = reconcile(make_engine(pg_url), handover.registry)
    assert outcome.registered >= 1
    assert pending_count(make_engine(pg_url), tenant) == 0
    # Registered now: the same files are DUPLICATE for the next session.
    _, key2 = new_session(s3, settings, tenant)
    assert {f["dedup"] for f in ho.hand_over(handover, key2).record["files"]} == {"DUPLICATE"}


def test_registry_slowed_past_the_deadline_fails_open(settings, s3, pg_url, config_service, configured_tenant):
    engine = registry_engine(pg_url, pool_size=2)
    slow = serve("127.0.0.1:0", AssetRegistry(engine, settings.assets_bucket), delay_s=0.2)
    try:
        h = make_handover(settings, s3, pg_url, config_service, slow.target)
        _, key = new_session(s3, settings, configured_tenant)
        rec = ho.hand_over(h, key).record
        assert rec["dedup"] == {"status": "skipped", "reason": "deadline exceeded"}
        assert pending_count(make_engine(pg_url), configured_tenant) == 1
        # Reconciliation uses a patient client: the slow registry answers within it.
        assert reconcile(make_engine(pg_url), RegistryClient(slow.target, deadline_s=2.0)).registered >= 1
        assert pending_count(make_engine(pg_url), configured_tenant) == 0
    finally:
        slow.graceful_stop(0)
        engine.dispose()


def test_unknown_tenant_keeps_the_upload(handover, s3, settings, tenant):
    session, key = new_session(s3, settings, tenant)
    before = upload_keys(s3, settings, session)
    with pytest.raises(TenantNotFound):
        ho.hand_over(handover, key)
    assert upload_keys(s3, settings, session) == before


def test_a_version_is_immutable_once_handed_over(handover, s3, settings, configured_tenant):
    session, key = new_session(s3, settings, configured_tenant)
    ho.hand_over(handover, key)
    files = dict(session_files(), **{"data/readings.csv": b"sensor\nchanged\n"})
    new_session(s3, settings, configured_tenant, files=files, session_id=session.session_id)
    raw = s3.get_object(Bucket=settings.uploads_bucket, Key=key)["Body"].read()
    with pytest.raises(ho.HandoverError, match="immutable"):
        ho.hand_over(handover, key, expected_sha256=hashlib.sha256(raw).hexdigest())
    # The new upload is input nobody has handed over: it is kept, every file of it.
    assert len(upload_keys(s3, settings, session)) == 5


class Boom(RuntimeError):
    pass


def _fail(*_a, **_k):
    raise Boom("injected failure")


STEPS = {
    "snapshot": lambda mp, h: mp.setattr(h.config, "snapshot", _fail),
    "hash": lambda mp, h: mp.setattr(ho, "stream_sha256", _fail),
    "register": lambda mp, h: mp.setattr(ho, "register", _fail),
    "copy_blobs": lambda mp, h: mp.setattr(ho, "_copy_blob", _fail),
    "custody": lambda mp, h: mp.setattr(ho, "take_custody", _fail),
    "record": lambda mp, h: mp.setattr(ho.BlobStore, "put_json", _fail),
}


@pytest.mark.parametrize("step", list(STEPS))
def test_a_failure_at_each_step_leaves_the_upload_and_a_rerun_converges(step, handover, s3, settings,
                                                                        configured_tenant, pg_url, monkeypatch):
    tenant = configured_tenant
    session, key = new_session(s3, settings, tenant)
    before = upload_keys(s3, settings, session)
    with monkeypatch.context() as mp:
        STEPS[step](mp, handover)
        with pytest.raises(Boom):
            ho.hand_over(handover, key)
    assert upload_keys(s3, settings, session) == before, "the upload must be intact after a failure"
    result = ho.hand_over(handover, key)
    again = ho.hand_over(handover, key)  # and once more: nothing new happens
    assert again.resumed and again.temp_deleted == []
    assert upload_keys(s3, settings, session) == []
    assert ledger_count(pg_url, tenant) == 1
    assert len(guard_versions(s3, settings, tenant)) == 1
    assert result.record["custody"]["version_id"] == guard_versions(s3, settings, tenant)[0]["VersionId"]


def hand_over_killed_mid_clean_up(handover, s3, key: str, monkeypatch) -> None:
    """Run a handover that dies after deleting one temporary object."""
    real_delete = s3.delete_object
    calls = []

    def delete_then_crash(**kwargs):
        calls.append(kwargs["Key"])
        if len(calls) == 2:
            raise Boom("killed mid clean-up")
        return real_delete(**kwargs)

    with monkeypatch.context() as mp:
        mp.setattr(s3, "delete_object", delete_then_crash)
        with pytest.raises(Boom):
            ho.hand_over(handover, key)


def test_a_crash_in_the_middle_of_the_clean_up_is_finished_by_a_rerun(handover, s3, settings, configured_tenant,
                                                                      pg_url, monkeypatch):
    session, key = new_session(s3, settings, configured_tenant)
    hand_over_killed_mid_clean_up(handover, s3, key, monkeypatch)
    assert key in upload_keys(s3, settings, session)  # the manifest goes last, so the session is still seen
    result = ho.hand_over(handover, key)
    assert result.resumed and upload_keys(s3, settings, session) == []
    assert ledger_count(pg_url, configured_tenant) == 1


def test_a_source_overwritten_after_hashing_never_lands_under_the_old_hash(handover, s3, settings, configured_tenant,
                                                                           monkeypatch):
    session, key = new_session(s3, settings, configured_tenant)
    csv_key = key.replace("manifest.json", "data/readings.csv")
    original_sha = hashlib.sha256(session_files()["data/readings.csv"]).hexdigest()
    real = ho.stream_sha256

    def hash_then_overwrite(s3_, bucket, k, *a, **kw):
        out = real(s3_, bucket, k, *a, **kw)
        if k == csv_key:
            s3_.put_object(Bucket=bucket, Key=k, Body=b"sensor,changed\n")  # a client writes again
        return out

    monkeypatch.setattr(ho, "stream_sha256", hash_then_overwrite)
    with pytest.raises(ho.HandoverError, match="changed after it was hashed"):
        ho.hand_over(handover, key)
    monkeypatch.setattr(ho, "stream_sha256", real)
    with pytest.raises(s3.exceptions.ClientError):
        s3.head_object(Bucket=settings.assets_bucket, Key=blob_key(configured_tenant, original_sha))
    assert len(upload_keys(s3, settings, session)) == 5
    # The re-run hands over what is there now; every blob holds the bytes of its own hash.
    rec = ho.hand_over(handover, key).record
    for f in rec["files"]:
        body = s3.get_object(Bucket=settings.assets_bucket, Key=blob_key(configured_tenant, f["sha256"]))["Body"].read()
        assert hashlib.sha256(body).hexdigest() == f["sha256"]


def test_a_session_naming_another_template_is_refused(handover, s3, settings, tenant, config_service):
    from tests.config_svc.maps import SHA, maps

    config_service.publish(tenant, *maps(), SHA, "test", template_name="invoice")
    session, key = new_session(s3, settings, tenant)  # names field_inspection
    with pytest.raises(ho.HandoverError, match="invoice"):
        ho.hand_over(handover, key)
    assert len(upload_keys(s3, settings, session)) == 5


def test_temp_cleanup_removes_leftovers_only_where_custody_verifies(handover, s3, settings, configured_tenant,
                                                                    monkeypatch):
    from astra.orchestrator.cleanup import clean_verified_uploads

    # Two sessions whose handovers died in the middle of their clean-up.
    leftovers = []
    for _ in range(2):
        session, key = new_session(s3, settings, configured_tenant)
        hand_over_killed_mid_clean_up(handover, s3, key, monkeypatch)
        leftovers.append((session, key))
    (good, good_key), (bad, bad_key) = leftovers
    # Break the custody of the second one: someone writes other bytes over its guard key
    # (a new version: the locked one stays, but the key no longer shows what the ledger holds).
    bad_record = ho.load_record(s3, settings.assets_bucket, bad)
    s3.put_object(Bucket=settings.guard_bucket, Key=bad_record["custody"]["key"], Body=b"tampered")
    report = clean_verified_uploads(handover)
    assert good.partition_key in report.cleaned and upload_keys(s3, settings, good) == []
    assert bad_key in report.kept and "custody not verified" in report.kept[bad_key]
    assert bad_key in upload_keys(s3, settings, bad)


# -- strays, data-only sessions, custody before any delete, concurrency, S3 faults --------------


def test_only_strays_holding_the_bytes_of_a_handed_over_file_are_deleted(handover, s3, settings, configured_tenant):
    session = SessionKey(configured_tenant, f"s-{uuid.uuid4().hex[:8]}", 1)
    prefix, files = session.upload_prefix, session_files()
    # Written before the manifest: another recording (not secured by anyone) and a byte copy of the csv.
    s3.put_object(Bucket=settings.uploads_bucket, Key=prefix + "audio.ogg", Body=b"OggS another recording")
    s3.put_object(Bucket=settings.uploads_bucket, Key=prefix + "data/copy.csv", Body=files["data/readings.csv"])
    _, key = new_session(s3, settings, configured_tenant, session_id=session.session_id)
    result = ho.hand_over(handover, key)
    assert {s["key"]: s["same_as"] for s in result.record["strays"]} == {
        prefix + "audio.ogg": None, prefix + "data/copy.csv": "data/readings.csv"}
    assert prefix + "data/copy.csv" in result.temp_deleted and result.temp_deleted[-1] == key  # manifest last
    assert result.cleanup.strays_kept == [prefix + "audio.ogg"]
    assert upload_keys(s3, settings, session) == [prefix + "audio.ogg"]


def test_a_second_upload_into_a_version_not_yet_handed_over_deletes_nothing_unsecured(handover, s3, settings,
                                                                                     configured_tenant):
    """Another client uploads a folder holding only audio.ogg into v1 before v1's handover: the
    manifest now names audio.ogg alone. The first upload's files are kept and reported, not deleted."""
    session, _ = new_session(s3, settings, configured_tenant)
    first = upload_keys(s3, settings, session)
    _, key = new_session(s3, settings, configured_tenant, files={"audio.ogg": b"a different recording"},
                         session_id=session.session_id)
    result = ho.hand_over(handover, key)
    assert result.record["custody"]["sha256"] == hashlib.sha256(b"a different recording").hexdigest()
    unsecured = sorted(k for k in first if not k.endswith("manifest.json"))  # audio.wav, transcript, data, media
    assert sorted(result.cleanup.strays_kept) == unsecured
    assert upload_keys(s3, settings, session) == unsecured


def test_a_clone_of_a_version_never_handed_over_is_refused(handover, s3, settings, configured_tenant):
    sid = f"s-{uuid.uuid4().hex[:8]}"
    clone = SessionKey(configured_tenant, sid, 2)
    clone_key = upload_session(s3, settings.uploads_bucket, clone, "field_inspection", session_files(), clone_of=1)
    with pytest.raises(ho.HandoverError, match=f"clone of {configured_tenant}--{sid}--v1, which was never handed"):
        ho.hand_over(handover, clone_key)
    assert len(upload_keys(s3, settings, clone)) == 5
    _, v1_key = new_session(s3, settings, configured_tenant, session_id=sid)
    ho.hand_over(handover, v1_key)
    assert ho.hand_over(handover, clone_key).record["manifest"]["document"]["clone_of"] == {"version": 1}


def test_a_data_only_session_is_handed_over_with_no_custody(handover, s3, settings, configured_tenant, pg_url):
    files = {k: v for k, v in session_files().items() if k != "audio.wav"}
    session, key = new_session(s3, settings, configured_tenant, files=files)
    result = ho.hand_over(handover, key)
    assert result.record["custody"] is None and len(result.temp_deleted) == 4
    assert ledger_count(pg_url, configured_tenant) == 0 and guard_versions(s3, settings, configured_tenant) == []
    assert upload_keys(s3, settings, session) == []


def delete_ledger_rows(pg_url, tenant) -> None:
    """A superuser removes the tenant's custody entries behind the append-only triggers."""
    with make_engine(pg_url).begin() as conn:
        conn.execute(text("ALTER TABLE custody_ledger DISABLE TRIGGER USER"))
        conn.execute(text("DELETE FROM custody_ledger WHERE tenant_id = :t"), {"t": tenant})
        conn.execute(text("ALTER TABLE custody_ledger ENABLE TRIGGER USER"))


def overwrite_guard_object(s3, settings, record) -> None:
    s3.put_object(Bucket=settings.guard_bucket, Key=record["custody"]["key"], Body=b"tampered")


TAMPER = {
    "ledger row deleted": lambda s3, settings, pg_url, record: delete_ledger_rows(pg_url, record["session"]["tenant"]),
    "guard key overwritten": lambda s3, settings, pg_url, record: overwrite_guard_object(s3, settings, record),
}


@pytest.mark.parametrize("tamper", list(TAMPER))
def test_the_resume_path_verifies_custody_before_deleting(tamper, handover, s3, settings, configured_tenant, pg_url,
                                                          monkeypatch):
    session, key = new_session(s3, settings, configured_tenant)
    hand_over_killed_mid_clean_up(handover, s3, key, monkeypatch)
    left = upload_keys(s3, settings, session)
    TAMPER[tamper](s3, settings, pg_url, ho.load_record(s3, settings.assets_bucket, session))
    with pytest.raises(ho.CustodyNotVerified, match="custody not verified, nothing deleted"):
        ho.hand_over(handover, key)
    assert upload_keys(s3, settings, session) == left and key in left


def test_a_fresh_handover_verifies_custody_again_before_deleting(handover, s3, settings, configured_tenant, pg_url,
                                                                 monkeypatch):
    session, key = new_session(s3, settings, configured_tenant)
    real = ho.take_custody

    def custody_then_ledger_lost(*args, **kwargs):
        out = real(*args, **kwargs)
        delete_ledger_rows(pg_url, configured_tenant)
        return out

    monkeypatch.setattr(ho, "take_custody", custody_then_ledger_lost)
    with pytest.raises(ho.CustodyNotVerified, match="ledger"):
        ho.hand_over(handover, key)
    assert len(upload_keys(s3, settings, session)) == 5


def test_two_handovers_of_one_session_at_once_converge(handover, s3, settings, configured_tenant, pg_url):
    session, key = new_session(s3, settings, configured_tenant)
    start = threading.Barrier(2)

    def run(_):
        start.wait()
        return ho.hand_over(handover, key)

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(run, range(2)))
    assert sorted(r.resumed for r in results) == [False, True]  # the second found the record
    assert ledger_count(pg_url, configured_tenant) == 1
    assert len(guard_versions(s3, settings, configured_tenant)) == 1
    assert upload_keys(s3, settings, session) == []


def test_an_upload_another_clean_up_deleted_first_counts_as_deleted(handover, s3, settings, configured_tenant,
                                                                    monkeypatch):
    session, key = new_session(s3, settings, configured_tenant)
    real = s3.delete_object

    def another_clean_up_wins(**kwargs):
        real(Bucket=kwargs["Bucket"], Key=kwargs["Key"])  # between our HEAD and our conditional delete
        return real(**kwargs)  # S3: NoSuchKey

    monkeypatch.setattr(s3, "delete_object", another_clean_up_wins)
    result = ho.hand_over(handover, key)
    assert len(result.temp_deleted) == 5 and upload_keys(s3, settings, session) == []


class _Body:
    def __init__(self, body: bytes):
        self.body = body

    def stream(self, **_):
        yield self.body


def faulty_client(settings, operation: str, bucket: str, status: int, code: str):
    """A real boto3 client whose `operation` on `bucket` gets an S3 error answer (throttle, denial)
    from a botocore hook, as S3 would send it; every other call reaches moto."""
    client = boto3.client("s3", endpoint_url=settings.s3_endpoint_url, region_name="us-east-1",
                          config=Config(retries={"max_attempts": 1}, s3={"addressing_style": "path"}))
    body = f"<Error><Code>{code}</Code><Message>injected</Message></Error>".encode()

    def answer(request, **_):
        if f"/{bucket}/" in request.url or f"/{bucket}?" in request.url:  # object calls and listings
            return AWSResponse(request.url, status, {}, _Body(body))
        return None

    client.meta.events.register(f"before-send.s3.{operation}", answer)
    return client


def test_a_throttled_head_is_not_taken_for_a_deleted_upload(handover, s3, settings, configured_tenant, pg_url,
                                                            config_service, monkeypatch):
    session, key = new_session(s3, settings, configured_tenant)
    hand_over_killed_mid_clean_up(handover, s3, key, monkeypatch)
    left = upload_keys(s3, settings, session)
    throttled = faulty_client(settings, "HeadObject", settings.uploads_bucket, 503, "SlowDown")
    with pytest.raises(ClientError):
        ho.hand_over(make_handover(settings, throttled, pg_url, config_service, None), key)
    assert upload_keys(s3, settings, session) == left
    assert ho.hand_over(handover, key).resumed and upload_keys(s3, settings, session) == []


@pytest.mark.parametrize("operation", ["ListObjectsV2", "GetObject"])
def test_a_throttled_read_does_not_refuse_a_manifest(s3, settings, tenant, operation):
    _, key = new_session(s3, settings, tenant)
    throttled = faulty_client(settings, operation, settings.uploads_bucket, 503, "SlowDown")
    with pytest.raises(ClientError):  # not ManifestRejected: the sensor reads it again next tick
        load_manifest(throttled, settings.uploads_bucket, key)


def test_a_record_that_cannot_be_read_is_not_taken_for_no_record(s3, settings, tenant):
    session = SessionKey(tenant, "visit-1", 1)
    denied = faulty_client(settings, "GetObject", settings.assets_bucket, 403, "AccessDenied")
    with pytest.raises(ClientError, match="AccessDenied"):
        ho.load_record(denied, settings.assets_bucket, session)
    with pytest.raises(ClientError, match="NoSuchBucket"):  # a misconfigured bucket is not "never handed over"
        ho.load_record(s3, f"no-such-bucket-{uuid.uuid4().hex[:8]}", session)
    assert ho.load_record(s3, settings.assets_bucket, session) is None


def test_a_record_naming_audio_without_custody_deletes_nothing(handover, s3, settings, configured_tenant):
    session, key = new_session(s3, settings, configured_tenant)
    record = ho.hand_over(handover, key).record
    session2, key2 = new_session(s3, settings, configured_tenant)
    forged = {**record, "custody": None, "session": {**record["session"], "partition_key": session2.partition_key},
              "files": [{**f, "key": key2.replace("manifest.json", f["path"])} for f in record["files"]]}
    with pytest.raises(ho.CustodyNotVerified, match="names audio audio.wav but no custody copy"):
        ho.delete_temp_upload(handover, forged)
    assert len(upload_keys(s3, settings, session2)) == 5


def test_reconcile_with_a_refused_token_stops_and_changes_nothing(dead_registry_handover, registry_server, s3,
                                                                  settings, configured_tenant, pg_url):
    from astra.db.schema import outbox
    from astra.orchestrator.registry_client import RegistryAuthError

    _, key = new_session(s3, settings, configured_tenant)
    ho.hand_over(dead_registry_handover, key)
    engine = make_engine(pg_url)
    with engine.connect() as conn:
        before = conn.execute(select(outbox.c.id, outbox.c.attempts)
                              .where(outbox.c.tenant_id == configured_tenant)).all()
    wrong = RegistryClient(registry_server.target, deadline_s=2.0, token="not-the-service-token-at-all")
    with pytest.raises(RegistryAuthError):
        reconcile(engine, wrong)
    with engine.connect() as conn:
        after = conn.execute(select(outbox.c.id, outbox.c.attempts)
                             .where(outbox.c.tenant_id == configured_tenant)).all()
    assert before == after and pending_count(engine, configured_tenant) == 1


def test_a_damaged_blob_store_keeps_the_upload(handover, s3, settings, configured_tenant):
    session, key = new_session(s3, settings, configured_tenant)
    csv = s3.get_object(Bucket=settings.uploads_bucket, Key=key.replace("manifest.json", "data/readings.csv"))
    sha = hashlib.sha256(csv["Body"].read()).hexdigest()
    s3.put_object(Bucket=settings.assets_bucket, Key=blob_key(configured_tenant, sha), Body=b"not those bytes",
                  ChecksumAlgorithm="SHA256")
    with pytest.raises(ho.HandoverError, match="holds bytes that are not"):
        ho.hand_over(handover, key)
    assert len(upload_keys(s3, settings, session)) == 5


def test_temp_cleanup_reports_version_folders_left_without_a_manifest(handover, s3, settings, configured_tenant):
    from datetime import timedelta

    from astra.orchestrator.cleanup import clean_verified_uploads

    prefix = f"{configured_tenant}/sessions/s-{uuid.uuid4().hex[:8]}/v1/"
    s3.put_object(Bucket=settings.uploads_bucket, Key=prefix + "audio.wav", Body=b"RIFF half an upload")
    _, complete = new_session(s3, settings, configured_tenant)  # has its manifest: not "unfinished"
    assert prefix not in clean_verified_uploads(handover).unfinished  # written just now: may be under way
    report = clean_verified_uploads(handover, unfinished_after=timedelta(0))
    assert report.unfinished[prefix] == [prefix + "audio.wav"]
    assert complete.rsplit("/", 1)[0] + "/" not in report.unfinished
    assert upload_keys(s3, settings, SessionKey(configured_tenant, prefix.split("/")[2], 1)) == [prefix + "audio.wav"]
