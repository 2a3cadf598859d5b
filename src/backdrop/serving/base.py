"""What every segmenter engine is and returns: the `Segmenter` protocol and its `Prediction`.

Engines (`torch_engine.TorchSegmenter`, `onnx_fast.FastSegmenter`) implement the protocol; callers
get one from the factory `backdrop.serving.segmenter.load_segmenter` and never ask which it is.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np


@dataclass
class Prediction:
    prob: np.ndarray          # float32 (H,W) at the photo's size
    small: np.ndarray         # float32 (S,S) at the model's size (the whole-photo pass)
    disagreement: float | None  # side outputs vs fused (relative to foreground area); None if unknown


@runtime_checkable
class Segmenter(Protocol):
    """A loaded model that cuts out photos at their original size."""

    size: int     # the model's input side (photos are squeezed to size²)
    source: str   # what was loaded: a models:/ URI, a file, `official:u2netp`
    precision: str  # fp32 | int8

    def probabilities(self, photo) -> np.ndarray:
        """float32 (H,W) foreground probability at the photo's original size."""
        ...

    def predict_batch(self, photos: list) -> list[Prediction]:
        """One `Prediction` per photo, in order."""
        ...

    def stream(self, items: Iterable[Any], load: Callable[[Any], Any], batch_size: int = 1,
               workers: int = 1) -> Iterator[tuple[Any, Any, Prediction | None]]:
        """Yield (item, photo, Prediction) for every item, in order; `load(item)` → RGB photo. When
        `load` raises, the exception is yielded in place of the photo (prediction None) and the
        stream goes on."""
        ...


def available_cores() -> int:
    """The cores this process may use (its CPU affinity on Linux)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def lane_count(params) -> int:
    """Single-threaded lanes a run of many photos uses: `remove.workers`, default every core."""
    return params.remove.workers or available_cores()
