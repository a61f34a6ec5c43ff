"""One of each thing: OOXML namespace URIs are spelled in astra/ooxml/ns.py only, and INGEST keeps
no package model of its own."""

from __future__ import annotations

import re
from pathlib import Path

ASTRA = Path(__file__).resolve().parents[2] / "astra"
NAMESPACE_URI = re.compile(r"schemas\.openxmlformats\.org/|purl\.oclc\.org/ooxml/|schemas\.microsoft\.com/office/")


def test_namespace_uris_live_in_ns_only():
    spelled = [str(path.relative_to(ASTRA)) for path in ASTRA.rglob("*.py")
               if NAMESPACE_URI.search(path.read_text(encoding="utf-8")) and path != ASTRA / "ooxml" / "ns.py"]
    assert spelled == []


def test_ingest_has_no_second_package_model():
    assert not (ASTRA / "ingest" / "opc.py").exists()
    assert not (ASTRA / "ingest" / "wordml.py").exists()
    assert not (ASTRA / "ingest" / "sample_template.py").exists()  # a fixture builder: astra/samples
