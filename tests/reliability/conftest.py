"""Shared by the reliability suite: a throw-away project root, the synthetic pair factory, photo bytes."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from tests.data.conftest import Synth


@pytest.fixture()
def project(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("BACKDROP_PROJECT_DIR", str(tmp_path))
    return tmp_path


@pytest.fixture(scope="module")
def synth() -> Synth:
    return Synth()


def rendered_photo_bytes(seed: int, index: int, fmt: str = "JPEG") -> bytes:
    """A small rendered product photo (96–160 px) encoded as `fmt`."""
    from backdrop.data.synth import render_item

    photo, _mask, _ = render_item(seed, index, min_side=96, max_side=160)
    buf = io.BytesIO()
    photo.save(buf, format=fmt)
    return buf.getvalue()
