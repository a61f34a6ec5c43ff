"""LEARN comparator: real documents built by BUILDER from the sample template, edited as a user would, compared."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from functools import lru_cache
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from astra.builder.engine import BuildCaps, build
from astra.learn import compare as compare_module
from astra.learn.compare import (
    REPORT_SCHEMA_PATH,
    ComparisonError,
    FeedbackRefused,
    compare,
    report_bytes,
    report_examples,
    report_sha256,
)
from astra.learn.document_zones import ReadCaps, read_zones
from astra.ooxml.ns import W
from astra.samples.edits import DocumentEdit
from astra.samples.templates import minimal_docx

from .helpers import (
    MODEL_VERSION,
    SESSION,
    TENANT,
    built,
    fixed_ranker,
    intent_output,
    sample_maps,
    sample_template,
    zone_map,
)

# The model ranks these first whatever the text: "weather" no zone accepts, book_flight only the summary,
# reminder the action items (domain home).
RANKER = fixed_ranker(["weather", "book_flight", "reminder", "todo_list_update"])
SITE_PNG = (Path(compare_module.__file__).parents[1] / "samples" / "site.png").read_bytes()


@lru_cache(maxsize=1)
def sample() -> tuple[dict, dict, bytes]:
    """(zone map with a speaker zone, intent output, the document BUILDER made)."""
    zones = zone_map(speaker=("summary",))
    output = intent_output(speaker="Inspector")
    return zones, output, built(zones, output)


def run(edited: bytes, *, generated: bytes | None = None, zones: dict | None = None, output: dict | None = None,
        corrections: dict | None = None, ranker=RANKER) -> dict:
    base_zones, base_output, base_generated = sample()
    report = compare(generated or base_generated, edited, zones or base_zones, output or base_output,
                     corrections=corrections, tenant=TENANT, session=SESSION, config_version=3,
                     model_version=MODEL_VERSION, ranker=ranker)
    errors = list(Draft202012Validator(json.loads(REPORT_SCHEMA_PATH.read_text())).iter_errors(report))
    assert not errors, errors[0].message
    return report


def edit() -> DocumentEdit:
    return DocumentEdit(sample()[2])


def ids(items: list[dict]) -> list[str]:
    return [item["utterance_id"] for item in items]


def refused(edited: bytes, **kwargs) -> FeedbackRefused:
    with pytest.raises(FeedbackRefused) as caught:
        run(edited, **kwargs)
    return caught.value


# --------------------------------------------------------------------------- what the report says


def test_an_untouched_save_keeps_every_utterance_and_teaches_nothing():
    report = run(edit().save())
    assert report["counts"]["kept"] == 6
    assert all(report["counts"][kind] == 0 for kind in ("edited", "deleted", "added", "moved", "formatting_only",
                                                        "unresolved", "cells_changed", "zones_missing"))
    assert ids(report["zones"]["summary"]["kept"]) == ["u1", "u2", "u3"]
    assert report["examples"] == []
    assert {zone["status"] for zone in report["zones"].values()} == {"present"}


def test_the_demo_edit_move_edit_delete_add_bold_and_a_cell():
    e = edit()
    e.move("Remind me to call the roofer", "action_items")
    e.set_text("Transfer two hundred dollars", "Transfer three hundred dollars")
    e.delete("The weather was dry")
    e.add("notes", "Owner asked about the warranty.")
    e.bold("Add gutter cleaning")
    e.set_cell(1, 1, "4.6")
    edited = e.save()
    report = run(edited)
    zones = report["zones"]
    assert report["moves"] == [{"utterance_id": "u3", "text": "Remind me to call the roofer on Monday.",
                                "before": "Remind me to call the roofer on Monday.", "from_zone": "summary",
                                "to_zone": "action_items", "edited": False}]
    assert ids(zones["summary"]["moved_out"]) == ["u3"] and ids(zones["action_items"]["moved_in"]) == ["u3"]
    assert zones["summary"]["edited"] == [{
        "utterance_id": "u2", "before": "Transfer two hundred dollars to the repair account.",
        "after": "Transfer three hundred dollars to the repair account.",
        "diff": [{"op": "replace", "before": "two", "after": "three"}]}]
    assert ids(zones["notes"]["deleted"]) == ["u6"]
    assert [a["text"] for a in zones["notes"]["added"]] == ["Owner asked about the warranty."]
    assert ids(zones["action_items"]["formatting_only"]) == ["u4"]  # bold only: not a content change
    assert ids(zones["action_items"]["kept"]) == ["u5"]
    assert zones["measurements"]["cells_changed"] == [{"table": 0, "row": 1, "column": 1, "before": "4.5",
                                                      "after": "4.6"}]
    assert report["document_sha256"] == hashlib.sha256(sample()[2]).hexdigest()
    assert report["model_version"] == MODEL_VERSION and report["config_version"] == 3
    examples = {x["utterance_key"]: x for x in report["examples"]}
    assert examples["u3"]["intent"] == "reminder" and examples["u3"]["kind"] == "moved"  # best of action_items'
    assert (examples["u3"]["from_zone"], examples["u3"]["to_zone"]) == ("summary", "action_items")
    assert examples["u2"] == {**examples["u2"], "intent": "transfer", "kind": "edited",
                              "text": "Transfer three hundred dollars to the repair account."}
    assert examples["u6"]["intent"] == "oos" and examples["u6"]["kind"] == "deleted"
    assert examples["u6"]["to_zone"] is None
    assert set(examples) == {"u2", "u3", "u6"}  # the unlabelled addition and the bold item teach nothing
    assert report["counts"]["skipped_unlabelled_added"] == 1 and report["counts"]["examples"] == 3
    # canonical and stable: the same comparison gives the same bytes; examples carry their sha256
    assert report_bytes(run(edited)) == report_bytes(report)
    labelled = report_examples(report)
    assert {x.report_sha256 for x in labelled} == {report_sha256(report)}
    assert [x.utterance_key for x in labelled] == [x["utterance_key"] for x in report["examples"]]


def test_a_move_with_an_edit_is_both():
    e = edit()
    e.set_text("Remind me to call the roofer on Monday.", "Remind me to call the roofer on Tuesday.")
    e.move("Remind me to call the roofer", "action_items")
    report = run(e.save())
    assert report["moves"][0]["edited"] is True
    moved_in = report["zones"]["action_items"]["moved_in"][0]
    assert moved_in["diff"] == [{"op": "replace", "before": "Monday.", "after": "Tuesday."}]
    assert report["examples"][0]["text"] == "Remind me to call the roofer on Tuesday."
    assert report["counts"]["moved_edited"] == 1


def test_a_move_to_the_fallback_zone_is_out_of_scope():
    e = edit()
    e.move("Book a flight to Paris", "notes")
    report = run(e.save())
    (example,) = report["examples"]
    assert example["intent"] == "oos" and example["kind"] == "moved" and example["to_zone"] == "notes"


def test_a_move_into_a_table_zone_gives_no_example():
    e = edit()
    e.move("Book a flight to Paris", "measurements")
    report = run(e.save())
    assert ids(report["zones"]["measurements"]["moved_in"]) == ["u1"]
    assert report["examples"] == [] and report["counts"]["skipped_to_table_zone"] == 1
    assert report["zones"]["measurements"]["cells_changed"] == []  # the table itself is as it was


def test_a_move_to_a_zone_whose_intents_the_model_does_not_know_gives_no_example():
    e = edit()
    e.move("Book a flight to Paris", "action_items")
    report = run(e.save(), ranker=fixed_ranker(["weather", "book_flight"]))
    assert report["examples"] == [] and report["counts"]["skipped_no_known_intent"] == 1


def test_an_edit_of_an_out_of_scope_utterance_gives_no_example():
    e = edit()
    e.set_text("dry and clear", "dry and sunny")
    report = run(e.save())
    assert ids(report["zones"]["notes"]["edited"]) == ["u6"]
    assert report["examples"] == [] and report["counts"]["skipped_edited_out_of_scope"] == 1


def test_whitespace_case_and_quotes_are_not_edits():
    e = edit()
    e.set_text("Book a flight to Paris for the site team.", "book  a flight to PARIS for the site team.")
    e.set_text("Transfer two hundred dollars", "Transfer two\u00a0hundred dollars")
    report = run(e.save())
    assert report["counts"]["kept"] == 6 and report["counts"]["edited"] == 0


def test_a_rewritten_utterance_is_deleted_and_the_new_text_added():
    e = edit()
    e.set_text("Schedule a meeting with the owner next week.", "Ask the council about the permit fees.")
    report = run(e.save())
    assert ids(report["zones"]["action_items"]["deleted"]) == ["u5"]
    assert [a["text"] for a in report["zones"]["action_items"]["added"]] == ["Ask the council about the permit fees."]


def test_the_speaker_lead_is_not_the_text_in_any_zone():
    zones, output, generated = sample()
    before = read_zones(generated, zones, speakers=["Inspector"])
    assert [(p.speaker, p.text) for p in before.zones["summary"].paragraphs][0] == \
        ("Inspector", "Book a flight to Paris for the site team.")
    assert before.zones["summary"].paragraphs[0].formatting["runs"] == \
        [[{}, "Book a flight to Paris for the site team."]]
    e = edit()
    e.move("Book a flight to Paris", "notes")  # the bold lead travels with it
    e.add("notes", "Inspector: typed by hand, not bold.")
    after = read_zones(e.save(), zones, speakers=["Inspector"])
    notes = [(p.speaker, p.text) for p in after.zones["notes"].paragraphs]
    assert ("Inspector", "Book a flight to Paris for the site team.") in notes
    assert (None, "Inspector: typed by hand, not bold.") in notes


def test_an_inline_zone_has_one_item_per_line():
    zones = zone_map()
    output = intent_output({"report_ref": [("R-17", "oos"), ("Site B", "oos")]}, tables=False)
    generated = built(zones, output)
    assert [p.text for p in read_zones(generated, zones).zones["report_ref"].paragraphs] == ["R-17", "Site B"]
    e = DocumentEdit(generated)
    e.set_text("Site B", "Site C")
    report = run(e.save(), generated=generated, zones=zones, output=output)
    assert ids(report["zones"]["report_ref"]["kept"]) == ["u1"]
    assert report["zones"]["report_ref"]["edited"][0]["after"] == "Site C"


def test_placeholder_text_of_an_empty_zone_is_scaffolding():
    zones = zone_map()
    output = intent_output({"notes": [("Gate code is 4411.", "oos")]}, tables=False)
    generated = built(zones, output)
    assert "Click here to enter the inspection summary." in \
        [p.text for p in read_zones(generated, zones).zones["summary"].paragraphs]
    report = run(DocumentEdit(generated).save(), generated=generated, zones=zones, output=output)
    assert report["counts"]["added"] == 0 and report["counts"]["kept"] == 1
    e = DocumentEdit(generated)
    e.add("summary", "Fly the crew out on Friday.")
    report = run(e.save(), generated=generated, zones=zones, output=output)
    assert [a["text"] for a in report["zones"]["summary"]["added"]] == ["Fly the crew out on Friday."]


def test_a_cut_zone_compares_what_builder_wrote():
    zones = zone_map()
    long_one = "The north gutter sags by two inches over the porch."
    output = intent_output({"notes": [("Gate code is 4411.", "oos"), (long_one, "oos"),
                                      ("Never written at all.", "oos")]}, tables=False)
    generated = build(sample_template(), zones, sample_maps().style_map, output, {},
                      caps=BuildCaps(max_zone_chars=40)).docx
    report = run(DocumentEdit(generated).save(), generated=generated, zones=zones, output=output)
    assert ids(report["zones"]["notes"]["kept"]) == ["u1", "u2"]  # u2 as cut; the cut note is scaffolding
    assert report["zones"]["notes"]["kept"][1]["text"] == long_one[:40 - len("Gate code is 4411.")]
    assert report["counts"]["not_written"] == 1 and report["counts"]["added"] == 0


def test_images_kept_added_and_deleted():
    zones = zone_map()
    output = intent_output({"notes": [("Gate code is 4411.", "oos")]}, tables=False)
    generated = build(sample_template(), zones, sample_maps().style_map, output,
                      {"media/site.png": SITE_PNG}).docx
    picture = read_zones(generated, zones).zones["site_photo"].images
    assert len(picture) == 1
    e = DocumentEdit(generated)
    drawing = next(e.content("site_photo").iter(W.r))
    drawing.getparent().remove(drawing)
    report = run(e.save(), generated=generated, zones=zones, output=output)
    assert report["zones"]["site_photo"]["images"] == {"kept": [], "added": [], "deleted": picture}
    assert report["counts"]["images_deleted"] == 1


# --------------------------------------------------------------------------- a zone's control gone


def test_a_removed_control_leaves_its_utterances_unresolved_not_deleted():
    e = edit()
    e.unwrap("action_items")  # "Remove content control": the text stays, outside any zone
    report = run(e.save())
    zone = report["zones"]["action_items"]
    assert zone["status"] == "missing" and zone["deleted"] == []
    assert zone["unresolved"] == [
        {"utterance_id": "u4", "text": "Add gutter cleaning to my to do list.", "outside_zones": True},
        {"utterance_id": "u5", "text": "Schedule a meeting with the owner next week.", "outside_zones": True}]
    assert report["examples"] == [] and report["counts"]["skipped_unresolved"] == 2
    assert report["counts"]["zones_missing"] == 1


def test_a_deleted_control_with_its_content_is_unresolved_and_a_utterance_found_elsewhere_is_moved():
    e = edit()
    e.move("Schedule a meeting with the owner", "notes")
    e.remove_control("action_items")
    report = run(e.save())
    zone = report["zones"]["action_items"]
    assert zone["status"] == "missing"
    assert zone["unresolved"] == [{"utterance_id": "u4", "text": "Add gutter cleaning to my to do list.",
                                   "outside_zones": False}]
    assert ids(zone["moved_out"]) == ["u5"] and report["moves"][0]["to_zone"] == "notes"


def test_when_the_comparison_budget_runs_out_nothing_is_taken_as_deleted(monkeypatch):
    monkeypatch.setattr(compare_module, "MAX_COMPARISON_WORK", 0)
    e = edit()
    e.set_text("Transfer two hundred dollars", "Transfer three hundred dollars")
    report = run(e.save())
    assert ids(report["zones"]["summary"]["unresolved"]) == ["u2"] and report["counts"]["deleted"] == 0
    assert report["counts"]["comparison_incomplete"] == 1
    assert all(x["intent"] != "oos" for x in report["examples"])


# --------------------------------------------------------------------------- refused feedback


def test_not_a_docx_is_refused():
    assert refused(b"just some text").code == "not_docx"
    assert refused(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(600)).code == "not_docx"  # OLE: encrypted or .doc


def _rewritten(data: bytes, change) -> bytes:
    source = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target:
        for name in source.namelist():
            target.writestr(name, change(name, source.read(name)))
        if change("word/vbaProject.bin", None) is not None:
            target.writestr("word/vbaProject.bin", change("word/vbaProject.bin", None))
    return out.getvalue()


def test_hostile_documents_are_refused_by_the_ingest_audit():
    edited = edit().save()

    def xxe(name, payload):
        if name == "word/document.xml":
            return payload.replace(b"?>", b'?><!DOCTYPE d [<!ENTITY x SYSTEM "file:///etc/passwd">]>', 1)
        return payload

    error = refused(_rewritten(edited, xxe))
    assert error.code == "audit_refused" and "xml_dtd" in error.message

    def macro(name, payload):
        if name == "word/vbaProject.bin":
            return b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(504)
        return payload

    assert refused(_rewritten(edited, macro)).code == "audit_refused"

    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("[Content_Types].xml", b"<Types/>")
        z.writestr("word/document.xml", b" " * (4 * 1024 * 1024))  # over 100:1 past 1 MiB
    assert refused(bomb.getvalue()).code == "audit_refused"


def test_a_control_naming_no_zone_of_the_map_is_refused():
    e = edit()
    e.retag("notes", "astra:remarks;kind=text")
    error = refused(e.save())
    assert error.code == "unknown_zone" and "astra:remarks" in error.message


def test_a_copied_control_and_a_nested_control_are_refused():
    e = edit()
    e.copy_control("notes")
    assert refused(e.save()).code == "duplicate_zone"
    e = edit()
    notes = e.control("notes")
    notes.getparent().remove(notes)
    e.content("summary").append(notes)
    assert refused(e.save()).code == "nested_zone"


def test_zones_gone_is_refused():
    e = edit()
    for zone in sample()[0]["zones"]:
        e.remove_control(zone["id"])
    assert refused(e.save()).code == "zones_gone"


def test_another_template_is_refused():
    zones = zone_map()
    other = minimal_docx(
        "<w:p><w:r><w:t>Quarterly budget review for the finance committee</w:t></w:r></w:p>"
        "<w:p><w:r><w:t>Prepared by the treasurer; figures unaudited until March</w:t></w:r></w:p>"
        '<w:sdt><w:sdtPr><w:tag w:val="astra:notes;kind=text"/></w:sdtPr><w:sdtContent><w:p><w:r>'
        "<w:t>The weather was dry and clear all afternoon.</w:t></w:r></w:p></w:sdtContent></w:sdt>")
    error = refused(other, zones=zones)
    assert error.code == "other_template" and "outside the zones" in error.message


def test_small_changes_outside_the_zones_are_not_another_template():
    e = edit()
    e.outside("Action items", "Actions to take")
    e.outside("This report records one site visit.", "This report records the first site visit.")
    e.doc.add_paragraph("A remark the inspector added at the end, outside every zone, quite long " * 3)
    assert run(e.save())["counts"]["kept"] == 6


def test_another_sessions_document_is_refused():
    other = intent_output({"summary": [("Rent a car at the airport.", "car_rental")],
                           "action_items": [("Put milk on the shopping list.", "shopping_list")],
                           "notes": [("Windy, with rain after four.", "oos")]})
    document = built(sample()[0], {**other, "utterances": [{**u, "speaker": "Inspector"} for u in
                                                           other["utterances"]]})
    assert refused(document).code == "other_document"


def test_the_callers_mistakes_are_not_the_users():
    zones, output, generated = sample()
    with pytest.raises(ComparisonError, match="does not belong"):
        compare(generated, generated, zones, output, corrections=None, tenant="other", session=SESSION,
                config_version=1, model_version=MODEL_VERSION, ranker=RANKER)
    with pytest.raises(ComparisonError, match="does not fit the zone map"):  # the template is no built document
        compare(sample_template(), generated, zones, output, corrections=None, tenant=TENANT, session=SESSION,
                config_version=1, model_version=MODEL_VERSION, ranker=RANKER)


# --------------------------------------------------------------------------- reading documents


def test_the_reader_sees_what_a_reader_sees():
    body = (
        '<w:sdt><w:sdtPr><w:tag w:val="astra:notes;kind=text"/></w:sdtPr><w:sdtContent>'
        '<w:p><w:r><w:t>kept </w:t></w:r><w:del w:id="1" w:author="a"><w:r><w:delText>gone </w:delText></w:r></w:del>'
        '<w:ins w:id="2" w:author="a"><w:r><w:t>inserted</w:t></w:r></w:ins></w:p>'
        '<w:p><w:r><w:fldChar w:fldCharType="begin"/></w:r><w:r><w:instrText> PAGE </w:instrText></w:r>'
        '<w:r><w:fldChar w:fldCharType="separate"/></w:r><w:r><w:t>7</w:t></w:r>'
        '<w:r><w:fldChar w:fldCharType="end"/></w:r></w:p>'
        '<w:p><w:r><mc:AlternateContent><mc:Choice Requires="wps"><w:drawing><w:txbxContent><w:p><w:r>'
        '<w:t>in the box</w:t></w:r></w:p></w:txbxContent></w:drawing></mc:Choice><mc:Fallback><w:pict>'
        '<w:txbxContent><w:p><w:r><w:t>in the box</w:t></w:r></w:p></w:txbxContent></w:pict></mc:Fallback>'
        '</mc:AlternateContent></w:r><w:r><w:t>beside the box</w:t></w:r></w:p>'
        '<w:p><w:r><w:rPr><w:b w:val="true"/><w:lang w:val="fr-FR"/><w:rFonts w:hint="eastAsia"/></w:rPr>'
        '<w:t>bold</w:t></w:r></w:p>'
        '</w:sdtContent></w:sdt><w:p><w:r><w:t>outside</w:t></w:r></w:p>')
    zones = {"zones": [{"id": "notes", "kind": "text"}]}
    found = read_zones(minimal_docx(body), zones)
    paragraphs = found.zones["notes"].paragraphs
    assert [p.text for p in paragraphs] == ["kept inserted", "7", "beside the box", "in the box", "bold"]
    assert paragraphs[-1].formatting["runs"] == [[{"b": {"val": "1"}}, "bold"]]  # lang and font hint left out
    assert found.outside == ["outside"]


def test_close_means_most_words_or_nearly_every_letter():
    zones = zone_map()
    output = intent_output({"notes": [("transfer 100 from checking to savings", "transfer"),
                                      ("how do i say hello in french", "translate")]}, tables=False)
    generated = built(zones, output)
    e = DocumentEdit(generated)
    e.set_text("transfer 100 from checking to savings", "transfer 150 from checking into savings")
    e.set_text("how do i say hello in french", "how do you say goodbye in spanish")
    report = run(e.save(), generated=generated, zones=zones, output=output)
    notes = report["zones"]["notes"]
    assert [(x["utterance_id"], x["after"]) for x in notes["edited"]] == \
        [("u1", "transfer 150 from checking into savings")]  # 0.67 of the words, 0.95 of the letters
    assert ids(notes["deleted"]) == ["u2"]  # shares letters, not enough words: another question
    assert [a["text"] for a in notes["added"]] == ["how do you say goodbye in spanish"]


def test_every_utterance_edited_a_little_is_still_this_document():
    e = edit()
    for utterance in intent_output()["utterances"]:
        text = utterance["text"]
        e.set_text(text, text.replace(".", "!").replace(" the ", " our ", 1))
    report = run(e.save())
    assert report["counts"]["edited"] == 6 and report["counts"]["deleted"] == 0


def test_a_generated_document_of_another_intent_output_is_the_callers_mistake():
    zones, output, generated = sample()
    other = intent_output({"summary": [("Rent a car at the airport.", "car_rental")]}, speaker="Inspector")
    with pytest.raises(ComparisonError, match="not built from this intent output"):
        compare(built(zones, other), generated, zones, output, corrections=None, tenant=TENANT, session=SESSION,
                config_version=1, model_version=MODEL_VERSION, ranker=RANKER)


def test_an_utterance_pasted_into_a_table_cell_is_moved_there_not_deleted():
    e = edit()
    e.delete("Book a flight to Paris")
    e.set_cell(2, 2, "Book a flight to Paris for the site team.")
    report = run(e.save())
    assert report["moves"][0]["utterance_id"] == "u1" and report["moves"][0]["to_zone"] == "measurements"
    assert report["counts"]["deleted"] == 0 and report["counts"]["skipped_to_table_zone"] == 1
    assert report["zones"]["measurements"]["cells_changed"] == [
        {"table": 0, "row": 2, "column": 2, "before": "mm", "after": "Book a flight to Paris for the site team."}]


def test_a_table_a_user_puts_in_a_text_zone_still_holds_its_utterances():
    e = edit()
    table = e.doc.add_table(rows=1, cols=1)
    cell_p = table.cell(0, 0).paragraphs[0]._p
    cell_p.getparent().replace(cell_p, e.paragraph("Add gutter"))  # the list item moved into a cell
    e.content("action_items").append(table._tbl)
    report = run(e.save())
    assert ids(report["zones"]["action_items"]["kept"]) == ["u4", "u5"] and report["counts"]["deleted"] == 0


def test_a_zone_in_a_text_box_is_block_level_and_its_fallback_copy_is_not_a_second_control():
    control = ('<w:sdt><w:sdtPr><w:tag w:val="astra:notes;kind=text"/></w:sdtPr><w:sdtContent>'
               "<w:p><w:r><w:t>one</w:t></w:r></w:p><w:p><w:r><w:t>two</w:t></w:r></w:p></w:sdtContent></w:sdt>")
    body = (f'<w:p><w:r><mc:AlternateContent><mc:Choice Requires="wps"><w:drawing><w:txbxContent>{control}'
            f"</w:txbxContent></w:drawing></mc:Choice><mc:Fallback><w:pict><w:txbxContent>{control}</w:txbxContent>"
            "</w:pict></mc:Fallback></mc:AlternateContent></w:r><w:r><w:t>anchor text</w:t></w:r></w:p>")
    found = read_zones(minimal_docx(body), {"zones": [{"id": "notes", "kind": "text"}]})
    assert found.duplicates == [] and found.zones["notes"].inline is False
    assert [p.text for p in found.zones["notes"].paragraphs] == ["one", "two"]
    assert found.outside == ["anchor text"]


# --------------------------------------------------------------------------- bounded work on hostile feedback


def test_a_document_past_a_reading_cap_is_refused_too_large_naming_it(monkeypatch):
    e = edit()
    for k in range(4):
        e.add("notes", f"Added paragraph number {k}.")
    monkeypatch.setattr(compare_module, "EDITED_CAPS", ReadCaps(paragraphs_in_zones=9, characters_in_zones=10**6,
                                                                characters_outside_zones=10**6))
    caught = refused(e.save())
    assert caught.code == "too_large" and "paragraphs_in_zones" in caught.message
    monkeypatch.setattr(compare_module, "EDITED_CAPS", ReadCaps(paragraphs_in_zones=100, characters_in_zones=100,
                                                                characters_outside_zones=10**6))
    assert "characters_in_zones" in refused(edit().save()).message
    monkeypatch.setattr(compare_module, "EDITED_CAPS", ReadCaps(paragraphs_in_zones=100, characters_in_zones=10**6,
                                                                characters_outside_zones=5))
    assert "characters_outside_zones" in refused(edit().save()).message
    monkeypatch.setattr(compare_module, "EDITED_CAPS", ReadCaps(paragraphs_in_zones=10, characters_in_zones=10**6,
                                                                characters_outside_zones=10**6))
    assert run(edit().save())["counts"]["kept"] == 6  # at the caps, not past them


def _reworded(n_words: int, per_zone: int) -> tuple[dict, dict, bytes, bytes]:
    """The review's shape: long utterances of eight words, each but the first reworded (its words in another
    order); the first kept so that the document is this session's."""
    vocabulary = "alpha beta gamma delta epsilon zeta eta theta".split()
    texts = {zone: [" ".join(vocabulary[(k * 7 + i * i) % 8] for i in range(n_words)) + f" {zone}{k}."
                    for k in range(per_zone)] for zone in ("summary", "action_items", "notes")}
    zones = zone_map()
    output = intent_output({zone: [(text, "oos") for text in items] for zone, items in texts.items()})
    generated = built(zones, output)
    e = DocumentEdit(generated)
    for text in [text for items in texts.values() for text in items][1:]:
        words = text.split()
        e.set_text(text, " ".join(words[1::2] + words[::2]))
    return zones, output, generated, e.save()


def test_reworded_long_utterances_exhaust_the_budget_and_nothing_is_deleted(monkeypatch):
    monkeypatch.setattr(compare_module, "MAX_COMPARISON_WORK", 2_000_000)
    zones, output, generated, edited = _reworded(60, 4)
    report = run(edited, generated=generated, zones=zones, output=output, ranker=fixed_ranker(["oos"]))
    assert report["counts"]["comparison_incomplete"] == 1
    assert report["counts"]["deleted"] == 0 and report["counts"]["unresolved"] == 11
    assert report["examples"] == []


def test_one_pair_of_long_texts_costs_its_length_not_one_comparison(monkeypatch):
    words = " ".join(f"word{k}" for k in range(300))
    zones = zone_map()
    output = intent_output({"notes": [(words, "oos")]}, tables=False)
    generated = built(zones, output)
    e = DocumentEdit(generated)
    e.set_text(words, words.replace("word7 ", "changed "))
    assert run(e.save(), generated=generated, zones=zones, output=output)["counts"]["edited"] == 1
    monkeypatch.setattr(compare_module, "MAX_COMPARISON_WORK", 300 * 300)  # no room for the ratio's blocks
    report = run(e.save(), generated=generated, zones=zones, output=output)
    assert report["counts"]["comparison_incomplete"] == 1 and report["counts"]["unresolved"] == 1


def test_pairs_in_other_zones_are_paid_for(monkeypatch):
    zones = zone_map()
    output = intent_output({"notes": [("Call the plumber about the leak.", "oos")]}, tables=False)
    generated = built(zones, output)
    e = DocumentEdit(generated)
    e.delete("Call the plumber about the leak.")
    for k in range(200):
        e.add("summary", f"Unrelated paragraph {k} with some words.")
    monkeypatch.setattr(compare_module, "MAX_COMPARISON_WORK", 100 * compare_module.PAIR_COST)
    report = run(e.save(), generated=generated, zones=zones, output=output)
    assert report["counts"]["comparison_incomplete"] == 1 and report["counts"]["deleted"] == 0
    monkeypatch.setattr(compare_module, "MAX_COMPARISON_WORK", 1000 * compare_module.PAIR_COST)
    report = run(e.save(), generated=generated, zones=zones, output=output)
    assert report["counts"]["comparison_incomplete"] == 0 and report["counts"]["deleted"] == 1


def test_past_the_outside_search_an_utterance_is_still_found_as_a_whole_outside_paragraph(monkeypatch):
    monkeypatch.setattr(compare_module, "MAX_OUTSIDE_SEARCH", 0)
    e = edit()
    e.unwrap("action_items")
    e.outside("Add gutter cleaning to my to do list.", "Note: add gutter cleaning to my to do list.")
    unresolved = run(e.save())["zones"]["action_items"]["unresolved"]
    assert [(x["utterance_id"], x["outside_zones"]) for x in unresolved] == [("u4", False), ("u5", True)]
    monkeypatch.setattr(compare_module, "MAX_OUTSIDE_SEARCH", 10**6)
    unresolved = run(e.save())["zones"]["action_items"]["unresolved"]
    assert [(x["utterance_id"], x["outside_zones"]) for x in unresolved] == [("u4", True), ("u5", True)]
