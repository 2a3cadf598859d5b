"""The product on its crop: rasterised layers (:func:`rasterise`) and lit, printed, textured pixels
(:func:`appearance`). Shared by the classic render and the broad one (:mod:`.broad`); the random
draws happen in exactly the order the classic render always made them, so its bytes never change.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from backdrop.data.synth.geometry import _Shape, uniform
from backdrop.data.synth.studio import (
    _draw_layer,
    _fabric_texture,
    _Frame,
    _print_pattern,
    _resize_f,
    _smooth_noise,
    pick_colour,
)

_METALS = np.array([(212, 184, 120), (200, 202, 206), (150, 130, 96), (60, 60, 64)], np.float32)


def rasterise(shape: _Shape, frame: _Frame, width: int, height: int, scale: float):
    """(x0, y0, cw, ch, offset, alpha, detail, hw): the product's crop inside the photo and its three
    layers drawn 2-4x supersampled there (alpha = soft coverage, detail/hw may be None)."""
    all_px = frame(np.concatenate([o.pts for o in shape.ops]))
    pad = 3 + max((o.width for o in shape.ops), default=0.0) * scale
    x0 = int(max(0, math.floor(all_px[:, 0].min() - pad)))
    y0 = int(max(0, math.floor(all_px[:, 1].min() - pad)))
    x1 = int(min(width, math.ceil(all_px[:, 0].max() + pad)))
    y1 = int(min(height, math.ceil(all_px[:, 1].max() + pad)))
    cw, ch = x1 - x0, y1 - y0
    ss = 4 if max(width, height) <= 500 else 3 if max(width, height) <= 900 else 2
    offset = np.array([x0, y0], np.float64)
    alpha_img = _draw_layer(shape.ops, "mask", frame, (cw, ch), ss, offset, 0)
    detail_img = _draw_layer(shape.ops, "detail", frame, (cw, ch), ss, offset, 128)
    hw_img = _draw_layer(shape.ops, "hw", frame, (cw, ch), ss, offset, 0)
    return x0, y0, cw, ch, offset, alpha_img, detail_img, hw_img


def appearance(rng, style: str, shape: _Shape, frame: _Frame, offset: np.ndarray, cw: int, ch: int,
               angle: float, scale: float, alpha_img, detail_img, hw_img) -> tuple[np.ndarray, np.ndarray]:
    """(product pixels (ch, cw, 3) float32 before compositing, base colour): print, shading, folds,
    darker edges, seams, fabric texture, sheen, hardware."""
    colour = pick_colour(rng, style, shape.fabric)
    albedo = _print_pattern(rng, colour, style, (ch, cw), angle, scale, shape.printable)
    lq = 4
    sw_, sh_ = max(2, cw // lq), max(2, ch // lq)
    shading = 1.0 + _smooth_noise(rng, (sh_, sw_), int(rng.integers(3, 7))) * np.float32(
        uniform(rng, 0.015, 0.04)
    )
    ang = uniform(rng, 0, 2 * math.pi)
    gx = (np.arange(sw_, dtype=np.float32)[None, :] / sw_ - 0.5) * np.float32(math.cos(ang))
    gy = (np.arange(sh_, dtype=np.float32)[:, None] / sh_ - 0.5) * np.float32(math.sin(ang))
    shading += (gx + gy) * np.float32(uniform(rng, 0.06, 0.18))
    fold_img = Image.new("L", (sw_, sh_), 128)
    fdraw = ImageDraw.Draw(fold_img)
    for pts, fw, sign in shape.folds:  # a crease: a shadow line with a highlight beside it
        xy = (frame(pts) - offset) / lq
        wpx = max(1.0, fw * scale / lq)
        d = xy[-1] - xy[0]
        perp = np.array([-d[1], d[0]]) / max(1e-6, float(np.hypot(*d))) * wpx * 0.9
        fdraw.line([tuple(p) for p in xy.tolist()], fill=int(128 + sign * 70), width=int(wpx), joint="curve")
        fdraw.line(
            [tuple(p) for p in (xy + perp).tolist()], fill=int(128 - sign * 40), width=int(wpx), joint="curve"
        )
    fold_img = fold_img.filter(ImageFilter.GaussianBlur(max(1.0, 0.015 * scale / lq)))
    shading += (np.asarray(fold_img, np.float32) - 128.0) * np.float32(uniform(rng, 0.1, 0.25) / 128)
    edge = alpha_img.resize((sw_, sh_), Image.Resampling.BILINEAR).filter(
        ImageFilter.GaussianBlur(max(1.0, 0.01 * scale / lq))
    )
    edge_f = np.asarray(edge, np.float32) * np.float32(1 / 255)
    shading *= 1.0 - np.float32(uniform(rng, 0.15, 0.4)) * np.clip(1.0 - edge_f, 0.0, 1.0) ** 2 * 1.5
    shading = _resize_f(shading, (cw, ch))
    detail = np.asarray(detail_img, np.float32) * np.float32(1 / 128) if detail_img is not None else 1.0
    texture = _fabric_texture(rng, shape.fabric, (ch, cw))
    lum = shading * detail if texture is None else shading * detail * texture
    sheen = np.float32(uniform(rng, 20, 50) if float(colour.mean()) < 70 else uniform(rng, 0, 12))
    prod = lum[..., None] * (albedo + sheen)
    prod -= sheen - np.float32(0.5)  # albedo * lum + sheen * (lum - 1), +0.5 to round on the cast
    if shape.fabric == "leather":  # glossy highlights on the folds
        prod += (np.clip(shading - 1.0, 0.0, None) * np.float32(uniform(rng, 60, 140)))[..., None]
    if hw_img is not None and (box := hw_img.getbbox()) is not None:
        metal = _METALS[int(rng.integers(len(_METALS)))]
        bx0, by0, bx1, by1 = box
        hw_a = np.asarray(hw_img.crop(box), np.float32)[..., None] * np.float32(1 / 255)
        part = prod[by0:by1, bx0:bx1]
        shine = 0.75 + 0.35 * shading[by0:by1, bx0:bx1, None]
        prod[by0:by1, bx0:bx1] = part + (metal * shine - part) * hw_a
    return prod, colour
