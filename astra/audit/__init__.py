"""The compliance audit: from one document back to its evidence, every hop re-verified (`astra audit`)."""

from astra.audit.engine import Auditor, audit
from astra.audit.html import lineage_svg, render_html
from astra.audit.model import (
    AuditReport,
    BadTarget,
    Check,
    CheckResult,
    Hop,
    Materialization,
    MaterializationSource,
    RecordMissing,
)

__all__ = [
    "AuditReport",
    "Auditor",
    "BadTarget",
    "Check",
    "CheckResult",
    "Hop",
    "Materialization",
    "MaterializationSource",
    "RecordMissing",
    "audit",
    "lineage_svg",
    "render_html",
]
