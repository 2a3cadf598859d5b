"""Fixtures for the data-stage tests: a throw-away project dir, stage params, and vendor-drop builders.

Photos are real synthetic packshots (`render_item`) at 300-500 px, rendered once per session.
Every test runs in its own project dir ($BACKDROP_PROJECT_DIR), never in the repo's data/.
"""

from __future__ import annotations

import hashlib
import io
import struct
import zlib
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest
from PIL import Image

import backdrop
from backdrop.config import IngestParams, ValidateParams
from backdrop.data.synth import render_item

SUITE = Path(backdrop.__file__).parent / "expectations" / "pairs_suite.json"
SEED, SMALL = 7, {"min_side": 300, "max_side": 500}


@cache
def _render(index: int) -> tuple[Image.Image, Image.Image, str]:
    photo, mask, item = render_item(SEED, index, **SMALL)
    return photo, mask, item.stem


def jpeg_bytes(image: Image.Image, quality: int = 92) -> bytes:
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def bomb_png(width: int = 20000, height: int = 20000) -> bytes:
    """A PNG whose header claims width x height 8-bit grey pixels; its pixel data is a few rows only.

    Decoding it would need width*height bytes (or fail as truncated); a header-only check rejects it.
    """
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    rows = zlib.compress(b"\0" * (width + 1) * 4)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Synth:
    """Rendered packshots by index: PIL images and their encoded files (JPEG photo, PNG mask)."""

    def photo(self, index: int) -> Image.Image:
        return _render(index)[0]

    def mask(self, index: int) -> Image.Image:
        return _render(index)[1]

    def stem(self, index: int) -> str:
        return _render(index)[2]

    def photo_jpeg(self, index: int) -> bytes:
        return jpeg_bytes(self.photo(index))

    def mask_png(self, index: int) -> bytes:
        return png_bytes(self.mask(index))


@pytest.fixture(scope="session")
def synth() -> Synth:
    return Synth()


def write(root: Path, rel: str, data: bytes) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def write_tree_drop(root: Path, synth: Synth, indices) -> dict[str, str]:
    """images/<stem>.jpg + masks/<stem>.png, like a vendor drop; returns {stem: index} for lookups."""
    for i in indices:
        write(root, f"images/{synth.stem(i)}.jpg", synth.photo_jpeg(i))
        write(root, f"masks/{synth.stem(i)}.png", synth.mask_png(i))
    return {synth.stem(i): i for i in indices}


@dataclass(frozen=True)
class Stage:
    """Params for ingest/validate inside one project dir, built with the pydantic models."""

    root: Path
    ingest: IngestParams
    validate: ValidateParams

    @property
    def raw(self) -> Path:
        return self.root / "data" / "raw"

    @property
    def validated(self) -> Path:
        return self.root / "data" / "validated"

    @property
    def quarantine(self) -> Path:
        return self.root / "data" / "quarantine"


def make_stage(root: Path, **validate_overrides) -> Stage:
    ingest = IngestParams(drop_dir=Path("drop"), raw_dir=Path("data/raw"), vendor="acme-studio",
                          license="cc-by-4.0")
    validate = ValidateParams(suite=SUITE, out_dir=Path("data/validated"),
                              quarantine_dir=Path("data/quarantine"), **validate_overrides)
    return Stage(root, ingest, validate)


@pytest.fixture()
def project(tmp_path, monkeypatch) -> Path:
    """An empty project dir that every relative params path resolves against."""
    monkeypatch.setenv("BACKDROP_PROJECT_DIR", str(tmp_path))
    return tmp_path


@pytest.fixture()
def stage(project) -> Stage:
    return make_stage(project)


@pytest.fixture(scope="session")
def source() -> Path:
    """Fashion-MNIST's idx files (Debian dataset-fashion-mnist)."""
    from backdrop.data.fashion_mnist import find_source

    try:
        return find_source()
    except FileNotFoundError as exc:  # a broken install must fail loudly, not skip
        pytest.fail(f"{exc} (scripts/install.sh installs it)")
