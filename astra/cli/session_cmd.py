"""`astra session upload`: upload a recorded session, every file first and the manifest last."""

from __future__ import annotations

from pathlib import Path

import typer

from astra.cli.common import console, emit_json, errors, fail

app = typer.Typer(help="Sessions: upload a recording for handover.", no_args_is_help=True)


def collect(folder: Path) -> dict[str, bytes]:
    """audio.*, transcript.*, data/*, media/* from a folder, by their path in the session."""
    if not folder.is_dir():
        raise fail(f"{folder} is not a folder")
    files: dict[str, bytes] = {}
    for path in sorted(folder.rglob("*")):
        if not path.is_file():
            continue
        rel = path.relative_to(folder).as_posix()
        if rel.startswith(("audio.", "transcript.", "data/", "media/")):
            files[rel] = path.read_bytes()
    if not files:
        raise fail(f"{folder} holds no audio.*, transcript.*, data/* or media/* file")
    return files


@app.command()
def upload(
    folder: Path = typer.Argument(..., help="folder with audio.<wav|ogg|mp3|m4a>, transcript.*, data/*, media/*"),
    tenant: str = typer.Option(..., "--tenant", "-t"),
    session_id: str = typer.Option(..., "--session", "-s", help="session id: lowercase a-z, 0-9 and '-'"),
    version: int = typer.Option(1, "--version", "-v", min=1),
    template: str = typer.Option(..., "--template", help="the template name the document is built from"),
    clone_of: int = typer.Option(None, "--clone-of", help="for a V2 clone: the version it is rebuilt from"),
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """Upload a session to the uploads bucket; the session sensor hands it over."""
    from astra import s3 as s3_lib
    from astra.orchestrator.upload import upload_session
    from astra.settings import Settings
    from astra.tenancy import SessionKey

    with errors():
        session = SessionKey(tenant, session_id, version)
        settings = Settings.from_env()
        files = collect(folder)
        key = upload_session(s3_lib.client(settings), settings.uploads_bucket, session, template, files, clone_of)
        if json_out:
            emit_json({"partition_key": session.partition_key, "manifest": key, "files": sorted(files)})
        else:
            console.print(f"uploaded {len(files)} files, then s3://{settings.uploads_bucket}/{key}")
