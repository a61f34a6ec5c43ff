"""Zone ids as Jinja identifiers everywhere, and docxtpl templates' zone maps (issue 11, docs/zones.md "docxtpl
templates")."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from astra.ingest.zones import SIDECAR_SCHEMA_PATH, ZONE_ID_RE, TemplateRefused, extract_maps
from astra.samples.templates import minimal_docx

SCHEMAS = Path(__file__).resolve().parents[2] / "astra" / "config_svc" / "schemas"


def para(text: str, ppr: str = "") -> str:
    return f'<w:p>{ppr}<w:r><w:t xml:space="preserve">{text}</w:t></w:r></w:p>'


def test_every_schema_holds_the_one_zone_id_pattern():
    anchored = "^" + ZONE_ID_RE.pattern + "$"
    zone_map = json.loads((SCHEMAS / "zone_map.schema.json").read_text())
    style_map = json.loads((SCHEMAS / "style_map.schema.json").read_text())
    sidecar = json.loads(SIDECAR_SCHEMA_PATH.read_text())
    assert zone_map["$defs"]["zone_id"]["pattern"] == anchored
    assert style_map["properties"]["zones"]["propertyNames"]["pattern"] == anchored
    assert sidecar["$defs"]["zone_id"]["pattern"] == anchored


@pytest.mark.parametrize("kind", ["flag", "record"])
def test_a_sidecar_cannot_give_a_grammar_zone_a_docxtpl_kind(kind):
    with pytest.raises(TemplateRefused) as info:
        extract_maps(minimal_docx(para("{{ a }}") + para("{{ b }}")), {"zones": {"a": {"kind": kind}}})
    assert info.value.code == "invalid_sidecar" and info.value.location == {"part": "sidecar", "path": "zones.a.kind"}
    assert f"kind {kind!r}" in info.value.message
