"""`astra dev`: `stack up`, then `dagster dev` (webserver + daemon) on 127.0.0.1:3000 with the stack env.

`dagster dev` runs its webserver, daemon and code server as children; started in the background
it ignores SIGINT and lingers after SIGTERM. So it runs in its own process group, and on Ctrl-C or
SIGTERM the whole tree (read before signalling) is terminated, then killed if still there, and
checked gone.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import typer

from astra.cli.common import console, errors
from astra.stack import processes
from astra.stack.stack import Stack

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def dagster_home(stack: Stack) -> Path:
    home = stack.root / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(PROJECT_ROOT / "dagster.yaml", home / "dagster.yaml")
    return home


def dev(
    port: int = typer.Option(3000, "--port", "-p"),
    host: str = typer.Option("127.0.0.1", "--host"),
) -> None:
    """Bring the stack up and serve the Dagster UI and daemon; Ctrl-C stops every child."""
    with errors():
        stack = Stack(say=lambda m: console.print(f"[green]•[/] {m}"))
        values = stack.up()
        env = {**os.environ, **values, "DAGSTER_HOME": str(dagster_home(stack))}
        args = [
            sys.executable, "-m", "dagster", "dev",
            "-w", str(PROJECT_ROOT / "workspace.yaml"), "-h", host, "-p", str(port),
        ]
        proc = subprocess.Popen(args, env=env, cwd=PROJECT_ROOT, start_new_session=True)
    console.print(f"[green]Dagster UI[/] on http://{host}:{port} (pid {proc.pid}); Ctrl-C stops it")

    def stop(signum: int, _frame) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    code = 0
    try:
        code = proc.wait()
    except KeyboardInterrupt:
        console.print("stopping dagster dev…")
    finally:
        left = processes.stop_tree(proc.pid, signal.SIGTERM, timeout=6)
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
        if left:
            console.print(f"[red]processes still alive: {left}[/]")
            raise typer.Exit(1)
        console.print("[green]all dagster processes gone[/]; the stack stays up (astra stack down)")
    raise typer.Exit(0 if code in (0, -signal.SIGTERM, -signal.SIGINT) else code)
