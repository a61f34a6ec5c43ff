"""Group `ingest`: a tenant's template upload, audited and atomized (ARCHITECTURE §3)."""

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetSpec,
    Backoff,
    Config,
    DataVersion,
    Failure,
    MaterializeResult,
    MetadataValue,
    RetryPolicy,
    asset,
)
from dagster_aws.s3 import S3Resource

from astra.ingest.errors import AuditRefused
from astra.ingest.template_ingest import TemplateInputError, TemplateRef, ingest_template
from astra.settings import ENV
from astra_assets.partitions import tenants_partitions
from resources import StorageLayout

template_upload = AssetSpec(
    "template_upload",
    group_name="ingest",
    partitions_def=tenants_partitions,
    description="A tenant's Word template in the uploads bucket: <tenant>/templates/<name>.docx (external).",
    metadata={"bucket_env": ENV["uploads_bucket"], "key_pattern": "<tenant>/templates/<name>.docx"},
)


class TemplateUploadConfig(Config):
    """Which upload to ingest; the sensor fills it in from what it saw."""

    key: str
    sha256: str


@asset(
    group_name="ingest",
    partitions_def=tenants_partitions,
    deps=[template_upload],
    check_specs=[
        AssetCheckSpec("template_roundtrip_lossless", asset="template_atoms", blocking=True,
                       description="Reassembling the stored atoms gives every part byte-identical, in the same order."),
        AssetCheckSpec("template_audit_passed", asset="template_atoms",
                       description="The upload audit found nothing to refuse (macros, ActiveX, external targets, "
                       "active fields, XXE, zip bombs…)."),
    ],
    description="The template audited, then broken into content-addressed atoms plus a manifest in the assets bucket.",
    # S3 faults are retried (blob writes are idempotent); refusals are not (allow_retries=False).
    retry_policy=RetryPolicy(max_retries=4, delay=2, backoff=Backoff.EXPONENTIAL),
)
def template_atoms(
    context: AssetExecutionContext, config: TemplateUploadConfig, s3: S3Resource, storage: StorageLayout
) -> MaterializeResult:
    client = s3.get_client()
    if TemplateRef.parse(config.key).tenant != context.partition_key:
        raise Failure(f"{config.key} is not a template of tenant {context.partition_key!r}", allow_retries=False)
    try:
        result = ingest_template(client, storage.uploads_bucket, storage.assets_bucket, config.key, config.sha256)
    except TemplateInputError as bad:
        raise Failure(description=str(bad), metadata={"template_key": config.key}, allow_retries=False) from bad
    except AuditRefused as refused:
        findings = refused.report.to_dict()
        raise Failure(
            description=f"template refused by the upload audit: {refused}",
            metadata={"audit": MetadataValue.json(findings), "template_key": config.key, "sha256": config.sha256},
            allow_retries=False,
        ) from refused

    problems = result.roundtrip_problems
    counts = result.manifest["counts"]
    context.log.info(f"{config.key}: {counts['parts']} parts, {counts['atoms']} atoms, {result.atoms_written} new")
    return MaterializeResult(
        metadata={
            "uri": MetadataValue.url(result.manifest_uri),
            "template_key": config.key,
            "sha256": result.template_sha256,
            "size": result.size,
            "parts": counts["parts"],
            "atoms": counts["atoms"],
            "unique_atoms": counts["unique_atoms"],
            "atoms_written": result.atoms_written,
            "atoms_deduplicated": result.atoms_already_stored,
            "bytes_written": result.bytes_written,
            "audit_verdict": "pass",
            "audit_report": MetadataValue.url(result.audit_uri),
            "sidecar_sha256": result.sidecar_sha256 or "none",
        },
        data_version=DataVersion(result.template_sha256),
        check_results=[
            AssetCheckResult(
                check_name="template_roundtrip_lossless",
                passed=not problems,
                severity=AssetCheckSeverity.ERROR,
                metadata={"problems": MetadataValue.json(problems), "parts_compared": counts["parts"]},
            ),
            AssetCheckResult(
                check_name="template_audit_passed",
                passed=result.audit_report["passed"],
                metadata={"findings": MetadataValue.json(result.audit_report.get("findings", []))},
            ),
        ],
    )


assets = [template_upload, template_atoms]
