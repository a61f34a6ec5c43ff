"""S3 through dagster-aws, and the bucket layout of ARCHITECTURE §4."""

from __future__ import annotations

from dagster import ConfigurableResource
from dagster_aws.s3 import S3Resource

from astra import settings as defaults
from astra.settings import Settings
from resources.env import env_or


def s3_resource() -> S3Resource:
    # No endpoint URL: AWS S3 itself. The embedded stack and the tests point it at moto.
    return S3Resource(endpoint_url=env_or("s3_endpoint_url", None), region_name=env_or("aws_region", "us-east-1"))


class StorageLayout(ConfigurableResource):
    """Which bucket holds what; the same names the engines read from Settings."""

    uploads_bucket: str
    assets_bucket: str
    guard_bucket: str
    guard_retention_days: int = defaults.DEFAULT_RETENTION_DAYS

    @classmethod
    def from_env(cls) -> StorageLayout:
        return cls(
            uploads_bucket=env_or("uploads_bucket", defaults.DEFAULT_UPLOADS_BUCKET),
            assets_bucket=env_or("assets_bucket", defaults.DEFAULT_ASSETS_BUCKET),
            guard_bucket=env_or("guard_bucket", defaults.DEFAULT_GUARD_BUCKET),
            guard_retention_days=env_or("guard_retention_days", defaults.DEFAULT_RETENTION_DAYS),
        )

    def settings(self, endpoint_url: str | None) -> Settings:
        return Settings(
            s3_endpoint_url=endpoint_url,
            uploads_bucket=self.uploads_bucket,
            assets_bucket=self.assets_bucket,
            guard_bucket=self.guard_bucket,
            guard_retention_days=self.guard_retention_days,
        )
