"""Group `orchestrator`: the session upload and its handover."""

from dagster import AssetSpec

from astra_assets.partitions import sessions_partitions

session_upload = AssetSpec(
    "session_upload",
    group_name="orchestrator",
    partitions_def=sessions_partitions,
    description="A recorded session in the uploads bucket; manifest.json arrives last (external).",
    metadata={"bucket_env": "ASTRA_UPLOADS_BUCKET", "key_pattern": "<tenant>/sessions/<session_id>/v<n>/"},
)

assets = [session_upload]
