"""Untrusted image bytes → a decoded RGB photo, refusing bad input before any pixel is decoded.

The checks run in the order that costs least: size of the upload, magic bytes (the declared
content type is never trusted), the header's pixel count (decompression bombs), then the decode
itself (truncated or corrupt data). Every refusal is a `BadImageError` with a machine-readable
`reason` that the API maps to a 4xx status.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

from backdrop.io import PIL_FORMATS, BadImageError, normalize_image

# magic bytes → (format name, MIME type); WebP is checked separately (RIFF....WEBP)
_SIGNATURES = (
    (b"\xff\xd8\xff", "JPEG", "image/jpeg"),
    (b"\x89PNG\r\n\x1a\n", "PNG", "image/png"),
    (b"II*\x00", "TIFF", "image/tiff"),
    (b"MM\x00*", "TIFF", "image/tiff"),
    (b"BM", "BMP", "image/bmp"),
)


@dataclass(frozen=True)
class Sniffed:
    format: str
    mime: str


def sniff(data: bytes) -> Sniffed | None:
    """The image format the bytes really are, from their first bytes; None if not a supported image."""
    for magic, fmt, mime in _SIGNATURES:
        if data.startswith(magic):
            return Sniffed(fmt, mime)
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return Sniffed("WEBP", "image/webp")
    return None


def header_size(data: bytes, max_pixels: int) -> tuple[int, int]:
    """(width, height) from the header only; BadImageError when it is unreadable or too large."""
    from PIL import Image

    if not data:
        raise BadImageError("empty upload (0 bytes)", "empty_file")
    kind = sniff(data)
    if kind is None:
        raise BadImageError("not a supported image (JPEG, PNG, WebP, TIFF or BMP), judged by its bytes",
                            "not_an_image")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data), formats=(kind.format,)) as img:
                width, height = img.size
        except Image.DecompressionBombError as exc:
            raise BadImageError(f"header claims too many pixels, not decoded ({exc})", "too_large") from None
        except Exception as exc:
            raise BadImageError(f"corrupt {kind.format} header ({exc})", "corrupt_file") from None
    if width <= 0 or height <= 0:
        raise BadImageError(f"header claims an empty {width}x{height} image", "corrupt_file")
    if width * height > max_pixels:
        raise BadImageError(f"{width}x{height} = {width * height} pixels exceeds the limit of {max_pixels} "
                            "(checked from the header, nothing decoded)", "too_large")
    return width, height


def decode(data: bytes, max_pixels: int):
    """Fully decoded RGB photo (EXIF orientation applied); BadImageError on anything wrong."""
    from PIL import Image, ImageFile

    header_size(data, max_pixels)
    lenient, ImageFile.LOAD_TRUNCATED_IMAGES = ImageFile.LOAD_TRUNCATED_IMAGES, False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=PIL_FORMATS) as img:
                img.load()
                return normalize_image(img, "upload").convert("RGB")  # the one decoder (16-bit, CMYK, EXIF...)
    except BadImageError:
        raise
    except Exception as exc:  # OSError "image file is truncated", SyntaxError, ValueError...
        raise BadImageError(f"corrupt or truncated image ({exc})", "corrupt_file") from None
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = lenient
