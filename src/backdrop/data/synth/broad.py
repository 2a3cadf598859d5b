"""The broad synthetic render (`synth.variety: broad`): the classic product on a per-item look.

Size, category, style and garment geometry come from the item's main generator exactly as in the
classic render; framing, backdrop, light, camera and product extras from :mod:`.variety`.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from backdrop.data.synth.geometry import _Shape, uniform
from backdrop.data.synth.product import appearance, rasterise
from backdrop.data.synth.studio import _Frame
from backdrop.data.synth.variety import LOOK_SALT, compose, cut_shift, draw_look, fill_range, paste, place


def render_broad(rng, seed: int, index: int, width: int, height: int, category: str, style: str,
                 shape: _Shape) -> tuple[Image.Image, Image.Image]:
    """(RGB photo, L mask in {0, 255}) of one item on its broad look."""
    look = draw_look(seed, index)
    lrng = np.random.default_rng([int(seed), int(index), LOOK_SALT, 1])
    angle = math.radians(uniform(rng, -3.0, 3.0) if category != "accessory" else uniform(rng, -8.0, 8.0))
    rotate = _Frame(1.0, angle, np.zeros(2))
    mask_ops = [o for o in shape.ops if o.layer == "mask"]
    lo = np.min([rotate(o.pts).min(axis=0) - o.width / 2 for o in mask_ops], axis=0)
    hi = np.max([rotate(o.pts).max(axis=0) + o.width / 2 for o in mask_ops], axis=0)
    gw, gh = (float(v) for v in hi - lo)
    f_lo, f_hi = fill_range(look)
    scale = min(uniform(lrng, f_lo, f_hi) * width / gw, uniform(lrng, f_lo, f_hi) * height / gh)
    pw, ph = gw * scale, gh * scale
    px, py = place(lrng, look, width - pw, pw), place(lrng, look, height - ph, ph)
    dx, dy = cut_shift(lrng, look, width, height, (px, py, pw, ph))
    px, py = px + dx, py + dy
    frame = _Frame(scale, angle, np.array([px, py]) - lo * scale)
    x0, y0, cw, ch, offset, alpha_img, detail_img, hw_img = rasterise(shape, frame, width, height, scale)
    if cw <= 0 or ch <= 0:
        raise ValueError(f"synth item {seed}/{index}: the product left the frame")
    prod, colour = appearance(rng, style, shape, frame, offset, cw, ch, angle, scale, alpha_img, detail_img,
                              hw_img)
    canvas = np.empty((height, width, 3), np.float32)
    canvas[:] = colour * np.float32(0.92)
    paste(canvas, prod, x0, y0)
    coverage = paste(np.zeros((height, width), np.float32),
                     np.asarray(alpha_img, np.float32) * np.float32(1 / 255), x0, y0)
    return compose(lrng, look, style, colour, canvas, coverage, max(pw, ph))
