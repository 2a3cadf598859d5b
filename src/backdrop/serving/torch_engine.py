"""The PyTorch engine: a loaded CutoutModel that segments one photo at a time at the model's size,
upsampled to the photo's size. Simple and dependable (the `auto` engine falls back to it when the
ONNX fast path cannot be built); `stream` runs photo after photo in this thread."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from backdrop.serving.base import Prediction
from backdrop.serving.specs import ModelSource, NoModelError


@dataclass
class TorchSegmenter:
    """Implements `backdrop.serving.base.Segmenter` with PyTorch eager, one photo per model run."""

    model: object  # CutoutModel: float32 (N,3,S,S) in [0,1] → (N,1,S,S) probabilities
    size: int
    source: str
    zoom_margin: float = 0.0    # > 0: a second pass on the product's box (`backdrop.zoom`); 0 = one pass
    zoom_max_area: float = 0.6  # ...when the box covers at most this share of the frame
    zoom_blend: float = 0.0     # weight of the whole-photo pass inside the box (`serve.zoom_blend`)
    zoom_min_agreement: float = 0.0  # below this IoU with the first pass, the zoom pass is dropped
    flip_tta: bool = False      # each pass also runs on the mirrored input; the two maps are averaged
    scale_to_max: bool = False  # official weights: x / max(x) instead of x / 255
    precision: str = "fp32"

    def probabilities(self, photo) -> np.ndarray:
        """float32 (H,W) foreground probability at the photo's original size."""
        return self._predict(photo).prob

    def predict_batch(self, photos) -> list[Prediction]:
        """One Prediction per photo (one model run each; no disagreement score in this engine)."""
        return [self._predict(photo) for photo in photos]

    def stream(self, items, load, batch_size: int = 1, workers: int = 1):
        """Yield (item, photo, Prediction) for every item, in order, one at a time in this thread
        (`batch_size` and `workers` are the ONNX engine's knobs; accepted and ignored here). An
        exception from `load(item)` is yielded in place of the photo, prediction None."""
        for item in items:
            try:
                photo = load(item)
            except Exception as exc:  # noqa: BLE001 — handed to the caller per item
                yield item, exc, None
                continue
            yield item, photo, self._predict(photo)

    def _predict(self, photo) -> Prediction:
        rgb = photo.convert("RGB")
        small = self._small(rgb)
        prob = self._upsample(small, rgb.size)
        if self.zoom_margin > 0:
            from backdrop.zoom import refine

            prob, _ = refine(rgb, prob, self.single_pass, self.zoom_margin, self.zoom_max_area, self.zoom_blend,
                             self.zoom_min_agreement)
        return Prediction(prob, small, None)

    def single_pass(self, rgb) -> np.ndarray:
        """The whole photo squeezed to size² → (H,W) probabilities upsampled to its size."""
        return self._upsample(self._small(rgb), rgb.size)

    def _small(self, rgb) -> np.ndarray:
        """float32 (S,S) probabilities of the photo squeezed to size²."""
        import torch
        from PIL import Image

        small = np.array(rgb.resize((self.size, self.size), Image.Resampling.LANCZOS))  # writable for torch
        x = torch.from_numpy(small).permute(2, 0, 1)[None].float()  # (1,3,S,S)
        x = x.div_(float(max(int(small.max()), 1)) if self.scale_to_max else 255.0)
        with torch.inference_mode():
            if self.flip_tta:  # (2,3,S,S): the photo and its mirror image, mirrored back before averaging
                out = self.model(torch.cat([x, x.flip(-1)]))
                prob = (0.5 * (out[0, 0] + out[1, 0].flip(-1))).numpy()  # (S,S)
            else:
                prob = self.model(x)[0, 0].numpy()  # (S,S)
        return prob.astype(np.float32)

    @staticmethod
    def _upsample(prob: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        from PIL import Image

        full = Image.fromarray(prob.astype(np.float32), mode="F").resize(size, Image.Resampling.BILINEAR)
        return np.clip(np.asarray(full), 0.0, 1.0)


def from_source(ms: ModelSource, size: int | None = None) -> TorchSegmenter:
    """The PyTorch segmenter of a resolved spec (`specs.resolve`); `size` overrides the model's."""
    if ms.model is None:
        raise NoModelError(f"{ms.source}: an ONNX file runs on the onnx engine only")
    return TorchSegmenter(ms.model, size or ms.size, ms.source, scale_to_max=ms.scale_to_max, **ms.zoom)
