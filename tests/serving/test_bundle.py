"""The official U²-NetP graphs shipped in the package (`backdrop/weights/`, `serving.bundle`) are what
this code makes: the fp32 graph computes the official weights' function, the int8 graph agrees with it,
and bundle.json names their hashes (issue 23)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from backdrop.io import sha256_file
from backdrop.serving.specs import BUNDLE_DIR, bundled


def _photos(n: int):
    from backdrop.data.synth import render_item

    return [render_item(31337, i, min_side=400, max_side=700)[0] for i in range(n)]


def test_bundle_is_shipped_and_recorded():
    files = bundled("u2netp")
    assert files is not None
    record = json.loads((BUNDLE_DIR / "bundle.json").read_text())["u2netp"]
    assert {f.name: sha256_file(f) for f in files} == record["files"]
    from backdrop.serving.onnx_fast import EXPORT_VERSION
    from backdrop.serving.quantize import QUANT_VERSION

    assert (record["export_version"], record["quant_version"]) == (EXPORT_VERSION, QUANT_VERSION), \
        "export or quantization changed: rebuild with `python -m backdrop.serving.bundle`"


@pytest.mark.slow  # loads the official weights in PyTorch and runs three engines
def test_bundled_graphs_match_the_official_weights():
    torch = pytest.importorskip("torch", reason="the comparison needs backdrop[train]")
    from backdrop.serving.onnx_fast import _from_onnx
    from backdrop.serving.preprocess import to_input
    from backdrop.serving.specs import official_cutout

    fp32_file, int8_file = bundled("u2netp")
    fp32 = _from_onnx(fp32_file, scale_to_max=True)
    int8 = _from_onnx(int8_file, scale_to_max=True, precision="int8")
    model = official_cutout("u2netp")
    photos = _photos(4)
    x = to_input(photos, 320, scale_to_max=True)
    with torch.inference_mode():
        reference = model(torch.from_numpy(x)).numpy()[:, 0]
    ours, _ = fp32.run(x)
    assert np.abs(ours - reference).max() < 2e-3  # the same function as the PyTorch model
    quantized, _ = int8.run(x)
    for a, b in zip(ours > 0.5, quantized > 0.5, strict=True):
        assert (a & b).sum() / (a | b).sum() > 0.98  # int8 agrees with fp32 (quantize.py's bar, per photo)
