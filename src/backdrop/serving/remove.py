"""`backdrop remove`: cut out files and folders with the segmenter a model spec names.

A spec is `champion` (the registry alias), a `models:/...` URI, a `model.pt` path from
`backdrop train`, `official:u2netp` or an `.onnx` file (`backdrop.serving.specs`); the segmenter comes
from the one factory, `backdrop.serving.segmenter.load_segmenter`. Probabilities are computed at the model's size and upsampled to the photo's
original size, so outputs keep the input's resolution.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

from backdrop.config import Params
from backdrop.io import IMAGE_SUFFIXES, atomic_path, open_image
from backdrop.serving.outputs import FORMATS, compose

log = logging.getLogger(__name__)

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


def _recorder(params: Params, source: str):
    """The prediction log writer (monitoring), or None when `monitoring.record_predictions` is off."""
    if not params.monitoring.record_predictions:
        return None
    from backdrop.data.predlog import PredictionRecorder

    return PredictionRecorder(params, source)


def remove(inputs: Iterable[Path], out_dir: Path, *, params: Params, model: str = "champion", fmt: str = "rgba",
           engine: str | None = None, precision: str | None = None) -> list[Path]:
    """Cut out every input photo into out_dir/<stem>.png (.jpg for `white`) at its original size.

    The ONNX fast path decodes the next photos while the model runs on the current ones; progress
    is a bar on a terminal and log lines elsewhere (`backdrop.progress`). Output options (white
    canvas aspect and margin, edge refinement) are the `serve:` ones. Each cut-out is also recorded
    in the prediction log (`backdrop.data.predlog`): image id and sha256, model version,
    cluster, confidence, the stored mask (= the published alpha). `engine` defaults to
    `remove.engine`, `precision` to `serve.precision` (`backdrop.serving.segmenter`).
    """
    from backdrop.progress import progress
    from backdrop.serving.base import available_cores
    from backdrop.serving.outputs import OutputOptions, final_prob
    from backdrop.serving.segmenter import load_segmenter

    if fmt not in FORMATS:
        raise ValueError(f"format {fmt!r} is not one of {FORMATS}")
    files = collect_inputs(inputs)
    if not files:
        raise FileNotFoundError("no input images found")
    segmenter = load_segmenter(model, engine or params.remove.engine, precision, params=params)
    options = OutputOptions.from_params(params.serve)
    recorder = _recorder(params, segmenter.source)
    out_dir.mkdir(parents=True, exist_ok=True)
    ext, pil_format = (".jpg", "JPEG") if fmt == "white" else (".png", "PNG")
    results = segmenter.stream(files, open_image, params.remove.batch_size,
                               params.remove.workers or available_cores())
    written = []
    for path, photo, pred in progress(results, desc="remove", total=len(files), unit="img"):
        if isinstance(photo, Exception):
            raise photo
        prob = final_prob(photo, pred.prob, options)
        result = compose(photo, prob, fmt, options)
        dest = out_dir / f"{path.stem}{ext}"
        with atomic_path(dest) as tmp:
            result.save(tmp, format=pil_format, **({"quality": 92} if pil_format == "JPEG" else {}))
        written.append(dest)
        if recorder is not None:
            recorder.record(path, photo, prob)
    log.info("remove: %d cut-out(s) in %s using %s", len(written), out_dir, segmenter.source)
    return written
