"""The one S3 module against moto's real server: 'missing' only when S3 says so."""

from __future__ import annotations

import hashlib
import uuid

import pytest
from botocore.exceptions import ClientError

from astra import s3 as s3_lib
from astra.guard.custody import guard_key, parse_guard_key

pytestmark = pytest.mark.integration


def client_error(code: str, status: int) -> ClientError:
    return ClientError({"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "HeadObject")


@pytest.mark.parametrize("code,status,missing", [
    ("NoSuchKey", 404, True), ("404", 404, True), ("NoSuchVersion", 404, True), ("MethodNotAllowed", 405, True),
    ("NoSuchBucket", 404, False), ("SlowDown", 503, False), ("AccessDenied", 403, False),
    ("InternalError", 500, False), ("RequestTimeout", 400, False),
])
def test_only_missing_codes_mean_missing(code, status, missing):
    assert s3_lib.is_missing(client_error(code, status)) is missing


def test_head_is_none_only_for_a_missing_object(s3, settings):
    key = f"probe/{uuid.uuid4().hex}"
    assert s3_lib.head(s3, settings.assets_bucket, key) is None
    s3.put_object(Bucket=settings.assets_bucket, Key=key, Body=b"x")
    assert s3_lib.head(s3, settings.assets_bucket, key)["ContentLength"] == 1


def test_a_read_from_a_bucket_that_does_not_exist_is_a_fault(s3):
    # (A HEAD cannot tell: S3 answers a bare 404 without a body for a missing bucket too.)
    with pytest.raises(ClientError) as err:
        s3_lib.stream_sha256(s3, f"no-such-bucket-{uuid.uuid4().hex[:8]}", "k")
    assert not s3_lib.is_missing(err.value)


def test_object_sha256_from_the_checksum_or_the_bytes(s3, settings):
    body = b"session audio" * 1000
    want = hashlib.sha256(body).hexdigest()
    with_sum, without = f"probe/{uuid.uuid4().hex}", f"probe/{uuid.uuid4().hex}"
    s3.put_object(Bucket=settings.assets_bucket, Key=with_sum, Body=body, ChecksumAlgorithm="SHA256")
    s3.put_object(Bucket=settings.assets_bucket, Key=without, Body=body)
    assert s3_lib.object_sha256(s3, settings.assets_bucket, with_sum) == want
    assert s3_lib.object_sha256(s3, settings.assets_bucket, without) == want
    assert s3_lib.object_sha256(s3, settings.assets_bucket, f"probe/{uuid.uuid4().hex}") is None


def test_delete_if_unchanged_gone_counts_as_deleted_and_a_change_is_kept(s3, settings):
    bucket, key = settings.uploads_bucket, f"probe/{uuid.uuid4().hex}"
    etag = s3.put_object(Bucket=bucket, Key=key, Body=b"first")["ETag"]
    s3.put_object(Bucket=bucket, Key=key, Body=b"second")  # re-uploaded since
    assert s3_lib.delete_if_unchanged(s3, bucket, key, etag) is False
    assert s3_lib.head(s3, bucket, key) is not None
    etag = s3_lib.head(s3, bucket, key)["ETag"]
    assert s3_lib.delete_if_unchanged(s3, bucket, key, etag) is True
    assert s3_lib.head(s3, bucket, key) is None
    assert s3_lib.delete_if_unchanged(s3, bucket, key, etag) is True  # a concurrent clean-up won: not an error


def test_guard_keys_are_matched_whole():
    key = guard_key("acme", "s1", 1, "a" * 64, "wav")
    assert parse_guard_key(key)["sha256"] == "a" * 64
    for bad in (key + "\n", key + "/", "\n" + key, key.replace("/audio/", "/audi0/")):
        with pytest.raises(ValueError):
            parse_guard_key(bad)
    with pytest.raises(ValueError):
        guard_key("acme", "s1", 1, "a" * 64 + "\n", "wav")
