"""`astra config publish | show | history --tenant T`."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from astra.cli.common import emit_json, errors, out
from astra.runtime import config_service
from astra.settings import Settings

app = typer.Typer(help="CONFIG_SVC: each tenant's zone map and style map, versioned.", no_args_is_help=True)

TENANT = typer.Option(..., "--tenant", "-t", help="tenant slug")


def _read_json(path: Path, what: str) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"{what} file not found: {path}") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{what} file {path} is not valid JSON: {exc}") from None


@app.command()
def publish(
    tenant: str = TENANT,
    zone_map: Path = typer.Option(..., "--zone-map", help="zone map JSON file"),
    style_map: Path = typer.Option(..., "--style-map", help="style map JSON file"),
    template_sha256: str = typer.Option(..., "--template-sha256", help="sha256 of the template the maps come from"),
    template_name: str = typer.Option(None, "--template-name", help="the template's name (sessions must name it)"),
    run_id: str = typer.Option("cli", "--run-id", help="who published it (a Dagster run id, or 'cli')"),
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """Validate and publish a new config version for a tenant; prints the version."""
    with errors():
        svc = config_service(Settings.from_env())
        version = svc.publish(
            tenant, _read_json(zone_map, "zone map"), _read_json(style_map, "style map"), template_sha256, run_id,
            template_name,
        )
        if json_out:
            emit_json({"tenant": tenant, "version": version})
        else:
            out.print(f"{tenant}: published version {version}", markup=False)


@app.command()
def show(
    tenant: str = TENANT,
    version: int = typer.Option(None, "--version", "-v", help="a past version (default: the current one)"),
) -> None:
    """Print a tenant's config snapshot as JSON (read through the cache)."""
    with errors():
        emit_json(json.loads(config_service(Settings.from_env()).snapshot(tenant, version).to_json()))


@app.command()
def history(tenant: str = TENANT, json_out: bool = typer.Option(False, "--json")) -> None:
    """List a tenant's config versions."""
    with errors():
        rows = config_service(Settings.from_env()).history(tenant)
        if json_out:
            emit_json(rows)
            return
        table = Table("version", "template sha256", "created by run", "created at")
        for r in rows:
            table.add_row(str(r["version"]), r["template_sha256"][:16] + "…", r["created_by_run"], r["created_at"])
        out.print(table)
