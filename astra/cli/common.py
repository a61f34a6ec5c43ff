"""What every `astra` command shares: one clear error line, details with --verbose, --json output."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import typer
from rich.console import Console
from rich.text import Text

console = Console(stderr=True, soft_wrap=True)  # humans read stderr; stdout stays clean for --json and pipes
out = Console(highlight=False, soft_wrap=True)


class State:
    verbose = False


def set_verbose(verbose: bool) -> None:
    State.verbose = verbose
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print ``error: <message>`` and return the Exit to raise. The message is plain text, never markup: it holds
    file names and the user's own words (a path with ``[/x]`` in it would be a markup error, ``[bold]`` a style)."""
    console.print(Text.assemble(("error:", "bold red"), " ", message), highlight=False)
    return typer.Exit(code)


@contextmanager
def errors(code: int = 1) -> Iterator[None]:
    """Turn any exception into one line on stderr and a non-zero exit; the traceback with --verbose."""
    try:
        yield
    except (typer.Exit, typer.Abort, KeyboardInterrupt):
        raise
    except Exception as exc:  # noqa: BLE001 — the CLI's last line of defence
        if State.verbose:
            console.print_exception()
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise fail(f"{message}" + ("" if State.verbose else "  (details: astra --verbose …)"), code) from exc


def emit_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, sort_keys=True, default=str) + "\n")
    sys.stdout.flush()
