"""S3 through dagster-aws, and the bucket layout of ARCHITECTURE §4."""

from __future__ import annotations

from dagster import ConfigurableResource, EnvVar
from dagster_aws.s3 import S3Resource

from astra.settings import Settings


def s3_resource() -> S3Resource:
    return S3Resource(endpoint_url=EnvVar("ASTRA_S3_ENDPOINT_URL"), region_name=EnvVar("AWS_DEFAULT_REGION"))


class StorageLayout(ConfigurableResource):
    """Which bucket holds what; the same names the engines read from Settings."""

    uploads_bucket: str
    assets_bucket: str
    guard_bucket: str
    guard_retention_days: int = 365

    @classmethod
    def from_env(cls) -> "StorageLayout":
        return cls(
            uploads_bucket=EnvVar("ASTRA_UPLOADS_BUCKET"),
            assets_bucket=EnvVar("ASTRA_ASSETS_BUCKET"),
            guard_bucket=EnvVar("ASTRA_GUARD_BUCKET"),
            guard_retention_days=EnvVar.int("ASTRA_GUARD_RETENTION_DAYS"),
        )

    def settings(self, endpoint_url: str | None) -> Settings:
        return Settings(
            s3_endpoint_url=endpoint_url,
            uploads_bucket=self.uploads_bucket,
            assets_bucket=self.assets_bucket,
            guard_bucket=self.guard_bucket,
            guard_retention_days=self.guard_retention_days,
        )
