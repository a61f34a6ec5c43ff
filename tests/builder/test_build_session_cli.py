"""`astra build --session DIR`: a session folder through CORE (transcript or speech recognition, the local intent
model, binding with its data) and BUILDER, offline. Exit 0 with the document written; exit 2 with one line and
nothing written on a bad folder, manifest or transcript, or with no model."""

from __future__ import annotations

import json
import os

import pytest

from astra.builder.check import check_document
from astra.core.data import read_tables
from astra.core.transcript import split_sentences
from astra.ingest.zones import extract_maps
from astra.ooxml.ns import W
from astra.orchestrator.upload import build_manifest
from astra.samples import HERE as SAMPLES
from astra.samples.templates import build_sample_template, sample_sidecar
from astra.tenancy import SessionKey
from tests.conftest import run_cli
from tests.core.test_model_store import tiny_encoder, tiny_models  # noqa: F401 — fixtures

from .helpers import run_text, zone_controls, zone_paragraphs

SESSION = {"transcript.txt": "session_transcript.txt", "data/readings.csv": "readings.csv",
           "media/site.png": "site.png"}
UTTERANCE_ZONES = ("summary", "action_items", "notes")  # the sample template's text and list zones that take speech


def _session(folder, files: dict[str, str] = SESSION):
    for path, sample in files.items():
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        (folder / path).write_bytes((SAMPLES / sample).read_bytes())
    return folder


@pytest.fixture
def work(tmp_path):
    (tmp_path / "field_inspection.docx").write_bytes(build_sample_template())
    (tmp_path / "field_inspection.zones.json").write_text(json.dumps(sample_sidecar()))
    _session(tmp_path / "session")
    (tmp_path / "state").mkdir()  # an empty state dir: no base model, no LM cache but the test's own
    return tmp_path


@pytest.fixture
def model_dir(tiny_models):  # noqa: F811
    return tiny_models[0][0]


def _build(work, *extra: str, session: str = "session", state=None):
    return run_cli("build", "--template", str(work / "field_inspection.docx"), "--sidecar",
                   str(work / "field_inspection.zones.json"), "--session", str(work / session),
                   "--out", str(work / "out.docx"), *extra, env={"ASTRA_STATE_DIR": str(state or work / "state")})


def _table_text(docx: bytes, zone: str) -> list[list[str]]:
    table = zone_controls(docx)[zone].find(f"{W.sdtContent}/{W.tbl}")
    return [[run_text(cell) for cell in row.iter(W.tc)] for row in table.iter(W.tr)]


def _written_nothing(work) -> None:
    assert not (work / "out.docx").exists()
    assert not list(work.glob(".astra-build-*"))


def test_sample_session_with_its_transcript(work, model_dir, tiny_models):  # noqa: F811
    res = _build(work, "--model", str(model_dir), "--json")
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    built = (work / "out.docx").read_bytes()
    model = tiny_models[0][1]
    sentences = split_sentences((SAMPLES / "session_transcript.txt").read_text())
    assert summary["transcript"] == {"source": "manifest", "origin": "transcript.txt", "utterances": len(sentences),
                                     "duration_seconds": None}
    assert summary["model_version"] == model.version and summary["size"] == len(built)

    # Every utterance in exactly one zone, in transcript order; the summary zone holds those of its domains.
    placed = {zone: zone_paragraphs(built, zone) if summary["fills"][zone]["items"] else [] for zone in
              UTTERANCE_ZONES}
    assert sorted(text for texts in placed.values() for text in texts) == sorted(sentences)
    for zone, texts in placed.items():
        assert texts == [s for s in sentences if s in texts]
        assert summary["fills"][zone]["items"] == summary["counts"]["per_zone"][zone] == len(texts)
    domains = set(sample_sidecar()["zones"]["summary"]["domains"])
    predictions = model.classify(sentences)
    assert placed["summary"] == [s for s, p in zip(sentences, predictions, strict=True) if p.domain in domains]
    assert placed["summary"], "the tiny model puts the transfer sentence in the banking domain"

    # The CSV as a typed table in the table zone, the photo in the image zone.
    readings = read_tables([("data/readings.csv", (SAMPLES / "readings.csv").read_bytes())]).tables[0]
    assert summary["fills"]["measurements"] == {"kind": "table", "items": 1, "rows": len(readings.rows)}
    rows = _table_text(built, "measurements")
    assert rows[0] == [c.name for c in readings.columns] and len(rows) == 1 + len(readings.rows)
    assert rows[1][:3] == ["P-101", "north inlet", "412.5"]
    assert summary["fills"]["site_photo"] == {"kind": "image", "items": 1}
    assert summary["problems"] == [] and summary["data_problems"] == []
    template = (work / "field_inspection.docx").read_bytes()
    assert check_document(built, extract_maps(template, sample_sidecar()).zone_map, template=template).passed

    again = _build(work, "--model", str(model_dir))
    assert again.returncode == 0, again.stderr
    assert (work / "out.docx").read_bytes() == built  # same folder, same model: same bytes
    assert "measurements: 1 table item(s), 3 rows" in again.stdout and "from transcript.txt" in again.stdout


def test_a_folder_with_its_manifest(work, model_dir):
    """A session as it sits in the uploads bucket: the manifest gives the locale; files it does not name are
    left out, as the handover leaves them."""
    folder = work / "session"
    files = ["transcript.txt", "data/readings.csv", "media/site.png"]
    manifest = build_manifest(SessionKey("acme", "site-visit", 1), "field_inspection", files, locale="en-GB")
    (folder / "manifest.json").write_text(json.dumps(manifest))
    (folder / "notes.docx").write_bytes(b"not named by the manifest")
    res = _build(work, "--model", str(model_dir), "--json")
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    assert summary["locale"] == "en-GB" and summary["fills"]["measurements"]["rows"] == 3
    # en-GB dates: day first.
    assert _table_text((work / "out.docx").read_bytes(), "measurements")[1][-1].startswith("20/11/2026")


def test_a_data_only_session_needs_no_model(work):
    folder = _session(work / "data-only", {"data/readings.csv": "readings.csv"})
    res = _build(work, "--json", session=folder.name)
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    assert summary["transcript"]["source"] == "none" and summary["model_version"] is None
    assert summary["fills"]["measurements"]["rows"] == 3 and summary["counts"]["utterances"] == 0


def test_audio_without_a_transcript_is_recognized_with_the_in_domain_lm(work, model_dir):
    folder = _session(work / "spoken", {"audio.wav": "session_audio.wav", "data/readings.csv": "readings.csv"})
    res = _build(work, "--model", str(model_dir), "--json", session=folder.name)
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    assert summary["transcript"]["source"] == "asr" and summary["transcript"]["origin"] == "audio.wav"
    assert summary["transcript"]["utterances"] > 0 and summary["transcript"]["duration_seconds"] > 10
    placed = sum(summary["fills"][zone]["items"] for zone in UTTERANCE_ZONES)
    assert placed == summary["transcript"]["utterances"]
    text = " ".join(p for zone in UTTERANCE_ZONES if summary["fills"][zone]["items"]
                    for p in zone_paragraphs((work / "out.docx").read_bytes(), zone))
    assert "flight" in text.lower()  # the in-domain LM knows the travel words the speech says
    assert list((work / "state" / "lm-cache").iterdir()), "the LM is cached where the transcript asset keeps it"


def _bad_manifest(folder, doc) -> None:
    (folder / "manifest.json").write_text(doc if isinstance(doc, str) else json.dumps(doc))


def _valid_manifest(**changes) -> dict:
    doc = build_manifest(SessionKey("acme", "site-visit", 1), "field_inspection",
                         ["transcript.txt", "data/readings.csv", "media/site.png"])
    return {**doc, **changes}


@pytest.mark.parametrize(("setup", "message"), [
    (lambda f: f.rename(f.with_name("elsewhere")), "is not a folder"),
    (lambda f: (f / "notes.docx").write_bytes(b"x"), "not session files"),
    (lambda f: (f / "transcript.vtt").write_text("WEBVTT\n"), "more than one transcript"),
    (lambda f: (f / "transcript.txt").write_text("  \n"), "transcript.txt: empty transcript"),
    (lambda f: (f / "data" / "link.csv").symlink_to("/etc/hostname"), "leads out of the folder"),
    (lambda f: _bad_manifest(f, "{not json"), "manifest.json: not valid JSON"),
    (lambda f: _bad_manifest(f, {"tenant": "acme"}), "manifest.json: schema"),
    (lambda f: _bad_manifest(f, _valid_manifest(version=1.0)), "is not an integer"),
    (lambda f: _bad_manifest(f, _valid_manifest(media=["media/gone.png"])), "not in the folder: media/gone.png"),
])
def test_a_bad_folder_exits_2_and_writes_nothing(work, model_dir, setup, message):
    setup(work / "session")
    res = _build(work, "--model", str(model_dir))
    assert res.returncode == 2, (res.stdout, res.stderr)
    assert message in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr
    _written_nothing(work)


def test_no_model_exits_2_naming_astra_core_train(work, tmp_path):
    res = _build(work)  # the state dir holds no base model
    assert res.returncode == 2, (res.stdout, res.stderr)
    assert "astra core train" in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr
    _written_nothing(work)
    (tmp_path / "empty-model").mkdir()
    res = _build(work, "--model", str(tmp_path / "empty-model"))
    assert res.returncode == 2 and "astra core train" in res.stderr, res.stderr
    _written_nothing(work)


def test_data_and_session_are_exclusive(work, model_dir):
    (work / "context.json").write_text(json.dumps({"title": "x"}))
    both = _build(work, "--data", str(work / "context.json"))
    assert both.returncode == 2 and "exactly one of --data" in both.stderr, both.stderr
    neither = run_cli("build", "--template", str(work / "field_inspection.docx"), "--out", str(work / "out.docx"))
    assert neither.returncode == 2 and "exactly one of --data" in neither.stderr, neither.stderr
    model_with_data = run_cli("build", "--template", str(work / "field_inspection.docx"), "--data",
                              str(work / "context.json"), "--model", str(model_dir), "--out", str(work / "out.docx"))
    assert model_with_data.returncode == 2 and "--model is for --session" in model_with_data.stderr
    _written_nothing(work)
    assert os.listdir(work / "state") == []


def test_a_bad_image_is_a_warning_not_a_failure(work, model_dir):
    """As the platform reports a bad image and leaves it out, so does the local build."""
    (work / "session" / "media" / "site.png").write_bytes(b"<svg onload='alert(1)'>not a png</svg>")
    res = _build(work, "--model", str(model_dir))
    assert res.returncode == 0, res.stderr
    assert "site_photo: 0 image item(s), 1 left out" in res.stdout
    assert "warning: site_photo: image left out: media/site.png: not_an_image" in res.stdout, res.stdout


def test_an_output_folder_that_does_not_exist_is_said_before_the_build(work):
    # No model either: the output folder is judged first, before seconds of model loading and speech.
    res = run_cli("build", "--template", str(work / "field_inspection.docx"), "--session", str(work / "session"),
                  "--out", str(work / "missing" / "out.docx"), env={"ASTRA_STATE_DIR": str(work / "state")})
    assert res.returncode == 2 and "output folder does not exist" in res.stderr, res.stderr


def test_a_wrong_out_or_locale_is_said_before_the_build(work):
    # No model either: --out and --locale are judged first, before seconds of model loading and speech.
    (work / "out.docx").mkdir()
    res = _build(work)
    assert res.returncode == 2 and f"--out {work / 'out.docx'} is a folder" in res.stderr, res.stderr
    (work / "out.docx").rmdir()
    res = _build(work, "--locale", "zz")
    assert res.returncode == 2 and "--locale 'zz': no date and number format" in res.stderr, res.stderr
    _written_nothing(work)


def test_a_manifest_locale_with_no_known_format_is_a_warning(work, model_dir):
    """The platform builds a session in any locale its manifest gives; the local build does too, and says when the
    table cells fall back to ISO dates."""
    files = ["transcript.txt", "data/readings.csv", "media/site.png"]
    manifest = build_manifest(SessionKey("acme", "site-visit", 1), "field_inspection", files, locale="zz")
    (work / "session" / "manifest.json").write_text(json.dumps(manifest))
    res = _build(work, "--model", str(model_dir), "--json")
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    assert summary["locale"] == "zz" and summary["locale_format_known"] is False
    assert _table_text((work / "out.docx").read_bytes(), "measurements")[1][-1].startswith("2026-11-20")
    res = _build(work, "--model", str(model_dir))
    assert "warning: locale 'zz' (the manifest's): no date and number format known for it" in res.stdout, res.stdout
    res = _build(work, "--model", str(model_dir), "--locale", "en-GB", "--json")  # --locale overrides the manifest
    assert json.loads(res.stdout)["locale_format_known"] is True
