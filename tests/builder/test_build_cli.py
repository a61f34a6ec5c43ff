"""`astra build --data`: exit 0 and the document written; exit 2, one line and nothing written on bad input."""

from __future__ import annotations

import io
import json
import os
import stat

import pytest
from PIL import Image

from astra.builder import local
from astra.builder.check import check_document
from astra.builder.engine import BuildCaps
from astra.builder.local import MAX_JSON_BYTES, BadInput, context_intent_output
from astra.ingest.audit import AuditLimits
from astra.ingest.zones import extract_maps
from astra.samples import HERE as SAMPLES
from astra.samples.templates import build_sample_template, minimal_docx, sample_sidecar
from tests.conftest import run_cli

from .helpers import zone_paragraphs

CONTEXT = {
    "title": "Pump station 7 & <annex>",
    "report_ref": "R-2026-117",
    "summary": "All sensors within tolerance.\nNo leaks found.",
    "action_items": ["Replace the gasket on P-102", "Book a follow-up visit"],
    "measurements": [{"sensor": "P-101", "pressure_kpa": 412.5, "checked": "2026-11-20"},
                     {"sensor": "P-102", "pressure_kpa": 398.1, "checked": "2026-11-21"}],
    "site_photo": "site.png",
}


@pytest.fixture
def files(tmp_path):
    (tmp_path / "field_inspection.docx").write_bytes(build_sample_template())
    (tmp_path / "field_inspection.zones.json").write_text(json.dumps(sample_sidecar()))
    (tmp_path / "site.png").write_bytes((SAMPLES / "site.png").read_bytes())
    (tmp_path / "context.json").write_text(json.dumps(CONTEXT))
    return tmp_path


def _build(files, data: str = "context.json", template: str = "field_inspection.docx", *extra: str):
    return run_cli("build", "--template", str(files / template), "--sidecar",
                   str(files / "field_inspection.zones.json"), "--data", str(files / data),
                   "--out", str(files / "out.docx"), *extra)


def test_builds_the_demo_template(files):
    res = _build(files, "context.json", "field_inspection.docx", "--locale", "en-GB", "--json")
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    built = (files / "out.docx").read_bytes()
    assert summary["size"] == len(built) and summary["problems"] == []
    assert summary["fills"]["measurements"] == {"kind": "table", "items": 1, "rows": 2}
    assert zone_paragraphs(built, "title") == ["Pump station 7 & <annex>"]
    assert zone_paragraphs(built, "summary") == ["All sensors within tolerance.\nNo leaks found."]
    assert zone_paragraphs(built, "action_items") == ["Replace the gasket on P-102", "Book a follow-up visit"]
    template = (files / "field_inspection.docx").read_bytes()
    assert check_document(built, extract_maps(template, sample_sidecar()).zone_map, template=template).passed
    again = _build(files, "context.json", "field_inspection.docx", "--locale", "en-GB")
    assert again.returncode == 0 and "wrote" in again.stdout
    assert (files / "out.docx").read_bytes() == built  # same inputs, same bytes


def _bad(files, name: str, content) -> str:
    (files / name).write_text(content if isinstance(content, str) else json.dumps(content))
    return name


def _sparse(files, name: str, size: int) -> str:
    with open(files / name, "wb") as fh:
        fh.truncate(size)
    return name


@pytest.mark.parametrize(("setup", "message"), [
    (lambda f: ("context.json", _bad(f, "t.docx", "not a zip")), "template refused: not_a_zip"),
    (lambda f: ("context.json", "missing.docx"), "template not found"),
    (lambda f: (_bad(f, "d.json", {"ghost": "x"}), "field_inspection.docx"), "zone 'ghost'"),
    (lambda f: (_bad(f, "d.json", {"title": ["a", "b"]}), "field_inspection.docx"), "zone 'title' needs a string"),
    (lambda f: (_bad(f, "d.json", {"action_items": "one"}), "field_inspection.docx"), "needs a list of strings"),
    (lambda f: (_bad(f, "d.json", {"measurements": [1, 2]}), "field_inspection.docx"), "list of objects"),
    (lambda f: (_bad(f, "d.json", {"site_photo": "nope.png"}), "field_inspection.docx"), "not found"),
    (lambda f: (_bad(f, "d.json", {"site_photo": "d.json"}), "field_inspection.docx"), "image refused"),
    (lambda f: (_bad(f, "d.json", ["not", "an object"]), "field_inspection.docx"), "JSON object"),
    (lambda f: (_bad(f, "d.json", "{broken"), "field_inspection.docx"), "not valid JSON"),
    # Python's int-string limit, and nesting past the recursion limit: JSON that parses nowhere in Python.
    (lambda f: (_bad(f, "d.json", '{"measurements": [{"n": ' + "9" * 5000 + "}]}"), "field_inspection.docx"),
     "holds an integer of more than 4300 digits"),
    (lambda f: (_bad(f, "d.json", "[" * 100_000 + "]" * 100_000), "field_inspection.docx"), "nests arrays"),
    # Regular files only: a device or a FIFO is refused unread (reading /dev/zero never ends; a FIFO blocks).
    (lambda f: ("/dev/zero", "field_inspection.docx"), "data file is not a regular file: /dev/zero"),
    (lambda f: ("context.json", "/dev/zero"), "template is not a regular file: /dev/zero"),
    (lambda f: (_bad(f, "d.json", {"site_photo": "/dev/zero"}), "field_inspection.docx"),
     "image for zone 'site_photo' is not a regular file: /dev/zero"),
    (lambda f: (os.mkfifo(f / "fifo.json") or "fifo.json", "field_inspection.docx"), "not a regular file"),
    # Over the caps, refused unread (sparse files: the size is declared, not written).
    (lambda f: ("context.json", _sparse(f, "huge.docx", AuditLimits().max_upload_bytes + 1)),
     f"larger than the {AuditLimits().max_upload_bytes}-byte limit"),
    (lambda f: (_bad(f, "d.json", {"site_photo": _sparse(f, "huge.png", BuildCaps().max_image_bytes + 1)}),
                "field_inspection.docx"), f"larger than the {BuildCaps().max_image_bytes}-byte limit"),
    (lambda f: (_sparse(f, "huge.json", MAX_JSON_BYTES + 1), "field_inspection.docx"), "larger than"),
])
def test_bad_input_exits_2_and_writes_nothing(files, setup, message):
    data, template = setup(files)
    res = _build(files, data, template)
    assert res.returncode == 2, (res.stdout, res.stderr)
    assert message in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert not (files / "out.docx").exists()
    assert not list(files.glob(".astra-build-*"))


def test_refused_templates(files):
    (files / "dde.docx").write_bytes(minimal_docx(
        '<w:p><w:r><w:t>{{ notes }}</w:t></w:r></w:p><w:p><w:fldSimple w:instr="DDEAUTO cmd /c calc"/></w:p>'))
    (files / "nozones.docx").write_bytes(minimal_docx("<w:p><w:r><w:t>no zones here</w:t></w:r></w:p>"))
    for name, code in (("dde.docx", "field_dde"), ("nozones.docx", "no_zones")):
        res = run_cli("build", "--template", str(files / name), "--data", str(files / "context.json"),
                      "--out", str(files / "out.docx"))
        assert res.returncode == 2 and f"template refused: {code}" in res.stderr, res.stderr
        assert not (files / "out.docx").exists()


@pytest.mark.parametrize(("setup", "message"), [
    (lambda f: (f / "out.docx").mkdir(), "--out {out} is a folder"),
    (lambda f: (f / "out.docx").symlink_to(f / "elsewhere.docx"), "--out {out} is a symbolic link"),
    (lambda f: os.mkfifo(f / "out.docx"), "--out {out} is not a regular file"),
    (lambda f: (f / "out.docx").hardlink_to(f / "field_inspection.docx"), "--out {out} is the template itself"),
])
def test_a_wrong_out_path_exits_2_before_any_work(files, setup, message):
    setup(files)
    before = _identity(files / "out.docx")
    res = _build(files)
    assert res.returncode == 2, (res.stdout, res.stderr)
    assert message.format(out=files / "out.docx") in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert _identity(files / "out.docx") == before and not (files / "elsewhere.docx").exists()
    assert not list(files.glob(".astra-build-*"))


def _identity(path) -> tuple:
    st = path.lstat()
    return st.st_ino, st.st_mode, st.st_size, st.st_mtime_ns


def test_an_out_path_in_a_missing_folder_exits_2(files):
    res = run_cli("build", "--template", str(files / "field_inspection.docx"), "--data", str(files / "context.json"),
                  "--out", str(files / "missing" / "out.docx"))
    assert res.returncode == 2 and f"output folder does not exist: {files / 'missing'}" in res.stderr, res.stderr
    assert not (files / "missing").exists()


@pytest.mark.parametrize("out", ["context.json", "field_inspection.zones.json", "out.pdf"])
def test_out_must_be_a_docx_and_never_an_input(files, out):
    """--out naming the data file (or any non-.docx) would overwrite what the user gave: refused, nothing written."""
    sidecar = files / "field_inspection.zones.json"
    if not sidecar.exists():
        sidecar.write_text("{}")
    target = files / out
    before = target.read_bytes() if target.exists() else None
    res = run_cli("build", "--template", str(files / "field_inspection.docx"), "--data", str(files / "context.json"),
                  "--out", str(target))
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert (target.read_bytes() if target.exists() else None) == before


def test_an_existing_file_is_replaced_with_the_usual_mode(files):
    """Replaced whole (a new file renamed over it), with the mode any new file gets: 0666 less the umask, not the
    owner-only mode of a temporary file."""
    (files / "out.docx").write_bytes(b"an older document")
    os.chmod(files / "out.docx", 0o600)
    previous = os.umask(0o027)
    try:
        res = _build(files)
    finally:
        os.umask(previous)
    assert res.returncode == 0, res.stderr
    assert (files / "out.docx").read_bytes()[:2] == b"PK"
    assert stat.S_IMODE((files / "out.docx").stat().st_mode) == 0o640
    assert not list(files.glob(".astra-build-*"))
    res = _build(files)  # the test runner's own umask
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE((files / "out.docx").stat().st_mode) == 0o666 & ~umask
    assert "replaced atomically" in run_cli("build", "--help").stdout


def test_an_unknown_locale_is_refused_before_any_work(files):
    res = _build(files, "context.json", "field_inspection.docx", "--locale", "zz")
    assert res.returncode == 2, (res.stdout, res.stderr)
    assert "--locale 'zz': no date and number format" in res.stderr and "en-us" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and not (files / "out.docx").exists()
    for known in ("de-AT", "en_US", "fr-CA"):  # matched on the tag, then the language; case and _ do not matter
        assert _build(files, "context.json", "field_inspection.docx", "--locale", known).returncode == 0


def test_an_image_left_out_is_a_warning_and_a_json_field(files):
    """The sample's photo zone is a picture content control: it holds one picture, the second is left out."""
    picture = io.BytesIO()
    Image.new("RGB", (40, 30), (0, 90, 200)).save(picture, format="PNG")
    (files / "photo2.png").write_bytes(picture.getvalue())
    _bad(files, "d.json", {"site_photo": ["site.png", "photo2.png"]})
    res = _build(files, "d.json", "field_inspection.docx", "--json")
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    assert summary["fills"]["site_photo"]["items"] == 1
    assert summary["images_left_out"] == [{"zone": "site_photo",
                                           "detail": "photo2.png: a picture content control holds one picture"}]
    res = _build(files, "d.json", "field_inspection.docx")
    assert "site_photo: 1 image item(s), 1 left out" in res.stdout
    assert "warning: site_photo: image left out: photo2.png: a picture content control holds one picture" \
        in res.stdout, res.stdout


def _reads(monkeypatch) -> list:
    """The paths local.read_bytes is asked for, recorded as it reads them."""
    seen = []

    def recording(path, what, max_bytes):
        seen.append(path)
        return read_bytes(path, what, max_bytes)

    read_bytes = local.read_bytes
    monkeypatch.setattr(local, "read_bytes", recording)
    return seen


def test_an_image_named_many_times_is_read_once(files, monkeypatch):
    """However often and however spelled (relative, ./, absolute, through .., through a link), one file is read
    once, counted once against the total, and is one media entry."""
    (files / "sub").mkdir()
    (files / "link.png").symlink_to(files / "site.png")
    spellings = ["site.png"] * 1000 + ["./site.png", str(files / "site.png"), "sub/../site.png", "link.png"]
    zone_map = extract_maps(build_sample_template(), sample_sidecar()).zone_map
    reads = _reads(monkeypatch)
    size = (files / "site.png").stat().st_size
    intent_output, media = context_intent_output(zone_map, {"site_photo": spellings}, files, None,
                                                 max_image_bytes_total=size)
    assert len(reads) == 1
    assert media == {"site.png": (SAMPLES / "site.png").read_bytes()}
    entry = next(z for z in intent_output["zones"] if z["id"] == "site_photo")
    assert entry["media"] == ["site.png"] * len(spellings)


def test_images_over_the_total_are_refused_before_they_are_read(files, monkeypatch):
    for name in ("a.png", "b.png", "c.png"):
        _sparse(files, name, 1000)
    zone_map = extract_maps(build_sample_template(), sample_sidecar()).zone_map
    reads = _reads(monkeypatch)
    with pytest.raises(BadInput, match=r"^the images the data file names come to more than 2500 bytes together "
                       rf"\(at {files / 'c.png'}\): name fewer or smaller images$"):
        context_intent_output(zone_map, {"site_photo": ["a.png", "b.png", "a.png", "c.png"]}, files, None,
                              max_image_bytes_total=2500)
    assert reads == [files / "a.png", files / "b.png"]


def test_build_from_context_reads_a_repeated_image_once_and_refuses_past_the_total(files):
    (files / "d.json").write_text(json.dumps({**CONTEXT, "site_photo": ["site.png", "site.png"]}))
    template = local.load_template(files / "field_inspection.docx", files / "field_inspection.zones.json")
    size = (files / "site.png").stat().st_size
    assert local.build_from_context(template, files / "d.json", None, max_image_bytes_total=size).fills[
        "site_photo"]["items"] == 1
    with pytest.raises(BadInput, match="come to more than"):
        local.build_from_context(template, files / "d.json", None, max_image_bytes_total=size - 1)


def test_a_link_loop_is_bad_input(files):
    (files / "loop1.png").symlink_to(files / "loop2.png")
    (files / "loop2.png").symlink_to(files / "loop1.png")
    _bad(files, "d.json", {"site_photo": "loop1.png"})
    res = _build(files, "d.json")
    assert res.returncode == 2, (res.stdout, res.stderr)
    assert "image for zone 'site_photo' cannot be read" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert not (files / "out.docx").exists()


def test_file_names_with_markup_are_printed_as_they_are(files):
    """A path is never read as rich markup: ``[/x]`` once crashed the error line, ``[bold]`` would vanish."""
    folder = files / "w[/x]" / "[bold]q"
    folder.mkdir(parents=True)
    res = run_cli("build", "--template", str(folder / "t[/x].docx"), "--data", str(files / "context.json"),
                  "--out", str(folder / "out.docx"))
    assert res.returncode == 2, res.stderr
    assert res.stderr.strip() == f"error: template not found: {folder / 't[/x].docx'}"
    res = run_cli("build", "--template", str(files / "field_inspection.docx"), "--data", str(files / "context.json"),
                  "--out", str(folder / "[bold]out[red].docx"))
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith(f"wrote {folder / '[bold]out[red].docx'} (")


@pytest.mark.parametrize("paths", ["site\u0000.png", ["site.png", "/tmp/\u0000"]], ids=["one", "in-a-list"])
def test_an_image_path_holding_a_nul_is_bad_input(files, paths):
    """JSON may spell a NUL (\\u0000) in a path, which no file name holds: one line, exit 2, nothing written."""
    _bad(files, "d.json", {"site_photo": paths})
    res = _build(files, "d.json")
    assert res.returncode == 2, (res.stdout, res.stderr)
    assert "image for zone 'site_photo' names no file" in res.stderr and "\\x00" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert not (files / "out.docx").exists()
