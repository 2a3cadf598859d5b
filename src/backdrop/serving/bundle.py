"""The official U²-NetP graphs that ship inside the package (`backdrop/weights/`), and how they are made.

Why ship them: `official:u2netp` is the model a new user starts with, and without these files it
needs PyTorch to export the weights and about a minute to quantize them. The package carries the two
graphs the fast path runs (`onnx_fast` exports: disagreement output, split side heads), made here
from the pinned official weights (`backdrop.models.official`, sha256-checked):

* `u2netp-fp32.onnx` — dynamic size, fp32 (`serve.precision: fp32`, other input sizes);
* `u2netp-int8.onnx` — static 320 px, int8 by the rule of `backdrop.serving.quantize` (the default).

Run `python -m backdrop.serving.bundle` (needs `backdrop[train]`) when the export or quantization
code changes; `bundle.json` records the versions and hashes, and `tests/serving/test_bundle.py`
checks that the shipped graphs are still what this code makes (agreement of their masks).
U²-Net's weights are Apache-2.0 (Xuebin Qin et al., https://github.com/xuebinqin/U-2-Net).
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from backdrop.io import sha256_file
from backdrop.serving.specs import BUNDLE_DIR


def build(arch: str = "u2netp", dest: Path = BUNDLE_DIR) -> dict:
    """Export and quantize the official `arch` into `dest`; returns what bundle.json records."""
    from backdrop.models.official import OFFICIAL_SOURCES
    from backdrop.serving.onnx_fast import EXPORT_VERSION, OPSET, export_onnx
    from backdrop.serving.quantize import INT8_SIZE, QUANT_VERSION, quantize_int8
    from backdrop.serving.specs import official_cutout

    model = official_cutout(arch)
    dest.mkdir(parents=True, exist_ok=True)
    fp32 = export_onnx(model, 320)
    int8 = quantize_int8(export_onnx(model, INT8_SIZE, static=True), scale_to_max=True)
    shutil.copyfile(fp32, dest / f"{arch}-fp32.onnx")
    shutil.copyfile(int8, dest / f"{arch}-int8.onnx")
    record = {"arch": arch, "weights_sha256": OFFICIAL_SOURCES[arch].sha256, "export_version": EXPORT_VERSION,
              "opset": OPSET, "quant_version": QUANT_VERSION,
              "files": {f.name: sha256_file(f) for f in (dest / f"{arch}-fp32.onnx", dest / f"{arch}-int8.onnx")}}
    manifest = dest / "bundle.json"
    recorded = json.loads(manifest.read_text()) if manifest.is_file() else {}
    recorded[arch] = record
    manifest.write_text(json.dumps(recorded, indent=2) + "\n")
    return record


if __name__ == "__main__":
    print(json.dumps(build(*sys.argv[1:2]), indent=2))
