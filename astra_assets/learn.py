"""Group `learn`: feedback documents uploaded by users."""

from dagster import AssetSpec

from astra.settings import ENV
from astra_assets.partitions import sessions_partitions

feedback_upload = AssetSpec(
    "feedback_upload",
    group_name="learn",
    partitions_def=sessions_partitions,
    description="A user-edited document vN (+ optional corrections JSON) in the uploads bucket (external).",
    metadata={"bucket_env": ENV["uploads_bucket"], "key_pattern": "<tenant>/feedback/<session_id>/v<n>.docx"},
)

assets = [feedback_upload]
