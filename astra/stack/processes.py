"""Small process helpers: free ports, waiting for a port, stopping a process tree for sure."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_answers(host: str, port: int, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_for_port(host: str, port: int, timeout: float = 20.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_answers(host, port):
            return
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process {proc.args!r} exited with {proc.returncode} before {host}:{port} answered")
        time.sleep(0.05)
    raise TimeoutError(f"{host}:{port} did not answer within {timeout:.0f}s")


def wait_until(check: Callable[[], bool], what: str, timeout: float = 20.0,
               proc: subprocess.Popen | None = None) -> None:
    """Poll `check` until it holds; an error naming `what` when `timeout` passes or `proc` exits first."""
    deadline = time.monotonic() + timeout
    while not check():
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process {proc.args!r} exited with {proc.returncode} before {what}")
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what}: not within {timeout:.0f}s")
        time.sleep(0.1)


def spawn_detached(args: list[str], log_path: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start a daemon that outlives this CLI call, in its own session so Ctrl-C here does not reach it."""
    log = open(log_path, "ab")
    return subprocess.Popen(
        args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True, env=env
    )


def python_module(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


def started_at(pid: int) -> float | None:
    """When the process started (to tell it from a later process that got the same pid)."""
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def alive(pid: int | None, started: float | None = None) -> bool:
    """The process runs — and, given `started`, it is the one that started then (pids are reused)."""
    if not pid:
        return False
    try:
        p = psutil.Process(pid)
        if started is not None and abs(p.create_time() - started) > 0.5:
            return False
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def stop_tree(pid: int, sig: int = signal.SIGTERM, timeout: float = 10.0, started: float | None = None) -> list[int]:
    """Signal a process and all its descendants; SIGKILL what is left after `timeout`.

    Returns the pids that were still alive at the end (empty when everything is gone). The tree
    is read before signalling, because children re-parented to init would otherwise be missed.
    Given `started`, a process with that pid but another start time is someone else's: untouched.
    """
    try:
        root = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return []
    if started is not None and abs(root.create_time() - started) > 0.5:
        return []
    procs = [root, *root.children(recursive=True)]
    for p in procs:
        try:
            p.send_signal(sig)
        except psutil.NoSuchProcess:
            pass
    _, alive_ = psutil.wait_procs(procs, timeout=timeout)
    for p in alive_:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    _, still = psutil.wait_procs(alive_, timeout=5)
    return [p.pid for p in still]
