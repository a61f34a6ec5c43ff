"""Session images, checked by content and re-encoded before they enter a document.

:func:`prepare_image` trusts nothing about a file but its pixels: Pillow identifies the format
from the bytes (a name or extension decides nothing), only PNG, JPEG, GIF and WebP are accepted,
the declared dimensions are checked against a pixel cap *before* any pixel is decoded (a
decompression bomb is refused, never inflated; Pillow's own bomb warning is an error here), and
the image is then decoded and written anew, which drops every metadata chunk (EXIF with its GPS
position, XMP, ICC-embedded comments, text chunks) and anything appended after the image data.
JPEG stays JPEG (turned upright from its EXIF orientation first, since the orientation tag goes
with the metadata); PNG, GIF (first frame) and WebP become PNG, which every Word version shows.
A refusal is an :class:`ImageRefused` with a stable ``reason``; the caller reports it and leaves
the image out.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass

from PIL import Image, ImageOps, UnidentifiedImageError

ACCEPTED_FORMATS = ("PNG", "JPEG", "GIF", "WEBP")
CONTENT_TYPES = {"png": "image/png", "jpeg": "image/jpeg"}
_PNG_MODES = ("1", "L", "LA", "P", "RGB", "RGBA", "I;16", "I")


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


def prepare_image(data: bytes, *, max_bytes: int, max_pixels: int) -> PreparedImage:
    """The image re-encoded without metadata, or ImageRefused (not_an_image, unsupported_format,
    too_large, too_many_pixels, corrupt)."""
    if len(data) > max_bytes:
        raise ImageRefused("too_large", f"{len(data)} bytes, over the {max_bytes}-byte limit")
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS) as image:
                width, height = image.size
                if width < 1 or height < 1 or width * height > max_pixels:
                    raise ImageRefused("too_many_pixels",
                                       f"{width}x{height} pixels, over the {max_pixels}-pixel limit")
                fmt = image.format
                image.load()
                if fmt == "JPEG":
                    return _jpeg(image)
                return _png(image)
        except ImageRefused:
            raise
        except UnidentifiedImageError:
            raise ImageRefused("not_an_image", "not a PNG, JPEG, GIF or WebP image (judged by content)") from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageRefused("too_many_pixels", str(exc)) from None
        except (OSError, ValueError, SyntaxError, EOFError) as exc:  # what Pillow raises on broken data
            raise ImageRefused("corrupt", f"the image data cannot be decoded: {exc}") from None


def _jpeg(image: Image.Image) -> PreparedImage:
    upright = ImageOps.exif_transpose(image)
    if upright.mode not in ("L", "RGB"):
        upright = upright.convert("RGB")
    upright = _without_metadata(upright)
    out = io.BytesIO()
    upright.save(out, format="JPEG", quality=90, optimize=False)
    return _prepared(out.getvalue(), "jpeg", upright.size)


def _png(image: Image.Image) -> PreparedImage:
    frame = image
    if frame.mode not in _PNG_MODES:
        frame = frame.convert("RGBA" if "A" in frame.getbands() else "RGB")
    out = io.BytesIO()
    _without_metadata(frame).save(out, format="PNG", optimize=False, compress_level=6)
    return _prepared(out.getvalue(), "png", frame.size)


def _without_metadata(image: Image.Image) -> Image.Image:
    """A copy whose info holds nothing but palette transparency: Pillow writes EXIF, ICC profiles,
    text chunks and comments from ``info``, so an empty one writes none."""
    clean = image.copy()
    clean.info = {key: image.info[key] for key in ("transparency",) if key in image.info}
    return clean


def _prepared(data: bytes, extension: str, size: tuple[int, int]) -> PreparedImage:
    return PreparedImage(data, extension, size[0], size[1], hashlib.sha256(data).hexdigest())
