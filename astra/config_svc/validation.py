"""The published JSON Schemas for zone and style maps, and validation naming the bad field."""

from __future__ import annotations

import hashlib
import json
from functools import cache
from pathlib import Path

from jsonschema import Draft202012Validator

SCHEMA_DIR = Path(__file__).with_name("schemas")
# The fallback zone receives every utterance no other zone accepts: prose, which a table or an image cannot hold.
FALLBACK_ZONE_KINDS = ("text", "list")


@cache
def validator(name: str) -> Draft202012Validator:
    schema = json.loads((SCHEMA_DIR / f"{name}.schema.json").read_text())
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def errors(name: str, document: object) -> list[str]:
    """Every violation as '<field path>: <message>', most specific first; a schema-valid zone map is then held to
    the rule its schema cannot state (the fallback zone's kind)."""
    found = sorted(validator(name).iter_errors(document), key=lambda e: (len(e.absolute_path), e.message))
    out = []
    for err in found:
        path = name + "".join(f"[{p!r}]" if isinstance(p, int) else f".{p}" for p in err.absolute_path)
        message = err.message if len(err.message) <= 160 else err.message[:157] + "..."
        out.append(f"{path}: {message}")
    if name == "zone_map" and not out:
        out.extend(_fallback_kind_errors(document))
    return out


def _fallback_kind_errors(zone_map: dict) -> list[str]:
    fallback = zone_map["fallback_zone"]
    kind = next((z["kind"] for z in zone_map["zones"] if z["id"] == fallback), None)
    if kind is None or kind in FALLBACK_ZONE_KINDS:  # an unknown fallback zone is the caller's check
        return []
    return [f"zone_map.fallback_zone: {fallback!r} is a {kind} zone; the fallback zone receives utterances and must "
            f"be a text or list zone"]


def maps_sha256(zone_map: dict, style_map: dict) -> str:
    """The maps' fingerprint (the tenant_config asset's `maps_sha256`, re-computed by the audit): sha256 of
    [zone_map, style_map] as sorted compact JSON."""
    return hashlib.sha256(json.dumps([zone_map, style_map], sort_keys=True, separators=(",", ":")).encode()).hexdigest()
