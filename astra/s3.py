"""S3 access for the engines: plain boto3, the same calls against moto, AWS or any S3 with Object Lock."""

from __future__ import annotations

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from astra.settings import Settings


def client(settings: Settings):
    return boto3.client(
        "s3",
        endpoint_url=settings.s3_endpoint_url,
        region_name=settings.aws_region,
        config=Config(retries={"max_attempts": 3, "mode": "standard"}, s3={"addressing_style": "path"}),
    )


def _create(s3, bucket: str, **extra) -> bool:
    """Create a bucket if missing; True when this call created it."""
    try:
        s3.head_bucket(Bucket=bucket)
        return False
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket", "NotFound"):
            raise
    try:
        s3.create_bucket(Bucket=bucket, **extra)
    except ClientError as exc:
        if exc.response["Error"]["Code"] not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            raise
        return False
    return True


def ensure_buckets(s3, settings: Settings) -> dict[str, str]:
    """Create the three buckets of ARCHITECTURE §4 idempotently; returns what each one is."""
    _create(s3, settings.uploads_bucket)
    _create(s3, settings.assets_bucket)
    if s3.get_bucket_versioning(Bucket=settings.assets_bucket).get("Status") != "Enabled":
        s3.put_bucket_versioning(Bucket=settings.assets_bucket, VersioningConfiguration={"Status": "Enabled"})
    _create(s3, settings.guard_bucket, ObjectLockEnabledForBucket=True)
    wanted = {"Mode": "COMPLIANCE", "Days": settings.guard_retention_days}
    current = s3.get_object_lock_configuration(Bucket=settings.guard_bucket)["ObjectLockConfiguration"]
    rule = current.get("Rule", {}).get("DefaultRetention", {})
    # Only when it differs: S3 servers may refuse to change it on a bucket that holds objects.
    if (rule.get("Mode"), rule.get("Days")) != (wanted["Mode"], wanted["Days"]):
        s3.put_object_lock_configuration(
            Bucket=settings.guard_bucket,
            ObjectLockConfiguration={"ObjectLockEnabled": "Enabled", "Rule": {"DefaultRetention": wanted}},
        )
    return {
        settings.uploads_bucket: "uploads (temporary)",
        settings.assets_bucket: "assets (versioned)",
        settings.guard_bucket: f"guard (Object Lock COMPLIANCE, {settings.guard_retention_days} days)",
    }

