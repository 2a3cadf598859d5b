"""Small file helpers shared by the stages: hashing, atomic writes, CSV manifests, safe image reads."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import tempfile
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp"}
# Decoders PIL may use on untrusted files: the formats above and nothing else (no EPS/Ghostscript, no PSD...).
PIL_FORMATS = ("JPEG", "PNG", "WEBP", "TIFF", "BMP")  # JPEG includes multi-picture (MPO) files
# First bytes of those formats: a file that starts like an image but does not open is corrupt, not foreign.
_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"II*\x00", b"MM\x00*", b"BM")


class BadImageError(ValueError):
    """A file that cannot serve as a photo or mask; the message names the file and the problem.

    `reason` is machine-readable: missing_file, empty_file, not_an_image, corrupt_file or too_large.
    """

    def __init__(self, message: str, reason: str = "corrupt_file"):
        super().__init__(message)
        self.reason = reason


def sha256_file(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


@contextmanager
def atomic_path(dest: Path) -> Iterator[Path]:
    """Yield a temp path beside `dest`; rename it over `dest` only if the block succeeds."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=dest.suffix, dir=dest.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_json(path: Path, data: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def read_csv(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def write_csv(path: Path, rows: Iterable[dict[str, Any]], fieldnames: list[str]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fieldnames, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def _looks_like_image(head: bytes) -> bool:
    return head.startswith(_MAGIC) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP")


@contextmanager
def _opened(path: Path, max_pixels: int):
    """PIL image with its header read and checked; pixels not decoded yet.

    Refuses missing/empty files, non-images and anything whose header claims more than `max_pixels`
    (a decompression bomb is rejected here, from its header, before a single row is decoded).
    """
    from PIL import Image

    if not path.is_file():
        raise BadImageError(f"{path}: file not found", "missing_file")
    if path.stat().st_size == 0:
        raise BadImageError(f"{path}: empty file (0 bytes)", "empty_file")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit decides
        try:
            image = Image.open(path, formats=PIL_FORMATS)
        except Image.DecompressionBombError as exc:
            raise BadImageError(f"{path}: header claims too many pixels, not decoded ({exc})",
                                "too_large") from None
        except Exception as exc:  # UnidentifiedImageError, or a plugin choking on a broken header
            with open(path, "rb") as fh:
                head = fh.read(16)
            if _looks_like_image(head):
                raise BadImageError(f"{path}: corrupt image header ({exc})", "corrupt_file") from None
            raise BadImageError(f"{path}: not a readable image (JPEG/PNG/WebP/TIFF/BMP)",
                                "not_an_image") from None
    with image:
        width, height = image.size
        if width <= 0 or height <= 0:
            raise BadImageError(f"{path}: header claims an empty {width}x{height} image", "corrupt_file")
        if width * height > max_pixels:
            raise BadImageError(
                f"{path}: {width}x{height} exceeds the {max_pixels} pixel limit (decompression bomb?)",
                "too_large")
        yield image


@dataclass(frozen=True)
class ImageInfo:
    """What an image header says, read without decoding any pixel."""

    format: str
    mode: str
    width: int
    height: int
    orientation: int  # EXIF orientation tag (1 = as stored)


def probe_image(path: Path, *, max_pixels: int = 64_000_000) -> ImageInfo:
    """Header facts of an image; raises BadImageError (with `.reason`) without decoding pixels."""
    with _opened(path, max_pixels) as image:
        try:
            orientation = int(image.getexif().get(0x0112, 1) or 1)
        except Exception:  # a broken EXIF block is not this function's business
            orientation = 1
        return ImageInfo(image.format or "", image.mode, image.width, image.height, orientation)


@contextmanager
def decoded_image(path: Path, *, max_pixels: int = 64_000_000) -> Iterator[Any]:
    """The fully decoded image, closed when the block ends (one image in memory at a time).

    Truncated files fail even if some library switched on PIL's LOAD_TRUNCATED_IMAGES.
    """
    from PIL import Image, ImageFile

    with _opened(path, max_pixels) as image:
        lenient, ImageFile.LOAD_TRUNCATED_IMAGES = ImageFile.LOAD_TRUNCATED_IMAGES, False
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                image.load()
        except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError, struct.error... on bad data
            raise BadImageError(f"{path}: corrupt or truncated image ({exc})", "corrupt_file") from None
        finally:
            ImageFile.LOAD_TRUNCATED_IMAGES = lenient
        yield image


def open_image(path: Path, *, max_pixels: int = 64_000_000, mode: str | None = None):
    """Decode an image fully, refusing decompression bombs before decoding.

    Raises BadImageError naming the file and the reason (empty, not an image, truncated, too large).
    """
    with decoded_image(path, max_pixels=max_pixels) as image:
        return image.convert(mode) if mode else image.copy()


PHASH_BITS = 255  # 16x16 low DCT frequencies without the DC term


@lru_cache(maxsize=2)
def _dct_matrix(n: int):
    import numpy as np

    k = np.arange(n)[:, None]
    m = np.cos(np.pi * (2 * np.arange(n)[None, :] + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
    m[0] /= np.sqrt(2.0)
    return m  # (n, n) orthonormal DCT-II


def perceptual_hash(image) -> str:
    """255-bit DCT perceptual hash of a photo, as 64 hex digits.

    The photo is box-averaged to 64x64 grey, DCT-transformed, and the 16x16 lowest frequencies
    (less the DC term) are compared with their median. Re-encoding, resizing and grey conversion
    move a few dozen bits at most; different product shots on similar studio backgrounds differ in
    far more (a 64-bit hash cannot separate those: their backgrounds dominate 8x8 frequencies).
    """
    import numpy as np
    from PIL import Image

    if image.mode not in ("L", "RGB", "RGBA", "CMYK", "YCbCr"):
        image = image.convert("L")  # palette/1-bit/16-bit: resample in a continuous mode
    small = image.resize((64, 64), Image.Resampling.BOX, reducing_gap=2.0).convert("L")
    c = _dct_matrix(64)
    freq = (c @ np.asarray(small, dtype=np.float64) @ c.T)[:16, :16].ravel()[1:]  # (255,)
    bits = np.append(freq > np.median(freq), False)  # pad to 256
    return np.packbits(bits).tobytes().hex()


def hash_words(hex_hash: str):
    """A perceptual hash as four uint64 words, for vectorised Hamming distances."""
    import numpy as np

    return np.frombuffer(bytes.fromhex(hex_hash), dtype=">u8").astype(np.uint64)


def hamming(words, many):
    """Hamming distance between one hash (4,) and many hashes (N, 4) of `hash_words`: (N,) ints."""
    import numpy as np

    return np.bitwise_count(np.bitwise_xor(many, words)).sum(axis=-1)



def mask_channel(mask):
    """The mask's single channel whatever it was saved as (L, 1-bit, RGBA alpha, grey RGB)."""
    if mask.mode == "RGBA":
        return mask.getchannel("A")
    if mask.mode == "LA":
        return mask.getchannel(0)
    return mask.convert("L")
