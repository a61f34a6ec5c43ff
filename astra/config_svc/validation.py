"""The published JSON Schemas for zone and style maps, and validation naming the bad field."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

from jsonschema import Draft202012Validator

SCHEMA_DIR = Path(__file__).with_name("schemas")


@cache
def validator(name: str) -> Draft202012Validator:
    schema = json.loads((SCHEMA_DIR / f"{name}.schema.json").read_text())
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def errors(name: str, document: object) -> list[str]:
    """Every violation as '<field path>: <message>', most specific first."""
    found = sorted(validator(name).iter_errors(document), key=lambda e: (len(e.absolute_path), e.message))
    out = []
    for err in found:
        path = name + "".join(f"[{p!r}]" if isinstance(p, int) else f".{p}" for p in err.absolute_path)
        message = err.message if len(err.message) <= 160 else err.message[:157] + "..."
        out.append(f"{path}: {message}")
    return out
