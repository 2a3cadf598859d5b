"""What the studio and the camera contribute: photo size, product colour, the backdrop sweep, the
local-to-pixel frame and layer drawing, smooth noise, print patterns and fabric textures.

:func:`pick_size`, :func:`pick_colour` and :func:`background` are shared with the Fashion-MNIST
renderer (:mod:`backdrop.data.fashion_mnist`).
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

from backdrop.data.synth.geometry import _Op, uniform

# width / height of the photo and how often each occurs: portrait product photos, some square.
_ASPECTS = ((2 / 3, 0.30), (3 / 4, 0.28), (4 / 5, 0.25), (1.0, 0.17))

# Apparel colours (sRGB) for the "normal" style; a share of items draws a random hue instead.
# fmt: off
_PALETTE = np.array(
    [
        (28, 38, 68), (52, 54, 60), (148, 149, 154), (168, 32, 38), (108, 28, 42), (92, 98, 56),
        (186, 164, 122), (206, 190, 164), (58, 84, 124), (122, 150, 184), (40, 70, 160),
        (142, 180, 218), (204, 158, 44), (218, 108, 42), (230, 160, 176), (206, 62, 120),
        (170, 150, 200), (160, 208, 188), (32, 118, 124), (36, 80, 56), (98, 64, 44), (170, 120, 76),
        (232, 222, 198), (80, 96, 112), (196, 84, 72), (116, 132, 92),
    ],
    dtype=np.float32,
)
_DENIM = np.array([(44, 62, 98), (58, 84, 124), (92, 122, 162), (124, 152, 186), (38, 40, 48)], np.float32)
_LEATHER = np.array([(150, 98, 58), (96, 60, 38), (40, 34, 32), (118, 30, 36), (196, 170, 136)], np.float32)
# fmt: on


def pick_size(rng, min_side: int, max_side: int) -> tuple[int, int]:
    lo, hi = int(min_side), int(max_side)
    if lo < 1 or hi < lo:
        raise ValueError(f"need 1 <= min_side <= max_side, got {min_side}, {max_side}")
    weights = np.array([w for _, w in _ASPECTS])
    aspect = _ASPECTS[int(rng.choice(len(_ASPECTS), p=weights / weights.sum()))][0]
    long_lo = min(hi, math.ceil(lo / aspect))
    long_side = int(rng.integers(long_lo, hi + 1))
    short_side = int(min(max(round(long_side * aspect), lo), hi))
    return short_side, long_side  # width, height: portrait or square


def pick_colour(rng, style: str, fabric: str) -> np.ndarray:
    if style == "white_on_white":
        return np.full(3, uniform(rng, 228, 250), np.float32) + rng.uniform(-3, 3, 3).astype(np.float32)
    if style == "black_on_black":
        return np.full(3, uniform(rng, 12, 34), np.float32) + rng.uniform(-3, 3, 3).astype(np.float32)
    if fabric == "denim":
        base = _DENIM[int(rng.integers(len(_DENIM)))]
    elif fabric == "leather":
        base = _LEATHER[int(rng.integers(len(_LEATHER)))]
    elif rng.random() < 0.3:  # a random hue
        h, s, v = uniform(rng, 0, 1), uniform(rng, 0.2, 0.7), uniform(rng, 0.3, 0.85)
        i, f = int(h * 6) % 6, h * 6 - int(h * 6)
        p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
        base = (
            np.array([(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i], np.float32) * 255
        )
    else:
        base = _PALETTE[int(rng.integers(len(_PALETTE)))]
    return np.clip(base * uniform(rng, 0.9, 1.1) + rng.uniform(-8, 8, 3), 8, 245).astype(np.float32)


def background(rng, style: str) -> tuple[np.ndarray, np.ndarray]:
    """Top and bottom colour of the studio sweep."""
    if style == "white_on_white":
        top = np.full(3, uniform(rng, 238, 255), np.float32)
        tint = rng.uniform(-2, 2, 3)
    elif style == "black_on_black":
        top = np.full(3, uniform(rng, 38, 72), np.float32)
        tint = rng.uniform(-2, 2, 3)
    else:
        kind = rng.random()
        if kind < 0.4:  # white
            top = np.full(3, uniform(rng, 236, 252), np.float32)
            tint = rng.uniform(-2, 2, 3)
        elif kind < 0.75:  # light grey
            top = np.full(3, uniform(rng, 196, 236), np.float32)
            tint = rng.uniform(-3, 3, 3)
        else:  # beige / warm paper
            top = np.array([uniform(rng, 225, 245)] * 3, np.float32)
            tint = np.array([4.0, 0.0, -8.0]) * uniform(rng, 0.5, 1.6)
    top = top + tint.astype(np.float32)
    bottom = top * uniform(rng, 0.88, 1.04)
    return np.clip(top, 0, 255), np.clip(bottom, 0, 255)


class _Frame:
    """Local product units -> pixel coordinates (scale, rotation, translation)."""

    def __init__(self, scale: float, angle: float, origin: np.ndarray):
        c, s = math.cos(angle), math.sin(angle)
        self.m = np.array([[c, -s], [s, c]]) * scale
        self.origin = origin
        self.scale = scale

    def __call__(self, pts: np.ndarray) -> np.ndarray:
        return pts @ self.m.T + self.origin


def _draw_layer(
    ops: list[_Op], layer: str, frame: _Frame, size, ss: int, offset, base: int
) -> Image.Image | None:
    chosen = [o for o in ops if o.layer == layer]
    if not chosen:
        return None
    img = Image.new("L", (size[0] * ss, size[1] * ss), base)
    draw = ImageDraw.Draw(img)
    for op in chosen:
        xy = (frame(op.pts) - offset) * ss
        pts = [tuple(p) for p in xy.tolist()]
        if op.kind == "poly":
            if len(pts) >= 3:
                draw.polygon(pts, fill=op.value)
        else:
            w = max(1, int(round(op.width * frame.scale * ss)))
            if len(pts) == 1:
                (x, y), r = pts[0], w / 2
                draw.ellipse((x - r, y - r, x + r, y + r), fill=op.value)
            else:
                draw.line(pts, fill=op.value, width=w, joint="curve")
                r = w / 2  # round caps
                for x, y in (pts[0], pts[-1]):
                    draw.ellipse((x - r, y - r, x + r, y + r), fill=op.value)
    return img.reduce(ss) if ss > 1 else img


def _resize_f(arr: np.ndarray, size: tuple[int, int], resample=Image.Resampling.BILINEAR) -> np.ndarray:
    return np.asarray(Image.fromarray(arr.astype(np.float32), mode="F").resize(size, resample))


def _smooth_noise(rng, shape: tuple[int, int], cells: int) -> np.ndarray:
    h, w = shape
    gh, gw = max(2, round(cells * h / max(h, w))), max(2, round(cells * w / max(h, w)))
    return _resize_f(rng.standard_normal((gh, gw)).astype(np.float32), (w, h), Image.Resampling.BICUBIC)


def _print_pattern(rng, colour: np.ndarray, style: str, shape, angle: float, scale: float, printable: bool):
    """Base albedo of the product crop: (h, w, 3) float32, or a (3,) colour for a solid product."""
    r = rng.random()
    kind = "solid"
    if printable:
        if style == "normal":
            kind = "stripes" if r < 0.14 else "checks" if r < 0.22 else "dots" if r < 0.3 else "solid"
        elif r < 0.08:
            kind = "stripes"
    if kind == "solid":
        return colour
    h, w = shape
    period = max(4.0, scale * uniform(rng, 0.025, 0.09))
    c, s = math.cos(angle), math.sin(angle)
    ys = np.arange(h, dtype=np.float32)[:, None]
    xs = np.arange(w, dtype=np.float32)[None, :]
    u = (xs * c + ys * s) / period
    v = (ys * c - xs * s) / period
    if style != "normal":
        other = colour * uniform(rng, 0.9, 0.96)
    elif rng.random() < 0.5:
        other = np.array([238, 236, 230], np.float32) * uniform(rng, 0.95, 1.02)
    else:
        other = _PALETTE[int(rng.integers(len(_PALETTE)))]

    def band(t, duty):
        tri = np.abs((t % 1.0) - 0.5) * 2.0  # 0 in the band centre, 1 at its edge
        return np.clip((duty - tri) * period * 0.5 + 0.5, 0.0, 1.0)

    if kind == "stripes":
        wgt = band(v if rng.random() < 0.8 else u, uniform(rng, 0.2, 0.6))
    elif kind == "checks":
        wgt = 0.5 * (band(u, 0.5) + band(v, 0.5))
    else:
        radius = uniform(rng, 0.12, 0.3)
        row = np.floor(v)
        fu = ((u + 0.5 * (row % 2)) % 1.0) - 0.5
        fv = (v % 1.0) - 0.5
        wgt = np.clip((radius - np.sqrt(fu * fu + fv * fv)) * period + 0.5, 0.0, 1.0)
    wgt = wgt[..., None]
    return colour * (1.0 - wgt) + other * wgt


def _streaky_noise(rng, shape) -> np.ndarray:
    h, w = shape
    small = rng.standard_normal((max(2, h // 2), max(2, w // 6)), dtype=np.float32)
    return _resize_f(small, (w, h)) * np.float32(1.6)


def _fabric_texture(rng, fabric: str, shape) -> np.ndarray | None:
    """Fine multiplicative texture of the cloth, float32 around 1 broadcastable to (h, w), or None."""
    h, w = shape
    if fabric == "heather":  # flecked yarn: grain stretched along the rows
        return 1.0 + _streaky_noise(rng, shape) * np.float32(uniform(rng, 0.01, 0.025))
    if fabric == "denim":
        ys = np.arange(h, dtype=np.float32)[:, None]
        xs = np.arange(w, dtype=np.float32)[None, :]
        twill = np.sin((xs + ys) * np.float32(2 * math.pi / uniform(rng, 3.0, 5.0)))
        return 1.0 + np.float32(0.035) * twill + _streaky_noise(rng, shape) * np.float32(0.02)
    if fabric == "knit":  # vertical ribs, (1, w) broadcasts over the rows
        xs = np.arange(w, dtype=np.float32)[None, :]
        return 1.0 + np.float32(0.04) * np.sin(xs * np.float32(2 * math.pi / uniform(rng, 3.0, 6.0)))
    return None
