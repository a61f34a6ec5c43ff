"""Images: checked by content, re-encoded without metadata, embedded in the package, sized to the zone."""

from __future__ import annotations

import io
import struct
import time
import zlib

import pytest
from PIL import Image

from astra.builder.check import check_document
from astra.builder.engine import BuildCaps, build
from astra.builder.media import ImageRefused, prepare_image
from astra.ingest.zones import extract_maps
from astra.ooxml.ns import WP_NS
from astra.ooxml.package import Package
from astra.samples import HERE as SAMPLES
from astra.samples.templates import build_sample_template, minimal_docx, sample_sidecar

from .helpers import intent_output, zone_controls

CAPS = {"max_bytes": 10_000_000, "max_pixels": 10_000_000}
SECTION = ('<w:sectPr><w:pgSz w:w="12240" w:h="15840"/>'
           '<w:pgMar w:top="1440" w:right="1440" w:bottom="1440" w:left="1440"/></w:sectPr>')


def _image(fmt: str, size=(40, 30), **save) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(out, fmt, **save)
    return out.getvalue()


def _exif() -> bytes:
    exif = Image.Exif()
    exif[0x010F] = "SecretCam"  # Make
    exif[0x0112] = 6  # Orientation: rotate 90 CW to view
    exif[0x8825] = {1: "N", 2: (48.0, 51.0, 29.0), 3: "E", 4: (2.0, 17.0, 40.0)}  # GPS
    return exif.tobytes()


def _png_declaring(width: int, height: int) -> bytes:
    """A PNG header announcing width x height pixels, with a tiny IDAT: a decompression bomb's shape."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
            + chunk(b"IEND", b""))


def test_jpeg_metadata_stripped_and_turned_upright():
    raw = _image("JPEG", (40, 30), exif=_exif(), comment=b"secret comment")
    assert b"SecretCam" in raw
    image = prepare_image(raw, **CAPS)
    assert image.extension == "jpeg" and image.content_type == "image/jpeg"
    assert (image.width_px, image.height_px) == (30, 40)  # the orientation tag applied before it is dropped
    for secret in (b"SecretCam", b"Exif", b"secret comment"):
        assert secret not in image.data
    with Image.open(io.BytesIO(image.data)) as reopened:
        assert not reopened.getexif()


def test_png_text_chunks_and_trailing_bytes_dropped():
    raw = _image("PNG", exif=_exif()) + b"PK\x03\x04 appended zip"
    image = prepare_image(raw, **CAPS)
    assert image.extension == "png"
    assert b"SecretCam" not in image.data and b"PK\x03\x04" not in image.data
    assert image.data.endswith(b"IEND\xaeB`\x82")


@pytest.mark.parametrize("fmt", ["WEBP", "GIF"])
def test_webp_and_gif_become_png(fmt):
    image = prepare_image(_image(fmt), **CAPS)
    assert image.extension == "png" and image.data.startswith(b"\x89PNG")
    assert (image.width_px, image.height_px) == (40, 30)


@pytest.mark.parametrize(("data", "reason"), [
    (b"just text pretending to be a .png", "not_an_image"),
    (b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>', "not_an_image"),
    (_image("PNG")[:60], "corrupt"),
    (_image("BMP"), "not_an_image"),  # a real image, not an accepted format
    (_image("TIFF"), "not_an_image"),
])
def test_refused_by_content(data, reason):
    with pytest.raises(ImageRefused) as refused:
        prepare_image(data, **CAPS)
    assert refused.value.reason == reason


def test_decompression_bomb_refused_before_decoding():
    bomb = _png_declaring(100_000, 100_000)
    started = time.perf_counter()
    with pytest.raises(ImageRefused) as refused:
        prepare_image(bomb, max_bytes=10_000_000, max_pixels=40_000_000)
    assert refused.value.reason == "too_many_pixels"
    assert time.perf_counter() - started < 1.0
    with pytest.raises(ImageRefused) as refused:
        prepare_image(_image("PNG", (400, 300)), max_bytes=10_000_000, max_pixels=100_000)
    assert refused.value.reason == "too_many_pixels"
    with pytest.raises(ImageRefused) as refused:
        prepare_image(_image("PNG"), max_bytes=50, max_pixels=10_000_000)
    assert refused.value.reason == "too_large"


@pytest.fixture(scope="module")
def sample():
    template = build_sample_template()
    return template, extract_maps(template, sample_sidecar())


def test_image_embedded_physically(sample):
    template, maps = sample
    photo = (SAMPLES / "site.png").read_bytes()
    out = build(template, maps.zone_map, maps.style_map, intent_output(), {"media/site.png": photo})
    pkg = Package.read(out.docx)
    media = [m for m in pkg.members if m.startswith("word/media/astra-")]
    assert len(media) == 1 and media[0].endswith(".png")
    assert pkg.content_types().of(media[0]) == "image/png"
    rel = next(r for r in pkg.relationships("word/document.xml") if r.target_part == media[0])
    assert not rel.external and rel.type.endswith("/image")
    blip = next(zone_controls(out.docx)["site_photo"].iter("{http://schemas.openxmlformats.org/drawingml/2006/main}"
                                                           "blip"))
    assert blip.get("{http://schemas.openxmlformats.org/officeDocument/2006/relationships}embed") == rel.id
    assert check_document(out.docx, maps.zone_map, template=template).passed


def test_bad_image_is_reported_and_left_out(sample):
    template, maps = sample
    out = build(template, maps.zone_map, maps.style_map, intent_output(),
                {"media/a.png": b"not an image", "media/b.png": _png_declaring(50_000, 50_000)})
    assert [(p.zone, p.code) for p in out.problems] == [("site_photo", "image_refused")] * 2
    assert "not_an_image" in out.problems[0].detail and "too_many_pixels" in out.problems[1].detail
    assert out.fills["site_photo"] == {"kind": "image", "items": 0}
    assert not [m for m in Package.read(out.docx).members if m.startswith("word/media/astra-")]
    assert check_document(out.docx, maps.zone_map, template=template).passed


def test_picture_control_holds_one_picture(sample):
    template, maps = sample
    out = build(template, maps.zone_map, maps.style_map, intent_output(),
                {"media/a.png": _image("PNG"), "media/b.png": _image("PNG", (20, 20))})
    assert out.fills["site_photo"]["items"] == 1
    assert [(p.zone, p.code) for p in out.problems] == [("site_photo", "image_dropped")]


def _photo_template() -> tuple[bytes, object]:
    template = minimal_docx(f'<w:p><w:r><w:t>{{{{ photos }}}}</w:t></w:r></w:p><w:p><w:r><w:t>{{{{ notes }}}}'
                            f"</w:t></w:r></w:p>{SECTION}")
    sidecar = {"version": 1, "zones": {"photos": {"kind": "image", "media": "media/*"}}}
    return template, extract_maps(template, sidecar)


def _extents(docx: bytes) -> list[tuple[int, int]]:
    return [(int(e.get("cx")), int(e.get("cy"))) for e in zone_controls(docx)["photos"].iter(f"{{{WP_NS}}}extent")]


def test_sized_to_the_zone_width_keeping_the_aspect_ratio():
    template, maps = _photo_template()
    media = {"media/wide.png": _image("PNG", (400, 100)), "media/tall.png": _image("PNG", (100, 1000)),
             "media/same.png": _image("PNG", (400, 100))}
    out = build(template, maps.zone_map, maps.style_map, intent_output(), media)
    text_width = (12240 - 2 * 1440) * 635
    text_height = (15840 - 2 * 1440) * 635
    same, tall, wide = _extents(out.docx)  # in media name order
    assert same == (text_width, text_width // 4) == wide
    assert tall[1] == text_height and abs(tall[0] - text_height // 10) <= 1  # too tall: shrunk to the page
    assert len([m for m in Package.read(out.docx).members if m.startswith("word/media/")]) == 2  # same bytes, one part
    assert out.fills["photos"]["items"] == 3


def test_image_caps_per_zone():
    template, maps = _photo_template()
    media = {f"media/{i}.png": _image("PNG", (10 + i, 10)) for i in range(4)}
    out = build(template, maps.zone_map, maps.style_map, intent_output(), media,
                caps=BuildCaps(max_images_per_zone=2))
    assert out.fills["photos"]["items"] == 2
    assert [p.code for p in out.problems] == ["image_dropped", "image_dropped"]
    assert len(_extents(out.docx)) == 2
