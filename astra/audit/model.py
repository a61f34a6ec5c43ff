"""What an audit reports: hops, each a list of checks, and the one interface to Dagster's event log it reads.

A **hop** is one link of the chain from a document back to its evidence (the document binary, its
materialization, the intent output, the model, the transcript, the config version, the template, the audio under
custody, the manifest). Each hop holds the **checks** that were re-done on it, every one re-reading and re-hashing
what it names, and the **facts** an auditor wants to see (run id, S3 version, seq...). A hop verifies only when it
has at least one check and every check passed: an empty hop is never a pass.

The engine is plain Python (no Dagster import: the import-linter contract of pyproject.toml); the one hop that lives
in Dagster's event log (run id, asset key, partition, metadata) is read through `MaterializationSource`, which the
Dagster layer implements over a `DagsterInstance` (`resources/audit.py`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class Materialization:
    """One materialization event of an asset partition, as the audit reads it."""

    asset_key: str  # user string: "document_binary"
    partition: str | None
    run_id: str
    timestamp: float  # seconds since the epoch
    metadata: dict[str, Any]  # plain values (urls and JSON unwrapped)
    data_version: str | None = None


@dataclass(frozen=True)
class CheckResult:
    asset_key: str
    check_name: str
    passed: bool
    partition: str | None = None


class MaterializationSource(Protocol):
    """Dagster's event log, read-only. `history` is newest first."""

    def latest(self, asset_key: str, partition: str | None) -> Materialization | None: ...

    def history(self, asset_key: str, partition: str | None, limit: int = 100) -> list[Materialization]: ...

    def records(self, asset_key: str, limit: int = 10_000) -> list[Materialization]:
        """Materializations of `asset_key` over every partition, newest first."""
        ...

    def check_results(self, run_id: str) -> list[CheckResult]:
        """The asset check evaluations the run recorded."""
        ...

    def run_status(self, run_id: str) -> str | None:
        """The run's status (SUCCESS, FAILURE, ...), None when the run is unknown."""
        ...

    def run_partition(self, run_id: str) -> str | None:
        """The partition the run was launched for (its ``dagster/partition`` tag), None when it has none or is
        unknown."""
        ...


class BadTarget(ValueError):
    """The argument names no document ASTRA built (malformed, or unknown): exit 2, nothing was verified."""


class RecordMissing(RuntimeError):
    """The document is in S3 but Dagster holds no materialization of it (its record was wiped): a failed audit, exit 1,
    not a typo."""


@dataclass
class Check:
    name: str
    ok: bool
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "detail": self.detail}


@dataclass
class Hop:
    id: str  # stable: document, materialization, intent_output, model, transcript, config, template, custody, manifest
    title: str
    subject: str = ""  # what the hop is about: a URI, a version
    checks: list[Check] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)

    def check(self, name: str, ok: bool, detail: str) -> bool:
        self.checks.append(Check(name, bool(ok), detail))
        return bool(ok)

    def fail(self, name: str, detail: str) -> bool:
        return self.check(name, False, detail)

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)

    @property
    def failures(self) -> list[Check]:
        failed = [c for c in self.checks if not c.ok]
        if not self.checks:
            failed = [Check("verified", False, "nothing could be checked")]
        return failed

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "title": self.title, "subject": self.subject, "ok": self.ok,
                "checks": [c.to_dict() for c in self.checks], "facts": self.facts}


@dataclass
class AuditReport:
    target: str  # what the user asked for
    partition: str
    asset: str  # document_binary or v2_clone_binary
    hops: list[Hop] = field(default_factory=list)
    parent: AuditReport | None = None  # a V2 clone's parent version, walked the same way

    @property
    def ok(self) -> bool:
        return bool(self.hops) and all(h.ok for h in self.hops) and (self.parent is None or self.parent.ok)

    def failure_lines(self) -> list[str]:
        """One line per failed check: `<partition> <hop>: <check>: <detail>`."""
        lines = [f"{self.partition} {hop.id}: {c.name}: {c.detail}" for hop in self.hops for c in hop.failures
                 if not hop.ok]
        return lines + (self.parent.failure_lines() if self.parent else [])

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target, "partition": self.partition, "asset": self.asset, "ok": self.ok,
                "failures": self.failure_lines(), "hops": [h.to_dict() for h in self.hops],
                "parent": self.parent.to_dict() if self.parent else None}
