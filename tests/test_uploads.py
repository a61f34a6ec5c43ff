"""The uploads scanner over a real S3 server (moto): nothing missed, however keys sort."""

from __future__ import annotations

import uuid

import pytest

from astra.uploads import scan

pytestmark = pytest.mark.integration


@pytest.fixture
def bucket(s3):
    name = f"scan-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(Bucket=name)
    return name


def sweep(s3, bucket, cursor, ticks, **kw):
    found = []
    for _ in range(ticks):
        result = scan(s3, bucket, "templates", cursor, **kw)
        found += [o.key for o in result.objects]
        cursor = result.cursor
    return found, cursor


def test_new_and_changed_keys_are_reported_once_whatever_their_order(s3, bucket):
    s3.put_object(Bucket=bucket, Key="m/templates/a.docx", Body=b"1")
    found, cursor = sweep(s3, bucket, None, 2)
    assert found == ["m/templates/a.docx"]
    # A tenant that sorts before the cursor, a re-upload with new bytes, an unchanged key.
    s3.put_object(Bucket=bucket, Key="a/templates/x.docx", Body=b"1")
    s3.put_object(Bucket=bucket, Key="m/templates/a.docx", Body=b"2")
    found, cursor = sweep(s3, bucket, cursor, 2)
    assert sorted(found) == ["a/templates/x.docx", "m/templates/a.docx"]
    assert sweep(s3, bucket, cursor, 2)[0] == []


def test_pages_of_stray_root_objects_do_not_stall_the_tenant_sweep(s3, bucket):
    s3.put_object(Bucket=bucket, Key="acme/templates/t.docx", Body=b"1")
    for i in range(5):
        s3.put_object(Bucket=bucket, Key=f"b-stray-{i}", Body=b"x")
    s3.put_object(Bucket=bucket, Key="zeta/templates/t.docx", Body=b"1")
    found, _ = sweep(s3, bucket, None, 6, max_tenants=3)
    assert sorted(set(found)) == ["acme/templates/t.docx", "zeta/templates/t.docx"]


def test_only_the_area_and_accepted_keys_are_reported(s3, bucket):
    s3.put_object(Bucket=bucket, Key="acme/templates/t.docx", Body=b"1")
    s3.put_object(Bucket=bucket, Key="acme/templates/notes.txt", Body=b"1")
    s3.put_object(Bucket=bucket, Key="acme/sessions/s/v1/manifest.json", Body=b"{}")
    found, _ = sweep(s3, bucket, None, 1, accept=lambda k: k.endswith(".docx"))
    assert found == ["acme/templates/t.docx"]


def test_retry_later_reports_the_key_again(s3, bucket):
    s3.put_object(Bucket=bucket, Key="acme/templates/t.docx", Body=b"1")
    result = scan(s3, bucket, "templates", None)
    result.retry_later(result.objects[0])
    again = scan(s3, bucket, "templates", result.cursor)
    assert [o.key for o in again.objects] == ["acme/templates/t.docx"]
