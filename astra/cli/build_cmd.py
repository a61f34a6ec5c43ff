"""`astra build`: the session's document from local files, with the platform's BUILDER engine.

``--data CONTEXT.json`` fills zones straight from a JSON object keyed by zone id: a string for a
text zone (one paragraph; line breaks kept), a list of strings for a list zone (one item each), a
list of objects for a table zone (columns in order of first appearance, typed as session data is),
a file path or a list of paths for an image zone (relative to the JSON file). Zones left out stay
empty. Bad input (not a .docx, a template the audit or the zone grammar refuses, an unknown zone,
a value of the wrong shape, a missing or refused image) exits 2 with one line and writes nothing.

``--session DIR`` (a session folder through CORE, then BUILDER) is not offered yet: it needs
CORE's session pipeline as a library call.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import typer

from astra.builder.engine import BuildError, build
from astra.cli.common import emit_json, errors, fail, out
from astra.core.data import read_tables
from astra.ingest.audit import audit
from astra.ingest.zones import TemplateRefused, extract_maps


class BadInput(ValueError):
    """The command's input is wrong: exit 2, one line."""


def build_command(
    template: Path = typer.Option(..., "--template", help="the template .docx"),
    sidecar: Path = typer.Option(None, "--sidecar", help="the template's <name>.zones.json"),
    data: Path = typer.Option(..., "--data", help="JSON object: zone id -> content"),
    out_path: Path = typer.Option(..., "--out", help="where to write the .docx"),
    locale: str = typer.Option(None, "--locale", help="locale for dates and numbers in tables, e.g. en-GB"),
    json_out: bool = typer.Option(False, "--json", help="print the result as JSON"),
) -> None:
    """Build a document from a template and a JSON object of zone contents."""
    with errors():
        try:
            result = _build(template, sidecar, data, locale)
            _write_atomically(out_path, result.docx)
        except (BadInput, BuildError) as exc:
            raise fail(str(exc), 2) from None
        summary = {"out": str(out_path), "sha256": result.sha256, "size": result.size, "fills": result.fills,
                   "problems": [p.to_json() for p in result.problems]}
        if json_out:
            emit_json(summary)
            return
        out.print(f"wrote {out_path} ({result.size} bytes, sha256 {result.sha256[:16]}…)")
        for zone, fill in result.fills.items():
            out.print(f"  {zone}: {fill['items']} {fill['kind']} item(s)" +
                      (f", {fill['rows']} rows" if "rows" in fill else ""))
        for problem in result.problems:
            out.print(f"  warning: {problem.zone}: {problem.detail}")


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise BadInput(f"{what} not found: {path}") from None
    except OSError as exc:
        raise BadInput(f"{what} cannot be read: {path}: {exc.strerror}") from None


def _json(path: Path, what: str) -> object:
    try:
        return json.loads(_read(path, what))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadInput(f"{what} {path} is not valid JSON: {exc}") from None


def _build(template_path: Path, sidecar_path: Path | None, data_path: Path, locale: str | None):
    template = _read(template_path, "template")
    report = audit(template, template_path.name)
    if not report.passed:
        first = report.refusals[0]
        raise BadInput(f"template refused: {first.code} at {first.location}: {first.message}")
    sidecar = _json(sidecar_path, "sidecar") if sidecar_path else None
    try:
        maps = extract_maps(template, sidecar)
    except TemplateRefused as exc:
        raise BadInput(f"template refused: {exc}") from None
    context = _json(data_path, "data file")
    intent_output, media = _intent_output(maps.zone_map, context, data_path.parent, locale)
    result = build(template, maps.zone_map, maps.style_map, intent_output, media, locale=locale)
    refused = [p for p in result.problems if p.code == "image_refused"]
    if refused:
        raise BadInput(f"zone {refused[0].zone!r}: image refused: {refused[0].detail}")
    return result


def _intent_output(zone_map: dict, context: object, base: Path, locale: str | None) -> tuple[dict, dict]:
    """The JSON object as an intent output document (what CORE hands BUILDER) and its media."""
    if not isinstance(context, dict):
        raise BadInput("the data file must hold a JSON object keyed by zone id")
    kinds = {z["id"]: z["kind"] for z in zone_map["zones"]}
    unknown = [key for key in context if key not in kinds]
    if unknown:
        raise BadInput(f"the data names zone {unknown[0]!r}, which the template does not declare "
                       f"(zones: {', '.join(kinds)})")
    utterances: list[dict] = []
    tables: list[dict] = []
    media: dict[str, bytes] = {}
    zones = []
    for zone_id, kind in kinds.items():
        entry: dict = {"id": zone_id, "kind": kind, "utterances": [], "tables": []}
        value = context.get(zone_id)
        if value is None:
            zones.append(entry)
            continue
        if kind == "text":
            texts = [_expect(isinstance(value, str), value, zone_id, "a string")]
        elif kind == "list":
            texts = _expect(isinstance(value, list) and all(isinstance(v, str) for v in value), value, zone_id,
                            "a list of strings")
        else:
            texts = []
        for text in texts:
            utterances.append({"id": f"{zone_id}-{len(utterances) + 1}", "text": text, "speaker": None})
            entry["utterances"].append(utterances[-1]["id"])
        if kind == "table":
            _expect(isinstance(value, list) and value and all(isinstance(v, dict) for v in value), value, zone_id,
                    "a non-empty list of objects")
            dataset = read_tables([(f"data/{zone_id}.json", json.dumps(value).encode("utf-8"))])
            if dataset.problems:
                raise BadInput(f"zone {zone_id!r}: {dataset.problems[0].detail}")
            tables.append(dataset.tables[0].to_json())
            entry["tables"].append(tables[-1]["id"])
        if kind == "image":
            paths = [value] if isinstance(value, str) else value
            _expect(isinstance(paths, list) and paths and all(isinstance(p, str) for p in paths), value, zone_id,
                    "a file path or a list of file paths")
            entry["media"] = []
            for raw in paths:
                path = Path(raw) if Path(raw).is_absolute() else base / raw
                media[raw] = _read(path, f"image for zone {zone_id!r}")
                entry["media"].append(raw)
        zones.append(entry)
    return {"locale": locale, "utterances": utterances, "tables": tables, "zones": zones}, media


def _expect(ok: bool, value: object, zone_id: str, shape: str):
    if not ok:
        raise BadInput(f"zone {zone_id!r} needs {shape}, not {type(value).__name__}")
    return value


def _write_atomically(path: Path, data: bytes) -> None:
    """Write through a temporary file in the same folder: a failed write leaves nothing behind."""
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise BadInput(f"output folder does not exist: {folder}")
    fd, tmp = tempfile.mkstemp(prefix=".astra-build-", suffix=".docx", dir=folder)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
