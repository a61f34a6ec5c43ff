"""Archival: a tenant's documents and durable session copies move to a colder storage class once they are older than
the tenant's retention (``tenants.archive_after_days``), through an S3 lifecycle configuration ASTRA keeps on the
assets bucket. S3 does the moving; this module only writes the rules.

Rules (two per tenant, IDs in ASTRA's namespace ``astra-archive-``):

- ``astra-archive-<tenant>--documents``: prefix ``<tenant>/documents/`` (the built documents);
- ``astra-archive-<tenant>--blobs``: prefix ``<tenant>/blobs/`` (the session's durable copies, content-addressed,
  with the tenant's other blobs: atoms, transcripts, intent outputs, reports).

Each transitions current versions ``Days`` after creation and noncurrent versions ``NoncurrentDays`` after they
became noncurrent (the assets bucket keeps versions) to ``GLACIER_IR``: an instant-access class, so a build, an
audit or a comparison still reads an archived blob at once (GLACIER and DEEP_ARCHIVE would need a restore first, and
are refused). No rule ever expires (deletes) anything. ``--`` cannot occur in a tenant slug, so a rule ID names one
tenant and one area unambiguously.

The guard bucket is never touched: custody objects live only there, under COMPLIANCE Object Lock, and archival has
no business with them; a configuration naming the same bucket for assets and guard is refused.

``reconcile`` reads the bucket's lifecycle configuration back, replaces the rules in ASTRA's namespace with the ones
the tenants' settings ask for and keeps every other rule as it was (rules someone else set), and writes only when
something changed. S3 has no conditional write for a lifecycle configuration: a rule another writer adds between
the read and the write is lost, so one reconcile runs at a time (the daily schedule). A bucket holds at most 1,000
rules: past 500 tenants (less the foreign rules) the reconcile refuses, naming the count, before writing anything.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field

from botocore.exceptions import ClientError
from sqlalchemy import Engine, select
from sqlalchemy.dialects.postgresql import insert as pg_insert

from astra.db.schema import tenants
from astra.s3 import error_code
from astra.settings import MAX_RETENTION_DAYS, MIN_RETENTION_DAYS
from astra.tenancy import RESERVED_TENANTS, InvalidKey, validate_slug

RULE_PREFIX = "astra-archive-"
AREAS = ("documents", "blobs")  # <tenant>/documents/: built documents; <tenant>/blobs/: durable session copies
ARCHIVE_CLASS = "GLACIER_IR"
# Classes a document or a blob can be read from at once; the others need a restore, which no reader does.
INSTANT_CLASSES = frozenset({"STANDARD_IA", "ONEZONE_IA", "GLACIER_IR", "INTELLIGENT_TIERING"})
MAX_RULES = 1000  # S3's limit per lifecycle configuration
DEFAULT_ARCHIVE_AFTER_DAYS = 365  # tenants.archive_after_days' server default
_NO_CONFIGURATION = frozenset({"NoSuchLifecycleConfiguration"})


class ArchivalRefused(RuntimeError):
    """The rules were not written; the message says why."""


def rule_id(tenant: str, area: str) -> str:
    return f"{RULE_PREFIX}{tenant}--{area}"


def is_ours(rule: Mapping) -> bool:
    return str(rule.get("ID", "")).startswith(RULE_PREFIX)


def check_days(tenant: str, days: int) -> int:
    if isinstance(days, bool) or not isinstance(days, int) or not MIN_RETENTION_DAYS <= days <= MAX_RETENTION_DAYS:
        raise ArchivalRefused(f"{tenant}: archive_after_days {days!r} is not a whole number of days between "
                              f"{MIN_RETENTION_DAYS} and {MAX_RETENTION_DAYS}")
    return days


def archive_rules(retention: Mapping[str, int], storage_class: str = ARCHIVE_CLASS) -> list[dict]:
    """ASTRA's lifecycle rules for these tenants (tenant -> days), in a stable order."""
    if storage_class not in INSTANT_CLASSES:
        raise ArchivalRefused(f"{storage_class} needs a restore before an object can be read: archival uses one of "
                              f"{sorted(INSTANT_CLASSES)}")
    rules = []
    for tenant in sorted(retention):
        try:
            validate_slug(tenant)
        except InvalidKey as exc:
            raise ArchivalRefused(str(exc)) from None
        days = check_days(tenant, retention[tenant])
        for area in AREAS:
            rules.append({
                "ID": rule_id(tenant, area),
                "Filter": {"Prefix": f"{tenant}/{area}/"},
                "Status": "Enabled",
                "Transitions": [{"Days": days, "StorageClass": storage_class}],
                "NoncurrentVersionTransitions": [{"NoncurrentDays": days, "StorageClass": storage_class}],
            })
    return rules


def tenant_retention(engine: Engine) -> dict[str, int]:
    """Every customer tenant's archive_after_days (the base model's owner has no documents: left out)."""
    with engine.connect() as conn:
        rows = conn.execute(select(tenants.c.tenant_id, tenants.c.archive_after_days)).all()
    return {tenant: days for tenant, days in rows if tenant not in RESERVED_TENANTS}


def set_archive_after_days(engine: Engine, tenant: str, days: int) -> None:
    """A tenant's retention in the standard class (the tenant row is created if missing); the next reconcile writes
    its rules."""
    try:
        validate_slug(tenant)
    except InvalidKey as exc:
        raise ArchivalRefused(str(exc)) from None
    check_days(tenant, days)
    with engine.begin() as conn:
        conn.execute(pg_insert(tenants).values(tenant_id=tenant, archive_after_days=days)
                     .on_conflict_do_update(index_elements=[tenants.c.tenant_id], set_={"archive_after_days": days}))


def read_configuration(s3, bucket: str) -> dict:
    """The bucket's lifecycle configuration as GetBucketLifecycleConfiguration returns it (Rules, and
    TransitionDefaultMinimumObjectSize when S3 sends it); no configuration: no rules."""
    try:
        response = s3.get_bucket_lifecycle_configuration(Bucket=bucket)
    except ClientError as exc:
        if error_code(exc) in _NO_CONFIGURATION:
            return {"Rules": []}
        raise
    return {key: response[key] for key in ("Rules", "TransitionDefaultMinimumObjectSize") if key in response}


def _canonical(rule: Mapping) -> str:
    return json.dumps(rule, sort_keys=True, default=str)


@dataclass
class ArchivalReport:
    bucket: str
    tenants: int = 0
    added: list[str] = field(default_factory=list)  # rule IDs
    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)  # ASTRA's rules no tenant asks for any more
    foreign: list[str] = field(default_factory=list)  # rules someone else set: kept as they were
    written: bool = False

    def to_dict(self) -> dict:
        return {"bucket": self.bucket, "tenants": self.tenants, "added": self.added, "changed": self.changed,
                "removed": self.removed, "foreign": self.foreign, "written": self.written}


def reconcile(s3, assets_bucket: str, guard_bucket: str, retention: Mapping[str, int],
              storage_class: str = ARCHIVE_CLASS) -> ArchivalReport:
    """Make ASTRA's archive rules on ``assets_bucket`` exactly those ``retention`` asks for, keeping every other
    rule; write only when something changed. Never reads or writes ``guard_bucket``."""
    if assets_bucket == guard_bucket:
        raise ArchivalRefused(f"the assets bucket and the guard bucket are both {assets_bucket!r}: archival would "
                              "reach custody objects, refusing")
    desired = archive_rules(retention, storage_class)
    current = read_configuration(s3, assets_bucket)
    rules = current["Rules"]
    foreign = [rule for rule in rules if not is_ours(rule)]
    report = ArchivalReport(assets_bucket, tenants=len(retention), foreign=[str(r.get("ID", "")) for r in foreign])
    if len(foreign) + len(desired) > MAX_RULES:
        raise ArchivalRefused(f"{len(retention)} tenants need {len(desired)} rules and {len(foreign)} other rules are "
                              f"set: over S3's {MAX_RULES} per bucket; nothing written")
    ours = {rule["ID"]: _canonical(rule) for rule in rules if is_ours(rule)}
    wanted = {rule["ID"]: _canonical(rule) for rule in desired}
    report.added = sorted(set(wanted) - set(ours))
    report.removed = sorted(set(ours) - set(wanted))
    report.changed = sorted(i for i in set(wanted) & set(ours) if wanted[i] != ours[i])
    if not (report.added or report.removed or report.changed):
        return report
    new_rules = foreign + desired
    if new_rules:
        extra = {key: current[key] for key in ("TransitionDefaultMinimumObjectSize",) if key in current}
        s3.put_bucket_lifecycle_configuration(Bucket=assets_bucket, LifecycleConfiguration={"Rules": new_rules},
                                              **extra)
    else:
        s3.delete_bucket_lifecycle(Bucket=assets_bucket)
    report.written = True
    return report


__all__ = [
    "ARCHIVE_CLASS", "AREAS", "DEFAULT_ARCHIVE_AFTER_DAYS", "INSTANT_CLASSES", "MAX_RULES", "RULE_PREFIX",
    "ArchivalRefused", "ArchivalReport", "archive_rules", "is_ours", "read_configuration", "reconcile", "rule_id",
    "set_archive_after_days", "tenant_retention",
]
