"""Cut-outs with a trained model: one segmenter per model spec, behind a cached factory.

A spec is `champion` (the registry alias), a `models:/...` URI, or a `model.pt` path from
`backdrop train`. Probabilities are computed at the model's size and upsampled to the photo's
original size, so outputs keep the input's resolution.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from backdrop.config import load_params
from backdrop.io import IMAGE_SUFFIXES, atomic_path, open_image

log = logging.getLogger(__name__)

FORMATS = ("rgba", "white", "mask")


class NoModelError(RuntimeError):
    """No model could be found for the requested spec."""


@dataclass
class Segmenter:
    model: object  # CutoutModel: float32 (N,3,S,S) in [0,1] → (N,1,S,S) probabilities
    size: int
    source: str
    zoom_margin: float = 0.0    # > 0: a second pass on the product's box (`backdrop.zoom`); 0 = one pass
    zoom_max_area: float = 0.6  # ...when the box covers at most this share of the frame
    zoom_blend: float = 0.0     # weight of the whole-photo pass inside the box (`serve.zoom_blend`)
    flip_tta: bool = False      # each pass also runs on the mirrored input; the two maps are averaged

    def probabilities(self, photo) -> np.ndarray:
        """float32 (H,W) foreground probability at the photo's original size."""
        rgb = photo.convert("RGB")
        prob = self.single_pass(rgb)
        if self.zoom_margin > 0:
            from backdrop.zoom import refine

            prob, _ = refine(rgb, prob, self.single_pass, self.zoom_margin, self.zoom_max_area, self.zoom_blend)
        return prob

    def single_pass(self, rgb) -> np.ndarray:
        """The whole photo squeezed to size² → (H,W) probabilities upsampled to its size."""
        import torch
        from PIL import Image

        small = np.array(rgb.resize((self.size, self.size), Image.Resampling.LANCZOS))  # writable for torch
        x = torch.from_numpy(small).permute(2, 0, 1)[None].float().div_(255.0)  # (1,3,S,S)
        with torch.inference_mode():
            if self.flip_tta:  # (2,3,S,S): the photo and its mirror image, mirrored back before averaging
                out = self.model(torch.cat([x, x.flip(-1)]))
                prob = (0.5 * (out[0, 0] + out[1, 0].flip(-1))).numpy()  # (S,S)
            else:
                prob = self.model(x)[0, 0].numpy()  # (S,S)
        full = Image.fromarray(prob.astype(np.float32), mode="F").resize(rgb.size, Image.Resampling.BILINEAR)
        return np.clip(np.asarray(full), 0.0, 1.0)


def compose(photo, prob: np.ndarray, fmt: str = "rgba", options=None):
    """The publishable output: RGBA cut-out, product on white, or the mask (`serving.outputs`)."""
    from backdrop.serving.outputs import compose as compose_output

    return compose_output(photo, prob, fmt, options)


def zoom_settings(params, trained_on_crops: bool) -> dict:
    """Segmenter pass fields (zoom and `serve.tta`): the training crops' margin (`prepare.crop_margin`) when `serve.zoom` is
    `always`, or `auto` and the model learnt from object crops; else 0 (one pass). A model that never
    saw crops gains nothing from the second run (official U²-NetP: IoU 0.9678 vs 0.9682 one pass on
    the inference bench) and pays for it."""
    zoom = params.serve.zoom == "always" or (params.serve.zoom == "auto" and trained_on_crops)
    return {"zoom_margin": params.prepare.crop_margin if zoom else 0.0,
            "zoom_max_area": params.serve.zoom_max_area, "zoom_blend": params.serve.zoom_blend,
            "flip_tta": params.serve.tta == "hflip"}


def _registry_crop_share(uri: str) -> float:
    """train.crop_share of the run that logged a registered model (0 when unknown)."""
    from mlflow import MlflowClient

    name, _, ref = uri.removeprefix("models:/").partition("/")
    client = MlflowClient()
    try:
        if "@" in name:
            name, alias = name.split("@", 1)
            version = client.get_model_version_by_alias(name, alias)
        else:
            version = client.get_model_version(name, ref)
        return float(client.get_run(version.run_id).data.params.get("train.crop_share", 0))
    except Exception as exc:  # noqa: BLE001 — a model without its run still serves, in one pass
        log.warning("%s: training params not found (%s); serve.zoom auto → one pass", uri, exc)
        return 0.0


@lru_cache(maxsize=4)
def load_segmenter(spec: str = "champion", params_file: str | None = None) -> Segmenter:
    """One loaded model per spec and process (the model loads once, then is reused)."""
    params = load_params(params_file)
    path = Path(spec)
    if spec.endswith(".pt") or path.is_file():
        from backdrop.models.cutout import CutoutModel
        from backdrop.stages.train import load_trained

        net, meta = load_trained(path)
        zoom = zoom_settings(params, meta.get("crop_share", 0) > 0)
        return Segmenter(CutoutModel(net, meta["size"], meta["arch"]).eval(), meta["size"], str(path), **zoom)
    import mlflow
    from mlflow.exceptions import MlflowException

    from backdrop import tracking

    tracking.setup(params)
    rp = params.register_
    uri = f"models:/{rp.model_name}@{rp.alias}" if spec == rp.alias else spec
    if not uri.startswith("models:/") and "://" not in uri:
        raise NoModelError(f"{spec}: not a file, not `{rp.alias}`, not a models:/ URI")
    try:
        model = mlflow.pytorch.load_model(uri, map_location="cpu")
    except MlflowException as exc:
        raise NoModelError(
            f"no model at {uri} in {tracking.tracking_uri(params)} ({exc.message.splitlines()[0]}). "
            "Train and register one with `make demo` (or `dvc repro`), or pass --model PATH/TO/model.pt"
        ) from None
    model.eval()
    zoom = zoom_settings(params, params.serve.zoom == "auto" and _registry_crop_share(uri) > 0)
    return Segmenter(model, int(model.size), uri, **zoom)


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
    from backdrop.monitoring.predlog import PredictionRecorder

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
    in the prediction log (`backdrop.monitoring.predlog`): image id and sha256, model version,
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
