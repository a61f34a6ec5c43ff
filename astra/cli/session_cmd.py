"""`astra session upload`: upload a recorded session, every file first and the manifest last."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import typer

from astra.cli.common import console, emit_json, errors, fail

PROGRESS_FROM_BYTES = 32 << 20  # smaller uploads finish before a bar would say anything

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
    data/ and media/ files of the supported types, nothing else; and the version must be new (no
    upload and no handover of it yet). Anything else is refused (exit 2) before a byte is uploaded.
    If S3 fails part way, what this run uploaded is deleted again (exit 1)."""

    from astra import s3 as s3_lib
    from astra.orchestrator.manifest import ManifestRejected
    from astra.orchestrator.upload import (
        UnsupportedSession,
        UploadFailed,
        read_session_folder,
        refuse_a_used_version,
        total_size,
        upload_session,
    )
    from astra.settings import Settings
    from astra.tenancy import InvalidKey, SessionKey

    with errors():
        try:
            session = SessionKey(tenant, session_id, version)
            files = read_session_folder(folder)
            settings = Settings.from_env()
            s3 = s3_lib.client(settings)
            refuse_a_used_version(s3, settings.uploads_bucket, settings.assets_bucket, session, clone_of)
            with upload_progress(total_size(files)) as progress:
                key = upload_session(s3, settings.uploads_bucket, session, template, files, clone_of, progress=progress)
        except (InvalidKey, UnsupportedSession, ManifestRejected) as exc:
            raise fail(f"nothing uploaded: {exc}", code=2) from exc
        except UploadFailed as exc:
            raise fail(str(exc)) from exc
        if json_out:
            emit_json({"partition_key": session.partition_key, "manifest": key, "files": sorted(files)})
        else:
            console.print(f"uploaded {len(files)} files, then s3://{settings.uploads_bucket}/{key}", markup=False)


@contextmanager
def upload_progress(total: int) -> Iterator[Callable[[int], None] | None]:
    """A progress bar on stderr for a long upload to a terminal; None (no bar) otherwise."""
    if total < PROGRESS_FROM_BYTES or not console.is_terminal:
        yield None
        return
    from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

    with Progress("uploading", BarColumn(), DownloadColumn(), TransferSpeedColumn(), console=console,
                  transient=True) as bar:
        task = bar.add_task("upload", total=total)
        yield lambda sent: bar.advance(task, sent)  # called from the transfer threads: advance is thread-safe
