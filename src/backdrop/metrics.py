"""Segmentation metrics, stats first then metric (as segmentation_models.pytorch does).

Per-image confusion counts are kept so the same numbers give per-image, per-cluster and
dataset-level IoU without re-running the model.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Stats:
    tp: int
    fp: int
    fn: int
    tn: int


def confusion(pred: np.ndarray, target: np.ndarray) -> Stats:
    """Counts for two boolean masks of equal shape."""
    pred, target = np.asarray(pred, dtype=bool), np.asarray(target, dtype=bool)
    if pred.shape != target.shape:
        raise ValueError(f"prediction {pred.shape} and target {target.shape} differ in shape")
    tp = int(np.count_nonzero(pred & target))
    fp = int(np.count_nonzero(pred & ~target))
    fn = int(np.count_nonzero(~pred & target))
    return Stats(tp, fp, fn, pred.size - tp - fp - fn)


def iou(stats: Stats) -> float:
    """Intersection over union; two empty masks agree perfectly (1.0)."""
    union = stats.tp + stats.fp + stats.fn
    return 1.0 if union == 0 else stats.tp / union


def mask_iou(pred: np.ndarray, target: np.ndarray) -> float:
    return iou(confusion(pred, target))


def mae(prob: np.ndarray, target: np.ndarray) -> float:
    """Mean absolute error between a probability map in [0,1] and a binary target."""
    return float(np.abs(np.asarray(prob, np.float32) - np.asarray(target, np.float32)).mean())


def summarize(ious: list[float], clusters: list[int], k: int) -> dict[str, float]:
    """Mean IoU overall and per cluster, plus the share of images at or above 0.99."""
    arr, cl = np.asarray(ious, dtype=np.float64), np.asarray(clusters)
    out = {"iou_mean": float(arr.mean()) if len(arr) else float("nan"),
           "share_iou_ge_099": float((arr >= 0.99).mean()) if len(arr) else float("nan"),
           "n": len(arr)}
    for c in range(k):
        sel = arr[cl == c]
        if len(sel):
            out[f"iou_cluster_{c}"] = float(sel.mean())
    return out
