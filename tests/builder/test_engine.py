"""BUILDER's engine on the demo template: zones filled, marked, styled; everything else byte for byte; deterministic."""

from __future__ import annotations

import hashlib
import io
import zipfile

import docx
import pytest

from astra.builder import engine
from astra.builder.check import check_document
from astra.builder.engine import BuildCaps, BuildError, build
from astra.core.binding import ClassifiedUtterance, bind
from astra.core.data import read_tables
from astra.ingest.atoms import atomize
from astra.ingest.zones import extract_maps, scan_zones
from astra.ooxml.ns import WP_NS, W
from astra.ooxml.package import Package, write_package
from astra.ooxml.wordml import story_parts
from astra.ooxml.zip import FIXED_DATE_TIME
from astra.samples import HERE as SAMPLES
from astra.samples.templates import build_sample_template, minimal_docx, sample_sidecar

from .helpers import intent_output, with_speaker, zone_controls, zone_paragraphs


@pytest.fixture(scope="module")
def template() -> bytes:
    return build_sample_template()


@pytest.fixture(scope="module")
def maps(template):
    return extract_maps(template, sample_sidecar())


@pytest.fixture(scope="module")
def readings() -> dict:
    return read_tables([("data/readings.csv", (SAMPLES / "readings.csv").read_bytes())]).tables[0].to_json()


@pytest.fixture(scope="module")
def session(readings) -> dict:
    return intent_output(
        {"title": ["Pump station 7"], "report_ref": ["R-117"],
         "summary": ["Flights booked for the return.", "Hotel near the plant."],
         "action_items": ["Replace the gasket on P-102", "Book a follow-up visit"],
         "notes": ["Access road was flooded."]},
        {"measurements": [readings]}, speakers={"summary": "Inspector"}, locale="de-DE",
        media={"site_photo": ["media/site.png"]})


@pytest.fixture(scope="module")
def media() -> dict:
    return {"media/site.png": (SAMPLES / "site.png").read_bytes()}


@pytest.fixture(scope="module")
def zone_map(maps) -> dict:
    return with_speaker(maps.zone_map, "summary")


@pytest.fixture(scope="module")
def built(template, zone_map, maps, session, media):
    return build(template, zone_map, maps.style_map, session, media)


def _story_xml(data: bytes, part: str):
    return Package.read(data).xml(part)


def test_every_zone_filled_and_the_document_passes_its_checks(built, maps, template):
    assert built.fills == {
        "action_items": {"kind": "list", "items": 2},
        "measurements": {"kind": "table", "items": 1, "rows": 3},
        "notes": {"kind": "text", "items": 1},
        "report_ref": {"kind": "text", "items": 1},
        "site_photo": {"kind": "image", "items": 1},
        "summary": {"kind": "text", "items": 2},
        "title": {"kind": "text", "items": 1},
    }
    assert built.problems == []
    docx.Document(io.BytesIO(built.docx))
    report = check_document(built.docx, maps.zone_map, template=template)
    assert report.passed, report.findings
    assert sorted(report.zones_found) == sorted(z["id"] for z in maps.zone_map["zones"])


def test_utterances_in_order_one_paragraph_each(built):
    assert zone_paragraphs(built.docx, "action_items") == ["Replace the gasket on P-102", "Book a follow-up visit"]
    assert zone_paragraphs(built.docx, "notes") == ["Access road was flooded."]
    assert zone_paragraphs(built.docx, "title") == ["Pump station 7"]
    assert zone_paragraphs(built.docx, "report_ref") == ["R-117"]


def test_speaker_leads_where_the_zone_asks(built):
    assert zone_paragraphs(built.docx, "summary") == ["Inspector: Flights booked for the return.",
                                                      "Inspector: Hotel near the plant."]
    first_run = zone_controls(built.docx)["summary"].find(f"{W.sdtContent}/{W.p}/{W.r}")
    assert first_run.find(f"{W.rPr}/{W.b}") is not None
    assert zone_paragraphs(built.docx, "notes") == ["Access road was flooded."]  # no speaker asked there


def test_speaker_asked_by_the_sidecar_reaches_the_document(template, session, media):
    sidecar = sample_sidecar()
    sidecar["zones"]["summary"] = {**sidecar["zones"]["summary"], "speaker": True}
    maps = extract_maps(template, sidecar)
    out = build(template, maps.zone_map, maps.style_map, session, media)
    assert zone_paragraphs(out.docx, "summary") == ["Inspector: Flights booked for the return.",
                                                    "Inspector: Hotel near the plant."]


def test_no_speaker_unless_the_zone_map_asks(template, maps, session, media):
    assert "speaker" not in next(z for z in maps.zone_map["zones"] if z["id"] == "summary")
    out = build(template, maps.zone_map, maps.style_map, session, media)
    assert zone_paragraphs(out.docx, "summary") == ["Flights booked for the return.", "Hotel near the plant."]


def test_speaker_leads_list_items_and_inline_zones(template, maps):
    session = intent_output({"action_items": ["Replace the gasket"], "report_ref": ["R-117"]},
                            speakers={"action_items": "Lead", "report_ref": "Clerk"})
    out = build(template, with_speaker(maps.zone_map, "action_items", "report_ref"), maps.style_map, session)
    assert zone_paragraphs(out.docx, "action_items") == ["Lead: Replace the gasket"]
    assert zone_paragraphs(out.docx, "report_ref") == ["Clerk: R-117"]


def test_a_zone_asking_for_speakers_leads_only_utterances_that_have_one(template, maps):
    session = intent_output({"summary": ["Nobody said who."]})
    out = build(template, with_speaker(maps.zone_map, "summary"), maps.style_map, session)
    assert zone_paragraphs(out.docx, "summary") == ["Nobody said who."]


@pytest.mark.parametrize(("zone", "speaker", "message"), [
    ("summary", "yes", "has speaker 'yes', not true or false"),
    ("summary", 1, "has speaker 1, not true or false"),
    ("measurements", True, "asks for the speaker, but its kind is table"),
    ("site_photo", True, "asks for the speaker, but its kind is image"),
])
def test_a_bad_speaker_flag_is_refused(template, maps, session, zone, speaker, message):
    zone_map = {**maps.zone_map, "zones": [{**z, "speaker": speaker} if z["id"] == zone else z
                                          for z in maps.zone_map["zones"]]}
    with pytest.raises(BuildError, match=message):
        build(template, zone_map, maps.style_map, session)


def test_placeholders_become_tagged_locked_content_controls(built):
    controls = zone_controls(built.docx)
    for zone, kind in (("title", "text"), ("report_ref", "text")):
        pr = controls[zone].find(W.sdtPr)
        assert pr.find(W.tag).get(W.val) == f"astra:{zone};kind={kind}"
        assert pr.find(W.lock).get(W.val) == "sdtLocked"
    assert controls["title"].find(W.sdtPr).find(W.alias).get(W.val) == "Report title"
    pkg = Package.read(built.docx)
    for part in story_parts(pkg):
        assert "{{" not in "".join(t.text or "" for t in pkg.xml(part).iter(W.t))
    # The output's zones are found by the template's own grammar.
    assert sorted(d.id for d in scan_zones(built.docx)) == sorted(controls)


def test_inline_placeholder_keeps_the_text_around_it(built):
    header = _story_xml(built.docx, "word/header1.xml")
    paragraph = header.find(W.p)
    assert "".join(t.text or "" for t in paragraph.iter(W.t)) == "Field inspection report \u2014 ref. R-117"
    sdt = paragraph.find(W.sdt)
    assert sdt.getprevious().tag == W.r  # the text before stays a run of its own, before the control
    size = sdt.find(f"{W.sdtContent}/{W.r}/{W.rPr}/{W.sz}")
    assert size.get(W.val) == "16"  # the zone's 8 pt, from the style map


def test_formatting_comes_from_the_style_map(built):
    controls = zone_controls(built.docx)
    for p in controls["action_items"].iter(W.p):
        assert p.find(f"{W.pPr}/{W.pStyle}").get(W.val) == "ListBullet"  # numbered by its style
        assert p.find(f"{W.r}/{W.rPr}/{W.rStyle}").get(W.val) == "ZoneAccent"
    for p in controls["summary"].iter(W.p):
        assert p.find(f"{W.pPr}/{W.pStyle}").get(W.val) == "ZoneBody"
    assert not any(r.get(W.val) == "PlaceholderText" for r in controls["summary"].iter(W.rStyle))
    assert controls["summary"].find(f"{W.sdtPr}/{W.showingPlcHdr}") is None


def test_table_header_typed_cells_and_locale(built):
    table = zone_controls(built.docx)["measurements"].find(f"{W.sdtContent}/{W.tbl}")
    assert table.find(f"{W.tblPr}/{W.tblStyle}").get(W.val) == "InspectionTable"  # the template's table look
    rows = table.findall(W.tr)
    assert rows[0].find(f"{W.trPr}/{W.tblHeader}") is not None
    cells = [["".join(t.text or "" for t in tc.iter(W.t)) for tc in tr.findall(W.tc)] for tr in rows]
    assert cells[0] == ["sensor", "location", "pressure_kpa", "temperature_c", "recorded_at"]
    assert cells[1] == ["P-101", "north inlet", "412,5", "11,2", "20.11.2026 09:15"]
    alignment = [[(tc.find(f"{W.p}/{W.pPr}/{W.jc}") is not None) for tc in tr.findall(W.tc)] for tr in rows[1:]]
    assert alignment[0] == [False, False, True, True, False]
    widths = [int(c.get(W.w)) for c in table.find(W.tblGrid)]
    assert sum(widths) == 12240 - 1800 - 1800  # the section's text width


def test_dates_follow_the_locale(template, maps, readings):
    for locale, expected in (("en-US", "11/20/2026 09:15"), ("en-GB", "20/11/2026 09:15"), (None, "2026-11-20 09:15")):
        out = build(template, maps.zone_map, maps.style_map,
                    intent_output(tables={"measurements": [readings]}, locale=locale))
        table = zone_controls(out.docx)["measurements"].find(f"{W.sdtContent}/{W.tbl}")
        assert "".join(t.text for t in table.findall(W.tr)[1].findall(W.tc)[4].iter(W.t)) == expected


def test_title_bookmark_survives(built):
    body = _story_xml(built.docx, "word/document.xml").find(W.body)
    names = [b.get(W.name) for b in body.iter(W.bookmarkStart)]
    assert names == ["report_title"]
    title_p = zone_controls(built.docx)["title"].find(f"{W.sdtContent}/{W.p}")
    assert title_p.find(W.bookmarkStart) is not None and title_p.find(W.bookmarkEnd) is not None


def test_everything_outside_the_zones_is_the_same_atoms(template, built, maps):
    before, after = atomize(template), atomize(built.docx)
    zone_blocks: dict[str, set[int]] = {}
    for zone in maps.zone_map["zones"]:
        zone_blocks.setdefault(zone["location"]["part"].lstrip("/"), set()).add(zone["location"]["block"])
    after_members = {m["name"]: m for m in after.manifest["members"]}
    for member in before.manifest["members"]:
        name = member["name"]
        new = after_members[name]
        if not member["story"]:
            if name not in ("[Content_Types].xml", "word/_rels/document.xml.rels"):  # where the media is added
                assert new["sha256"] == member["sha256"], name
            continue
        old_atoms, new_atoms = member["atoms"], new["atoms"]
        assert len(old_atoms) == len(new_atoms), name  # one block in, one block out (a paragraph -> a control)
        block = -1
        for old, fresh in zip(old_atoms, new_atoms, strict=True):
            if old["kind"].startswith("block:"):
                block += 1
                if block in zone_blocks.get(name, set()):
                    assert old["sha256"] != fresh["sha256"]
                    continue
            assert old["sha256"] == fresh["sha256"], (name, old["kind"], block)


def test_byte_identical_on_rebuild(template, zone_map, maps, session, media, built):
    again = build(bytes(template), zone_map, maps.style_map, session, dict(media))
    assert again.docx == built.docx and again.sha256 == built.sha256
    engine.clear_template_cache()  # a cold read of the template gives the same bytes too
    cold = build(template, zone_map, maps.style_map, session, media)
    assert cold.docx == built.docx
    infos = zipfile.ZipFile(io.BytesIO(built.docx)).infolist()
    assert {i.date_time for i in infos} == {FIXED_DATE_TIME}
    assert [i.filename for i in infos][:len(Package.read(template).members)] == Package.read(template).members


def test_empty_zones(template, maps):
    out = build(template, maps.zone_map, maps.style_map, intent_output({"notes": ["only this"]}))
    controls = zone_controls(out.docx)
    # A control showing its placeholder keeps it, untouched.
    assert controls["summary"].find(f"{W.sdtPr}/{W.showingPlcHdr}") is not None
    assert zone_paragraphs(out.docx, "summary") == ["Click here to enter the inspection summary."]
    # Other controls are emptied (the template's sample content is not content).
    assert zone_paragraphs(out.docx, "action_items") == [""]
    assert controls["measurements"].find(f"{W.sdtContent}/{W.tbl}") is None
    assert next(controls["site_photo"].iter(W.drawing), None) is None
    # Placeholders leave their control with nothing in it, never a stray {{ tag }}.
    assert zone_paragraphs(out.docx, "title") == [""]
    assert zone_paragraphs(out.docx, "report_ref") == [""]
    assert out.fills["title"] == {"kind": "text", "items": 0}


def test_zone_character_cap_leaves_a_visible_note(template, maps):
    caps = BuildCaps(max_zone_chars=30)
    out = build(template, maps.zone_map, maps.style_map,
                intent_output({"notes": ["a" * 20, "b" * 20, "c" * 20]}), caps=caps)
    paragraphs = zone_paragraphs(out.docx, "notes")
    assert paragraphs[:2] == ["a" * 20, "b" * 10]
    assert paragraphs[2].startswith("[ASTRA: this section was cut at 30 characters")
    assert out.fills["notes"]["truncated_chars"] == 30
    assert [(p.zone, p.code) for p in out.problems] == [("notes", "truncated")]


def test_with_core_binding(template, maps, readings):
    """The intent output straight from CORE's binding builds as it is."""
    utterances = [ClassifiedUtterance("a", "Remind me to call the plant", 2.0, 3.0, "S1", "home.reminder", "home",
                                      0.9, False),
                  ClassifiedUtterance("b", "Book a flight home", 1.0, 2.0, "S1", "travel.book_flight", "travel", 0.8,
                                      False),
                  ClassifiedUtterance("c", "What a day", 0.0, 1.0, "S2", "oos", None, 0.9, True)]
    data = read_tables([("data/readings.csv", (SAMPLES / "readings.csv").read_bytes())])
    document = bind(maps.zone_map, utterances, data, locale="en-GB")
    out = build(template, maps.zone_map, maps.style_map, document)
    assert zone_paragraphs(out.docx, "action_items") == ["Remind me to call the plant"]
    assert zone_paragraphs(out.docx, "summary") == ["Book a flight home"]
    assert zone_paragraphs(out.docx, "notes") == ["What a day"]
    assert out.fills["measurements"]["rows"] == 3


def test_inputs_that_do_not_fit_the_template(template, maps):
    zone_map = {**maps.zone_map, "zones": [*maps.zone_map["zones"], {**maps.zone_map["zones"][0], "id": "ghost"}]}
    with pytest.raises(BuildError, match="ghost"):
        build(template, zone_map, maps.style_map, intent_output())
    with pytest.raises(BuildError, match="phantom"):
        build(template, maps.zone_map, maps.style_map, intent_output({"phantom": ["x"]}))
    with pytest.raises(BuildError, match="u9"):
        build(template, maps.zone_map, maps.style_map,
              {"utterances": [], "tables": [], "zones": [{"id": "notes", "utterances": ["u9"], "tables": []}]})
    with pytest.raises(BuildError, match="cannot be read"):
        build(b"not a zip", maps.zone_map, maps.style_map, intent_output())


def test_template_cache_is_bounded(template):
    small = minimal_docx("<w:p><w:r><w:t>{{ a }}</w:t></w:r></w:p>")
    other = minimal_docx("<w:p><w:r><w:t>{{ b }}</w:t></w:r></w:p>")
    cache = engine._TemplateCache(size=1, max_bytes=len(template) - 1, read=engine._Template.read)
    assert cache.get(small) is cache.get(small)  # kept: read once
    cache.get(other)
    assert list(cache._items) == [hashlib.sha256(other).hexdigest()]  # one at a time
    assert cache.get(template) is not cache.get(template)  # over the byte budget: never kept


def _repacked(data: bytes, changes: dict[str, bytes]) -> bytes:
    pkg = Package.read(data)
    return write_package([(name, changes.get(name, pkg.read_part(name))) for name in pkg.members])


IMAGE_ZONE = ('<w:sdt><w:sdtPr><w:tag w:val="astra:photo;kind=image"/><w:id w:val="5"/></w:sdtPr><w:sdtContent><w:p/>'
              '</w:sdtContent></w:sdt><w:p><w:r><w:t>{{ notes }}</w:t></w:r></w:p>')
RELS_PART, TYPES_PART = "word/_rels/document.xml.rels", "[Content_Types].xml"


def _utf16(part: bytes) -> bytes:
    return part.decode("utf-8").replace('encoding="UTF-8"', 'encoding="UTF-16"').encode("utf-16")


@pytest.mark.parametrize("change", [
    lambda rels, types: {RELS_PART: _utf16(rels)},
    lambda rels, types: {RELS_PART: rels + b"<!-- end --><?producer x?>"},
    lambda rels, types: {TYPES_PART: _utf16(types)},
    lambda rels, types: {TYPES_PART: types + b"<!-- end -->"},
    lambda rels, types: {TYPES_PART: types.replace(b"<Default", b'<!-- Extension="png" --><Default', 1)},
], ids=["utf16-rels", "rels-trailing-comment-pi", "utf16-content-types", "content-types-trailing-comment",
        "content-types-comment-naming-png"])
def test_unusual_but_wellformed_package_parts_take_an_image(change, media):
    """Templates that pass the audit build: the relationships and content types parts are edited as XML."""
    plain = minimal_docx(IMAGE_ZONE)
    pkg = Package.read(plain)
    template = _repacked(plain, change(pkg.read_part(RELS_PART), pkg.read_part(TYPES_PART)))
    maps = extract_maps(template)
    out = build(template, maps.zone_map, maps.style_map,
                intent_output({"notes": ["n"]}, media={"photo": ["media/site.png"]}), media)
    assert out.fills["photo"]["items"] == 1
    assert check_document(out.docx, maps.zone_map, template=template).passed
    assert len(docx.Document(io.BytesIO(out.docx)).inline_shapes) == 1
    assert Package.read(out.docx).content_types().defaults.get("png") == "image/png"


def test_a_part_unusable_mid_build_is_a_build_error(media):
    template = minimal_docx(IMAGE_ZONE)
    template = _repacked(template, {TYPES_PART: Package.read(template).read_part(TYPES_PART).replace(
        b"<Types ", b"<Typez ").replace(b"</Types>", b"</Typez>")})
    maps = extract_maps(template)
    with pytest.raises(BuildError, match="cannot be built.*not <Types>"):
        build(template, maps.zone_map, maps.style_map,
              intent_output({"notes": ["n"]}, media={"photo": ["media/site.png"]}), media)


def test_new_ids_are_above_every_part_s_ids(media):
    """A header without zones keeps its picture's docPr id: new drawings and controls count up from above it."""
    header = ('<w:p><w:r><w:drawing><wp:inline><wp:extent cx="9525" cy="9525"/><wp:docPr id="70" name="logo"/>'
              '</wp:inline></w:drawing></w:r></w:p>')
    template = minimal_docx(IMAGE_ZONE, headers=[header])
    maps = extract_maps(template)
    out = build(template, maps.zone_map, maps.style_map,
                intent_output({"notes": ["n"]}, media={"photo": ["media/site.png"]}), media)
    document = Package.read(out.docx).xml("word/document.xml")
    drawing_ids = [int(el.get("id")) for el in document.iter(f"{{{WP_NS}}}docPr")]
    control_ids = [int(el.get(W.val)) for el in document.iter(W.id)]
    assert drawing_ids and min(drawing_ids) > 70
    assert control_ids and max(control_ids) > 70


def _ids(docx: bytes) -> list[int]:
    """Every content-control, bookmark and drawing id of every WordprocessingML part."""
    pkg = Package.read(docx)
    ids = []
    for name in pkg.members:
        if name.startswith("word/") and name.endswith(".xml"):
            root = pkg.xml(name)
            ids += [int(el.get(W.val)) for el in root.iter(W.id)]
            ids += [int(el.get(W.id)) for el in root.iter(W.bookmarkStart)]
            ids += [int(el.get("id")) for el in root.iter(f"{{{WP_NS}}}docPr")]
    return ids


@pytest.mark.parametrize(("top", "new_ids"), [(2147483647, {4, 6, 7, 8, 9}), (2147483646, {2147483647, 4, 6, 7, 8})])
def test_new_ids_stay_within_int32(media, top, new_ids):
    """A template may hold the largest valid id: counting up past it would write ids Word refuses, so the
    build takes the template's free ids from 1 up, deterministically."""
    header = (f'<w:p><w:bookmarkStart w:id="1" w:name="a"/><w:bookmarkStart w:id="{top}" w:name="top"/>'
              '<w:r><w:drawing><wp:inline><wp:extent cx="9525" cy="9525"/><wp:docPr id="3" name="logo"/></wp:inline>'
              f'</w:drawing></w:r><w:bookmarkEnd w:id="{top}"/><w:bookmarkEnd w:id="1"/></w:p>'
              '<w:p><w:bookmarkStart w:id="2" w:name="b"/><w:bookmarkEnd w:id="2"/></w:p>')
    body = IMAGE_ZONE + "<w:p><w:r><w:t>{{ first }}</w:t></w:r></w:p><w:p><w:r><w:t>{{ second }}</w:t></w:r></w:p>"
    template = minimal_docx(body, headers=[header])
    maps = extract_maps(template)
    session = intent_output({"notes": ["n"], "first": ["f"], "second": ["s"]},
                            media={"photo": ["media/site.png", "media/site.png"]})
    out = build(template, maps.zone_map, maps.style_map, session, media)
    template_ids = _ids(template)
    ids = _ids(out.docx)
    assert max(ids) <= 2**31 - 1
    assert sorted(ids) == sorted(template_ids + list(new_ids))  # each new id once, none of the template's
    assert check_document(out.docx, maps.zone_map, template=template).passed
    engine.clear_template_cache()
    assert build(template, maps.zone_map, maps.style_map, session, media).docx == out.docx


@pytest.mark.parametrize("number", ["²", "١٢", "9" * 5000, "2147483649"])
def test_ids_and_sizes_that_are_not_plain_numbers_are_not_built_with(media, number):
    """str.isdigit() accepts '²' and Arabic-Indic digits that int() refuses, and int() refuses 5,000 digits: a template
    the audit passes must still build (a template's odd id or frame size is ignored, never a crash)."""
    frame = (f'<w:sdt><w:sdtPr><w:tag w:val="astra:photo;kind=image"/><w:id w:val="5"/></w:sdtPr><w:sdtContent><w:p>'
             f'<w:r><w:drawing><wp:inline><wp:extent cx="{number}" cy="9525"/><wp:docPr id="{number}" name="p"/>'
             '</wp:inline></w:drawing></w:r></w:p></w:sdtContent></w:sdt>')
    body = (f'<w:p><w:bookmarkStart w:id="{number}" w:name="b"/><w:r><w:t>{{{{ notes }}}}</w:t></w:r>'
            f'<w:bookmarkEnd w:id="{number}"/></w:p>' + frame +
            f'<w:tbl><w:tr><w:tc><w:tcPr><w:tcW w:w="{number}" w:type="dxa"/></w:tcPr><w:p/></w:tc></w:tr></w:tbl>')
    template = minimal_docx(body)
    maps = extract_maps(template)
    out = build(template, maps.zone_map, maps.style_map,
                intent_output({"notes": ["n"]}, media={"photo": ["media/site.png"]}), media)
    assert "photo" in out.fills and Package.read(out.docx).xml("word/document.xml") is not None


def test_a_frame_too_small_to_show_a_picture_falls_back_to_the_text_width(media):
    frame = ('<w:sdt><w:sdtPr><w:tag w:val="astra:photo;kind=image"/><w:id w:val="5"/></w:sdtPr><w:sdtContent><w:p>'
             '<w:r><w:drawing><wp:inline><wp:extent cx="1" cy="1"/><wp:docPr id="3" name="p"/>'
             '</wp:inline></w:drawing></w:r></w:p></w:sdtContent></w:sdt><w:p><w:r><w:t>{{ notes }}</w:t></w:r></w:p>')
    template = minimal_docx(frame)
    maps = extract_maps(template)
    out = build(template, maps.zone_map, maps.style_map,
                intent_output({"notes": ["n"]}, media={"photo": ["media/site.png"]}), media)
    document = Package.read(out.docx).xml("word/document.xml")
    shown = [int(e.get("cx")) for e in document.iter(f"{{{WP_NS}}}extent")]
    assert shown and max(shown) > 914400  # over an inch wide, not 1 EMU


@pytest.mark.parametrize(("lock", "kept_lock"), [("contentLocked", None), ("sdtContentLocked", "sdtLocked"),
                                                 ("sdtLocked", "sdtLocked")])
def test_a_filled_control_is_not_content_locked_nor_a_repeating_section(lock, kept_lock):
    """A content lock would stop the user editing the filled zone; a repeating section (or its item) around
    paragraphs BUILDER wrote is a control Word declares invalid. The lock against deleting the control stays."""
    w15 = "http://schemas.microsoft.com/office/word/2012/wordml"
    template = minimal_docx(
        f'<w:sdt><w:sdtPr><w:tag w:val="astra:notes"/><w:lock w:val="{lock}"/><w15:repeatingSection '
        f'xmlns:w15="{w15}"/><w15:repeatingSectionItem xmlns:w15="{w15}"/><w:id w:val="4"/></w:sdtPr><w:sdtContent>'
        '<w:p><w:r><w:t>keep</w:t></w:r></w:p></w:sdtContent></w:sdt>')
    maps = extract_maps(template)
    out = build(template, maps.zone_map, maps.style_map, intent_output({"notes": ["x"]}))
    sdt_pr = zone_controls(out.docx)["notes"].find(W.sdtPr)
    assert [el.get(W.val) for el in sdt_pr.iter(W.lock)] == ([kept_lock] if kept_lock else [])
    assert not [el for el in sdt_pr if el.tag.startswith(f"{{{w15}}}")]
    assert sdt_pr.find(W.id).get(W.val) == "4" and zone_paragraphs(out.docx, "notes") == ["x"]


def test_new_ids_are_above_the_ids_of_a_main_document_outside_word(media):
    """The main document is the part the package's relationship names, whatever its name: its ids are in use too, so
    new controls and drawings do not repeat the template's (here control 5 and drawings 1 and 2)."""
    picture = ('<w:r><w:drawing><wp:inline><wp:extent cx="9525" cy="9525"/><wp:docPr id="{}" name="p"/></wp:inline>'
               '</w:drawing></w:r>')
    plain = minimal_docx(f"<w:p>{picture.format(1)}{picture.format(2)}</w:p>" + IMAGE_ZONE)
    pkg = Package.read(plain)
    renamed = {"word/document.xml": "content/main.xml", RELS_PART: "content/_rels/main.xml.rels"}
    template = write_package([
        (renamed.get(name, name),
         pkg.read_part(name).replace(b"word/document.xml", b"content/main.xml")) for name in pkg.members])
    maps = extract_maps(template)
    out = build(template, maps.zone_map, maps.style_map,
                intent_output({"notes": ["n"]}, media={"photo": ["media/site.png"]}), media)
    document = Package.read(out.docx).xml("content/main.xml")
    drawing_ids = [int(el.get("id")) for el in document.iter(f"{{{WP_NS}}}docPr")]
    control_ids = [int(el.get(W.val)) for el in document.iter(W.id)]
    assert len(drawing_ids) == 3 and len(control_ids) == 2
    assert len(set(drawing_ids + control_ids)) == 5
    assert check_document(out.docx, maps.zone_map, template=template).passed


def test_a_speaker_s_lead_counts_in_the_zone_character_cap(template, maps):
    """"Ada: " is text of the zone like the utterance after it: 5 + 20 characters fill 25 of 30, and the next
    utterance's lead would leave no room for its text, so it is cut whole, lead and text."""
    out = build(template, with_speaker(maps.zone_map, "notes"), maps.style_map,
                intent_output({"notes": ["a" * 20, "b" * 20]}, speakers={"notes": "Ada"}),
                caps=BuildCaps(max_zone_chars=30))
    paragraphs = zone_paragraphs(out.docx, "notes")
    assert paragraphs[0] == "Ada: " + "a" * 20
    assert len(paragraphs) == 2 and paragraphs[1].startswith("[ASTRA: this section was cut at 30 characters")
    assert out.fills["notes"] == {"kind": "text", "items": 1, "truncated_chars": 25}
