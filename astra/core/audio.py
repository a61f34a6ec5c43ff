"""Session audio to the recogniser's input: probe with ffprobe, refuse what is not usable audio, convert with ffmpeg
(Debian's `ffmpeg` package) to 16 kHz mono signed 16-bit little-endian PCM.

Both tools run as subprocesses with an argument list (no shell) and a timeout; every refusal is an AudioError with
one line naming the file and the problem.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

SAMPLE_RATE = 16_000
BYTES_PER_SAMPLE = 2
ACCEPTED_SUFFIXES = (".wav", ".ogg", ".mp3", ".m4a")
DEFAULT_MAX_SECONDS = 2 * 3600.0
PROBE_TIMEOUT_SECONDS = 30.0


class AudioError(ValueError):
    """A file that cannot be used as session audio (not audio, empty, too long, unsupported, tool failure)."""

    def __init__(self, path: str | Path, problem: str):
        super().__init__(f"{Path(path).name}: {problem}")
        self.path = str(path)
        self.problem = problem


@dataclass(frozen=True)
class AudioProbe:
    container: str
    codec: str
    sample_rate: int
    channels: int
    duration_seconds: float


@dataclass(frozen=True)
class Pcm:
    """16 kHz mono s16le samples and where they came from."""

    data: bytes
    source: AudioProbe

    @property
    def duration_seconds(self) -> float:
        return len(self.data) / (SAMPLE_RATE * BYTES_PER_SAMPLE)


def _tool(name: str, path: Path) -> str:
    found = shutil.which(name)
    if found is None:
        raise AudioError(path, f"{name} is not installed (apt package ffmpeg)")
    return found


def _run(args: list[str], path: Path, timeout: float) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(args, capture_output=True, timeout=timeout, check=False, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise AudioError(path, f"{Path(args[0]).name} took longer than {timeout:.0f} s") from None


def _last_line(stderr: bytes) -> str:
    lines = [line for line in stderr.decode("utf-8", "replace").splitlines() if line.strip()]
    return lines[-1].strip()[:200] if lines else "no detail"


def probe(path: str | Path, max_seconds: float = DEFAULT_MAX_SECONDS) -> AudioProbe:
    """What the file holds, refused unless it is a non-empty audio stream no longer than `max_seconds`."""
    path = Path(path)
    if path.suffix.lower() not in ACCEPTED_SUFFIXES:
        raise AudioError(path, f"unsupported audio type {path.suffix or '(none)'}; accepted: "
                         + ", ".join(ACCEPTED_SUFFIXES))
    if not path.is_file():
        raise AudioError(path, "no such file")
    if path.stat().st_size == 0:
        raise AudioError(path, "empty file")
    done = _run([_tool("ffprobe", path), "-v", "error", "-show_entries",
                 "format=format_name,duration:stream=codec_type,codec_name,sample_rate,channels,duration",
                 "-of", "json", str(path.resolve())], path, PROBE_TIMEOUT_SECONDS)
    if done.returncode != 0:
        raise AudioError(path, f"not audio ({_last_line(done.stderr)})")
    return _checked_probe(path, json.loads(done.stdout or b"{}"), max_seconds)


def _checked_probe(path: Path, info: dict, max_seconds: float) -> AudioProbe:
    streams = [s for s in info.get("streams", []) if s.get("codec_type") == "audio"]
    if not streams:
        raise AudioError(path, "not audio (no audio stream)")
    stream, fmt = streams[0], info.get("format", {})
    try:
        duration = float(fmt.get("duration") or stream.get("duration") or 0.0)
    except ValueError:
        duration = 0.0
    if not duration > 0:
        raise AudioError(path, "empty audio (duration 0)")
    if duration > max_seconds:
        raise AudioError(path, f"audio lasts {duration:.0f} s, over the {max_seconds:.0f} s cap")
    return AudioProbe(container=fmt.get("format_name", ""), codec=stream.get("codec_name", ""),
                      sample_rate=int(stream.get("sample_rate") or 0), channels=int(stream.get("channels") or 0),
                      duration_seconds=duration)


def load_pcm(path: str | Path, max_seconds: float = DEFAULT_MAX_SECONDS) -> Pcm:
    """Probe, then convert to 16 kHz mono s16le (channels mixed down). The conversion's timeout scales with the
    probed duration, and its output is capped at the duration cap, whatever the container claimed."""
    path = Path(path)
    found = probe(path, max_seconds)
    timeout = 60.0 + found.duration_seconds / 4
    done = _run([_tool("ffmpeg", path), "-nostdin", "-v", "error", "-i", str(path.resolve()), "-vn", "-ac", "1",
                 "-ar", str(SAMPLE_RATE), "-t", f"{max_seconds:.3f}", "-f", "s16le", "-acodec", "pcm_s16le", "-"],
                path, timeout)
    if done.returncode != 0:
        raise AudioError(path, f"cannot decode audio ({_last_line(done.stderr)})")
    if not done.stdout:
        raise AudioError(path, "empty audio (no samples decoded)")
    return Pcm(data=done.stdout, source=found)
