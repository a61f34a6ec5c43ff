"""Session images, checked by content and re-encoded before they enter a document.

:func:`prepare_image` trusts nothing about a file but its pixels: Pillow identifies the format
from the bytes (a name or extension decides nothing), only PNG, JPEG, GIF and WebP are accepted,
the declared dimensions are checked against a pixel cap *before* any pixel is decoded (a
decompression bomb is refused, never inflated; Pillow's own bomb warning is an error here), and
the image is then decoded and written anew, which drops every metadata chunk (EXIF with its GPS
position, XMP, ICC-embedded comments, text chunks) and anything appended after the image data.
JPEG stays JPEG (turned upright from its EXIF orientation first, since the orientation tag goes
with the metadata); PNG, GIF (first frame) and WebP become PNG, which every Word version shows.
Given the box the picture is shown in (:func:`pixel_box`), a larger picture is scaled down to fit
it (never up): a 40-megapixel photo shown six inches wide needs no more than 1200 pixels across.
A refusal is an :class:`ImageRefused` with a stable ``reason``; the caller reports it and leaves
the image out.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

ACCEPTED_FORMATS = ("PNG", "JPEG", "GIF", "WEBP")
CONTENT_TYPES = {"png": "image/png", "jpeg": "image/jpeg"}
EMU_PER_INCH = 914_400
_PNG_MODES = ("1", "L", "LA", "P", "RGB", "RGBA", "I;16", "I")
_ORIENTATION_TAG = 0x0112
# EXIF orientation -> the transposition that shows the stored pixels upright (orientation 1 and
# any other value: as stored). Pillow's ImageOps.exif_transpose does the same but also rewrites
# the EXIF block, which raises on slightly malformed EXIF (struct.error, TypeError); BUILDER drops
# the EXIF anyway, so it only reads the one tag.
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_QUARTER_TURNS = (Image.Transpose.TRANSPOSE, Image.Transpose.ROTATE_270, Image.Transpose.TRANSVERSE,
                  Image.Transpose.ROTATE_90)


class ImageRefused(ValueError):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class PreparedImage:
    data: bytes  # re-encoded, metadata-free
    extension: str  # "png" | "jpeg"
    width_px: int
    height_px: int
    sha256: str

    @property
    def content_type(self) -> str:
        return CONTENT_TYPES[self.extension]


def pixel_box(width_emu: int, height_emu: int, dpi: int) -> tuple[int, int]:
    """The pixels a frame of that size holds at ``dpi`` (rounded up: never coarser than asked)."""
    return -(-width_emu * dpi // EMU_PER_INCH), -(-height_emu * dpi // EMU_PER_INCH)


def prepare_image(data: bytes, *, max_bytes: int, max_pixels: int,
                  fit_within: tuple[int, int] | None = None) -> PreparedImage:
    """The image re-encoded without metadata, upright, and no larger than ``fit_within`` (width,
    height in pixels; None: as large as it is), or ImageRefused (not_an_image, unsupported_format,
    too_large, too_many_pixels, corrupt). Same bytes and box in, same bytes out."""
    if len(data) > max_bytes:
        raise ImageRefused("too_large", f"{len(data)} bytes, over the {max_bytes}-byte limit")
    with warnings.catch_warnings():
        # Pillow warns about metadata it skips (a tag past the end of the EXIF block...): the
        # metadata is dropped anyway, and the warning would only reach the operator's stderr.
        warnings.simplefilter("ignore")
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS) as image:
                width, height = image.size
                if width < 1 or height < 1 or width * height > max_pixels:
                    raise ImageRefused("too_many_pixels",
                                       f"{width}x{height} pixels, over the {max_pixels}-pixel limit")
                if image.format == "JPEG":
                    return _jpeg(image, fit_within)
                image.load()
                return _png(image, fit_within)
        except ImageRefused:
            raise
        except UnidentifiedImageError:
            raise ImageRefused("not_an_image", "not a PNG, JPEG, GIF or WebP image (judged by content)") from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageRefused("too_many_pixels", str(exc)) from None
        except Exception as exc:  # broken data makes Pillow raise almost anything (OSError, struct.error, TypeError...)
            raise ImageRefused("corrupt", f"the image data cannot be decoded: {type(exc).__name__}: {exc}") from None


def _jpeg(image: Image.Image, fit_within: tuple[int, int] | None) -> PreparedImage:
    turn = _UPRIGHT.get(_orientation(image))
    if fit_within is not None:
        stored_box = fit_within[::-1] if turn in _QUARTER_TURNS else fit_within
        # libjpeg decodes at 1/2, 1/4 or 1/8 scale when that still covers the box: a big photo
        # is never held in memory at full size.
        image.draft(None, _fitted(image.size, stored_box))
    image.load()
    upright = image.transpose(turn) if turn is not None else image
    if upright.mode not in ("L", "RGB"):
        upright = upright.convert("RGB")
    upright = _without_metadata(_downscaled(upright, fit_within))
    out = io.BytesIO()
    upright.save(out, format="JPEG", quality=90, optimize=False)
    return _prepared(out.getvalue(), "jpeg", upright.size)


def _png(image: Image.Image, fit_within: tuple[int, int] | None) -> PreparedImage:
    frame = image
    if frame.mode not in _PNG_MODES or (frame.mode in ("1", "P") and _fitted(frame.size, fit_within) != frame.size):
        # also a palette or 1-bit picture to be scaled: Pillow scales those by picking pixels, not averaging
        frame = frame.convert("RGBA" if "A" in frame.getbands() or "transparency" in frame.info else "RGB")
    frame = _downscaled(frame, fit_within)
    out = io.BytesIO()
    _without_metadata(frame).save(out, format="PNG", optimize=False, compress_level=6)
    return _prepared(out.getvalue(), "png", frame.size)


def _orientation(image: Image.Image) -> int:
    """The EXIF orientation tag, or 1 (as stored) when there is none or the EXIF cannot be read."""
    try:
        value = image.getexif().get(_ORIENTATION_TAG)
    except Exception:  # a malformed EXIF block is metadata BUILDER drops: the picture is shown as stored
        return 1
    return value if isinstance(value, int) and value in _UPRIGHT else 1


def _fitted(size: tuple[int, int], box: tuple[int, int] | None) -> tuple[int, int]:
    """``size`` scaled down to fit ``box``, keeping the aspect ratio; unchanged if it fits already."""
    if box is None:
        return size
    scale = min(box[0] / size[0], box[1] / size[1])
    if scale >= 1:
        return size
    return max(1, round(size[0] * scale)), max(1, round(size[1] * scale))


def _downscaled(image: Image.Image, box: tuple[int, int] | None) -> Image.Image:
    size = _fitted(image.size, box)
    if size == image.size:
        return image
    return image.resize(size, Image.Resampling.LANCZOS)


def _without_metadata(image: Image.Image) -> Image.Image:
    """A copy whose info holds nothing but palette transparency: Pillow writes EXIF, ICC profiles,
    text chunks and comments from ``info``, so an empty one writes none."""
    clean = image.copy()
    clean.info = {key: image.info[key] for key in ("transparency",) if key in image.info}
    return clean


def _prepared(data: bytes, extension: str, size: tuple[int, int]) -> PreparedImage:
    return PreparedImage(data, extension, size[0], size[1], hashlib.sha256(data).hexdigest())
