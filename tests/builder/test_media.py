"""Images: checked by content, re-encoded without metadata, embedded in the package, sized to the zone."""

from __future__ import annotations

import io
import random
import struct
import time
import warnings
import zipfile
import zlib

import pytest
from PIL import Image, ImageFile

from astra.builder import engine
from astra.builder.check import check_document
from astra.builder.engine import BuildCaps, build
from astra.builder.media import ImageRefused, pixel_box, prepare_image
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


# -- malformed EXIF (Pillow's exif_transpose raised on these: TypeError, struct.error)

def _jpeg_with_broken_exif(patches: dict[int, int]) -> bytes:
    """A JPEG whose EXIF block has bytes changed at offsets from the TIFF header (what a fuzzer found)."""
    exif = Image.Exif()
    exif[0x0112] = 6
    exif[0x010F] = "Cam"
    exif[0x8825] = {1: "N", 2: (1.0, 2.0, 3.0)}
    raw = bytearray(_image("JPEG", (40, 30), exif=exif.tobytes()))
    tiff = raw.index(b"Exif\x00\x00") + 6
    for offset, value in patches.items():
        raw[tiff + offset] = value
    return bytes(raw)


@pytest.mark.parametrize("patches", [
    {11: 0x56, 56: 0xC1},  # struct.error: "required argument is not an integer"
    {51: 0xB0, 58: 0x89, 70: 0x76, 73: 0xB4, 84: 0x02},  # TypeError: "fill character must be a unicode character"
    {8: 0x00, 9: 0x40},  # an IFD entry count past the end of the block: only warnings
])
def test_malformed_exif_neither_crashes_nor_warns(patches):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        image = prepare_image(_jpeg_with_broken_exif(patches), **CAPS)
    assert caught == []  # Pillow's complaints about the skipped tags do not reach stderr
    assert image.extension == "jpeg" and {image.width_px, image.height_px} == {30, 40}
    assert b"Exif" not in image.data


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_turned_upright(orientation):
    """A 2x1 block of colour (left red, right blue) stored as each orientation's camera would store it."""
    upright = Image.new("RGB", (80, 40), (255, 0, 0))
    upright.paste((0, 0, 255), (40, 0, 80, 40))
    stored_as = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
                 5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_90, 7: Image.Transpose.TRANSVERSE,
                 8: Image.Transpose.ROTATE_270}
    stored = upright.transpose(stored_as[orientation]) if orientation in stored_as else upright
    exif = Image.Exif()
    exif[0x0112] = orientation
    out = io.BytesIO()
    stored.save(out, "JPEG", exif=exif.tobytes(), quality=95)
    image = prepare_image(out.getvalue(), **CAPS)
    with Image.open(io.BytesIO(image.data)) as shown:
        assert shown.size == (80, 40)
        red, blue = shown.getpixel((10, 20)), shown.getpixel((70, 20))
    assert red[0] > 200 > red[2] and blue[2] > 200 > blue[0]


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_anything_pillow_raises_while_decoding_is_corrupt(monkeypatch, fmt):
    """Pillow's decoders raise more than OSError on broken data (struct.error, TypeError, IndexError...)."""
    data = _image(fmt)

    def broken_decoder(self):
        raise struct.error("unpack requires a buffer of 4 bytes")
    monkeypatch.setattr(ImageFile.ImageFile, "load", broken_decoder)
    with pytest.raises(ImageRefused) as refused:
        prepare_image(data, **CAPS)
    assert refused.value.reason == "corrupt"


# -- size: stored at most as fine as the display needs, and a per-document budget

def _noise(size: tuple[int, int], seed: int, fmt: str = "PNG", **save) -> bytes:
    pixels = random.Random(seed).randbytes(size[0] * size[1] * 3)
    out = io.BytesIO()
    Image.frombytes("RGB", size, pixels).save(out, fmt, **save)
    return out.getvalue()


def test_downscaled_to_the_box_never_upscaled():
    big = prepare_image(_image("PNG", (2000, 500)), **CAPS, fit_within=(400, 400))
    assert (big.width_px, big.height_px) == (400, 100)
    tall = prepare_image(_image("JPEG", (300, 3000)), **CAPS, fit_within=(400, 400))
    assert (tall.width_px, tall.height_px) == (40, 400)
    small = prepare_image(_image("PNG", (40, 30)), **CAPS, fit_within=(400, 400))
    assert (small.width_px, small.height_px) == (40, 30)
    assert small.data == prepare_image(_image("PNG", (40, 30)), **CAPS).data
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 2000x1000, shown 1000x2000: the box applies to the upright picture
    turned = prepare_image(_image("JPEG", (2000, 1000), exif=exif.tobytes()), **CAPS, fit_within=(500, 4000))
    assert (turned.width_px, turned.height_px) == (500, 1000)


@pytest.mark.parametrize(("mode", "fmt", "color", "stored_mode"), [
    ("I;16", "PNG", 300, "I;16"), ("LA", "PNG", (5, 200), "LA"), ("P", "GIF", 3, "RGBA"), ("1", "PNG", 1, "RGB"),
    ("CMYK", "JPEG", (0, 255, 0, 0), "RGB"), ("L", "JPEG", 100, "L"), ("RGBA", "WEBP", (1, 2, 3, 200), "RGBA"),
])
def test_every_accepted_mode_downscaled(mode, fmt, color, stored_mode):
    out = io.BytesIO()
    Image.new(mode, (2000, 1000), color).save(out, fmt, **({"transparency": 3} if fmt == "GIF" else {}))
    image = prepare_image(out.getvalue(), **CAPS, fit_within=(300, 300))
    with Image.open(io.BytesIO(image.data)) as shown:
        assert (shown.size, shown.mode) == ((300, 150), stored_mode)


def test_display_box_at_the_image_resolution():
    assert pixel_box(914_400 * 6, 914_400 * 9, 200) == (1200, 1800)
    assert pixel_box(914_400 * 6 + 1, 914_400 * 9, 200) == (1201, 1800)  # never below the display size


def test_big_photos_stored_at_the_zone_resolution_deterministically():
    template, maps = _photo_template()
    photos = {f"media/{i}.jpg": _noise((3000, 2000), i, "JPEG", quality=95) for i in range(2)}
    first = build(template, maps.zone_map, maps.style_map, intent_output(), photos)
    again = build(template, maps.zone_map, maps.style_map, intent_output(), photos)
    assert first.docx == again.docx
    pkg = Package.read(first.docx)
    stored = [m for m in pkg.members if m.startswith("word/media/")]
    text_width_px = (12240 - 2 * 1440) * 200 // 1440  # 6.5 inches at 200 dpi
    for member in stored:
        with Image.open(io.BytesIO(pkg.read_part(member))) as shown:
            assert shown.size == (text_width_px, round(text_width_px * 2 / 3))
    assert sum(len(pkg.read_part(m)) for m in stored) < sum(len(p) for p in photos.values()) / 3
    text_width_emu = (12240 - 2 * 1440) * 635
    for cx, cy in _extents(first.docx):  # shown as large as before: the zone's width, within a pixel's rounding
        assert cx == text_width_emu and abs(cy - text_width_emu * 2 / 3) < text_width_emu / text_width_px


def test_image_over_the_document_budget_left_out():
    template, maps = _photo_template()
    media = {"media/a.png": _noise((100, 100), 1), "media/b.png": _noise((100, 100), 2),
             "media/c.png": _noise((100, 100), 3)}
    media["media/a2.png"] = media["media/a.png"]  # the same picture again: one part, charged once
    sizes = {name: len(prepare_image(data, **CAPS).data) for name, data in media.items()}
    budget = sizes["media/a.png"] + sizes["media/b.png"]
    out = build(template, maps.zone_map, maps.style_map, intent_output(), media,
                caps=BuildCaps(max_document_image_bytes=budget))
    assert [(p.zone, p.code) for p in out.problems] == [("photos", "image_dropped")]
    assert out.problems[0].detail.startswith("media/c.png: ") and f"{budget}-byte" in out.problems[0].detail
    assert out.fills["photos"]["items"] == 3
    stored = [m for m in Package.read(out.docx).members if m.startswith("word/media/")]
    assert len(stored) == 2
    assert check_document(out.docx, maps.zone_map, template=template).passed


# -- template media names

def _with_member(docx: bytes, name: str, data: bytes) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(docx)) as source, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target:
        for item in source.namelist():
            target.writestr(item, source.read(item))
        target.writestr(name, data)
    return out.getvalue()


@pytest.mark.parametrize("spelling", ["word/media/astra-{sha}.png", "word/media/ASTRA-{sha}.PNG"])
def test_template_part_of_the_same_name_holding_other_bytes(spelling):
    template, maps = _photo_template()
    photo = _image("PNG", (40, 30))
    sha = prepare_image(photo, **CAPS).sha256[:20]
    template = _with_member(template, spelling.format(sha=sha), _image("PNG", (40, 30), optimize=True) + b"other")
    out = build(template, maps.zone_map, maps.style_map, intent_output(), {"media/p.png": photo})
    pkg = Package.read(out.docx)
    blip = next(zone_controls(out.docx)["photos"].iter("{http://schemas.openxmlformats.org/drawingml/2006/main}blip"))
    rel_id = blip.get("{http://schemas.openxmlformats.org/officeDocument/2006/relationships}embed")
    target = next(r.target_part for r in pkg.relationships("word/document.xml") if r.id == rel_id)
    assert pkg.read_part(target) == prepare_image(photo, **CAPS).data  # the user's picture is the one shown
    assert check_document(out.docx, maps.zone_map, template=template).passed


def test_template_part_of_the_same_name_and_bytes_reused():
    template, maps = _photo_template()
    photo = _image("PNG", (40, 30))
    prepared = prepare_image(photo, **CAPS)
    part = f"word/media/astra-{prepared.sha256[:20]}.png"
    template = _with_member(template, part, prepared.data)
    out = build(template, maps.zone_map, maps.style_map, intent_output(), {"media/p.png": photo})
    pkg = Package.read(out.docx)
    assert [m for m in pkg.members if m.startswith("word/media/")] == [part]
    assert next(r for r in pkg.relationships("word/document.xml") if r.type.endswith("/image")).target_part == part


def _counting_prepare(monkeypatch) -> list[int]:
    """Count the images BUILDER prepares (each one decoded)."""
    calls: list[int] = []
    real = engine.prepare_image

    def counted(data, **kwargs):
        calls.append(len(data))
        return real(data, **kwargs)

    monkeypatch.setattr(engine, "prepare_image", counted)
    return calls


def test_images_past_a_zone_s_cap_are_never_decoded(monkeypatch):
    template, maps = _photo_template()
    media = {f"media/{i}.png": _image("PNG", (10 + i, 10)) for i in range(4)}
    calls = _counting_prepare(monkeypatch)
    out = build(template, maps.zone_map, maps.style_map, intent_output(), media,
                caps=BuildCaps(max_images_per_zone=2))
    assert out.fills["photos"]["items"] == 2 and len(calls) == 2
    assert [p.detail.split(":")[0] for p in out.problems] == ["media/2.png", "media/3.png"]


def _framed_zone(zone_id: str, inches: int) -> str:
    return (f'<w:sdt><w:sdtPr><w:tag w:val="astra:{zone_id};kind=image"/></w:sdtPr><w:sdtContent><w:p><w:r>'
            f'<w:drawing><wp:inline><wp:extent cx="{914_400 * inches}" cy="914400"/><wp:docPr id="{inches}" '
            'name="frame"/></wp:inline></w:drawing></w:r></w:p></w:sdtContent></w:sdt>')


def test_an_image_shown_in_frames_of_two_sizes_is_decoded_once_for_the_larger(monkeypatch):
    """One picture in a 2-inch and a 4-inch frame: decoded once, stored once at 200 dpi of the larger frame, shown
    at each frame's width."""
    template = minimal_docx(_framed_zone("small", 2) + _framed_zone("large", 4) +
                            f"<w:p><w:r><w:t>{{{{ notes }}}}</w:t></w:r></w:p>{SECTION}")
    maps = extract_maps(template)
    calls = _counting_prepare(monkeypatch)
    photo = _noise((1600, 400), 7)
    out = build(template, maps.zone_map, maps.style_map,
                intent_output(media={"small": ["media/p.png"], "large": ["media/p.png"]}), {"media/p.png": photo})
    assert len(calls) == 1
    pkg = Package.read(out.docx)
    stored = [m for m in pkg.members if m.startswith("word/media/")]
    assert len(stored) == 1
    with Image.open(io.BytesIO(pkg.read_part(stored[0]))) as shown:
        assert shown.size == (800, 200)
    controls = zone_controls(out.docx)
    widths = {zone: int(next(controls[zone].iter(f"{{{WP_NS}}}extent")).get("cx")) for zone in ("small", "large")}
    assert widths == {"small": 914_400 * 2, "large": 914_400 * 4}
    assert check_document(out.docx, maps.zone_map, template=template).passed
