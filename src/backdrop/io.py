"""Small file helpers shared by the stages: hashing, atomic writes, CSV manifests, safe image reads."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import secrets
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


FILE_MODE = 0o666  # what open() asks for; the process umask takes its bits away, as for any new file
DIR_MODE = 0o777


def _create_beside(dest: Path) -> Path:
    """A new, empty file `.<name>.<random><suffix>` beside `dest`, created exclusively.

    Unlike `tempfile.mkstemp` (always 0600), the file is created with FILE_MODE, so the kernel applies
    the umask exactly as for a plain `open(dest, "w")`: a cut-out is readable by whoever may read the
    folder, and a private umask (077) still keeps it private. O_EXCL makes the name ours alone.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        tmp = dest.parent / f".{dest.name}.{secrets.token_hex(4)}{dest.suffix}"
        try:
            os.close(os.open(tmp, flags, FILE_MODE))
        except FileExistsError:
            continue
        return tmp
    raise FileExistsError(f"{dest.parent}: no free temporary name for {dest.name}")


@contextmanager
def atomic_path(dest: Path) -> Iterator[Path]:
    """Yield a temp path beside `dest`; rename it over `dest` only if the block succeeds.

    The result has the mode a plain open() would give (0666 & ~umask), and folders made on the way
    0777 & ~umask; replacing a file does not carry over its old mode.
    """
    dest.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    tmp = _create_beside(dest)
    try:
        yield tmp
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


# The one decoder. Every photo and mask (ingest, validate, prepare, serving, corrections) goes through
# `normalize_image`, which turns whatever mode the file was stored in into one of these 8-bit modes,
# upright (EXIF orientation applied). Pillow's own convert() clips 16/32-bit modes at 255 (a 16-bit
# grey photo became pure white); after this, any later .convert("RGB"/"L") is exact.
DECODED_MODES = ("L", "LA", "RGB", "RGBA")
_HIGH_DEPTH = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")
_TO_8BIT = {"1": "L", "La": "LA", "PA": "RGBA", "RGBa": "RGBA", "RGBX": "RGB", "CMYK": "RGB",
            "YCbCr": "RGB"}
_U16, _I32 = 65535, 2**31 - 1


def _high_depth_to_l(image, name: str):
    """16-bit, 32-bit int or float grey → 8-bit L by scaling, never clipping.

    I;16* and I holding 0..65535: v/257 (65535 → 255, 32768 → 128). I beyond 16 bits: v/(2³¹-1)·255.
    F: [0, 1] → ×255; up to 255 as is; up to 65535 as 16-bit. Negative, NaN or infinite values, or
    floats above 65535, have no agreed meaning as a photo or mask: refused (unsupported_mode).
    """
    import numpy as np
    from PIL import Image

    arr = np.asarray(image)
    if image.mode == "F":
        if not np.isfinite(arr).all():
            raise BadImageError(f"{name}: 32-bit float image with NaN or infinite values", "unsupported_mode")
        low, high = float(arr.min()), float(arr.max())
        if low < 0 or high > _U16:
            raise BadImageError(f"{name}: 32-bit float image with values in [{low:g}, {high:g}]; expected "
                                "[0, 1], [0, 255] or [0, 65535] (negative or larger values have no grey level)",
                                "unsupported_mode")
        scale = 255.0 if high <= 1.0 else 1.0 if high <= 255 else 1 / 257
        out = np.floor(arr.astype(np.float32) * np.float32(scale) + np.float32(0.5))
        return Image.fromarray(np.clip(out, 0, 255).astype(np.uint8), mode="L")
    low, high = int(arr.min()), int(arr.max())
    if low < 0:
        raise BadImageError(f"{name}: {image.mode} image with negative values (min {low}); grey levels "
                            "are never negative", "unsupported_mode")
    if high <= _U16:  # 16-bit data (also 16-bit PNG/TIFF that older Pillow opens as I)
        out = (arr.astype(np.uint32) + 128) // 257
    else:  # full 32-bit range
        out = (arr.astype(np.float64) * (255 / _I32) + 0.5).astype(np.int64)
    return Image.fromarray(np.clip(out, 0, 255).astype(np.uint8), mode="L")


def normalize_image(image, name: str = "image"):
    """The decoded image upright (EXIF orientation applied) in an 8-bit mode of `DECODED_MODES`.

    16/32-bit grey → L (scaled), 1-bit → L, P → RGB (RGBA when it has transparency), PA → RGBA,
    CMYK/YCbCr/RGBX → RGB. Any other mode (LAB, HSV, ...) raises BadImageError("unsupported_mode").
    `image` must be loaded; it is not modified (a new image is returned when anything changes, with
    the EXIF orientation it applied in `.info["exif_orientation"]` and the file's own mode in
    `.info["stored_mode"]`).
    """
    from PIL import ImageOps

    try:
        orientation = int(image.getexif().get(0x0112, 1) or 1)
    except Exception:  # a broken EXIF block does not make a broken photo
        orientation = 1
    mode = image.mode
    if mode not in DECODED_MODES and mode not in _HIGH_DEPTH and mode not in _TO_8BIT and mode != "P":
        raise BadImageError(f"{name}: pixel mode {mode} is not supported (photos and masks are grey, "
                            "RGB, CMYK, palette or 16/32-bit grey, with or without alpha)", "unsupported_mode")
    out = ImageOps.exif_transpose(image) if orientation in range(2, 9) else image
    if mode in _HIGH_DEPTH:
        out = _high_depth_to_l(out, name)
    elif mode == "P":
        out = out.convert("RGBA" if "transparency" in image.info else "RGB")
    elif mode in _TO_8BIT:
        out = out.convert(_TO_8BIT[mode])
    if out is not image:
        out.info.update(exif_orientation=orientation, stored_mode=mode)
    return out


@contextmanager
def decoded_image(path: Path, *, max_pixels: int = 64_000_000) -> Iterator[Any]:
    """The fully decoded image, normalised (`normalize_image`: upright, 8-bit L/LA/RGB/RGBA), closed
    when the block ends (one image in memory at a time).

    Truncated files fail even if some library switched on PIL's LOAD_TRUNCATED_IMAGES; modes that
    cannot be decoded faithfully fail with reason `unsupported_mode`.
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
        try:
            normal = normalize_image(image, str(path))
        except BadImageError:
            raise
        except Exception as exc:  # a conversion PIL cannot do on this file's data
            raise BadImageError(f"{path}: cannot decode {image.mode} pixels ({exc})", "unsupported_mode") from None
        try:
            yield normal
        finally:
            if normal is not image:
                normal.close()


def open_image(path: Path, *, max_pixels: int = 64_000_000, mode: str | None = None):
    """Decode an image fully: the one decoder for photos and masks.

    Refuses decompression bombs before decoding; returns the image upright in an 8-bit mode
    (`DECODED_MODES`, or `mode` if given, e.g. "RGB" for a photo, "L" for a grey mask).
    Raises BadImageError naming the file and the reason (empty, not an image, truncated, too large,
    unsupported_mode).
    """
    with decoded_image(path, max_pixels=max_pixels) as image:
        return image.convert(mode) if mode else image.copy()


def resize_pair(image, mask, size: int, soft: bool = True):
    """Square network input, for the prepare stage's training pairs and the benchmark's selection
    arrays alike: LANCZOS for the photo, area average for the mask (its edge pixels keep their
    coverage when `soft`, else thresholded at 50 %)."""
    from PIL import Image

    photo = image.convert("RGB").resize((size, size), Image.Resampling.LANCZOS)
    target = mask.resize((size, size), Image.Resampling.BOX)
    if not soft:
        target = target.point(lambda v: 255 if v > 127 else 0)
    return photo, target


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



# ------------------------------------------------------------------------------------------------ masks
# One rule for what a mask is, shared by validate (training pairs) and monitoring (reviewers' corrections).
GREY_LOW, GREY_HIGH = 16, 240     # mask values in [16, 240) count as grey
COLOUR_SPREAD, COLOUR_SHARE = 12, 0.005  # RGB masks: >0.5% of pixels with channels >12 apart = colour


def mask_rule(mask) -> tuple[Any, str]:
    """(the mask's single 8-bit channel, "") or (None, why it is no mask).

    An alpha that varies is the mask (RGBA, LA; P/PA with transparency decode to RGBA). A constant
    alpha carries no outline: the picture itself is read instead (a mask painted on an opaque canvas).
    Grey content (L, 1-bit, 16-bit grey, grey RGB) is the mask; colour content is not a mask.
    """
    from PIL import ImageChops

    if mask.mode not in DECODED_MODES:
        mask = normalize_image(mask, "mask")
    canvas = ""
    if mask.mode in ("RGBA", "LA"):
        alpha = mask.getchannel("A")
        low, high = alpha.getextrema()
        if low != high:
            return alpha, ""
        canvas = f"{mask.mode} with a constant alpha ({low}), so no alpha outline, and "
        mask = mask.convert("RGB" if mask.mode == "RGBA" else "L")  # opaque canvas: read what is painted
    if mask.mode == "L":
        return mask, ""
    r, g, b = mask.split()
    spread = ImageChops.lighter(ImageChops.lighter(ImageChops.difference(r, g),
                                                   ImageChops.difference(g, b)),
                                ImageChops.difference(r, b))
    coloured = sum(spread.histogram()[COLOUR_SPREAD + 1:]) / (mask.width * mask.height)
    if coloured > COLOUR_SHARE:
        return None, (f"{canvas or 'no alpha outline, and '}a colour picture ({coloured:.1%} of pixels "
                      "are not grey): not a mask")
    return mask.convert("L"), ""


@dataclass(frozen=True)
class MaskMeasure:
    """What the mask rules judge: foreground (>= 128) pixels, all pixels, grey share, 0/1 label hint."""

    foreground: int
    pixels: int
    gray_share: float
    label_map: bool  # values 0/1 only: a label map, not a 0/255 mask

    @property
    def coverage(self) -> float:
        return self.foreground / self.pixels if self.pixels else 0.0


def measure_mask(channel) -> MaskMeasure:
    """Foreground, coverage and grey share of a mask channel (from its histogram, no pixel array)."""
    hist = channel.histogram()  # 256 counts
    n = channel.width * channel.height
    foreground = sum(hist[128:])
    return MaskMeasure(foreground, n, sum(hist[GREY_LOW:GREY_HIGH]) / max(1, n),
                       not foreground and hist[1] > 0 and sum(hist[2:]) == 0)


def mask_channel(mask):
    """The mask's single channel by `mask_rule`; BadImageError (mask_not_grayscale_or_alpha) if none."""
    channel, why = mask_rule(mask)
    if channel is None:
        raise BadImageError(f"mask: {why}", "mask_not_grayscale_or_alpha")
    return channel
