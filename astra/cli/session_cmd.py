"""`astra session upload`: upload a recorded session, every file first and the manifest last."""

from __future__ import annotations

from pathlib import Path

import typer

from astra.cli.common import console, emit_json, errors, fail

app = typer.Typer(help="Sessions: upload a recording for handover.", no_args_is_help=True)


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
    """Upload a session to the uploads bucket; the session sensor hands it over.

    The folder must hold exactly what the manifest names: at most one audio and one transcript,
    data/ and media/ files of the supported types, nothing else. Anything else is refused (exit 2)
    before a byte is uploaded."""
    from rich.markup import escape

    from astra import s3 as s3_lib
    from astra.orchestrator.manifest import ManifestRejected
    from astra.orchestrator.upload import UnsupportedSession, read_session_folder, upload_session
    from astra.settings import Settings
    from astra.tenancy import SessionKey

    with errors():
        session = SessionKey(tenant, session_id, version)
        try:
            files = read_session_folder(folder)
            settings = Settings.from_env()
            key = upload_session(s3_lib.client(settings), settings.uploads_bucket, session, template, files, clone_of)
        except (UnsupportedSession, ManifestRejected) as exc:
            raise fail(escape(f"nothing uploaded: {exc}"), code=2) from exc  # file names are not markup
        if json_out:
            emit_json({"partition_key": session.partition_key, "manifest": key, "files": sorted(files)})
        else:
            console.print(f"uploaded {len(files)} files, then s3://{settings.uploads_bucket}/{key}")
