"""Group `ingest`: the tenant's template upload and its atoms."""

from dagster import AssetSpec

from astra_assets.partitions import tenants_partitions

template_upload = AssetSpec(
    "template_upload",
    group_name="ingest",
    partitions_def=tenants_partitions,
    description="A tenant's Word template in the uploads bucket: <tenant>/templates/<name>.docx (external).",
    metadata={"bucket_env": "ASTRA_UPLOADS_BUCKET", "key_pattern": "<tenant>/templates/<name>.docx"},
)

assets = [template_upload]
