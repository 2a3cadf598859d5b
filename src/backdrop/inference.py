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

    def probabilities(self, photo) -> np.ndarray:
        """float32 (H,W) foreground probability at the photo's original size."""
        import torch
        from PIL import Image

        rgb = photo.convert("RGB")
        small = np.array(rgb.resize((self.size, self.size), Image.Resampling.LANCZOS))  # writable for torch
        x = torch.from_numpy(small).permute(2, 0, 1)[None].float().div_(255.0)  # (1,3,S,S)
        with torch.inference_mode():
            prob = self.model(x)[0, 0].numpy()  # (S,S)
        full = Image.fromarray(prob.astype(np.float32), mode="F").resize(rgb.size, Image.Resampling.BILINEAR)
        return np.clip(np.asarray(full), 0.0, 1.0)


def compose(photo, prob: np.ndarray, fmt: str = "rgba"):
    """The publishable output: RGBA cut-out, product on white, or the mask."""
    from PIL import Image

    if fmt not in FORMATS:
        raise ValueError(f"format {fmt!r} is not one of {FORMATS}")
    alpha = (prob * 255.0 + 0.5).astype(np.uint8)
    if fmt == "mask":
        return Image.fromarray(alpha, mode="L")
    rgb = np.asarray(photo.convert("RGB"), dtype=np.float32)
    if fmt == "white":
        a = prob[..., None]
        return Image.fromarray((rgb * a + 255.0 * (1 - a) + 0.5).astype(np.uint8), mode="RGB")
    return Image.fromarray(np.dstack([rgb.astype(np.uint8), alpha]), mode="RGBA")


@lru_cache(maxsize=4)
def load_segmenter(spec: str = "champion", params_file: str | None = None) -> Segmenter:
    """One loaded model per spec and process (the model loads once, then is reused)."""
    params = load_params(params_file)
    path = Path(spec)
    if spec.endswith(".pt") or path.is_file():
        from backdrop.models.cutout import CutoutModel
        from backdrop.stages.train import load_trained

        net, meta = load_trained(path)
        return Segmenter(CutoutModel(net, meta["size"], meta["arch"]).eval(), meta["size"], str(path))
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
    return Segmenter(model, int(model.size), uri)


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


def remove(inputs: Iterable[Path], out_dir: Path, model: str = "champion", fmt: str = "rgba") -> list[Path]:
    """Cut out every input photo into out_dir/<stem>.png at its original size.

    Each cut-out is also recorded in the prediction log (`backdrop.monitoring.predlog`): image id and
    sha256, model version, cluster, confidence, the stored mask.
    """
    from tqdm import tqdm

    if fmt not in FORMATS:
        raise ValueError(f"format {fmt!r} is not one of {FORMATS}")
    files = collect_inputs(inputs)
    if not files:
        raise FileNotFoundError("no input images found")
    segmenter = load_segmenter(model)
    recorder = _recorder(segmenter.source)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for path in tqdm(files, desc="remove", unit="img", disable=None):
        photo = open_image(path)
        prob = segmenter.probabilities(photo)
        result = compose(photo, prob, fmt)
        dest = out_dir / f"{path.stem}.png"
        with atomic_path(dest) as tmp:
            result.save(tmp, format="PNG")
        written.append(dest)
        if recorder is not None:
            recorder.record(path, photo, prob)
    log.info("remove: %d cut-out(s) in %s using %s", len(written), out_dir, segmenter.source)
    return written
