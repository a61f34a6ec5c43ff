"""A transient S3 fault while reading a template upload is a fault, not "the upload is gone"."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

from astra import s3 as s3_lib
from astra.ingest.template_ingest import TemplateInputError, ingest_template
from astra.samples.templates import build_sample_template


def _slow_down(operation: str):
    def raise_slow_down(**_):
        raise ClientError({"Error": {"Code": "SlowDown", "Message": "Please reduce your request rate."},
                           "ResponseMetadata": {"HTTPStatusCode": 503}}, operation)
    return raise_slow_down


@pytest.mark.integration
@pytest.mark.parametrize("operation", ["HeadObject", "GetObject"])
def test_a_throttle_is_raised_not_taken_for_a_missing_upload(settings, s3, tenant, operation):
    key = f"{tenant}/templates/report.docx"
    s3.put_object(Bucket=settings.uploads_bucket, Key=key, Body=build_sample_template())
    client = s3_lib.client(settings)  # its own client: the hook stays off the shared fixture
    client.meta.events.register(f"before-call.s3.{operation}", _slow_down(operation))
    with pytest.raises(ClientError) as caught:
        ingest_template(client, settings.uploads_bucket, settings.assets_bucket, key)
    assert s3_lib.error_code(caught.value) == "SlowDown"


@pytest.mark.integration
def test_a_missing_upload_is_reported_gone(settings, s3, tenant):
    with pytest.raises(TemplateInputError, match="is gone"):
        ingest_template(s3, settings.uploads_bucket, settings.assets_bucket, f"{tenant}/templates/nope.docx")
