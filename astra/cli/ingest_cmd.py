"""`astra ingest roundtrip | audit | zones | template` — INGEST from the command line.

`zones` lists a template's zones as a table (kind; for a docxtpl template the fields read and whether the zone is
marked; what it accepts; where it is), or with --json prints the zone map and style map.

Exit codes (kept exact: acceptance checks rely on them): roundtrip 1 if any file is not lossless,
2 if any is refused by the audit; audit 0 pass, 2 refused; zones and template 2 when the audit or the
zone rules refuse (template then uploads nothing).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import typer
from rich.progress import Progress
from rich.table import Table
from rich.text import Text

from astra.cli.common import console, emit_json, errors, fail, out
from astra.ingest.atoms import atomize, part_digests, reassemble
from astra.ingest.audit import audit as run_audit
from astra.ooxml.ns import CT_DOCX
from astra.settings import Settings

app = typer.Typer(help="INGEST: audit, atomize and map templates.", no_args_is_help=True)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise fail(f"cannot read {path}: {exc.strerror}") from exc


@app.command()
def roundtrip(paths: list[Path] = typer.Argument(..., help=".docx files")) -> None:
    """Atomize and reassemble each file in memory; one JSON line per file.

    Exit 1 if any is not lossless; 2 if any is refused by the audit or cannot be read."""
    worst = 0
    with Progress(console=console, transient=True, disable=len(paths) < 5) as progress:
        task = progress.add_task("round trip", total=len(paths))
        for path in paths:
            try:
                line, code = _roundtrip_one(path)
            except Exception as exc:  # noqa: BLE001 — one bad file must not hide the others' results
                line, code = {"file": str(path), "error": f"{type(exc).__name__}: {exc}"}, 2
            emit_json(line)
            worst = max(worst, code)
            progress.advance(task)
    raise typer.Exit(worst)


def _roundtrip_one(path: Path) -> tuple[dict, int]:
    data = path.read_bytes()
    report = run_audit(data, filename=path.name)
    if not report.passed:
        first = report.refusals[0]
        return {"file": str(path), "refused": True, "reason": first.message, "location": first.location}, 2
    package = atomize(data)
    rebuilt = reassemble(package.manifest, package.atoms.__getitem__)
    lossless = list(part_digests(data).items()) == list(part_digests(rebuilt).items())
    counts = package.manifest["counts"]
    summary = {"file": str(path), "parts": counts["parts"], "atoms": counts["atoms"], "lossless": lossless}
    return summary, (0 if lossless else 1)


@app.command()
def audit(path: Path = typer.Argument(..., help="a .docx file")) -> None:
    """Print the audit findings as JSON; exit 0 on pass, 2 when refused."""
    with errors():
        report = run_audit(_read(path), filename=path.name)
        emit_json({"file": str(path), **report.to_dict()})
    raise typer.Exit(0 if report.passed else 2)


def _read_sidecar(path: Path) -> tuple[bytes, dict]:
    """The sidecar's bytes and JSON; an unreadable or invalid file is one error line naming it."""
    raw = _read(path)
    try:
        return raw, json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise fail(f"sidecar {path}: not valid JSON: {exc}") from exc


def _check_locally(path: Path, data: bytes, sidecar: dict | None, sidecar_path: Path | None):
    """Audit, then zone and style maps: what INGEST will do after upload, refused here (exit 2)."""
    from astra.ingest.zones import TemplateRefused, extract_maps, load_known_intents

    report = run_audit(data, filename=path.name)
    if not report.passed:
        first = report.refusals[0]
        raise fail(f"{path}: refused by the audit: {first.code}: {first.message} (at {first.location})", 2)
    catalog = Settings.from_env().intent_catalog
    known = load_known_intents(catalog) if Path(catalog).exists() else None
    if known is None:
        console.print(f"intent catalog {catalog} not found: intent bindings not checked", style="yellow", markup=False)
    try:
        return extract_maps(data, sidecar, known)
    except TemplateRefused as exc:
        culprit = sidecar_path if sidecar_path and exc.code in ("invalid_sidecar", "unknown_sidecar_zone") else path
        raise fail(f"{culprit}: {exc}", 2) from exc


@app.command()
def zones(
    path: Path = typer.Argument(..., help="a .docx template"),
    sidecar: Path = typer.Option(None, "--sidecar", help="the template's <name>.zones.json"),
    json_out: bool = typer.Option(False, "--json", help="print the zone map and style map as JSON"),
) -> None:
    """List the template's zones: kind, fields and marked (docxtpl templates), what each accepts, where it is.

    A template the audit or the zone rules refuse exits 2 with one line saying why and where."""
    with errors():
        data = _read(path)
        side = _read_sidecar(sidecar)[1] if sidecar else None
        maps = _check_locally(path, data, side, sidecar)
        if json_out:
            emit_json({"zone_map": maps.zone_map, "style_map": maps.style_map})
            return
        _print_zones(path, maps.zone_map)


def _print_zones(path: Path, zone_map: dict) -> None:
    jinja = zone_map.get("language") == "jinja"
    language = "docxtpl (Jinja)" if jinja else "ASTRA zone grammar"
    out.print(Text(f"{path.name}: {language}, {len(zone_map['zones'])} zones, fallback zone "
                   f"{zone_map['fallback_zone']}"))
    columns = ("zone", "kind", "fields", "marked") if jinja else ("zone", "kind", "declared by")
    table = Table(*columns, "accepts", "where")
    for zone in zone_map["zones"]:
        if jinja:
            described = (", ".join(zone.get("fields", ())) or "-", "yes" if zone["marked"] else "no")
        else:
            described = (zone.get("declared_by", "-"),)
        location = zone["location"]
        where = f"{location['part']} block {location['block']}"
        # Text cells: labels, fields and patterns are the user's words, never markup.
        table.add_row(*(Text(cell) for cell in (zone["id"], zone["kind"], *described, _accepts_text(zone["accepts"]),
                                                where)))
    out.print(table)


def _accepts_text(accepts: dict) -> str:
    said = [f"{key} {', '.join(accepts[key])}" for key in ("intents", "domains") if accepts.get(key)]
    said += [f"{key} {accepts[key]}" for key in ("data", "media") if accepts.get(key)]
    if accepts.get("fallback"):
        said.append("fallback")
    return "; ".join(said) or "-"


@app.command()
def template(
    path: Path = typer.Argument(..., help="a .docx template"),
    tenant: str = typer.Option(..., "--tenant", "-t"),
    sidecar: Path = typer.Option(None, "--sidecar", help="its <name>.zones.json, uploaded first"),
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """Check a template locally (audit, zones), then upload it; the template sensor does the rest.

    A template the audit or the zone rules refuse exits 2 and nothing is uploaded."""
    from astra import s3 as s3_lib
    from astra.ingest.template_ingest import TemplateInputError, TemplateRef
    from astra.tenancy import validate_slug

    name = path.name if path.name.endswith(".docx") else path.stem + ".docx"
    key = f"{tenant}/templates/{name}"
    try:  # a name no session manifest could give is refused before anything is read or sent
        TemplateRef.parse(key)
    except TemplateInputError as exc:
        raise fail(str(exc), 2) from None
    with errors():
        validate_slug(tenant)
        data = _read(path)
        side_bytes, side = _read_sidecar(sidecar) if sidecar else (None, None)
        _check_locally(path, data, side, sidecar)
        settings = Settings.from_env()
        client = s3_lib.client(settings)
        uploaded = []
        if side_bytes is not None:
            side_key = key[: -len(".docx")] + ".zones.json"
            client.put_object(Bucket=settings.uploads_bucket, Key=side_key, Body=side_bytes,
                              ChecksumAlgorithm="SHA256", ContentType="application/json")
            uploaded.append(side_key)
        # The template goes last: its arrival is what the sensor acts on.
        client.put_object(Bucket=settings.uploads_bucket, Key=key, Body=data, ChecksumAlgorithm="SHA256",
                          ContentType=CT_DOCX)
        uploaded.append(key)
        info = {"tenant": tenant, "bucket": settings.uploads_bucket, "keys": uploaded,
                "sha256": hashlib.sha256(data).hexdigest()}
        if json_out:
            emit_json(info)
        else:
            for k in uploaded:
                console.print(f"uploaded s3://{settings.uploads_bucket}/{k}", markup=False)
