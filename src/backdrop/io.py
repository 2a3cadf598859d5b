"""Small file helpers shared by the stages: hashing, atomic writes, CSV manifests, safe image reads."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp"}


class BadImageError(ValueError):
    """A file that cannot serve as a photo or mask; the message names the file and the problem."""


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


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


def open_image(path: Path, *, max_pixels: int = 64_000_000, mode: str | None = None):
    """Decode an image fully, refusing decompression bombs before decoding.

    Raises BadImageError naming the file and the reason (empty, not an image, truncated, too large).
    """
    from PIL import Image, UnidentifiedImageError

    if not path.exists():
        raise BadImageError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise BadImageError(f"{path}: empty file (0 bytes)")
    try:
        with Image.open(path) as probe:
            width, height = probe.size
            if width * height > max_pixels:
                raise BadImageError(
                    f"{path}: {width}x{height} exceeds the {max_pixels} pixel limit (decompression bomb?)"
                )
            probe.load()
            image = probe.convert(mode) if mode else probe.copy()
    except BadImageError:
        raise
    except UnidentifiedImageError:
        raise BadImageError(f"{path}: not a readable image") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise BadImageError(f"{path}: corrupt or truncated image ({exc})") from None
    except Image.DecompressionBombError as exc:  # pragma: no cover - PIL's own guard
        raise BadImageError(f"{path}: {exc}") from None
    return image
