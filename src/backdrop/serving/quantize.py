"""Static int8 (QDQ) quantization of the exported U²-Net, keeping the sensitive convolutions in fp32.

Naive static quantization of U²-NetP (every op, per-tensor, MinMax) breaks it: on held-out packshots
its masks agreed with fp32 at IoU 0.00 here (and ≈ 0.91 in the stack notes). Measured sensitivity,
one stage or conv quantized at a time (per-channel weights, uint8 activations, MinMax calibration on
32 rendered packshots, agreement = IoU of the 0.5-thresholded 320 px maps on 16 other packshots):

* `stage2d/rebnconv1d` alone drops agreement to 0.863 and `stage2d/rebnconv2d` to 0.989: their
  inputs are concatenations of an upsampled decoder map and an encoder map with very different
  ranges, and one activation scale cannot serve both.
* every other conv alone costs 0.0002–0.002 IoU, the side heads and `outconv` among the worst per MAC.

A mixed graph pays for every switch between precisions: with only the 12 heaviest convs int8 (90 % of
the 19.8 GMAC), a third of the run went to Transpose/Reorder/Quantize/Dequantize nodes at the island
borders. So the int8 region is made as large and connected as quality allows: every Conv, Relu,
MaxPool, Add, Concat and Resize inside the RSU stages and the encoder pools runs in uint8 (NHWC
QLinear kernels, VNNI where the CPU has it), and fp32 is kept only where it was measured to matter
(`fp32_nodes`): the first conv (raw photo), stage2d's two concat-fed convs and its concats/resizes,
and everything outside the stages (the decoder's cross-stage upsample + concat, the 6 side heads,
the fusion conv, sigmoid and the disagreement score). Official U²-NetP at 320 on 2 cores (loaded
machine, same process): fp32 243 ms/run, 12-conv int8 163 ms, this rule 124 ms; agreement with fp32
on 12 held-out packshots 0.9987 mean (min 0.9945) vs 0.9984 (min 0.9921) for the 12-conv graph.
Quantizing stage2d's concats too, or every op outside the stages, collapses agreement to ≈ 0.44.
One int8 node is slower than its fp32 twin: the first encoder pool (`FP32_POOLS`, `unfuse_pools`).
Whether the result is good enough is measured, not assumed: `bench/inference_bench.py` reports
agreement with fp32 and IoU vs ground truth (quiet machine: 0.9987 mean agreement, IoU 0.00066 below
the rembg-style baseline, 2.26–2.40× its images/s with `remove.workers` lanes), and `serve.precision`
selects int8 because it passed (agreement ≥ 0.995 and quality within 0.001 of the baseline).

The quantized graph is static at 320×320 (batch dynamic), cached next to the fp32 export under a
key of the fp32 file, the quantized op types and the calibration set.
"""

from __future__ import annotations

import hashlib
import logging
import os
import warnings
from pathlib import Path

import numpy as np

from backdrop.io import sha256_file

log = logging.getLogger(__name__)

QUANT_VERSION = "3"
INT8_SIZE = 320
CALIBRATION_SEED = 777  # rendered packshots; bench (2024), tests and review calibration use other seeds
CALIBRATION_IMAGES = 32
INT8_OP_TYPES = ("Conv", "Relu", "MaxPool", "Add", "Concat", "Resize")
FIRST_CONV = "/net/stage1/rebnconvin/conv_s1/Conv"
SENSITIVE_STAGE = "/net/stage2d/"
SENSITIVE_CONVS = ("/net/stage2d/rebnconv1d/conv_s1/Conv", "/net/stage2d/rebnconv2d/conv_s1/Conv")
# the pool from stage1 to stage2: its input (stage1's residual Add) also feeds the fp32 decoder, so
# onnxruntime keeps it in NCHW, where its uint8 MaxPool kernel took 18.6 of 192 ms a run (fp32: 1.4)
FP32_POOLS = ("/net/downsample/MaxPool",)
POOL_SCALE_OFFSET = 1 + 2 ** -12


def unfuse_pools(model, names=FP32_POOLS) -> int:
    """Give the QuantizeLinear after each named MaxPool its own scale, 2⁻¹² larger than its input's:
    onnxruntime fuses DequantizeLinear → MaxPool → QuantizeLinear into a uint8 MaxPool only when
    both scales are equal, so the pool runs in fp32 (its fast NCHWc kernel). Returns how many."""
    from onnx import numpy_helper

    init = {t.name: t for t in model.graph.initializer}
    consumers: dict[str, list] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    done = 0
    for pool in (n for n in model.graph.node if n.op_type == "MaxPool" and n.name in names):
        for q in consumers.get(pool.output[0], []):
            if q.op_type != "QuantizeLinear":
                continue
            scale = numpy_helper.to_array(init[q.input[1]])
            own = numpy_helper.from_array((scale * np.float32(POOL_SCALE_OFFSET)).astype(np.float32),
                                          f"{pool.name}_own_scale")
            model.graph.initializer.append(own)
            q.input[1] = own.name
            for dq in consumers.get(q.output[0], []):
                if dq.op_type == "DequantizeLinear":
                    dq.input[1] = own.name
            done += 1
    return done


def fp32_nodes(graph) -> list[str]:
    """Names of the nodes that stay fp32 (see the module doc): outside the RSU stages and encoder
    pools, the first conv, stage2d's concat-fed convs and its concats/resizes."""
    keep = []
    for node in graph.node:
        inside = node.name.startswith("/net/stage") or node.name.startswith("/net/downsample")
        if (not inside or node.name == FIRST_CONV or node.name in SENSITIVE_CONVS
                or (node.name.startswith(SENSITIVE_STAGE) and node.op_type in ("Concat", "Resize"))):
            keep.append(node.name)
    return keep


def calibration_inputs(n: int = CALIBRATION_IMAGES, seed: int = CALIBRATION_SEED,
                       scale_to_max: bool = True) -> list[np.ndarray]:
    """(1,3,320,320) model inputs of rendered product photos (600–1400 px, white/black backdrops included)."""
    from backdrop.data.synth import render_item
    from backdrop.serving.preprocess import to_input

    return [to_input([render_item(seed, i, min_side=600, max_side=1400)[0]], INT8_SIZE, scale_to_max)
            for i in range(n)]


def quantize_int8(fp32_static: Path, dest: Path | None = None, inputs: list[np.ndarray] | None = None,
                  n_calibration: int = CALIBRATION_IMAGES, scale_to_max: bool = True) -> Path:
    """QDQ int8 copy of a static-shape fp32 export (per-channel int8 weights, uint8 activations),
    fp32 where `fp32_nodes` says."""
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
    key = hashlib.sha256(f"{QUANT_VERSION}|{sha256_file(fp32_static)}|{','.join(INT8_OP_TYPES)}|"
                         f"{n_calibration}|{scale_to_max}|{inputs is None}".encode()).hexdigest()[:16]
    dest = Path(dest) if dest else fp32_static.with_name(f"{fp32_static.stem}-int8-{key}.onnx")
    if dest.is_file():
        return dest
    log.info("preparing the int8 model, about a minute, first run only (cached as %s)", dest)
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
            graph = onnx.load(str(pre)).graph
            present = {n.name for n in graph.node}
            missing = [n for n in (FIRST_CONV, *SENSITIVE_CONVS) if n not in present]
            if missing:  # a graph not exported by `onnx_fast.export_onnx`: the rule would not apply
                raise ValueError(f"{fp32_static}: not a backdrop U²-Net export (no node {missing[0]})")
            keep = fp32_nodes(graph)
            quantize_static(str(pre), str(tmp), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            op_types_to_quantize=list(INT8_OP_TYPES), nodes_to_exclude=keep,
                            calibrate_method=CalibrationMethod.MinMax)
            quantized = onnx.load(str(tmp))
            if unfuse_pools(quantized):
                onnx.save(quantized, str(tmp))
        os.replace(tmp, dest)
    finally:
        pre.unlink(missing_ok=True)
        tmp.unlink(missing_ok=True)
    log.info("quantized %s → %s (%d of %d nodes kept fp32, %d calibration photos)", fp32_static, dest,
             len(keep), len(present), len(data))
    return dest
