"""Exceptions of the INGEST engine's atomizer and upload audit."""

from __future__ import annotations

from typing import TYPE_CHECKING

from astra.ooxml.errors import PackageError

__all__ = ["AuditRefused", "IngestError", "PackageError", "ReassemblyError"]

if TYPE_CHECKING:  # the audit module imports this one; avoid the cycle at run time
    from .audit import AuditReport


class IngestError(Exception):
    """Base class of every INGEST error."""




class ReassemblyError(IngestError):
    """A manifest and its atoms do not rebuild the package: missing or corrupted atom, bad manifest."""


class AuditRefused(IngestError):
    """The upload audit refused a document; ``report`` holds every finding.

    The message names the first refusal and where it was found, which is what a user needs to
    fix the file; the full list is in ``report.findings``.
    """

    def __init__(self, report: AuditReport) -> None:
        self.report = report
        refusals = report.refusals
        if refusals:
            first = refusals[0]
            message = f"{first.message} (at {first.location})"
            if len(refusals) > 1:
                message += f"; {len(refusals) - 1} more refusal(s)"
        else:  # defensive: only raised on refused reports
            message = "upload refused"
        super().__init__(message)
