"""Group `config`: the tenant's zone and style maps published to CONFIG_SVC (post-audit)."""


from dagster import (
    AssetExecutionContext,
    AssetRecordsFilter,
    Backoff,
    DataVersion,
    Failure,
    MaterializeResult,
    MetadataValue,
    RetryPolicy,
    asset,
)
from dagster_aws.s3 import S3Resource

from astra.config_svc.validation import maps_sha256
from astra.ingest.template_ingest import TemplateRef, template_maps
from astra.ingest.zones import TemplateRefused
from astra_assets.ingest import template_atoms
from astra_assets.partitions import tenants_partitions
from resources import ConfigStoreResource, IntentCatalogResource, StorageLayout


def template_atoms_metadata(context: AssetExecutionContext, tenant: str) -> dict:
    """The template_atoms materialization this run made, else (a run of tenant_config alone) the
    partition's latest. Never "the latest" when this run made one: two template runs of one
    tenant may overlap, and each must publish its own template."""
    records = context.instance.fetch_materializations(
        AssetRecordsFilter(asset_key=template_atoms.key, asset_partitions=[tenant]), limit=20
    ).records
    if not records:
        raise Failure(f"template_atoms has no materialization for tenant {tenant!r}", allow_retries=False)
    mine = [r for r in records if r.run_id == context.run_id]
    chosen = mine[0] if mine else records[0]
    return {k: v.value for k, v in chosen.asset_materialization.metadata.items()}


@asset(
    group_name="config",
    partitions_def=tenants_partitions,
    deps=[template_atoms],
    description="Zone map and style map extracted from the template atoms, published as a new CONFIG_SVC version.",
    # A Redis or Postgres outage is retried (publish writes nothing unless it completes); a refused
    # template is not (allow_retries=False): retrying cannot change the verdict.
    retry_policy=RetryPolicy(max_retries=4, delay=2, backoff=Backoff.EXPONENTIAL),
)
def tenant_config(
    context: AssetExecutionContext,
    s3: S3Resource,
    storage: StorageLayout,
    config_store: ConfigStoreResource,
    intent_catalog: IntentCatalogResource,
) -> MaterializeResult:
    tenant = context.partition_key
    upstream = template_atoms_metadata(context, tenant)
    template_sha = upstream["sha256"]
    template_name = TemplateRef.parse(upstream["template_key"]).name
    try:
        maps, _manifest = template_maps(
            s3.get_client(), storage.assets_bucket, tenant, template_sha, intent_catalog.known_intents()
        )
    except TemplateRefused as refused:
        raise Failure(
            description=f"template zones refused: {refused}",
            metadata={"code": refused.code, "location": MetadataValue.json(refused.location or {})},
            allow_retries=False,
        ) from refused
    version = config_store.service().publish(
        tenant, maps.zone_map, maps.style_map, template_sha, context.run_id, template_name
    )
    digest = maps_sha256(maps.zone_map, maps.style_map)
    return MaterializeResult(
        metadata={
            "config_version": version,
            "template_sha256": template_sha,
            "template_name": template_name,
            "zones": len(maps.zone_map["zones"]),
            "zone_ids": ", ".join(z["id"] for z in maps.zone_map["zones"]),
            "fallback_zone": maps.zone_map["fallback_zone"],
            "zone_map": MetadataValue.json(maps.zone_map),
            "maps_sha256": digest,
        },
        data_version=DataVersion(digest),
    )


assets = [tenant_config]
