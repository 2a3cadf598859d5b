"""`backdrop remove`: cut out files and folders with the segmenter a model spec names.

A spec is `champion` (the registry alias), a `models:/...` URI, a `model.pt` path from
`backdrop train`, `official:u2netp` or an `.onnx` file (`backdrop.serving.specs`); the segmenter comes
from the one factory, `backdrop.serving.segmenter.load_segmenter`. Probabilities are computed at the model's size and upsampled to the photo's
original size, so outputs keep the input's resolution.

Every input ends as exactly one written output or exactly one reported failure (`RemoveResult`):
a bad photo (empty, truncated, not an image) is reported and the others are still cut out. Output
names are unique within a run (`backdrop.serving.names.plan_outputs`): sub-folders of a directory
argument are mirrored (`DIR/a/x.jpg` → `OUT/a/x.png`) and photos sharing a stem keep their extension
(`shirt.jpg.png`, `shirt.png.png`). Inside a directory argument symbolic links (to files or folders)
are not followed: each is reported as a failure (`symlink`); files named explicitly are used as given.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePath

from backdrop.config import Params
from backdrop.io import IMAGE_SUFFIXES, atomic_path, open_image
from backdrop.serving.names import display, plan_outputs
from backdrop.serving.outputs import FORMATS, compose, encode

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Input:
    """One photo to cut out: its path and its output path relative to the output folder's root."""

    path: Path
    rel: PurePath


@dataclass(frozen=True)
class Failure:
    path: Path
    reason: str   # empty_file | corrupt_file | not_an_image | too_large | missing_file | symlink | error
    message: str

    def line(self) -> str:
        return f"{display(self.path)}: {self.reason}: {display(self.message)}"


@dataclass
class RemoveResult:
    """What `remove` did: one entry per input, in `written` (output paths) or in `failed`."""

    written: list[Path] = field(default_factory=list)
    failed: list[Failure] = field(default_factory=list)
    sources: list[Path] = field(default_factory=list)  # the input of each written output, same order

    @property
    def ok(self) -> bool:
        return not self.failed

    def __len__(self) -> int:  # `len(result)` = outputs written, as the old list return value
        return len(self.written)


def _walk(root: Path, failed: list[Failure]) -> list[Input]:
    """Image files under `root`, sorted, without following symbolic links (each one is reported)."""
    found: list[Input] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        here = Path(dirpath)
        dirnames.sort()
        for d in list(dirnames):
            if (here / d).is_symlink():
                dirnames.remove(d)
                failed.append(Failure(here / d, "symlink", "symbolic link to a folder, not followed"))
        for name in sorted(filenames):
            path = here / name
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            if path.is_symlink():
                failed.append(Failure(path, "symlink", "symbolic link, not followed"))
                continue
            found.append(Input(path, path.relative_to(root)))
    return found


def collect(inputs: Iterable[Path]) -> tuple[list[Input], list[Failure]]:
    """Inputs to process (files as given, image files found in directories) and the ones refused."""
    files: list[Input] = []
    failed: list[Failure] = []
    for item in inputs:
        item = Path(item)
        if item.is_dir():
            files.extend(_walk(item, failed))
        elif item.exists():
            files.append(Input(item, PurePath(item.name)))
        else:
            failed.append(Failure(item, "missing_file", "no such file or directory"))
    return files, failed


def collect_inputs(inputs: Iterable[Path]) -> list[Path]:
    """Files as given plus image files found (recursively, symlinks not followed) in given directories."""
    files, failed = collect(inputs)
    missing = [f for f in failed if f.reason == "missing_file"]
    if missing:
        raise FileNotFoundError(f"{display(missing[0].path)}: no such file or directory")
    return [f.path for f in files]


def _recorder(params: Params, source: str):
    """The prediction log writer (monitoring), or None when `monitoring.record_predictions` is off."""
    if not params.monitoring.record_predictions:
        return None
    from backdrop.data.predlog import PredictionRecorder

    return PredictionRecorder(params, source)


def _reason(exc: BaseException) -> str:
    return getattr(exc, "reason", None) or "error"


def remove(inputs: Iterable[Path], out_dir: Path, *, params: Params, model: str = "champion", fmt: str = "rgba",
           engine: str | None = None, precision: str | None = None, segmenter=None,
           clean_edges: bool | None = None, quiet: bool = False) -> RemoveResult:
    """Cut out every input photo into out_dir (see the module doc for names) at its original size.

    Returns a `RemoveResult`: the outputs written and one `Failure` per input that could not be cut
    out (the others are processed regardless). Raises only when nothing at all was given
    (`FileNotFoundError`), for a bad `fmt` (`ValueError`) or when the model cannot be loaded.

    The ONNX fast path decodes the next photos while the model runs on the current ones; progress
    is a bar on a terminal and log lines elsewhere (`backdrop.progress`). Output options (white
    canvas aspect and margin, edge refinement) are the `serve:` ones. Each cut-out is also recorded
    in the prediction log (`backdrop.data.predlog`): image id and sha256, model version,
    cluster, confidence, the stored mask (= the published alpha). `engine` defaults to
    `remove.engine`, `precision` to `serve.precision` (`backdrop.serving.segmenter`). A `segmenter`
    already loaded (`backdrop.serving.cutout.load`) is used instead of `model`. `clean_edges`
    (default `serve.clean_edges`) lets the backdrop-coloured fringe go and decontaminates the edge
    band's colours (`outputs.tighten_alpha`, `outputs.decontaminate`); `quiet` turns the progress off.
    """
    from backdrop.progress import progress
    from backdrop.serving.base import lane_count
    from backdrop.serving.outputs import OutputOptions, finish
    from backdrop.serving.segmenter import load_segmenter

    if fmt not in FORMATS:
        raise ValueError(f"format {fmt!r} is not one of {FORMATS}")
    files, refused = collect(inputs)
    result = RemoveResult(failed=list(refused))
    if not files:
        if not refused:
            raise FileNotFoundError("no input images found")
        _log_failures(result)
        return result
    ext = ".jpg" if fmt == "white" else ".png"
    dests = [out_dir / rel for rel in plan_outputs((f.rel for f in files), ext)]
    if segmenter is None:
        segmenter = load_segmenter(model, engine or params.remove.engine, precision, params=params)
    options = OutputOptions.from_params(params.serve)
    if clean_edges is not None:
        options = replace(options, clean_edges=clean_edges)
    recorder = _recorder(params, segmenter.source)
    out_dir.mkdir(parents=True, exist_ok=True)
    results = segmenter.stream(range(len(files)), lambda i: open_image(files[i].path), params.remove.batch_size,
                               lane_count(params))
    done: set[int] = set()  # indices into files (the same file given twice is two inputs)
    try:
        for i, photo, pred in progress(results, desc="remove", total=len(files), unit="img", enabled=not quiet):
            done.add(i)
            path = files[i].path
            if isinstance(photo, BaseException) or pred is None:
                exc = photo if isinstance(photo, BaseException) else RuntimeError("no prediction")
                result.failed.append(Failure(path, _reason(exc), str(exc)))
                continue
            dest = dests[i]
            try:
                prob, shown = finish(photo, pred.prob, fmt, options)
                image = compose(shown, prob, fmt, options)
                dest.parent.mkdir(parents=True, exist_ok=True)
                data, _media = encode(image, fmt)
                with atomic_path(dest) as tmp:
                    Path(tmp).write_bytes(data)
            except Exception as exc:  # noqa: BLE001 — one photo's failure is reported, the run goes on
                result.failed.append(Failure(path, _reason(exc), f"{type(exc).__name__}: {exc}"))
                continue
            result.written.append(dest)
            result.sources.append(path)
            if recorder is not None:
                try:
                    recorder.record(path, photo, prob)
                except Exception:  # the cut-out is written; the log is monitoring's, not the user's output
                    log.exception("%s: prediction log write failed", display(path))
    except Exception as exc:  # the engine itself broke: every photo not handed back yet failed
        log.exception("remove: the model run stopped")
        for i, f in enumerate(files):
            if i not in done:
                result.failed.append(Failure(f.path, "model_error", f"{type(exc).__name__}: {exc}"))
    _log_failures(result)
    log.info("remove: %d cut-out(s) in %s using %s, %d failed", len(result.written), out_dir,
             segmenter.source, len(result.failed))
    return result


def _log_failures(result: RemoveResult) -> None:
    for failure in result.failed:
        log.warning("remove: %s", failure.line())
