"""Static int8 (QDQ) quantization of the exported U²-Net, keeping the sensitive convolutions in fp32.

Naive static quantization of U²-NetP (every op, per-tensor, MinMax) breaks it: on held-out packshots
its masks agreed with fp32 at IoU 0.00 here (and ≈ 0.91 in the stack notes). Measured sensitivity,
one stage or conv quantized at a time (per-channel weights, uint8 activations, MinMax calibration on
32 rendered packshots, agreement = IoU of the 0.5-thresholded 320 px maps on 16 other packshots):

* `stage2d/rebnconv1d` alone drops agreement to 0.863 and `stage2d/rebnconv2d` to 0.989: their
  inputs are concatenations of an upsampled decoder map and an encoder map with very different
  ranges, and one activation scale cannot serve both.
* every other conv alone costs 0.0002–0.002 IoU, the side heads and `outconv` among the worst per MAC.

The MACs are concentrated: 12 convs at 160–320 px are 90 % of the 19.8 GMAC. So only those are
quantized (`INT8_CONVS`), everything else stays fp32 — most of the int8 speed-up at a fraction of
the error. Whether the result is good enough is measured, not assumed: `bench/inference_bench.py`
reports agreement with fp32 and IoU vs ground truth, and `serve.precision` selects int8 only when it
passed (agreement ≥ 0.995 and quality within 0.001 of the rembg-style baseline).

The quantized graph is static at 320×320 (batch dynamic), cached next to the fp32 export under a
key of the fp32 file, the node list and the calibration set.
"""

from __future__ import annotations

import hashlib
import logging
import os
import warnings
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

QUANT_VERSION = "1"
INT8_SIZE = 320
CALIBRATION_SEED = 777  # rendered packshots; bench (2024), tests and review calibration use other seeds
CALIBRATION_IMAGES = 32
# by MACs, largest first; stage2d/rebnconv1d and rebnconv2d, the first conv, side heads and outconv excluded
INT8_CONVS = (
    "/net/stage1d/rebnconvin/conv_s1/Conv",
    "/net/stage2d/rebnconvin/conv_s1/Conv",
    "/net/stage1d/rebnconv1d/conv_s1/Conv",
    "/net/stage1/rebnconv1d/conv_s1/Conv",
    "/net/stage2/rebnconvin/conv_s1/Conv",
    "/net/stage1d/rebnconv1/conv_s1/Conv",
    "/net/stage1/rebnconv1/conv_s1/Conv",
    "/net/stage3d/rebnconvin/conv_s1/Conv",
    "/net/stage2/rebnconv1d/conv_s1/Conv",
    "/net/stage3/rebnconvin/conv_s1/Conv",
    "/net/stage2d/rebnconv1/conv_s1/Conv",
    "/net/stage2/rebnconv1/conv_s1/Conv",
)


def calibration_inputs(n: int = CALIBRATION_IMAGES, seed: int = CALIBRATION_SEED,
                       scale_to_max: bool = True) -> list[np.ndarray]:
    """(1,3,320,320) model inputs of rendered product photos (600–1400 px, white/black backdrops included)."""
    from backdrop.data.synth import render_item
    from backdrop.serving.onnx_fast import to_input

    return [to_input([render_item(seed, i, min_side=600, max_side=1400)[0]], INT8_SIZE, scale_to_max)
            for i in range(n)]


def _file_hash(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def quantize_int8(fp32_static: Path, dest: Path | None = None, inputs: list[np.ndarray] | None = None,
                  nodes: tuple[str, ...] = INT8_CONVS, n_calibration: int = CALIBRATION_IMAGES,
                  scale_to_max: bool = True) -> Path:
    """QDQ int8 copy of a static-shape fp32 export (per-channel int8 weights, uint8 activations)."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    fp32_static = Path(fp32_static)
    key = hashlib.sha256(f"{QUANT_VERSION}|{_file_hash(fp32_static)}|{','.join(nodes)}|"
                         f"{n_calibration}|{scale_to_max}|{inputs is None}".encode()).hexdigest()[:16]
    dest = Path(dest) if dest else fp32_static.with_name(f"{fp32_static.stem}-int8-{key}.onnx")
    if dest.is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    data = inputs if inputs is not None else calibration_inputs(n_calibration, scale_to_max=scale_to_max)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(data)

        def get_next(self):
            x = next(self.it, None)
            return None if x is None else {"image": x}

    pre = dest.with_name(f".{dest.stem}.{os.getpid()}.pre.onnx")
    tmp = dest.with_name(f".{dest.stem}.{os.getpid()}.partial.onnx")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quant_pre_process(str(fp32_static), str(pre))
            present = {n.name for n in onnx.load(str(pre)).graph.node}
            missing = [n for n in nodes if n not in present]
            if missing:
                raise ValueError(f"{fp32_static}: nodes to quantize not in the graph: {missing[:3]}")
            quantize_static(str(pre), str(tmp), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            op_types_to_quantize=["Conv"], nodes_to_quantize=list(nodes),
                            calibrate_method=CalibrationMethod.MinMax)
        os.replace(tmp, dest)
    finally:
        pre.unlink(missing_ok=True)
        tmp.unlink(missing_ok=True)
    log.info("quantized %s → %s (%d int8 convs, %d calibration photos)", fp32_static, dest, len(nodes), len(data))
    return dest
