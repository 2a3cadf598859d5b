"""Augmentation of a batch: background replacement, zoom, flips, colour jitter; progressive resizing."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np

from backdrop.config import TrainParams

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)


def random_background(rng: np.random.Generator, h: int, w: int):
    """(3,H,W) float in [0,1]: a solid colour, a linear gradient or smooth colour noise."""
    import torch
    import torch.nn.functional as F

    kind = int(rng.integers(3))
    c1 = torch.from_numpy(rng.random(3, dtype=np.float32)).view(3, 1, 1)
    if kind == 0:
        return c1.expand(3, h, w).clone()
    if kind == 1:
        c2 = torch.from_numpy(rng.random(3, dtype=np.float32)).view(3, 1, 1)
        vertical = bool(rng.integers(2))
        t = torch.linspace(0, 1, h if vertical else w)
        t = t.view(1, -1, 1) if vertical else t.view(1, 1, -1)
        return (c1 * (1 - t) + c2 * t).expand(3, h, w).clone()
    cells = torch.from_numpy(rng.random((1, 3, 4, 4), dtype=np.float32))
    return F.interpolate(cells, size=(h, w), mode="bilinear", align_corners=False)[0]


def _zoom(img, mask, z: float, rng: np.random.Generator):
    """Resize (3,H,W)+(1,H,W) by z; z>1 crops back to H×W at a random spot, z<1 pads (edge
    replicate for the photo, background for the mask)."""
    import torch
    import torch.nn.functional as F

    _, h, w = img.shape
    mh, mw = max(1, round(h * z)), max(1, round(w * z))
    if (mh, mw) == (h, w):
        return img, mask
    both = F.interpolate(torch.cat([img, mask])[None], size=(mh, mw), mode="bilinear",
                         align_corners=False, antialias=z < 1)[0]
    if mh >= h and mw >= w:
        oy, ox = int(rng.integers(mh - h + 1)), int(rng.integers(mw - w + 1))
        both = both[:, oy:oy + h, ox:ox + w]
        return both[:3], both[3:]
    py, px = int(rng.integers(h - mh + 1)), int(rng.integers(w - mw + 1))
    pad = (px, w - mw - px, py, h - mh - py)
    return (F.pad(both[None, :3], pad, mode="replicate")[0],
            F.pad(both[None, 3:], pad, value=0.0)[0])


def augment(photos: np.ndarray, masks: np.ndarray, tp: TrainParams, rng: np.random.Generator):
    """uint8 photos (B,S,S,3) + masks (B,S,S) → float (B,3,S,S) in [0,1] and (B,1,S,S) targets.

    Order: background replacement (needs the true mask), zoom/crop, flips, colour jitter (last, so
    new backgrounds are jittered too). Every random number comes from `rng`.
    """
    import torch

    from backdrop.models.cutout import photos_to_tensor

    x = photos_to_tensor(photos)
    y = torch.tensor(masks, dtype=torch.float32)[:, None]  # a copy: edited in place below
    b, _, h, w = x.shape
    if tp.aug_bg_replace > 0:
        for i in np.flatnonzero(rng.random(b) < tp.aug_bg_replace):
            x[i] = x[i] * y[i] + random_background(rng, h, w) * (1 - y[i])
    lo, hi = tp.aug_scale
    if (lo, hi) != (1.0, 1.0):
        for i in range(b):
            x[i], y[i] = _zoom(x[i], y[i], float(rng.uniform(lo, hi)), rng)
    for p, dim in ((tp.aug_hflip, -1), (tp.aug_vflip, -2)):
        if p > 0:
            flip = torch.from_numpy(rng.random(b) < p).view(b, 1, 1, 1)
            x = torch.where(flip, x.flip(dim), x)
            y = torch.where(flip, y.flip(dim), y)
    if tp.aug_jitter > 0:
        j = tp.aug_jitter

        def factors():
            return torch.from_numpy(rng.uniform(1 - j, 1 + j, b).astype(np.float32)).view(b, 1, 1, 1)

        x = x * factors()  # brightness
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) * factors() + mean  # contrast
        gray = (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])
        x = ((x - gray) * factors() + gray).clamp_(0, 1)  # saturation
    return x.contiguous(), y.contiguous()


def downsample_batch(x, y, size: int):
    """Progressive resizing: (B,3,S,S) photos and (B,1,S,S) targets → size² (area average, so soft
    targets stay coverages), so early epochs cost (size/S)² of a full-size step and later ones refine at S."""
    import torch.nn.functional as F

    if x.shape[-1] == size:
        return x, y
    x = F.interpolate(x, size=(size, size), mode="area")
    y = F.interpolate(y, size=(size, size), mode="area")
    return x, y
