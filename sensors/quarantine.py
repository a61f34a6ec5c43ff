"""Uploads refused before any run: `upload_quarantine` observations, and not judging them twice.

The scanner's cursor remembers only a bounded number of recent uploads; past that, a refused
upload it forgot would be read and reported again. `RefusedBefore` asks the instance instead: an
upload whose key and ETag already have a quarantine observation among the latest `REMEMBERED` is
skipped unread.
"""

from __future__ import annotations

from dagster import AssetObservation, DagsterInstance

from astra.uploads import UploadObject
from astra_assets.orchestrator import upload_quarantine

REMEMBERED = 5000


def quarantine_event(bucket: str, key: str, reason: str, **extra) -> AssetObservation:
    return AssetObservation(asset_key=upload_quarantine.key,
                            metadata={"key": key, "bucket": bucket, "reason": reason, **extra})


class RefusedBefore:
    """`settled(obj)` for the scanner. Reads the observations once per tick, when first asked."""

    def __init__(self, instance: DagsterInstance):
        self.instance = instance
        self.refused: set[tuple[str, str]] | None = None

    def __call__(self, obj: UploadObject) -> bool:
        if self.refused is None:
            records = self.instance.fetch_observations(upload_quarantine.key, limit=REMEMBERED).records
            metadata = [r.asset_observation.metadata for r in records]
            self.refused = {(str(m["key"].value), str(m["etag"].value)) for m in metadata if "etag" in m and "key" in m}
        return (obj.key, obj.etag) in self.refused
