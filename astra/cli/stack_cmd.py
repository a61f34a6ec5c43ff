"""`astra stack up | down | status`."""

from __future__ import annotations

import typer
from rich.table import Table

from astra.cli.common import console, emit_json, errors, out
from astra.settings import ENV
from astra.stack.stack import Stack

app = typer.Typer(
    help="The embedded stack: Postgres, Redis, S3 and the gRPC services (serve ingest, serve core) on loopback "
         "(a sandbox).", no_args_is_help=True)

SANDBOX_NOTE = (
    "The embedded stack is a sandbox: moto keeps S3 in memory, so `astra stack down` discards "
    "S3, the embedded Postgres data and the Redis keys together. For lasting state set "
    "ASTRA_DATABASE_URL, ASTRA_REDIS_URL and ASTRA_S3_ENDPOINT_URL to real services."
)


@app.command()
def up() -> None:
    """Start what is missing, create buckets, run migrations, start the services, write .astra/stack.env.
    Idempotent. A given ASTRA_INGEST_TARGET / ASTRA_CORE_TARGET is used instead of starting that service."""
    with errors():
        stack = Stack(say=lambda m: console.print(f"[green]•[/] {m}"))
        with console.status("bringing the stack up…"):
            values = stack.up()
        console.print(f"[green]ready[/] — env written to {stack.env_file} (source it)")
        console.print(f"[dim]{SANDBOX_NOTE}[/]")
        out.print(f"{ENV['database_url']}={values[ENV['database_url']]}")


@app.command()
def down() -> None:
    """Stop only what `up` started and discard the sandbox's state."""
    with errors():
        for line in Stack().down() or ["nothing to stop"]:
            console.print(f"[green]•[/] {line}")


@app.command()
def status(json_out: bool = typer.Option(False, "--json", help="machine-readable output")) -> None:
    """Report each part, where it comes from and whether it answers. Exit 1 if one does not."""
    with errors():
        parts = Stack().status()
        if json_out:
            emit_json({name: vars(p) for name, p in parts.items()} | {"sandbox": _sandbox(parts)})
        else:
            if not parts:
                console.print("no stack is up here (astra stack up)")
            table = Table("part", "source", "url", "pid", "answers")
            for name, p in parts.items():
                table.add_row(name, p.source, p.url, str(p.pid or "-"), "[green]yes[/]" if p.answers else "[red]no[/]")
            if parts:
                out.print(table)
                if _sandbox(parts):
                    console.print(f"[yellow]{SANDBOX_NOTE}[/]")
        if not parts or not all(p.answers for p in parts.values()):
            raise typer.Exit(1)


def _sandbox(parts) -> bool:
    s3 = parts.get("s3")
    return bool(s3 and s3.started_here)
