"""Zoom-in pass: cut the photo down to the product's box and segment that crop again.

Why: the network sees every photo at `prepare.size`² (320), so an edge can be placed no finer than
about photo side / 320 pixels. A product that fills a quarter of the frame (a cap, a belt) has a
long edge for its small area, and that blur alone costs it the 0.99 IoU a shop needs. Cropping to
the object's box (plus `prepare.crop_margin`) gives its edge 2–4× more network pixels.

One geometry for training and serving: prepare cuts training crops around the vendor's mask with
`object_box`, serving cuts around the first pass's mask with the same function, and `paste`
puts the crop's probabilities back.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Box = tuple[int, int, int, int]  # left, top, right, bottom (right/bottom exclusive), photo pixels


def object_box(mask: np.ndarray, margin: float, threshold: float = 0.5) -> Box | None:
    """The foreground's bounding box widened by `margin` × its side on every side (at least 2 px),
    clipped to the image; None when nothing is foreground. `mask` is (H,W), in [0,1] or uint8."""
    fg = mask > (threshold * 255 if mask.dtype == np.uint8 else threshold)
    rows, cols = np.flatnonzero(fg.any(axis=1)), np.flatnonzero(fg.any(axis=0))
    if not len(rows):
        return None
    h, w = fg.shape
    top, bottom, left, right = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    my = max(2, round(margin * (bottom - top)))
    mx = max(2, round(margin * (right - left)))
    return max(0, left - mx), max(0, top - my), min(w, right + mx), min(h, bottom + my)


def worth_zooming(box: Box | None, size: tuple[int, int], max_area: float) -> bool:
    """Zoom only when the box leaves enough of the frame out to gain resolution."""
    if box is None:
        return False
    w, h = size
    return (box[2] - box[0]) * (box[3] - box[1]) <= max_area * w * h


def paste(prob: np.ndarray, box: Box, crop_prob: np.ndarray) -> np.ndarray:
    """`prob` (H,W) with the box replaced by the crop's (box h, box w) probabilities."""
    out = prob.copy()
    out[box[1]:box[3], box[0]:box[2]] = crop_prob
    return out


def refine(photo, prob: np.ndarray, predict: Callable[[object], np.ndarray], margin: float,
           max_area: float, blend: float = 0.0, min_agreement: float = 0.0) -> tuple[np.ndarray, Box | None]:
    """Second pass: `predict(crop)` → (h,w) probabilities of the crop at its own size. Returns the
    final (H,W) probabilities and the box used (None: the first pass stands).

    `blend` > 0 averages the two views inside the box (`blend` × whole-photo pass + the rest × zoom
    pass): the two passes see the product at two scales and err in different places, so their mean
    is a two-scale ensemble at no extra model cost (`serve.zoom_blend`). The zoom pass is there to
    place edges, not to change what the product is: where its mask agrees with the first pass's
    inside the box by less than `min_agreement` (IoU), it lost the product (an empty crop map, half a
    garment gone) and the first pass stands (`serve.zoom_min_agreement`)."""
    box = object_box(prob, margin)
    if not worth_zooming(box, photo.size, max_area):
        return prob, None
    crop_prob = predict(photo.crop(box))
    if agreement(prob, box, crop_prob) < min_agreement:
        return prob, None
    return merge(prob, box, crop_prob, blend), box


def agreement(prob: np.ndarray, box: Box, crop_prob: np.ndarray, threshold: float = 0.5) -> float:
    """IoU of the first pass's mask inside `box` and the zoom pass's mask of it (1.0 when both are empty)."""
    first = prob[box[1]:box[3], box[0]:box[2]] > threshold
    second = crop_prob > threshold
    union = int(np.count_nonzero(first | second))
    return 1.0 if union == 0 else int(np.count_nonzero(first & second)) / union


def merge(prob: np.ndarray, box: Box, crop_prob: np.ndarray, blend: float = 0.0) -> np.ndarray:
    """`prob` (H,W) with the box holding `blend` × its own values + (1 − blend) × the crop's."""
    if blend > 0:
        crop_prob = blend * prob[box[1]:box[3], box[0]:box[2]] + (1.0 - blend) * crop_prob
    return paste(prob, box, crop_prob)
