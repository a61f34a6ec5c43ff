"""Custody copy into the WORM bucket (moto server): verified, locked, idempotent; ledger after."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
from datetime import UTC, datetime, timedelta

import pytest
from botocore.exceptions import ClientError

from astra.guard import CustodyError, check_custody, place_in_custody, take_custody, verify_custody
from astra.guard.custody import parse_iso
from astra.guard.ledger import ledger_time
from astra.settings import InvalidSetting
from tests.guard.conftest import rows, upload_audio

pytestmark = pytest.mark.integration


def versions(s3, bucket, key):
    listing = s3.list_object_versions(Bucket=bucket, Prefix=key)
    return listing.get("Versions", []), listing.get("DeleteMarkers", [])


def test_place_in_custody_copies_locked_and_verified(s3, settings, tenant):
    src, sha, data = upload_audio(s3, settings, tenant, "sess-1", 2)
    before = datetime.now(UTC)
    rec = place_in_custody(s3, settings, tenant, "sess-1", 2, settings.uploads_bucket, src, sha, "wav")

    assert rec.key == f"{tenant}/audio/sess-1/v2/{sha}.wav" and rec.bucket == settings.guard_bucket
    assert rec.copied and rec.size == len(data) and rec.sha256 == sha
    assert rec.source_uri == f"s3://{settings.uploads_bucket}/{src}"
    head = s3.head_object(Bucket=rec.bucket, Key=rec.key, VersionId=rec.version_id, ChecksumMode="ENABLED")
    assert head["ChecksumSHA256"] == base64.b64encode(hashlib.sha256(data).digest()).decode()
    assert head["ObjectLockMode"] == rec.retention_mode == "COMPLIANCE"
    until = parse_iso(rec.retain_until)
    assert until >= before + timedelta(days=settings.guard_retention_days)
    assert until <= datetime.now(UTC) + timedelta(days=settings.guard_retention_days, seconds=5)
    body = s3.get_object(Bucket=rec.bucket, Key=rec.key, VersionId=rec.version_id)["Body"].read()
    assert body == data


def test_place_in_custody_is_idempotent(s3, settings, tenant):
    src, sha, _ = upload_audio(s3, settings, tenant, "sess-1")
    first = place_in_custody(s3, settings, tenant, "sess-1", 1, settings.uploads_bucket, src, sha, "wav")
    again = place_in_custody(s3, settings, tenant, "sess-1", 1, settings.uploads_bucket, src, sha, "wav")
    assert again.copied is False and again.version_id == first.version_id
    assert again.retain_until == first.retain_until
    live, markers = versions(s3, settings.guard_bucket, first.key)
    assert len(live) == 1 and markers == []  # no second version in the locked bucket


def test_source_not_matching_the_hash_is_refused_before_copying(s3, settings, tenant):
    src, _, _ = upload_audio(s3, settings, tenant, "sess-1")
    wrong = hashlib.sha256(b"something else").hexdigest()
    with pytest.raises(CustodyError, match="does not have SHA-256"):
        place_in_custody(s3, settings, tenant, "sess-1", 1, settings.uploads_bucket, src, wrong, "wav")
    assert s3.list_objects_v2(Bucket=settings.guard_bucket, Prefix=f"{tenant}/").get("KeyCount") == 0


def test_source_checked_by_its_s3_checksum_when_it_has_one(s3, settings, tenant):
    data = b"OggS" + b"x" * 4096
    sha = hashlib.sha256(data).hexdigest()
    key = f"{tenant}/sessions/s/v1/audio.ogg"
    s3.put_object(Bucket=settings.uploads_bucket, Key=key, Body=data, ChecksumAlgorithm="SHA256")
    rec = place_in_custody(s3, settings, tenant, "s", 1, settings.uploads_bucket, key, sha, ".ogg")
    assert rec.key.endswith(f"/{sha}.ogg")
    with pytest.raises(CustodyError):
        place_in_custody(s3, settings, tenant, "s", 2, settings.uploads_bucket, key, "0" * 64, "ogg")


def test_missing_source_and_bad_arguments(s3, settings, tenant):
    with pytest.raises(CustodyError, match="not found"):
        place_in_custody(s3, settings, tenant, "s", 1, settings.uploads_bucket, f"{tenant}/nope.wav", "a" * 64, "wav")
    with pytest.raises(ValueError):
        place_in_custody(s3, settings, tenant, "s", 1, settings.uploads_bucket, "k", "NOTHEX", "wav")
    with pytest.raises(ValueError):
        place_in_custody(s3, settings, tenant, "s--x", 1, settings.uploads_bucket, "k", "a" * 64, "wav")


def test_take_custody_copies_then_appends_once(engine, s3, settings, tenant):
    src, sha, data = upload_audio(s3, settings, tenant, "sess-9", 3)
    rec, entry = take_custody(engine, s3, settings, tenant, "sess-9", 3, settings.uploads_bucket, src, sha, "wav")
    assert entry.seq == 1 and entry.appended and entry.entry_key == f"audio:sess-9:v3:{sha}"
    e = entry.entry
    assert set(e) == {
        "event", "tenant", "seq", "session_id", "version", "sha256", "size", "bucket", "key", "version_id",
        "retention_mode", "retain_until", "source_uri", "recorded_at", "entry_key", "ledger_format",
    }
    assert (e["event"], e["tenant"], e["seq"]) == ("custody.audio", tenant, 1)
    assert (e["session_id"], e["version"]) == ("sess-9", 3)
    assert (e["sha256"], e["size"], e["key"], e["version_id"]) == (sha, len(data), rec.key, rec.version_id)
    assert (e["retention_mode"], e["retain_until"]) == ("COMPLIANCE", rec.retain_until)
    assert e["recorded_at"] == ledger_time(entry.recorded_at) and e["entry_key"] == entry.entry_key
    assert e["ledger_format"] == 2

    # A re-run (say the process died after the append but before deleting the upload).
    rec2, entry2 = take_custody(engine, s3, settings, tenant, "sess-9", 3, settings.uploads_bucket, src, sha, "wav")
    assert entry2 == entry and entry2.appended is False and rec2.copied is False
    assert len(rows(engine, tenant)) == 1
    assert check_custody(s3, settings, engine, rec) == []
    assert check_custody(s3, settings, engine, rec.key) == []
    assert check_custody(s3, settings, engine, entry) == []


def test_rerun_after_crash_between_copy_and_append(engine, s3, settings, tenant):
    src, sha, _ = upload_audio(s3, settings, tenant, "sess-1")
    rec = place_in_custody(s3, settings, tenant, "sess-1", 1, settings.uploads_bucket, src, sha, "wav")
    assert any("ledger" in p for p in check_custody(s3, settings, engine, rec))  # copied, not yet ledgered
    rec2, entry = take_custody(engine, s3, settings, tenant, "sess-1", 1, settings.uploads_bucket, src, sha, "wav")
    assert rec2.copied is False and entry.entry["version_id"] == rec.version_id
    assert check_custody(s3, settings, engine, rec) == []


def test_s3_refuses_deleting_a_locked_version(engine, s3, settings, tenant):
    src, sha, _ = upload_audio(s3, settings, tenant, "sess-1")
    rec, _ = take_custody(engine, s3, settings, tenant, "sess-1", 1, settings.uploads_bucket, src, sha, "wav")
    for kwargs in ({}, {"BypassGovernanceRetention": True}):
        with pytest.raises(ClientError) as exc:
            s3.delete_object(Bucket=rec.bucket, Key=rec.key, VersionId=rec.version_id, **kwargs)
        assert exc.value.response["Error"]["Code"] == "AccessDenied"
    bulk = s3.delete_objects(Bucket=rec.bucket, Delete={"Objects": [{"Key": rec.key, "VersionId": rec.version_id}]})
    assert [e["Code"] for e in bulk.get("Errors", [])] == ["AccessDenied"] and not bulk.get("Deleted")
    assert check_custody(s3, settings, engine, rec) == []


def test_a_delete_marker_is_allowed_by_s3_and_reported(engine, s3, settings, tenant):
    """S3 (and moto) accept a DeleteObject without VersionId on a locked bucket: it adds a delete
    marker, the locked version stays. Custody reports the key as no longer serving the copy."""
    src, sha, _ = upload_audio(s3, settings, tenant, "sess-1")
    rec, _ = take_custody(engine, s3, settings, tenant, "sess-1", 1, settings.uploads_bucket, src, sha, "wav")
    marker = s3.delete_object(Bucket=rec.bucket, Key=rec.key)
    assert marker.get("DeleteMarker") is True
    live, markers = versions(s3, rec.bucket, rec.key)
    assert [v["VersionId"] for v in live] == [rec.version_id] and len(markers) == 1
    problems = check_custody(s3, settings, engine, rec)
    assert len(problems) == 1 and problems[0].startswith("object_missing") and "delete marker" in problems[0]
    with pytest.raises(CustodyError, match="delete marker"):
        verify_custody(s3, settings, engine, rec)
    # A re-run finds the hidden locked copy and copies nothing: no unledgered second version.
    rec2, entry = take_custody(engine, s3, settings, tenant, "sess-1", 1, settings.uploads_bucket, src, sha, "wav")
    assert not rec2.copied and rec2.version_id == rec.version_id and entry.appended is False
    assert len(versions(s3, rec.bucket, rec.key)[0]) == 1
    assert check_custody(s3, settings, engine, rec2) == problems  # still hidden: a person has to look
    s3.delete_object(Bucket=rec.bucket, Key=rec.key, VersionId=marker["VersionId"])  # removing the marker
    assert check_custody(s3, settings, engine, rec2) == []
    verify_custody(s3, settings, engine, rec2)


def test_existing_object_with_other_content_is_never_copied_over(s3, settings, tenant):
    src, sha, _ = upload_audio(s3, settings, tenant, "sess-1")
    key = f"{tenant}/audio/sess-1/v1/{sha}.wav"
    s3.put_object(Bucket=settings.guard_bucket, Key=key, Body=b"planted", ChecksumAlgorithm="SHA256")
    with pytest.raises(CustodyError, match="refusing to copy over it"):
        place_in_custody(s3, settings, tenant, "sess-1", 1, settings.uploads_bucket, src, sha, "wav")
    live, _ = versions(s3, settings.guard_bucket, key)
    assert len(live) == 1


@pytest.mark.parametrize("days", [29, 1, 0, -5])
def test_a_retention_below_the_floor_is_refused_even_past_settings(s3, settings, tenant, days):
    """Settings refuses it when built; a Settings altered afterwards (or built around __init__)
    must still not lock audio for less than the floor: with -5 the lock date is in the past."""
    weak = dataclasses.replace(settings)
    object.__setattr__(weak, "guard_retention_days", days)
    src, sha, _ = upload_audio(s3, settings, tenant, "sess-1")
    with pytest.raises(CustodyError, match="at least 30 days"):
        place_in_custody(s3, weak, tenant, "sess-1", 1, settings.uploads_bucket, src, sha, "wav")
    assert s3.list_object_versions(Bucket=settings.guard_bucket, Prefix=f"{tenant}/").get("Versions") is None
    with pytest.raises(InvalidSetting):
        dataclasses.replace(settings, guard_retention_days=days)


def test_a_copy_locked_below_the_floor_is_not_reused(s3, settings, tenant):
    """A copy left by a weaker configuration is not taken as custody: a new, properly locked version is made."""
    src, sha, data = upload_audio(s3, settings, tenant, "sess-1")
    key = f"{tenant}/audio/sess-1/v1/{sha}.wav"
    s3.put_object(Bucket=settings.guard_bucket, Key=key, Body=data, ChecksumAlgorithm="SHA256",
                  ObjectLockMode="COMPLIANCE", ObjectLockRetainUntilDate=datetime.now(UTC) + timedelta(days=2))
    rec = place_in_custody(s3, settings, tenant, "sess-1", 1, settings.uploads_bucket, src, sha, "wav")
    assert rec.copied and parse_iso(rec.retain_until) >= datetime.now(UTC) + timedelta(days=29)


def test_verify_custody_is_the_gate_before_any_delete(engine, s3, settings, tenant):
    src, sha, _ = upload_audio(s3, settings, tenant, "sess-1")
    rec = place_in_custody(s3, settings, tenant, "sess-1", 1, settings.uploads_bucket, src, sha, "wav")
    with pytest.raises(CustodyError, match="has no custody entry"):  # copied, not yet in the ledger
        verify_custody(s3, settings, engine, rec)
    rec, entry = take_custody(engine, s3, settings, tenant, "sess-1", 1, settings.uploads_bucket, src, sha, "wav")
    handed_over = {**rec.to_dict(), "ledger_seq": entry.seq, "ledger_entry_hash": entry.entry_hash}
    for target in (rec, entry, rec.key, handed_over):
        verify_custody(s3, settings, engine, target)
    for name, wrong in (("ledger_seq", 7), ("ledger_entry_hash", "0" * 64), ("version_id", "someother")):
        with pytest.raises(CustodyError, match=name):
            verify_custody(s3, settings, engine, {**handed_over, name: wrong})
