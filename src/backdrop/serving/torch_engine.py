"""The PyTorch engine: a model spec (`champion`, `models:/...`, a `model.pt`) resolved to a loaded
CutoutModel that segments one photo at a time at the model's size, upsampled to the photo's size."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from backdrop.config import load_params

log = logging.getLogger(__name__)


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
        from backdrop.models.trained import load_trained

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
