"""`backdrop.png`: the cut-outs' PNG writer gives the pixels back exactly, as one valid zlib stream
whether it deflates in one piece or several side by side."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from backdrop.png import MIN_PART_BYTES, encode_png


def _idat(png: bytes) -> bytes:
    """The concatenated IDAT payload of a PNG file (chunk CRCs checked)."""
    pos, data = 8, b""
    while pos < len(png):
        (length,) = struct.unpack(">I", png[pos:pos + 4])
        kind, body = png[pos + 4:pos + 8], png[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", png[pos + 8 + length:pos + 12 + length])
        assert crc == zlib.crc32(kind + body), kind
        if kind == b"IDAT":
            data += body
        pos += 12 + length
    return data


def _photo(mode: str, w: int, h: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    channels = {"L": 1, "RGB": 3, "RGBA": 4}[mode]
    arr = np.zeros((h, w, channels), np.uint8)
    arr[h // 4: 3 * h // 4, w // 5: 4 * w // 5] = rng.integers(0, 256, channels, dtype=np.uint8)  # a flat box
    arr[::7] = rng.integers(0, 256, arr[::7].shape, dtype=np.uint8)                                  # noisy rows
    return Image.fromarray(arr[..., 0] if mode == "L" else arr, mode)


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA"])
@pytest.mark.parametrize("parts", [1, 2, 3])
def test_pixels_come_back_exactly_in_one_valid_zlib_stream(mode, parts):
    w, h = 1100, 700  # 3.1 MB of RGBA rows: large enough for three pieces of at least MIN_PART_BYTES
    image = _photo(mode, w, h, seed=parts)
    png = encode_png(image, parts=parts)
    with Image.open(io.BytesIO(png)) as back:
        assert back.format == "PNG" and back.mode == mode and back.size == (w, h)
        assert np.array_equal(np.asarray(back), np.asarray(image))
    rows = zlib.decompress(_idat(png))  # checks the Adler-32 of the joined pieces, which PIL does not
    channels = {"L": 1, "RGB": 3, "RGBA": 4}[mode]
    assert len(rows) == h * (1 + w * channels)
    split = min(parts, len(rows) // MIN_PART_BYTES)
    if mode == "RGBA" and parts > 1:
        assert split > 1  # the pieces really were deflated separately


def test_size_is_what_pils_own_encoder_gives_at_the_same_level():
    image = _photo("RGBA", 900, 800)
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=1)
    ours = len(encode_png(image, parts=2))
    assert ours < 1.05 * len(buf.getvalue())


def test_an_unsupported_mode_is_refused_by_name():
    with pytest.raises(ValueError, match="mode CMYK"):
        encode_png(Image.new("CMYK", (4, 4)))
