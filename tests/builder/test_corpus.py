"""BUILDER over real Word documents: the 62 files of /work/shared/datasets/docx-corpus (test files of
python-openxml/python-docx, MIT, and of mwilliamson/python-mammoth, BSD-2-Clause; see its README).

Each document the audit accepts gets a ``{{ probe_text }}`` placeholder as its first block and a table
content control before its section properties, then is built: the output must pass the post-build checks
(python-docx opens it, nothing forbidden, every zone present) and keep every atom outside the two zones.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from astra.builder.check import check_document
from astra.builder.engine import BuildError, build
from astra.ingest.atoms import atomize
from astra.ingest.audit import audit
from astra.ingest.zones import extract_maps
from astra.ooxml.package import Package, write_package

from .helpers import intent_output

CORPUS = Path("/work/shared/datasets/docx-corpus")
DOCUMENTS = sorted(CORPUS.rglob("*.docx"))
PROBE = b"<w:p><w:r><w:t>{{ probe_text }}</w:t></w:r></w:p>"
TABLE_ZONE = (b'<w:sdt><w:sdtPr><w:tag w:val="astra:probe_table;kind=table"/></w:sdtPr>'
              b"<w:sdtContent><w:p/></w:sdtContent></w:sdt>")
TABLE = {"id": "data/t.json", "source": "data/t.json", "sheet": None, "header": ["item", "count"],
         "columns": [{"name": "item", "type": "text"}, {"name": "count", "type": "integer"}],
         "rows": [["bolts & nuts", 12], ["<washers>", 40]], "row_count": 2}


def _with_zones(data: bytes) -> bytes:
    pkg = Package.read(data)
    main = pkg.main_document()
    part = pkg.read_part(main)
    body = re.search(rb"<w:body>", part)
    end = part.rindex(b"<w:sectPr") if b"<w:sectPr" in part[body.end():] else part.rindex(b"</w:body>")
    part = part[:body.end()] + PROBE + part[body.end():end] + TABLE_ZONE + part[end:]
    return write_package([(name, part if name == main else pkg.read_part(name)) for name in pkg.members])


@pytest.mark.skipif(not DOCUMENTS, reason="the shared docx corpus is not mounted")
@pytest.mark.parametrize("path", DOCUMENTS, ids=[p.name for p in DOCUMENTS])
def test_builds_real_documents(path):
    data = path.read_bytes()
    if not audit(data, path.name).passed:
        pytest.skip("the audit refuses this document (as it should): it would never be a template")
    template = _with_zones(data)
    maps = extract_maps(template)
    session = intent_output({"probe_text": ["hello & <world>"]}, {"probe_table": [TABLE]})
    if path.name == "strict-format.docx":
        with pytest.raises(BuildError, match="Strict"):
            build(template, maps.zone_map, maps.style_map, session)
        return
    out = build(template, maps.zone_map, maps.style_map, session)
    report = check_document(out.docx, maps.zone_map, template=template)
    assert report.passed, report.findings
    before = {m["name"]: m for m in atomize(template).manifest["members"]}
    after = {m["name"]: m for m in atomize(out.docx).manifest["members"]}
    main = Package.read(template).main_document()
    zone_blocks = {z["location"]["block"] for z in maps.zone_map["zones"]}
    for name, member in before.items():
        if name != main:
            continue
        blocks = [a for a in member["atoms"] if a["kind"].startswith("block:")]
        new_blocks = [a for a in after[name]["atoms"] if a["kind"].startswith("block:")]
        assert len(blocks) == len(new_blocks)
        for i, (old, new) in enumerate(zip(blocks, new_blocks, strict=True)):
            assert (old["sha256"] == new["sha256"]) is (i not in zone_blocks), (name, i)
    for name in set(before) - {main, "[Content_Types].xml"}:
        if not name.endswith(".rels"):
            assert after[name]["sha256"] == before[name]["sha256"], name
