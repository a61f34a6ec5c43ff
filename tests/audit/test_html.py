"""The HTML report alone: one self-contained page, the lineage an SVG of one box per hop (a clone's parent beside
it), every failed check listed and escaped."""

from __future__ import annotations

from xml.etree import ElementTree

from astra.audit import AuditReport, Hop, render_html

SVG = "{http://www.w3.org/2000/svg}"


def report(partition: str, failing: str | None = None) -> AuditReport:
    r = AuditReport(partition, partition, "document_binary")
    for hop_id in ("document", "materialization", "custody"):
        hop = Hop(hop_id, hop_id, subject=f"s3://b/{hop_id}")
        hop.check("re-hashed", hop_id != failing, "<b>bytes</b> & more" if hop_id == failing else "ok")
        r.hops.append(hop)
    return r


def test_a_failed_hop_is_listed_drawn_red_and_escaped():
    r = report("t--s--v2", failing="custody")
    r.asset = "v2_clone_binary"
    r.hops.insert(1, Hop("parent", "parent version", checks=[], facts={"parent_partition": "t--s--v1"}))
    r.parent = report("t--s--v1")
    page = render_html(r)
    assert not r.ok and page.count("<svg") == 1 and "<script" not in page and "<b>bytes" not in page
    assert "t--s--v2 custody: re-hashed: &lt;b&gt;bytes&lt;/b&gt; &amp; more" in page
    assert "t--s--v2 parent: verified: nothing could be checked" in page  # a hop without a check never passes
    svg = ElementTree.fromstring(page[page.index("<svg"):page.index("</svg>") + 6])
    boxes = svg.findall(f".//{SVG}rect")
    assert len(boxes) == 4 + 3  # the clone's hops and its parent's
    assert sorted(b.get("stroke") for b in boxes).count("#b3261e") == 2  # custody and the empty parent hop
    assert not report("t--s--v1").failure_lines() and "every hop verified" in render_html(report("t--s--v1"))
