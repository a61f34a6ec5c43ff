"""Shared helpers for the BUILDER tests: intent outputs by hand, and reading zones back out of a built .docx."""

from __future__ import annotations

from astra.ingest.zones import TAG_PREFIX, parse_tag
from astra.ooxml.ns import W
from astra.ooxml.package import Package
from astra.ooxml.wordml import story_parts, wval


def intent_output(zone_texts: dict[str, list[str]] | None = None, tables: dict[str, list[dict]] | None = None,
                  *, speakers: dict[str, str] | None = None, locale: str | None = None,
                  media: dict[str, list[str]] | None = None) -> dict:
    """An intent output document as CORE's binding writes it: utterances in order, per-zone ids."""
    utterances, zones = [], {}
    for zone, texts in (zone_texts or {}).items():
        entry = zones.setdefault(zone, {"id": zone, "utterances": [], "tables": []})
        for text in texts:
            uid = f"u{len(utterances) + 1}"
            utterances.append({"id": uid, "text": text, "speaker": (speakers or {}).get(zone), "start": None,
                               "end": None})
            entry["utterances"].append(uid)
    out_tables = []
    for zone, table_list in (tables or {}).items():
        entry = zones.setdefault(zone, {"id": zone, "utterances": [], "tables": []})
        for table in table_list:
            out_tables.append({**table, "zone": zone})
            entry["tables"].append(table["id"])
    for zone, names in (media or {}).items():
        zones.setdefault(zone, {"id": zone, "utterances": [], "tables": []})["media"] = names
    return {"locale": locale, "utterances": utterances, "tables": out_tables, "zones": list(zones.values())}


def with_speaker(zone_map: dict, *zone_ids: str) -> dict:
    """``zone_map`` with ``"speaker": true`` on the named zones, as INGEST writes a zone that asks for it."""
    return {**zone_map, "zones": [{**z, "speaker": True} if z["id"] in zone_ids else z for z in zone_map["zones"]]}


def zone_controls(docx: bytes) -> dict[str, object]:
    """zone id -> the w:sdt element of its astra content control, over every story part."""
    pkg = Package.read(docx)
    found = {}
    for part in story_parts(pkg):
        for sdt in pkg.xml(part).iter(W.sdt):
            tag = wval(sdt.find(f"{W.sdtPr}/{W.tag}"))
            if tag and tag.strip().lower().startswith(TAG_PREFIX):
                found[parse_tag(tag)[0]] = sdt
    return found


def run_text(el) -> str:
    """Visible text of an element: w:t text, w:br as a line break, w:tab as a tab."""
    out = []
    for node in el.iter(W.t, W.br, W.tab):
        out.append(node.text or "" if node.tag == W.t else "\n" if node.tag == W.br else "\t")
    return "".join(out)


def zone_paragraphs(docx: bytes, zone_id: str) -> list[str]:
    """The text of each paragraph of a zone's content (an inline zone: its text as one item)."""
    sdt = zone_controls(docx)[zone_id]
    content = sdt.find(W.sdtContent)
    paragraphs = content.findall(W.p)
    return [run_text(p) for p in paragraphs] if paragraphs else [run_text(content)]
