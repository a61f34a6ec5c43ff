"""`astra audit <document sha256 | s3 uri | tenant--session--vN> [--json] [--html FILE]`: walk a document's chain
back to its evidence and re-verify every hop; exit 0 only when every hop verified, 1 when one did not, 2 when the
argument names no document.

Dagster: the materialization hop reads the instance's event log through `resources.audit` (the Dagster layer). This
module is under `astra/`, which the import-linter contract keeps free of Dagster and of the Dagster layer, so the
adapter is loaded by name (importlib) inside the command, when it runs: `astra` imports no Dagster at import time and
the engine (`astra.audit`) stays plain Python behind its `MaterializationSource` interface.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path

import typer
from rich.table import Table
from rich.text import Text

from astra import s3 as s3_lib
from astra.audit import AuditReport, BadTarget, RecordMissing, render_html
from astra.audit.engine import Auditor
from astra.cli.common import console, emit_json, errors, fail, out
from astra.db import make_engine
from astra.runtime import config_service
from astra.settings import Settings

ADAPTER = "resources.audit"  # the Dagster layer's MaterializationSource (see the module docstring)


def dagster_home(explicit: str | None) -> str | None:
    """--dagster-home, else $DAGSTER_HOME, else the embedded stack's instance (`astra dev`, `make demo`)."""
    if explicit:
        return explicit
    if os.environ.get("DAGSTER_HOME"):
        return os.environ["DAGSTER_HOME"]
    from astra.stack.stack import Stack

    home = Stack().root / "dagster_home"
    return str(home) if (home / "dagster.yaml").is_file() else None


def audit_command(
    target: str = typer.Argument(..., help="document sha256, s3:// URI, or <tenant>--<session>--v<n>"),
    json_out: bool = typer.Option(False, "--json", help="print the report as JSON on stdout"),
    html_out: Path = typer.Option(None, "--html", help="also write a self-contained HTML report (lineage as SVG)",
                                  dir_okay=False, writable=True),
    home: str = typer.Option(None, "--dagster-home", help="the Dagster instance's directory (default $DAGSTER_HOME)"),
) -> None:
    """Walk a document's chain (document → materialization → intent output and model → transcript → config and
    template → audio under custody → manifest; for a V2 clone also its parent and the comparison reports behind its
    model) and re-verify every hop: bytes re-hashed, rows re-read, atoms re-assembled, the custody chain re-walked.
    Exit 0 only when every hop verified; 1 names each failed check; 2 when the argument names no document."""
    with errors():
        settings = Settings.from_env()
        where = dagster_home(home)
        if where is None:
            raise fail("no Dagster instance: set DAGSTER_HOME or --dagster-home (or start the stack: astra dev)", 2)
        adapter = importlib.import_module(ADAPTER)
        engine = make_engine(settings.require("database_url"))
        with adapter.open_source(where) as source, console.status("auditing…", spinner="dots") as status:
            auditor = Auditor(s3_lib.client(settings), settings, engine, source, config_service(settings),
                              progress=lambda what: status.update(f"auditing {what}…"))
            try:
                target_doc = auditor.resolve(target)
            except BadTarget as exc:
                raise fail(str(exc), 2) from None
            except RecordMissing as exc:
                raise fail(str(exc), 1) from None
            report = auditor.walk(target_doc, target)
        if html_out is not None:
            html_out.write_text(render_html(report), encoding="utf-8")
            console.print(f"report written to {html_out}")
        if json_out:
            emit_json(report.to_dict())
        else:
            _print(report)
    if not report.ok:
        for line in report.failure_lines():
            console.print(Text.assemble(("FAILED ", "bold red"), line), highlight=False)
    raise typer.Exit(0 if report.ok else 1)


def _print(report: AuditReport, depth: int = 0) -> None:
    table = Table("hop", "check", "", "detail", title=f"{report.partition} ({report.asset})", title_justify="left")
    for hop in report.hops:
        checks = hop.checks or []
        for i, c in enumerate(checks):
            mark = Text("✓", style="green") if c.ok else Text("✗", style="bold red")
            table.add_row(Text(hop.title if i == 0 else "", style="bold" if i == 0 else ""), c.name, mark,
                          Text(c.detail), end_section=i == len(checks) - 1)
        if not checks:
            table.add_row(hop.title, "verified", Text("✗", style="bold red"), "nothing could be checked",
                          end_section=True)
    out.print(table)
    if report.parent is not None:
        out.print(f"parent version of {report.partition}:")
        _print(report.parent, depth + 1)
    if depth == 0:
        out.print(Text("every hop verified", style="bold green") if report.ok else
                  Text(f"{len(report.failure_lines())} check(s) failed", style="bold red"))
