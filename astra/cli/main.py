"""`astra`: the platform's command line."""

from __future__ import annotations

import typer

from astra.cli import (
    audit_cmd,
    build_cmd,
    config_cmd,
    core_cmd,
    dev_cmd,
    guard_cmd,
    ingest_cmd,
    serve_cmd,
    session_cmd,
    stack_cmd,
)
from astra.cli.common import set_verbose

app = typer.Typer(
    name="astra",
    help="ASTRA: sessions to documents from each tenant's template, audio under chain of custody.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(stack_cmd.app, name="stack")
app.add_typer(config_cmd.app, name="config")
app.add_typer(ingest_cmd.app, name="ingest")
app.add_typer(guard_cmd.app, name="guard")
app.add_typer(session_cmd.app, name="session")
app.add_typer(serve_cmd.app, name="serve")
app.add_typer(core_cmd.app, name="core")
app.command("dev")(dev_cmd.dev)
app.command("build")(build_cmd.build_command)
app.command("audit")(audit_cmd.audit_command)


@app.callback()
def main(verbose: bool = typer.Option(False, "--verbose", "-V", help="show details and tracebacks")) -> None:
    set_verbose(verbose)


if __name__ == "__main__":
    app()
