"""Model specs → what an engine needs: the model, its input size, where it came from, its pass settings.

A spec is one of

* `champion` (the registry alias, `register.alias`) or any `models:/name/N`, `models:/name@alias` URI,
* a `model.pt` from `backdrop train`,
* `official:u2netp` / `official:u2net`: the official weights with the official preprocessing (each
  photo divided by its maximum), no registry needed. U²-NetP ships inside the package
  (`backdrop/weights/`, see `bundled`): its fp32 and int8 graphs run on onnxruntime alone, so a
  core install (`pip install backdrop`, no torch) cuts out photos; the torch engine and U²-Net
  (176 MB, fetched by `backdrop.models.official`) still build it from the weights with PyTorch,
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


STOCK = "official:u2netp"  # the model that needs no training and no registry: the fallback everywhere
NO_TRAINING_HINT = f"or use the stock model with --model {STOCK} (no training needed)"
BUNDLE_DIR = Path(__file__).resolve().parents[1] / "weights"  # package data (pyproject package-data)


def bundled(arch: str) -> tuple[Path, Path] | None:
    """(fp32 dynamic-size graph, int8 static 320 graph) of the official `arch` shipped with the
    package, or None. Both are `onnx_fast` exports (disagreement output, split side heads), made by
    `python -m backdrop.serving.bundle` from the pinned official weights; nothing is exported or
    quantized at run time for them, which is why a fresh install needs neither torch nor a minute."""
    fp32, int8 = BUNDLE_DIR / f"{arch}-fp32.onnx", BUNDLE_DIR / f"{arch}-int8.onnx"
    return (fp32, int8) if fp32.is_file() and int8.is_file() else None


@dataclass(frozen=True)
class ModelSource:
    source: str                  # models:/ URI, file path or official:<arch>
    size: int | None             # the model's input size (None: an .onnx file's own, else 320)
    model: object | None = None  # CutoutModel: float32 (N,3,S,S) in [0,1] → (N,1,S,S); None for .onnx
    onnx_file: Path | None = None
    scale_to_max: bool = False   # official weights: x / max(x), as the official preprocessing
    zoom: dict = field(default_factory=dict)  # the pass fields of `zoom_settings`
    onnx_int8: Path | None = None  # a ready int8 graph next to `onnx_file` (bundled official weights)


def zoom_settings(params: Params, trained_on_crops: bool) -> dict:
    """Segmenter pass fields (zoom and `serve.tta`): the training crops' margin (`prepare.crop_margin`) when `serve.zoom` is
    `always`, or `auto` and the model learnt from object crops; else 0 (one pass). A model that never
    saw crops gains nothing from the second run (official U²-NetP: IoU 0.9678 vs 0.9682 one pass on
    the inference bench) and pays for it."""
    zoom = params.serve.zoom == "always" or (params.serve.zoom == "auto" and trained_on_crops)
    return {"zoom_margin": params.prepare.crop_margin if zoom else 0.0,
            "zoom_max_area": params.serve.zoom_max_area, "zoom_blend": params.serve.zoom_blend,
            "zoom_min_agreement": params.serve.zoom_min_agreement,
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


def resolve(spec: str, params: Params, engine: str = "onnx") -> ModelSource:
    """The model a spec names, its size and its pass settings (see the module doc). `engine`
    "torch" needs the PyTorch model; otherwise the bundled ONNX graphs serve `official:u2netp`."""
    if spec.startswith("official:"):
        arch = spec.split(":", 1)[1]
        files = bundled(arch) if engine != "torch" else None
        zoom = zoom_settings(params, trained_on_crops=False)
        if files is not None:
            return ModelSource(spec, 320, onnx_file=files[0], onnx_int8=files[1], scale_to_max=True, zoom=zoom)
        if arch not in ("u2netp", "u2net"):
            raise NoModelError(f"{spec}: unknown official model (official:u2netp, official:u2net)")
        try:
            import torch  # noqa: F401
        except ImportError:
            raise NoModelError(f"{spec} needs PyTorch here (pip install 'backdrop[train]'); "
                               f"{STOCK} ships with the package") from None
        return ModelSource(spec, 320, official_cutout(arch), scale_to_max=True, zoom=zoom)
    if spec.endswith((".onnx", ".pt")) and not Path(spec).is_file():
        raise NoModelError(f"{spec}: no such model file; {NO_TRAINING_HINT}")
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


def _sqlite_file(uri: str) -> Path | None:
    prefix = "sqlite:///"
    return Path(uri[len(prefix):].split("?", 1)[0]) if uri.startswith(prefix) else None


def registry_has(uri: str, params: Params) -> bool | None:
    """Whether the registry holds the model a `models:/` URI names, asked without creating anything.

    Why not just ask MLflow: opening a SQLite store creates its file and tables, so merely looking
    for a champion would leave an empty MLflow database wherever the command ran. A SQLite store is
    read directly, read-only: False when the file, its tables or the alias/version are absent.
    Other stores (a tracking server, PostgreSQL) are not touched here: None (unknown)."""
    import sqlite3

    from backdrop.config import tracking_uri

    db = _sqlite_file(tracking_uri(params))
    if db is None:
        return None
    if not db.is_file():
        return False
    name, _, ref = uri.removeprefix("models:/").partition("/")
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            if "@" in name:
                name, alias = name.split("@", 1)
                row = con.execute("SELECT 1 FROM registered_model_aliases WHERE name = ? AND alias = ?",
                                  (name, alias)).fetchone()
            elif ref.isdigit():
                row = con.execute("SELECT 1 FROM model_versions WHERE name = ? AND version = ?",
                                  (name, int(ref))).fetchone()
            else:  # models:/name/Stage and other forms: let MLflow answer
                row = con.execute("SELECT 1 FROM registered_models WHERE name = ?", (name,)).fetchone()
        finally:
            con.close()
    except sqlite3.Error:  # not an MLflow store (no such table), or unreadable
        return False
    return row is not None


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
        try:
            import torch  # noqa: F401
        except ImportError:
            raise NoModelError(f"{spec}: a trained model needs PyTorch (pip install 'backdrop[train]'); "
                               f"{NO_TRAINING_HINT}") from None
        from backdrop.models.cutout import CutoutModel
        from backdrop.models.trained import load_trained

        net, meta = load_trained(path)
        zoom = zoom_settings(params, meta.get("crop_share", 0) > 0)
        return ModelSource(str(path), meta["size"], CutoutModel(net, meta["size"], meta["arch"]).eval(), zoom=zoom)
    try:
        import mlflow
        from mlflow.exceptions import MlflowException
    except ImportError:
        raise NoModelError(f"{spec}: the model registry needs MLflow (pip install 'backdrop[pipeline]'); "
                           f"{NO_TRAINING_HINT}") from None

    from backdrop import tracking

    rp = params.register_
    uri = registry_uri(spec, params)
    if not uri.startswith("models:/") and "://" not in uri:
        raise NoModelError(f"{spec}: not a file, not `{rp.alias}`, not a models:/ URI; {NO_TRAINING_HINT}")
    if uri.startswith("models:/") and registry_has(uri, params) is False:  # checked without creating a store
        raise NoModelError(
            f"no model at {uri} in {tracking.tracking_uri(params)}. Train and register one with `make demo` "
            f"(or `dvc repro`), pass --model PATH/TO/model.pt, {NO_TRAINING_HINT}")
    mlflow.set_tracking_uri(tracking.tracking_uri(params))  # reading a model needs no experiment
    try:
        model = mlflow.pytorch.load_model(uri, map_location="cpu")
    except MlflowException as exc:
        raise NoModelError(
            f"no model at {uri} in {tracking.tracking_uri(params)} ({exc.message.splitlines()[0]}). "
            "Train and register one with `make demo` (or `dvc repro`), pass --model PATH/TO/model.pt, "
            f"{NO_TRAINING_HINT}"
        ) from None
    model.eval()
    zoom = zoom_settings(params, params.serve.zoom == "auto" and _registry_crop_share(uri) > 0)
    return ModelSource(uri, int(model.size), model, zoom=zoom)
