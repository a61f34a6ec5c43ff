"""Where models live on this machine: ``<models>/base-encoder/`` and ``<models>/<tenant>/<version>/`` + ``LATEST``."""

from __future__ import annotations

import hashlib
from pathlib import Path

from astra.stack.stack import state_dir
from astra.tenancy import BASE_MODEL_OWNER

LATEST = "LATEST"
BASE_ENCODER = "base-encoder"
BASE_TENANT = BASE_MODEL_OWNER


class ModelIntegrityError(ValueError):
    """An artifact whose files do not match its manifest."""


def file_sha256(path: Path) -> str:
    """sha256 of a file, read in 1 MiB chunks (artifacts hold files of tens of MB)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def models_dir() -> Path:
    return state_dir() / "models"


def default_base_encoder() -> Path:
    return models_dir() / BASE_ENCODER


def tenant_dir(tenant: str) -> Path:
    return models_dir() / tenant


def mark_latest(tenant_root: Path, version: str) -> None:
    """Point ``LATEST`` at a saved version (written whole, then renamed: a reader never sees half a name)."""
    tmp = tenant_root / f".{LATEST}.tmp"
    tmp.write_text(version + "\n", encoding="utf-8")
    tmp.replace(tenant_root / LATEST)


def resolve_model(path: Path) -> Path:
    """A model directory itself, or a tenant directory whose ``LATEST`` names one."""
    if (path / "manifest.json").is_file():
        return path
    latest = path / LATEST
    if latest.is_file():
        return path / latest.read_text(encoding="utf-8").strip()
    raise FileNotFoundError(f"{path}: no model here (no manifest.json, no {LATEST}); run `astra core train`")
