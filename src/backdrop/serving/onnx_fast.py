"""The fast CPU path: the model exported to ONNX and run with a tuned onnxruntime session.

* `export_onnx` traces a CutoutModel (float32 (N,3,S,S) in [0,1] → probabilities) to ONNX with a
  dynamic batch axis. When the model exposes its U²-Net (`.net`), the graph gets a second output,
  `disagreement` (N,): how far the three finest side outputs are from the fused map, relative to the
  predicted foreground area; review routing uses it. Exports are cached by a hash of the weights.
* `make_session` builds an InferenceSession for a small CPU box: intra-op threads = the cores this
  process may use, one inter-op thread, full graph optimisation, no spin-waiting (the cores are shared
  with decoding and with other processes, so spinning threads only steal time).
* `FastSegmenter` does batched preprocessing (resize with PIL's reducing gap: `reduce()` then
  LANCZOS), one session run per batch, and upsamples each probability map to its photo's size. It is
  one of the engines behind the `backdrop.serving.base.Segmenter` protocol (built by the factory
  `backdrop.serving.segmenter.load_segmenter` from a resolved spec, `from_source`); `stream()`
  overlaps decoding/resizing of the next batch with the current session run, or, with `workers > 1`
  (`remove.workers`), runs that many single-threaded lanes side by side. With the zoom pass on
  (`serve.zoom`: by default for models trained on object crops), a product whose box covers at most
  `serve.zoom_max_area` of the frame is segmented again on that box (`backdrop.zoom`), on the same
  session or lane.
* `precision="int8"` (`serve.precision`) runs a quantized copy of a static 320 px export
  (`backdrop.serving.quantize`: the RSU stages in uint8, the sensitive nodes fp32).

Model specs (`champion`, `models:/...`, a `model.pt`, `official:u2netp`, an `.onnx` file) are
resolved in `backdrop.serving.specs`; this module only builds sessions from what they name.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from backdrop.serving.base import Prediction, available_cores
from backdrop.serving.preprocess import to_input, upsample
from backdrop.serving.specs import ModelSource

log = logging.getLogger(__name__)

OPSET = 17  # onnxruntime 1.32 runs opsets up to 23; 17 is what the TorchScript exporter knows best
EXPORT_VERSION = "3"  # bump when the exported graph changes (part of the cache key)
SIDES_FOR_DISAGREEMENT = 3  # the finest side outputs; the coarse ones always disagree at edges
PRECISIONS = ("fp32", "int8")


def cache_dir() -> Path:
    root = os.environ.get("BACKDROP_CACHE")
    return (Path(root).expanduser() if root else Path.home() / ".cache" / "backdrop") / "onnx"


# ------------------------------------------------------------------------------------------- export


def tap_split_head(conv):
    """A 3×3 conv with one output channel (a U²-Net side head) as a 1×1 conv to its 9 taps followed
    by a fixed one-hot 3×3 conv that sums them — the same function (to float rounding), but
    onnxruntime runs a C→9 GEMM plus a 9-channel stencil ~2× faster than a C→1 3×3 conv, which its
    blocked kernels pad to 16 output channels (side1 at 320 px: 21.8 → 9.5 ms on one core)."""
    import torch
    from torch import nn

    c = conv.in_channels
    taps = nn.Conv2d(c, 9, 1, bias=False)
    stencil = nn.Conv2d(9, 1, 3, padding=1)
    with torch.no_grad():
        taps.weight.copy_(conv.weight[0].permute(1, 2, 0).reshape(9, c)[:, :, None, None])  # (9,C,1,1)
        onehot = torch.zeros(1, 9, 3, 3)
        for k in range(9):
            onehot[0, k, k // 3, k % 3] = 1.0
        stencil.weight.copy_(onehot)
        stencil.bias.copy_(conv.bias)
    return nn.Sequential(taps, stencil)


def _fast_heads(net):
    """A copy of `net` whose single-channel 3×3 side heads are `tap_split_head`s (export only)."""
    import copy

    from torch import nn

    net = copy.deepcopy(net)
    for name, child in list(net.named_children()):
        if (name.startswith("side") and isinstance(child, nn.Conv2d) and child.out_channels == 1
                and child.kernel_size == (3, 3) and child.padding == (1, 1) and child.stride == (1, 1)
                and child.dilation == (1, 1) and child.groups == 1 and child.bias is not None):
            setattr(net, name, tap_split_head(child))
    return net


def _serving_module(model):
    """The module to trace: prob and, when the U²-Net is reachable, the side-output disagreement."""
    import torch
    from torch import nn

    from backdrop.models.cutout import normalize

    net = getattr(model, "net", None)
    if net is None:
        return model, ["prob"]
    net = _fast_heads(net)

    class _WithSides(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.net = inner

        def forward(self, x):
            outs = self.net(normalize(x))
            prob = torch.sigmoid(outs[0])
            sides = torch.sigmoid(torch.cat(outs[1:1 + SIDES_FOR_DISAGREEMENT], dim=1))  # (N,k,S,S)
            diff = (sides - prob).abs().mean(dim=1).sum(dim=(1, 2))  # (N,)
            area = prob.sum(dim=(1, 2, 3)) + 1.0
            return prob, diff / area

    return _WithSides(net).eval(), ["prob", "disagreement"]


def weights_key(model) -> str:
    """Content hash of a model's weights + the export code version."""
    h = hashlib.sha256(f"{EXPORT_VERSION}|{OPSET}|{type(model).__name__}".encode())
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:20]


def export_onnx(model, size: int, dest: Path | None = None, static: bool = False) -> Path:
    """Export `model` (a CutoutModel) to ONNX; cached under `cache_dir()` by its weights' hash.

    Batch, height and width are dynamic: U²-Net's resampling branches depend only on whether a stage
    pools, not on the size, so one graph serves every input size (a multiple of 32 keeps the pooling
    exact). `size` is only the tracing size. `static=True` fixes height and width at `size` (batch stays
    dynamic): the graph int8 quantization starts from.
    """
    import torch

    model = model.eval()
    suffix = f"-static{size}" if static else ""
    dest = Path(dest) if dest else cache_dir() / f"cutout-{weights_key(model)}{suffix}.onnx"
    if dest.is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    module, outputs = _serving_module(model)
    dummy = torch.rand(1, 3, size, size)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.partial")
    try:
        with warnings.catch_warnings(), torch.inference_mode():
            warnings.simplefilter("ignore")  # TracerWarnings: shape checks are constant at a fixed size
            torch.onnx.export(module, (dummy,), str(tmp), dynamo=False, opset_version=OPSET,
                              input_names=["image"], output_names=outputs,
                              dynamic_axes={"image": {0: "n"} if static else {0: "n", 2: "h", 3: "w"},
                                            "prob": {0: "n"} if static else {0: "n", 2: "h", 3: "w"},
                                            **{o: {0: "n"} for o in outputs[1:]}})
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    log.info("exported %s (input %d px, outputs %s)", dest, size, outputs)
    return dest


# ------------------------------------------------------------------------------------------ session


def make_session(path: Path | str, threads: int | None = None, spinning: bool = False):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads or available_cores()
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


# ------------------------------------------------------------------------------------------ segmenter


@dataclass
class FastSegmenter:
    """onnxruntime session + batched pre/post-processing; thread-safe (runs are serialised).
    Implements `backdrop.serving.base.Segmenter`."""

    session: object
    size: int
    source: str
    onnx_file: str = ""
    has_disagreement: bool = False
    scale_to_max: bool = False  # official weights: x / max(x), as the official preprocessing
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def run(self, x: np.ndarray, session=None) -> tuple[np.ndarray, np.ndarray | None]:
        """float32 (N,3,S,S) → ((N,S,S) probabilities, (N,) disagreement or None); on the shared
        session unless a lane's own `session` is given. With `flip_tta` the mirrored batch runs too
        and the maps are averaged; disagreement stays the unmirrored run's (what review is calibrated on)."""
        prob, dis = self._run_once(x, session)
        if self.flip_tta:
            mirrored, _ = self._run_once(np.ascontiguousarray(x[..., ::-1]), session)
            prob = 0.5 * (prob + mirrored[..., ::-1])
        return prob, dis

    def _run_once(self, x: np.ndarray, session=None) -> tuple[np.ndarray, np.ndarray | None]:
        if session is None:
            with self._lock:  # one run at a time: it already uses every core
                outs = self.session.run(None, {"image": x})
        else:
            outs = session.run(None, {"image": x})
        return outs[0][:, 0], (outs[1] if len(outs) > 1 else None)

    precision: str = "fp32"
    zoom_margin: float = 0.0    # > 0: a second pass on the product's box (`backdrop.zoom`); 0 = one pass
    zoom_max_area: float = 0.6  # ...when the box covers at most this share of the frame
    zoom_blend: float = 0.0     # weight of the whole-photo pass inside the box (`serve.zoom_blend`)
    zoom_min_agreement: float = 0.0  # below this IoU with the first pass, the zoom pass is dropped
    flip_tta: bool = False      # `serve.tta: hflip`: every run also on the mirrored input, maps averaged
    threads: int = 0            # the shared session's intra-op threads; 1 = it is also the first lane
    _lanes: list = field(default_factory=list, repr=False)  # single-threaded sessions for `stream` lanes
    _free: object = field(default=None, repr=False)           # idle lanes of `predict_on_lane` (a queue)
    _free_n: int = 0

    def prepare(self, photos) -> np.ndarray:
        return to_input(photos, self.size, self.scale_to_max)

    def predict_prepared(self, photos, x: np.ndarray, session=None) -> list[Prediction]:
        """Confidence inputs (`small`, disagreement) come from the whole-photo pass, the one the
        review threshold is calibrated on; the published probabilities from the zoom pass if any."""
        small, dis = self.run(x, session)
        preds = [Prediction(upsample(small[i], photo.size), small[i], None if dis is None else float(dis[i]))
                 for i, photo in enumerate(photos)]
        if self.zoom_margin > 0:
            from backdrop.zoom import refine

            def crop_pass(crop):
                return upsample(self.run(self.prepare([crop]), session)[0][0], crop.size)

            for pred, photo in zip(preds, photos, strict=True):
                pred.prob, _ = refine(photo, pred.prob, crop_pass, self.zoom_margin, self.zoom_max_area,
                                      self.zoom_blend, self.zoom_min_agreement)
        return preds

    def predict_batch(self, photos) -> list[Prediction]:
        if not photos:
            return []
        return self.predict_prepared(photos, self.prepare(photos))

    def stream(self, items, load, batch_size: int = 1, workers: int = 1):
        """Yield (item, photo, Prediction) for every item, in order; `load(item)` → RGB photo.

        `workers == 1`: decoding and resizing of the next batch run in a helper thread while the
        session runs the current one (PIL and onnxruntime release the GIL), so the cores stay busy.
        `workers > 1`: that many lanes, each with its own single-threaded session, take whole batches
        (decode, resize, run, upsample) in parallel — on a small CPU box one session cannot keep
        2 cores busy through a U²-Net's many small ops, 2 lanes can. Results still come in order.
        `load` may raise; the exception is yielded in place of the photo (prediction None) and the
        stream goes on.
        """
        items = list(items)
        batches = [items[i:i + batch_size] for i in range(0, len(items), max(1, batch_size))]
        if workers > 1 and len(batches) > 1:
            yield from self._stream_lanes(batches, load, workers)
            return

        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(1, thread_name_prefix="backdrop-prefetch") as pool:
            pending = pool.submit(self._fetch, batches[0], load) if batches else None
            for k in range(len(batches)):
                photos, good, x = pending.result()
                pending = pool.submit(self._fetch, batches[k + 1], load) if k + 1 < len(batches) else None
                preds = iter(self.predict_prepared(good, x) if good else [])
                for item, photo in zip(batches[k], photos, strict=True):
                    yield item, photo, (None if isinstance(photo, Exception) else next(preds))

    def _fetch(self, batch, load):
        photos = []
        for item in batch:
            try:
                photos.append(load(item))
            except Exception as exc:  # noqa: BLE001 — handed to the caller per item
                photos.append(exc)
        good = [p for p in photos if not isinstance(p, Exception)]
        return photos, good, (self.prepare(good) if good else None)

    def lane_sessions(self, workers: int) -> list:
        """`workers` single-threaded sessions on the same model file, made once and kept."""
        with self._lock:
            return self._lanes_unlocked(workers)

    def _lanes_unlocked(self, workers: int) -> list:
        """A single-threaded shared session is lane 0 (a folder run asks for one: `cutout.load`);
        the others are built side by side (onnxruntime releases the GIL while it optimises a graph:
        2 sessions in 0.12–0.14 s instead of 0.19–0.26 s one after the other)."""
        lanes = self._lanes
        if not lanes and self.threads == 1:
            lanes.append(self.session)
        missing = workers - len(lanes)
        if missing == 1:
            lanes.append(make_session(self.onnx_file, threads=1))
        elif missing > 1:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(missing, thread_name_prefix="backdrop-session") as pool:
                lanes.extend(pool.map(lambda _: make_session(self.onnx_file, threads=1), range(missing)))
        return lanes[:workers]

    def _stream_lanes(self, batches, load, workers: int):
        import queue
        from collections import deque
        from concurrent.futures import ThreadPoolExecutor

        free = queue.SimpleQueue()
        for session in self.lane_sessions(workers):
            free.put(session)

        def work(batch):
            photos, good, x = self._fetch(batch, load)
            preds = []
            if good:
                session = free.get()
                try:
                    preds = self.predict_prepared(good, x, session)
                finally:
                    free.put(session)
            return photos, iter(preds)

        with ThreadPoolExecutor(workers, thread_name_prefix="backdrop-lane") as pool:
            pending = deque()
            ahead = 2 * workers  # bounded look-ahead: memory stays a few batches whatever the folder size
            nxt = 0
            while nxt < len(batches) or pending:
                while nxt < len(batches) and len(pending) < ahead:
                    pending.append((batches[nxt], pool.submit(work, batches[nxt])))
                    nxt += 1
                batch, future = pending.popleft()
                photos, preds = future.result()
                for item, photo in zip(batch, photos, strict=True):
                    yield item, photo, (None if isinstance(photo, Exception) else next(preds))

    def predict_on_lane(self, photos, workers: int) -> list[Prediction]:
        """`predict_batch` on one of `workers` single-threaded lane sessions (waiting for a free one):
        concurrent callers (the API's requests) run side by side, as `stream`'s lanes do, instead of
        queueing for the one all-cores session that cannot keep 2 cores busy through U²-Net's small ops."""
        if not photos:
            return []
        if workers <= 1:
            return self.predict_batch(photos)
        import queue

        with self._lock:
            if self._free is None or self._free_n != workers:
                self._free, self._free_n = queue.SimpleQueue(), workers
                for session in self._lanes_unlocked(workers):
                    self._free.put(session)
            free = self._free
        x = self.prepare(photos)
        session = free.get()
        try:
            return self.predict_prepared(photos, x, session)
        finally:
            free.put(session)

    def probabilities(self, photo) -> np.ndarray:
        """float32 (H,W) foreground probability at the photo's original size (Segmenter's contract)."""
        return self.predict_batch([photo])[0].prob


def _from_model(model, size: int, source: str, threads: int | None = None, precision: str = "fp32",
                scale_to_max: bool = False, zoom: dict | None = None) -> FastSegmenter:
    """fp32: the dynamic-size export. int8: the static 320 export, quantized (`serving.quantize`);
    at another size int8 falls back to fp32 (the quantized graph is calibrated at 320; the same rule
    quantized and calibrated at 160 px agreed with fp32 at IoU 0.575 on one of 3 test photos)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} is not one of {PRECISIONS}")
    if precision == "int8" and size == 320:
        from backdrop.serving.quantize import INT8_SIZE, quantize_int8

        path = quantize_int8(export_onnx(model, INT8_SIZE, static=True), scale_to_max=scale_to_max)
    else:
        if precision == "int8":
            log.warning("int8 is calibrated at 320 px; running %d px in fp32", size)
        precision = "fp32"
        path = export_onnx(model, 320)
    session = make_session(path, threads)
    names = [o.name for o in session.get_outputs()]
    return FastSegmenter(session, size, source, str(path), "disagreement" in names, scale_to_max,
                         precision=precision, threads=threads or available_cores(), **(zoom or {}))


def _from_onnx(path: Path, source: str | None = None, threads: int | None = None,
               size: int | None = None, zoom: dict | None = None, scale_to_max: bool = False,
               precision: str = "fp32") -> FastSegmenter:
    session = make_session(path, threads)
    inp = session.get_inputs()[0]
    size = size or (inp.shape[-1] if isinstance(inp.shape[-1], int) else 320)
    names = [o.name for o in session.get_outputs()]
    if inp.name != "image":
        raise ValueError(f"{path}: expected an input named 'image' (CutoutModel contract), got {inp.name!r}")
    return FastSegmenter(session, int(size), source or str(path), str(path), "disagreement" in names,
                         scale_to_max, precision=precision, threads=threads or available_cores(), **(zoom or {}))


def from_source(ms: ModelSource, threads: int | None = None, size: int | None = None,
                precision: str = "fp32") -> FastSegmenter:
    """The fast segmenter of a resolved spec (`specs.resolve`): exports once per weights, then cached.

    `size` overrides the model's input size (default: the size it was trained at; 320 for official).
    `precision` is `fp32` or `int8` (`serve.precision`; see `backdrop.serving.quantize`).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} is not one of {PRECISIONS}")
    if ms.onnx_int8 is not None and precision == "int8" and (size or ms.size) == 320:  # bundled, ready
        return _from_onnx(ms.onnx_int8, ms.source, threads, 320, ms.zoom, ms.scale_to_max, "int8")
    if ms.onnx_file is not None:
        return _from_onnx(ms.onnx_file, ms.source, threads, size or ms.size, ms.zoom, ms.scale_to_max)
    return _from_model(ms.model, size or ms.size, ms.source, threads, precision, ms.scale_to_max, ms.zoom)
