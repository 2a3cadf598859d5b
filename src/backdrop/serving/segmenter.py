"""The one way to load a model for serving: `load_segmenter(spec, engine, precision, params=...)`.

    spec ──specs.resolve──▶ ModelSource ──engine──▶ Segmenter (protocol in `serving.base`)

* `onnx`  — `onnx_fast.FastSegmenter`: the model exported to ONNX (cached on disk by its weights),
  run by a tuned onnxruntime session, fp32 or int8 (`precision`, default `serve.precision`).
* `torch` — `torch_engine.TorchSegmenter`: PyTorch eager, one photo per run.
* `auto`  — ONNX; when the fast path cannot be built, PyTorch with a warning. A spec that names no
  model (`NoModelError`) is an error for every engine.

Every caller (`backdrop remove`, the API, the upload watcher, alias reloads, stages, benches) loads
through here; models from a file or the registry load once per (spec, params) and process.
"""

from __future__ import annotations

import logging

from backdrop.config import Params
from backdrop.serving.base import Prediction, Segmenter
from backdrop.serving.specs import NoModelError, resolve

log = logging.getLogger(__name__)

ENGINES = ("auto", "onnx", "torch")

__all__ = ["ENGINES", "NoModelError", "Prediction", "Segmenter", "load_segmenter"]


def load_segmenter(spec: str, engine: str = "auto", precision: str | None = None, *, params: Params,
                   threads: int | None = None, size: int | None = None) -> Segmenter:
    """A segmenter for a model spec (`backdrop.serving.specs`).

    `engine`: auto | onnx | torch (see the module doc). `precision`: fp32 | int8 for the ONNX engine
    (default `params.serve.precision`). `threads`: onnxruntime intra-op threads (default: the cores
    this process may use). `size`: overrides the model's input size (a multiple of 32).
    """
    if engine not in ENGINES:
        raise ValueError(f"engine {engine!r} is not one of auto, onnx, torch")
    if size is not None and (size < 32 or size % 32):
        raise ValueError(f"size {size}: must be a multiple of 32 (U²-Net pools 5 times)")
    if engine != "torch":
        from backdrop.serving.onnx_fast import from_source as onnx_segmenter

        try:
            return onnx_segmenter(resolve(spec, params, "onnx"), threads, size, precision or params.serve.precision)
        except NoModelError:
            raise
        except Exception as exc:
            if engine == "onnx":
                raise
            log.warning("ONNX fast path unavailable (%s: %s); using PyTorch", type(exc).__name__, exc)
    from backdrop.serving.torch_engine import from_source as torch_segmenter

    return torch_segmenter(resolve(spec, params, "torch"), size)
