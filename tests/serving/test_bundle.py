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


def test_first_encoder_pool_runs_in_fp32_not_as_a_slow_nchw_uint8_pool(tmp_path):
    """`quantize.unfuse_pools`: in the shipped int8 graph the pool after stage1 quantizes its output
    with a scale of its own, so onnxruntime does not fuse DQ → MaxPool → Q into its uint8 NCHW pool
    (18.6 of 192 ms a run); the optimised graph keeps that pool on fp32 input."""
    onnx = pytest.importorskip("onnx", reason="reading the graph needs backdrop[train]")
    import onnxruntime as ort

    from backdrop.serving.quantize import FP32_POOLS, POOL_SCALE_OFFSET

    _, int8_file = bundled("u2netp")
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED  # the QDQ fusions, no NCHWc
    so.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(int8_file), so, providers=["CPUExecutionProvider"])
    graph = onnx.load(str(tmp_path / "optimized.onnx")).graph
    producer = {out: node for node in graph.node for out in node.output}
    for name in FP32_POOLS:
        pool = next(n for n in graph.node if n.name == name)
        assert producer[pool.input[0]].op_type == "DequantizeLinear", name  # fp32 in, not a uint8 pool
    shipped = onnx.load(str(int8_file)).graph
    scales = {t.name: onnx.numpy_helper.to_array(t) for t in shipped.initializer}
    own = scales[f"{FP32_POOLS[0]}_own_scale"]
    pool_in = next(n for n in shipped.node if n.name == FP32_POOLS[0]).input[0]
    dq = next(n for n in shipped.node if pool_in in n.output)
    assert own == pytest.approx(scales[dq.input[1]] * POOL_SCALE_OFFSET, rel=1e-7)
