"""A PNG writer for cut-outs: the same files as PIL's at `compress_level=1`, in half the time.

PIL's PNG encoder spent ~29 ms on a 1 Mpx RGBA cut-out here, about a tenth of the whole cut-out;
the rows with filter type 0 (None, what PIL picks at level 1 too) and one `zlib.compress` at level 1
take ~15 ms for a file within 0.3 % of PIL's size. With `parts > 1` the rows are deflated in that many
pieces side by side (zlib releases the GIL) and joined into one stream the way pigz does: every piece
but the last ends on a sync flush (a byte-aligned, non-final block), so the pieces concatenate into
one valid deflate stream; the zlib trailer is the Adler-32 of all rows. One photo through the Python
API then uses both cores for its encode as well as for its model run.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

SIGNATURE = b"\x89PNG\r\n\x1a\n"
COLOUR_TYPES = {"L": (0, 1), "RGB": (2, 3), "RGBA": (6, 4)}  # PIL mode → (PNG colour type, channels)
# zlib level of PNG outputs: 1 encoded a 1 Mpx RGBA cut-out in ~83 ms CPU vs ~320 ms at PIL's default 6,
# for files ~17 % larger (bench photos: 1133 vs 969 kB)
LEVEL = 1
MIN_PART_BYTES = 1 << 20  # below this a split costs more in thread hand-offs than it saves


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _deflate(raw: memoryview, last: bool, level: int) -> bytes:
    comp = zlib.compressobj(level, zlib.DEFLATED, -15)  # raw deflate: the pieces share one zlib wrapper
    return comp.compress(raw) + comp.flush(zlib.Z_FINISH if last else zlib.Z_SYNC_FLUSH)


def _zlib_stream(raw: memoryview, parts: int, level: int) -> bytes:
    parts = max(1, min(parts, len(raw) // MIN_PART_BYTES))
    if parts == 1:
        return zlib.compress(raw, level)
    from concurrent.futures import ThreadPoolExecutor

    step = -(-len(raw) // parts)
    pieces = [raw[i:i + step] for i in range(0, len(raw), step)]
    with ThreadPoolExecutor(len(pieces) - 1, thread_name_prefix="backdrop-png") as pool:
        futures = [pool.submit(_deflate, piece, False, level) for piece in pieces[:-1]]
        tail = _deflate(pieces[-1], True, level)  # this thread takes the last piece
        body = b"".join(f.result() for f in futures) + tail
    header = b"\x78\x01"  # deflate, 32 KiB window, fastest-level hint; (0x7801 % 31 == 0)
    return header + body + struct.pack(">I", zlib.adler32(raw))


def encode_png(image, parts: int = 1, level: int = LEVEL) -> bytes:
    """PNG bytes of an L, RGB or RGBA PIL image (8 bits per channel, no metadata)."""
    if image.mode not in COLOUR_TYPES:
        raise ValueError(f"encode_png: mode {image.mode} is not one of {', '.join(COLOUR_TYPES)}")
    colour_type, channels = COLOUR_TYPES[image.mode]
    width, height = image.size
    rows = np.empty((height, width * channels + 1), np.uint8)  # (H, 1 + W·C): filter byte 0, then the row
    rows[:, 0] = 0
    rows[:, 1:] = np.asarray(image).reshape(height, width * channels)
    header = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)
    idat = _zlib_stream(memoryview(rows).cast("B"), parts, level)
    return SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")
