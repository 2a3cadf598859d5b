"""Model specs → what an engine needs: the model, its input size, where it came from, its pass settings.

A spec is one of

* `champion` (the registry alias, `register.alias`) or any `models:/name/N`, `models:/name@alias` URI,
* a `model.pt` from `backdrop train`,
* `official:u2netp` / `official:u2net`: the official weights with the official preprocessing (each
  photo divided by its maximum), no registry needed,
* an `.onnx` file (ONNX engine only).

`resolve(spec, params)` is the one place that turns a spec into a `ModelSource`; the engines
(`torch_engine`, `onnx_fast`) build segmenters from it and the factory
(`backdrop.serving.segmenter.load_segmenter`) picks the engine. Models from a file or the registry
load once per (spec, params) and process.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from backdrop.config import Params

log = logging.getLogger(__name__)


class NoModelError(RuntimeError):
    """No model could be found for the requested spec."""


@dataclass(frozen=True)
class ModelSource:
    source: str                  # models:/ URI, file path or official:<arch>
    size: int | None             # the model's input size (None: an .onnx file's own, else 320)
    model: object | None = None  # CutoutModel: float32 (N,3,S,S) in [0,1] → (N,1,S,S); None for .onnx
    onnx_file: Path | None = None
    scale_to_max: bool = False   # official weights: x / max(x), as the official preprocessing
    zoom: dict = field(default_factory=dict)  # the pass fields of `zoom_settings`


def zoom_settings(params: Params, trained_on_crops: bool) -> dict:
    """Segmenter pass fields (zoom and `serve.tta`): the training crops' margin (`prepare.crop_margin`) when `serve.zoom` is
    `always`, or `auto` and the model learnt from object crops; else 0 (one pass). A model that never
    saw crops gains nothing from the second run (official U²-NetP: IoU 0.9678 vs 0.9682 one pass on
    the inference bench) and pays for it."""
    zoom = params.serve.zoom == "always" or (params.serve.zoom == "auto" and trained_on_crops)
    return {"zoom_margin": params.prepare.crop_margin if zoom else 0.0,
            "zoom_max_area": params.serve.zoom_max_area, "zoom_blend": params.serve.zoom_blend,
            "flip_tta": params.serve.tta == "hflip"}


def official_cutout(name: str):
    """The official `name` weights (u2netp, u2net) as a CutoutModel at 320 px."""
    from backdrop.models import build_model
    from backdrop.models.cutout import CutoutModel

    return CutoutModel(build_model(name, init="official"), 320, name).eval()


def registry_uri(spec: str, params: Params) -> str:
    """`champion` (the alias) → `models:/<model_name>@<alias>`; other specs unchanged."""
    rp = params.register_
    return f"models:/{rp.model_name}@{rp.alias}" if spec == rp.alias else spec


def resolve(spec: str, params: Params) -> ModelSource:
    """The model a spec names, its size and its pass settings (see the module doc)."""
    if spec.startswith("official:"):
        return ModelSource(spec, 320, official_cutout(spec.split(":", 1)[1]), scale_to_max=True,
                           zoom=zoom_settings(params, trained_on_crops=False))
    if spec.endswith(".onnx"):
        return ModelSource(str(Path(spec)), None, onnx_file=Path(spec),
                           zoom=zoom_settings(params, trained_on_crops=False))
    path = Path(spec)
    stamp = (path.stat().st_mtime_ns, path.stat().st_size) if path.is_file() else None
    return _load_torch(spec, _ParamsKey(params), stamp)  # a rewritten model.pt loads again


class _ParamsKey:
    """Params as a model cache key: equal when the sections a load reads are (the registry and its
    store, the pass settings); Params hold lists, so are not hashable themselves."""

    SECTIONS = ("mlflow", "register_", "prepare", "serve")

    def __init__(self, params: Params):
        self.params = params
        self.text = params.model_dump_json(include=set(self.SECTIONS))

    def __hash__(self) -> int:
        return hash(self.text)

    def __eq__(self, other) -> bool:
        return isinstance(other, _ParamsKey) and other.text == self.text


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
def _load_torch(spec: str, key: _ParamsKey, _stamp: tuple | None = None) -> ModelSource:
    """One loaded model per spec, params and process (the model loads once, then is reused)."""
    params = key.params
    path = Path(spec)
    if spec.endswith(".pt") or path.is_file():
        from backdrop.models.cutout import CutoutModel
        from backdrop.models.trained import load_trained

        net, meta = load_trained(path)
        zoom = zoom_settings(params, meta.get("crop_share", 0) > 0)
        return ModelSource(str(path), meta["size"], CutoutModel(net, meta["size"], meta["arch"]).eval(), zoom=zoom)
    import mlflow
    from mlflow.exceptions import MlflowException

    from backdrop import tracking

    tracking.setup(params)
    rp = params.register_
    uri = registry_uri(spec, params)
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
    return ModelSource(uri, int(model.size), model, zoom=zoom)
