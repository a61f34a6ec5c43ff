"""`astra guard verify [--tenant T] [--json]`: audit the chain of custody; exit 0 only when intact."""

from __future__ import annotations

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from astra import s3 as s3_lib
from astra.cli.common import console, emit_json, errors, fail, out
from astra.db import make_engine
from astra.guard.checkpoints import checkpoint_key
from astra.guard.verify import DEFAULT_ORPHAN_GRACE_SECONDS, UnknownTenant
from astra.guard.verify import verify as run_verify
from astra.settings import Settings

app = typer.Typer(help="GUARD: WORM custody of session audio and its tamper-evident ledger.", no_args_is_help=True)

_PHASES = {"ledger": "re-walking ledgers", "objects": "re-hashing objects"}


@app.callback()
def guard() -> None:
    """GUARD: WORM custody of session audio and its tamper-evident ledger."""
    # A callback keeps `guard` a command group (`astra guard verify`) while it has one command.


@app.command()
def verify(
    tenant: str = typer.Option(None, "--tenant", "-t", help="one tenant (default: all)"),
    json_out: bool = typer.Option(False, "--json", help="print the report as JSON"),
    orphan_grace: float = typer.Option(
        DEFAULT_ORPHAN_GRACE_SECONDS, "--orphan-grace", help="seconds an unledgered object may be in flight"
    ),
    no_checkpoint: bool = typer.Option(False, "--no-checkpoint", help="do not write a checkpoint"),
) -> None:
    """Re-walk each tenant's hash chain, re-hash the guard objects, check checkpoints and orphans.

    Checks the ledger against every checkpoint: the database rows and their WORM copies in the guard
    bucket (<tenant>/checkpoints/<size>.json, Object Lock COMPLIANCE), which a database superuser
    cannot rewrite. Writes a Merkle checkpoint (locked object, then row) for every intact ledger that
    grew. Exit 0 only when everything is intact, 1 when something is not (or the audit could not
    run), 2 for a tenant that does not exist."""
    with errors():
        settings = Settings.from_env()
        engine = make_engine(settings.require("database_url"))
        s3 = s3_lib.client(settings)
        with Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            console=console, transient=True, disable=json_out,
        ) as bar:
            tasks: dict[str, int] = {}

            def progress(phase: str, done: int, total: int) -> None:
                if phase not in tasks:
                    tasks[phase] = bar.add_task(_PHASES.get(phase, phase), total=total)
                bar.update(tasks[phase], completed=done, total=total)

            try:
                report = run_verify(
                    engine, s3, settings, tenant,
                    write_checkpoints=not no_checkpoint, orphan_grace_seconds=orphan_grace, progress=progress,
                )
            except UnknownTenant as exc:
                raise fail(str(exc), 2) from None
        if json_out:
            emit_json(report.to_dict())
        else:
            _print(report, settings.guard_bucket)
    raise typer.Exit(0 if report.ok else 1)


def _print(report, bucket: str) -> None:
    scope = f"{report.tenants} tenant{'s' * (report.tenants != 1)}, {report.entries} entries, {report.objects} objects"
    if report.ok:
        out.print(f"[green]custody intact[/]: {scope}")
    else:
        table = Table("tenant", "seq", "kind", "detail", title="custody problems")
        for p in report.problems:
            table.add_row(p.tenant, "" if p.seq is None else str(p.seq), p.kind, p.detail)
        out.print(table)
        out.print(f"[bold red]{len(report.problems)} problem{'s' * (len(report.problems) != 1)}[/]: {scope}")
    for cp in report.checkpoints:
        out.print(f"checkpoint {cp.tenant}: size {cp.size}, root {cp.merkle_root}, "
                  f"locked copy s3://{bucket}/{checkpoint_key(cp.tenant, cp.size)}")
