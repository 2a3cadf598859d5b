"""`backdrop remove`: cut out files and folders with the segmenter a model spec names.

A spec is `champion` (the registry alias), a `models:/...` URI, or a `model.pt` path from
`backdrop train`. Probabilities are computed at the model's size and upsampled to the photo's
original size, so outputs keep the input's resolution.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from backdrop.config import load_params
from backdrop.io import IMAGE_SUFFIXES, atomic_path, open_image
from backdrop.serving.torch_engine import NoModelError, load_segmenter

log = logging.getLogger(__name__)

FORMATS = ("rgba", "white", "mask")






def compose(photo, prob: np.ndarray, fmt: str = "rgba", options=None):
    """The publishable output: RGBA cut-out, product on white, or the mask (`serving.outputs`)."""
    from backdrop.serving.outputs import compose as compose_output

    return compose_output(photo, prob, fmt, options)








def collect_inputs(inputs: Iterable[Path]) -> list[Path]:
    """Files as given plus image files found (recursively) in given directories."""
    files: list[Path] = []
    for item in inputs:
        if item.is_dir():
            files.extend(sorted(p for p in item.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES))
        elif item.exists():
            files.append(item)
        else:
            raise FileNotFoundError(f"{item}: no such file or directory")
    return files


def _recorder(source: str):
    """The prediction log writer (monitoring), or None when `monitoring.record_predictions` is off."""
    params = load_params()
    if not params.monitoring.record_predictions:
        return None
    from backdrop.data.predlog import PredictionRecorder

    return PredictionRecorder(params, source)


def load_engine(model: str = "champion", engine: str = "auto", precision: str | None = None):
    """The segmenter `backdrop remove` uses: the ONNX fast path (`serving.onnx_fast`) by default,
    PyTorch eager when `engine` is `torch` or the fast path cannot be built (`auto`)."""
    if engine not in ("auto", "onnx", "torch"):
        raise ValueError(f"engine {engine!r} is not one of auto, onnx, torch")
    if engine != "torch":
        from backdrop.serving.onnx_fast import load_fast_segmenter

        try:
            return load_fast_segmenter(model, precision=precision or load_params().serve.precision)
        except NoModelError:
            raise
        except Exception as exc:
            if engine == "onnx":
                raise
            log.warning("ONNX fast path unavailable (%s: %s); using PyTorch", type(exc).__name__, exc)
    return load_segmenter(model)


def remove(inputs: Iterable[Path], out_dir: Path, model: str = "champion", fmt: str = "rgba",
           engine: str | None = None, precision: str | None = None) -> list[Path]:
    """Cut out every input photo into out_dir/<stem>.png (.jpg for `white`) at its original size.

    The ONNX fast path decodes the next photos while the model runs on the current ones; progress
    is a bar on a terminal and log lines elsewhere (`backdrop.progress`). Output options (white
    canvas aspect and margin, edge refinement) are the `serve:` ones. Each cut-out is also recorded
    in the prediction log (`backdrop.data.predlog`): image id and sha256, model version,
    cluster, confidence, the stored mask (= the published alpha).
    """
    from backdrop.progress import progress
    from backdrop.serving.outputs import OutputOptions, final_prob

    if fmt not in FORMATS:
        raise ValueError(f"format {fmt!r} is not one of {FORMATS}")
    files = collect_inputs(inputs)
    if not files:
        raise FileNotFoundError("no input images found")
    params = load_params()
    segmenter = load_engine(model, engine or params.remove.engine, precision)
    options = OutputOptions.from_params(params.serve)
    recorder = _recorder(segmenter.source)
    out_dir.mkdir(parents=True, exist_ok=True)
    ext, pil_format = (".jpg", "JPEG") if fmt == "white" else (".png", "PNG")
    if hasattr(segmenter, "stream"):
        from backdrop.serving.onnx_fast import available_cores

        results = segmenter.stream(files, open_image, params.remove.batch_size,
                                   params.remove.workers or available_cores())
        pairs = ((path, photo, pred.prob) for path, photo, pred in results)
    else:
        pairs = ((path, photo, segmenter.probabilities(photo)) for path in files for photo in [open_image(path)])
    written = []
    for path, photo, raw in progress(pairs, desc="remove", total=len(files), unit="img"):
        if isinstance(photo, Exception):
            raise photo
        prob = final_prob(photo, raw, options)
        result = compose(photo, prob, fmt, options)
        dest = out_dir / f"{path.stem}{ext}"
        with atomic_path(dest) as tmp:
            result.save(tmp, format=pil_format, **({"quality": 92} if pil_format == "JPEG" else {}))
        written.append(dest)
        if recorder is not None:
            recorder.record(path, photo, prob)
    log.info("remove: %d cut-out(s) in %s using %s", len(written), out_dir, segmenter.source)
    return written
