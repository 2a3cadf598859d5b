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


REGIONS = ("edge", "gap", "outside", "inner")


def truth_regions(truth: np.ndarray) -> dict[str, np.ndarray]:
    """Where each pixel lies relative to the true mask (H,W) bool, so a model's errors can be told apart:
    `edge` within max(2 px, 1 % of the product box's diagonal) of the outline (blur, upsampling);
    `gap` background inside the product's convex hull (see-through holes, between straps, inside a print);
    `outside` background beyond it (backdrop, shadows, props); `inner` product beyond the edge band."""
    from PIL import Image, ImageDraw
    from scipy import ndimage
    from scipy.spatial import ConvexHull, QhullError

    truth = np.asarray(truth, dtype=bool)
    if not truth.any():
        empty = np.zeros_like(truth)
        return {"edge": empty, "gap": empty, "outside": ~truth, "inner": empty}
    ys, xs = np.nonzero(truth & ~ndimage.binary_erosion(truth))  # the outline's pixels
    hull = truth.copy()
    try:
        corners = np.stack([xs, ys], 1)[ConvexHull(np.stack([xs, ys], 1)).vertices]
        canvas = Image.new("1", truth.shape[::-1], 0)
        ImageDraw.Draw(canvas).polygon([(float(x), float(y)) for x, y in corners], fill=1)
        hull |= np.asarray(canvas, dtype=bool)
    except QhullError:  # a line or a dot of product: no area to enclose
        pass
    width = max(2.0, 0.01 * float(np.hypot(np.ptp(xs) + 1, np.ptp(ys) + 1)))
    distance = np.where(truth, ndimage.distance_transform_edt(truth), ndimage.distance_transform_edt(~truth))
    edge = distance <= width
    return {"edge": edge, "gap": hull & ~truth & ~edge, "outside": ~hull & ~edge, "inner": truth & ~edge}


def iou_lost_by_region(pred: np.ndarray, truth: np.ndarray,
                       regions: dict[str, np.ndarray] | None = None) -> dict[str, float]:
    """IoU that each region's errors cost (`truth_regions`, or `regions` already computed for this
    truth): the IoU with that region predicted right, minus the IoU. Where a model misses 0.99 — its
    edges, filled gaps, shadows and props, or holes in the product — decides what to train or serve
    differently."""
    pred, truth = np.asarray(pred, dtype=bool), np.asarray(truth, dtype=bool)
    stats = confusion(pred, truth)
    base, union = iou(stats), stats.tp + stats.fp + stats.fn
    lost = {}
    for name, region in (regions if regions is not None else truth_regions(truth)).items():
        fp = int(np.count_nonzero(pred & ~truth & region))
        fn = int(np.count_nonzero(~pred & truth & region))
        fixed_union = union - fp
        lost[name] = (1.0 if fixed_union == 0 else (stats.tp + fn) / fixed_union) - base
    return lost
