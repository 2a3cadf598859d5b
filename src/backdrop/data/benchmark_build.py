"""Build the out-of-distribution benchmark: photos no training renderer produces (issue 19).

A model fine-tuned on one renderer learns that renderer's look; its own val and test splits come
from the same renderer and cannot show it. This benchmark is made from products the training drop
never holds — the Fashion-MNIST **test** split (train and test are disjoint sets of images; test
images whose exact 28×28 bytes also occur in the train split are skipped) — by a renderer of its own
that shares no backdrop, light, shadow or camera code with `backdrop data synth` / `fashion-mnist`:

- ``studio``: a lit studio: coloured gel light pools, two-tone wall/floor splits with a hard
  horizon, backlit white, diagonal duotones; a key light and a rim light on the product, two lamps
  casting two shadows; a lens with barrel/pincushion distortion (photo and mask alike), chromatic
  aberration, signal-dependent shot noise, JPEG 4:2:0;
- ``props``: a flat lay on wood, marble, tiles, brick or terrazzo, beside props that are background
  (mugs, plants, books, glasses, cards, pebbles) with their own shadows.

Every photo is a pure function of ``(seed, style, source index)``; the set is written as
``index.csv`` (``id,image,mask,style,part``; part val | test by a hash of the id, the format
:mod:`backdrop.data.benchmark` reads), ``images/<id>.jpg``, ``masks/<id>.png`` (0/255),
``sources.csv`` (the source split and index of each product and the sha256 of each file: the
no-overlap check) and ``benchmark.json`` (``"training": false``, the idx files' sha256).
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from backdrop.io import atomic_path, write_csv, write_json

STYLES = ("studio", "props")
INDEX_FIELDS = ["id", "image", "mask", "style", "part"]
SOURCE_FIELDS = ["id", "style", "source", "split", "source_index", "class_name", "width", "height",
                 "photo_sha256", "mask_sha256"]
_STYLE_SALT = {"studio": 0x57D1, "props": 0x960B}
_ASPECTS = (3 / 4, 4 / 3, 1.0, 2 / 3, 3 / 2, 16 / 9, 9 / 16)


def part_of(item_id: str, val_share: float) -> str:
    """val | test: a deterministic split by a hash of the id (stable when n grows)."""
    return "val" if int(hashlib.sha256(item_id.encode()).hexdigest()[:8], 16) / 2**32 < val_share else "test"


def pick_products(test_images: np.ndarray, train_images: np.ndarray, n: int, seed: int) -> dict[str, list[int]]:
    """Test-split indices per style: a seeded permutation dealt out alternately (a larger n extends a
    smaller one), skipping test images whose bytes also occur in the train split."""
    train = {img.tobytes() for img in train_images}
    order = np.random.default_rng([int(seed), 0xBE7C]).permutation(len(test_images))
    eligible = [int(i) for i in order if test_images[i].tobytes() not in train]
    if 2 * n > len(eligible):
        raise ValueError(f"benchmark.n = {n} per style needs {2 * n} test products, only {len(eligible)} exist")
    return {style: eligible[k::len(STYLES)][:n] for k, style in enumerate(STYLES)}


# ---------------------------------------------------------------------------------------------- helpers

def _size(rng, lo: int, hi: int) -> tuple[int, int]:
    aspect = _ASPECTS[int(rng.integers(len(_ASPECTS)))]
    long_side = int(rng.integers(lo, hi + 1))
    short = int(min(max(round(long_side * min(aspect, 1 / aspect)), lo), hi))
    return (short, long_side) if aspect < 1 else (long_side, short) if aspect > 1 else (long_side, long_side)


def _u(rng, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    i, f = int(h * 6) % 6, h * 6 - int(h * 6)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    return np.array([(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i], np.float32) * 255


def _grid(width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    return (np.arange(width, dtype=np.float32)[None, :] + 0.5) / width, \
           (np.arange(height, dtype=np.float32)[:, None] + 0.5) / height


def _coverage(pixels: np.ndarray, side: int) -> np.ndarray:
    """Soft coverage (side, side): the 28×28 product upsampled 4× (bicubic), thresholded, box-averaged.

    Fashion-MNIST is negated: white parts of a product (a white print, a light collar) fall below the
    threshold like the white catalogue background did. Small enclosed gaps (< 3 % of the product) are
    such parts and become product again; larger ones (between a bag's handle and its body, a sandal's
    straps) stay see-through. Specks (pieces < 1 % of the product) are dropped."""
    from scipy import ndimage

    x = Image.fromarray(pixels.astype(np.float32) / 255, mode="F").resize((side * 4, side * 4),
                                                                          Image.Resampling.BICUBIC)
    on = np.asarray(x) > 0.12
    area = max(1, int(on.sum()))
    gaps, n = ndimage.label(~on)
    if n:
        sizes = np.bincount(gaps.ravel())
        border = np.unique(np.concatenate([gaps[0], gaps[-1], gaps[:, 0], gaps[:, -1]]))
        small = np.nonzero(sizes < 0.03 * area)[0]
        on |= np.isin(gaps, np.setdiff1d(small[small > 0], border))
    parts, n = ndimage.label(on)
    if n > 1:
        sizes = np.bincount(parts.ravel())
        sizes[0] = 0
        on &= np.isin(parts, np.nonzero(sizes >= 0.01 * area)[0])
    hi = Image.fromarray(on.astype(np.uint8) * 255, "L")
    return np.asarray(hi.reduce(4), np.float32) / 255


def _luminance(pixels: np.ndarray, side: int) -> np.ndarray:
    x = Image.fromarray(pixels.astype(np.float32) / 255, mode="F").resize((side, side), Image.Resampling.BICUBIC)
    return 1.0 - np.clip(np.asarray(x), 0, 1)


def _place(canvas: np.ndarray, part: np.ndarray, x0: int, y0: int) -> np.ndarray:
    h, w = part.shape[:2]
    canvas[y0:y0 + h, x0:x0 + w] = part
    return canvas


def _blur(arr: np.ndarray, radius: float) -> np.ndarray:
    img = Image.fromarray(np.clip(arr * 255 + 0.5, 0, 255).astype(np.uint8), "L")
    return np.asarray(img.filter(ImageFilter.GaussianBlur(max(0.5, radius))), np.float32) / 255


def _shift(arr: np.ndarray, dx: float, dy: float) -> np.ndarray:
    img = Image.fromarray(np.clip(arr * 255 + 0.5, 0, 255).astype(np.uint8), "L")
    return np.asarray(img.transform(img.size, Image.Transform.AFFINE, (1, 0, -dx, 0, 1, -dy),
                                    Image.Resampling.BILINEAR), np.float32) / 255


def _bilinear(arr: np.ndarray, sx: np.ndarray, sy: np.ndarray) -> np.ndarray:
    """Sample ``arr`` (H, W[, C]) at float coordinates (edge-clamped)."""
    h, w = arr.shape[:2]
    sx, sy = np.clip(sx, 0, w - 1.001), np.clip(sy, 0, h - 1.001)
    x0, y0 = sx.astype(np.int32), sy.astype(np.int32)
    fx, fy = sx - x0, sy - y0
    if arr.ndim == 3:
        fx, fy = fx[..., None], fy[..., None]
    top = arr[y0, x0] * (1 - fx) + arr[y0, x0 + 1] * fx
    bottom = arr[y0 + 1, x0] * (1 - fx) + arr[y0 + 1, x0 + 1] * fx
    return top * (1 - fy) + bottom * fy


def _product_colour(rng, kind: str) -> np.ndarray:
    if kind == "white":
        return np.full(3, _u(rng, 225, 250), np.float32)
    if kind == "black":
        return np.full(3, _u(rng, 10, 35), np.float32)
    if rng.random() < 0.3:
        return np.full(3, _u(rng, 60, 200), np.float32) * np.array([1.0, _u(rng, 0.95, 1.02), _u(rng, 0.9, 1.05)],
                                                                   np.float32)
    return _hsv(_u(rng, 0, 1), _u(rng, 0.15, 0.85), _u(rng, 0.25, 0.9))


# ---------------------------------------------------------------------------------------------- studio

def _studio_backdrop(rng, width: int, height: int, tone: str) -> np.ndarray:
    xx, yy = _grid(width, height)
    kind = ("gel", "split", "backlit", "duotone")[int(rng.integers(4))]
    if tone == "white":
        kind = "backlit"
    if kind == "gel":  # a grey cyclorama under a coloured light pool
        base = np.full(3, _u(rng, 60, 170) if tone != "black" else _u(rng, 25, 60), np.float32)
        gel = _hsv(_u(rng, 0, 1), _u(rng, 0.4, 0.9), 1.0) / 255
        cx, cy, r = _u(rng, 0.3, 0.7), _u(rng, 0.3, 0.7), _u(rng, 0.25, 0.6)
        pool = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (r * r))[..., None]
        return base * (0.7 + pool * gel * _u(rng, 0.6, 1.3))
    if kind == "split":  # wall and floor of different colours, a hard horizon
        wall = _hsv(_u(rng, 0, 1), _u(rng, 0.0, 0.5), _u(rng, 0.35, 0.95))
        floor = _hsv(_u(rng, 0, 1), _u(rng, 0.0, 0.5), _u(rng, 0.35, 0.95))
        if tone == "black":
            wall, floor = wall * 0.25, floor * 0.3
        horizon = _u(rng, 0.35, 0.75)
        return np.where((yy < horizon)[..., None], wall * (0.9 + 0.1 * yy[..., None]), floor * (1.05 - 0.1 * yy[..., None]))
    if kind == "backlit":  # bright centre falling off towards the edges
        centre = _u(rng, 240, 255)
        edge = _u(rng, 150, 215)
        r2 = ((xx - 0.5) ** 2 + (yy - 0.5) ** 2) / 0.5
        return np.repeat((centre - (centre - edge) * r2 ** _u(rng, 0.6, 1.5))[..., None], 3, axis=2)
    a = _hsv(_u(rng, 0, 1), _u(rng, 0.1, 0.6), _u(rng, 0.4, 0.95))
    b = _hsv(_u(rng, 0, 1), _u(rng, 0.1, 0.6), _u(rng, 0.4, 0.95))
    if tone == "black":
        a, b = a * 0.3, b * 0.3
    ang = _u(rng, 0, math.pi)
    t = (xx - 0.5) * math.cos(ang) + (yy - 0.5) * math.sin(ang)
    w = 1 / (1 + np.exp(-t / _u(rng, 0.01, 0.08)))
    return a * (1 - w[..., None]) + b * w[..., None]


def _lens(rng, photo: np.ndarray, coverage: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Radial distortion of photo and coverage alike; chromatic aberration of the photo only."""
    h, w = coverage.shape
    k = _u(rng, 0.03, 0.1) * (1 if rng.random() < 0.6 else -1)  # barrel | pincushion
    xs, ys = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    cx, cy, norm = (w - 1) / 2, (h - 1) / 2, math.hypot(w, h) / 2
    dx, dy = (xs - cx) / norm, (ys - cy) / norm
    r2 = dx * dx + dy * dy
    scale = (1 + k * r2) / (1 + k * 0.5)  # keeps the corners about in place
    out = np.empty_like(photo)
    ca = _u(rng, 0.0, 0.004)
    for c, extra in ((0, 1 + ca), (1, 1.0), (2, 1 - ca)):
        out[..., c] = _bilinear(photo[..., c], cx + dx * norm * scale * extra, cy + dy * norm * scale * extra)
    return out, _bilinear(coverage, cx + dx * norm * scale, cy + dy * norm * scale)


def render_studio(pixels: np.ndarray, source_index: int, seed: int, min_side: int, max_side: int):
    """(RGB photo, L mask 0/255) of one test product in the benchmark's studio."""
    rng = np.random.default_rng([int(seed), _STYLE_SALT["studio"], int(source_index)])
    width, height = _size(rng, min_side, max_side)
    r = rng.random()
    tone = "white" if r < 0.15 else "black" if r < 0.27 else "normal"
    photo = np.broadcast_to(_studio_backdrop(rng, width, height, tone), (height, width, 3)).astype(np.float32)
    side = int(round(min(width, height) * _u(rng, 0.5, 0.95)))
    x0 = int(rng.integers(0, width - side + 1))
    y0 = int(rng.integers(0, height - side + 1))
    cov = _coverage(pixels, side)
    coverage = _place(np.zeros((height, width), np.float32), cov, x0, y0)
    # two lamps, two shadows
    for _ in range(int(rng.integers(1, 3))):
        ang = _u(rng, 0, 2 * math.pi)
        d = _u(rng, 0.02, 0.1) * side
        shadow = _blur(_shift(coverage, d * math.cos(ang), d * math.sin(ang)), _u(rng, 0.005, 0.05) * side)
        photo *= (1 - _u(rng, 0.1, 0.35) * shadow)[..., None]
    # the product: its own luminance, a key light across it, a rim light on its edge
    colour = _product_colour(rng, tone)
    lum = _luminance(pixels, side)
    ang = _u(rng, 0, 2 * math.pi)
    u = (np.arange(side, dtype=np.float32)[None, :] / side - 0.5) * math.cos(ang) + \
        (np.arange(side, dtype=np.float32)[:, None] / side - 0.5) * math.sin(ang)
    shade = (_u(rng, 0.5, 0.65) + _u(rng, 0.35, 0.5) * lum) * (1 + _u(rng, 0.1, 0.5) * u)
    rim = np.clip(cov - _blur(cov, max(1.0, 0.02 * side)), 0, 1) * _u(rng, 0, 90)
    product = colour * shade[..., None] + rim[..., None]
    a = cov[..., None]
    crop = photo[y0:y0 + side, x0:x0 + side]
    photo[y0:y0 + side, x0:x0 + side] = crop + (np.clip(product, 0, 255) - crop) * a
    photo, coverage = _lens(rng, photo, coverage)
    sigma = np.sqrt(np.clip(photo, 0, 255)) * _u(rng, 0.1, 0.35) + _u(rng, 0.3, 1.2)  # shot + read noise
    photo = photo + rng.standard_normal(photo.shape, dtype=np.float32) * sigma
    img = Image.fromarray(np.clip(photo + 0.5, 0, 255).astype(np.uint8), "RGB")
    return img, Image.fromarray(np.where(coverage >= 0.5, 255, 0).astype(np.uint8), "L"), \
        {"quality": int(rng.integers(70, 96)), "subsampling": 2}


# ---------------------------------------------------------------------------------------------- props

def _surface(rng, width: int, height: int) -> np.ndarray:
    xx, yy = _grid(width, height)
    xs, ys = xx * width, yy * height
    kind = ("wood", "marble", "tiles", "brick", "terrazzo")[int(rng.integers(5))]
    if kind == "wood":  # planks with rings
        base = np.array([_u(rng, 120, 200), _u(rng, 80, 140), _u(rng, 45, 90)], np.float32)
        plank = _u(rng, 80, 200)
        row = np.floor(ys / plank)
        rings = np.sin((xs * _u(rng, 0.02, 0.06) + np.sin(ys * 0.05 + row * 7) * 3 + row * 13) * 2) * 0.08
        seams = (np.abs((ys % plank) - plank / 2) > plank / 2 - 1.5) * -0.35
        return base * (1 + rings + seams + 0.05 * np.sin(row * 3.1))[..., None]
    if kind == "marble":
        base = np.full(3, _u(rng, 200, 245), np.float32)
        turb = sum(np.sin(xs * f * _u(rng, 0.5, 1.5) + ys * f * _u(rng, 0.5, 1.5) + _u(rng, 0, 6)) / f
                   for f in (0.01, 0.023, 0.051))
        veins = np.exp(-np.abs(np.sin(xs * 0.01 + ys * 0.006 + turb * 2)) * _u(rng, 6, 20))
        return base * (1 - 0.35 * veins)[..., None]
    if kind in ("tiles", "brick"):
        cell = _u(rng, 40, 140)
        cw, chh = (cell, cell) if kind == "tiles" else (cell * 2, cell * 0.8)
        row = np.floor(ys / chh)
        off = (row % 2) * cw / 2 if kind == "brick" else 0
        gx, gy = (xs + off) % cw, ys % chh
        grout = (np.minimum(gx, cw - gx) < 2.5) | (np.minimum(gy, chh - gy) < 2.5)
        face = _hsv(_u(rng, 0, 1), _u(rng, 0.0, 0.5), _u(rng, 0.4, 0.95)) if kind == "tiles" else \
            np.array([_u(rng, 140, 190), _u(rng, 60, 90), _u(rng, 40, 70)], np.float32)
        mortar = np.full(3, _u(rng, 120, 220), np.float32)
        jitter = 1 + 0.06 * np.sin(np.floor((xs + off) / cw) * 12.9 + row * 78.2)
        return np.where(grout[..., None], mortar, face * jitter[..., None])
    base = np.full(3, _u(rng, 170, 235), np.float32)  # terrazzo: chips on a pale ground
    img = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8)[None, None, :].repeat(height, 0).repeat(width, 1))
    draw = ImageDraw.Draw(img)
    for _ in range(int(width * height / 900)):
        x, y, r = _u(rng, 0, width), _u(rng, 0, height), _u(rng, 1.5, 7)
        c = tuple(int(v) for v in _hsv(_u(rng, 0, 1), _u(rng, 0.0, 0.7), _u(rng, 0.2, 0.95)))
        draw.polygon([(x + r * math.cos(t), y + r * math.sin(t)) for t in np.linspace(0, 6.28, 5)
                      + rng.uniform(0, 0.6, 5)], fill=c)
    return np.asarray(img, np.float32)


def _prop(rng, draw: ImageDraw.ImageDraw, shade: ImageDraw.ImageDraw, x: float, y: float, s: float) -> None:
    """One prop of size ~s at (x, y): drawn on the photo and its footprint on the shadow layer."""
    kind = ("mug", "plant", "book", "glasses", "card", "pebbles")[int(rng.integers(6))]
    c = tuple(int(v) for v in _hsv(_u(rng, 0, 1), _u(rng, 0.1, 0.8), _u(rng, 0.2, 0.95)))
    dark = tuple(int(v * 0.6) for v in c)
    if kind == "mug":
        r = s * 0.35
        for d in (draw, shade):
            d.ellipse((x + r * 0.8, y - r * 0.35, x + r * 1.5, y + r * 0.35), outline=c if d is draw else 255,
                      width=max(2, int(r * 0.15)))
            d.ellipse((x - r, y - r, x + r, y + r), fill=c if d is draw else 255)
        draw.ellipse((x - r * 0.8, y - r * 0.8, x + r * 0.8, y + r * 0.8), fill=(70, 45, 30))
    elif kind == "plant":
        r = s * 0.25
        for _ in range(int(rng.integers(5, 10))):
            a, ln = _u(rng, 0, 2 * math.pi), _u(rng, 0.5, 1.0) * s * 0.5
            lx, ly = x + math.cos(a) * ln, y + math.sin(a) * ln
            green = (int(_u(rng, 30, 90)), int(_u(rng, 100, 170)), int(_u(rng, 40, 90)))
            for d in (draw, shade):
                d.ellipse((lx - r * 0.5, ly - r * 0.5, lx + r * 0.5, ly + r * 0.5), fill=green if d is draw else 255)
        for d in (draw, shade):
            d.ellipse((x - r, y - r, x + r, y + r), fill=c if d is draw else 255)
    elif kind == "book":
        w, h = s * _u(rng, 0.5, 0.8), s * _u(rng, 0.7, 1.0)
        for d in (draw, shade):
            d.rectangle((x - w / 2, y - h / 2, x + w / 2, y + h / 2), fill=c if d is draw else 255)
        draw.rectangle((x - w / 2, y - h / 2, x - w / 2 + w * 0.08, y + h / 2), fill=dark)
    elif kind == "glasses":  # thin rims and a bridge: background with holes in it
        r, t = s * 0.2, max(2, int(s * 0.03))
        for d in (draw, shade):
            for ox in (-r * 1.15, r * 1.15):
                d.ellipse((x + ox - r, y - r * 0.8, x + ox + r, y + r * 0.8), outline=dark if d is draw else 255,
                          width=t)
            d.line((x - r * 0.2, y, x + r * 0.2, y), fill=dark if d is draw else 255, width=t)
    elif kind == "card":
        w, h = s * 0.6, s * 0.35
        for d in (draw, shade):
            d.rectangle((x - w / 2, y - h / 2, x + w / 2, y + h / 2), fill=(245, 243, 236) if d is draw else 255)
        for k in range(3):
            yy = y - h / 4 + k * h / 5
            draw.line((x - w * 0.4, yy, x + w * _u(rng, -0.1, 0.4), yy), fill=(40, 40, 40), width=max(1, int(h / 14)))
    else:
        for _ in range(int(rng.integers(3, 7))):
            px, py, r = x + _u(rng, -s / 2, s / 2), y + _u(rng, -s / 2, s / 2), _u(rng, 0.06, 0.14) * s
            g = tuple(int(v) for v in np.full(3, _u(rng, 80, 200)))
            for d in (draw, shade):
                d.ellipse((px - r, py - r * 0.8, px + r, py + r * 0.8), fill=g if d is draw else 255)


def render_props(pixels: np.ndarray, source_index: int, seed: int, min_side: int, max_side: int):
    """(RGB photo, L mask 0/255) of one test product in a flat lay among props."""
    rng = np.random.default_rng([int(seed), _STYLE_SALT["props"], int(source_index)])
    width, height = _size(rng, min_side, max_side)
    surface = np.broadcast_to(_surface(rng, width, height), (height, width, 3))
    side = int(round(min(width, height) * _u(rng, 0.4, 0.7)))
    x0 = int(rng.integers(0, width - side + 1))
    y0 = int(rng.integers(0, height - side + 1))
    cov = _coverage(pixels, side)
    coverage = _place(np.zeros((height, width), np.float32), cov, x0, y0)
    keep_out = np.asarray(Image.fromarray((coverage > 0).astype(np.uint8) * 255).filter(
        ImageFilter.BoxBlur(max(2, side // 25)))) > 0
    img = Image.fromarray(np.clip(surface, 0, 255).astype(np.uint8), "RGB")
    foot = Image.new("L", (width, height), 0)
    for _ in range(int(rng.integers(2, 6))):  # props only where they stay clear of the product
        s = min(width, height) * _u(rng, 0.15, 0.35)
        for _try in range(12):
            x, y = _u(rng, 0, width), _u(rng, 0, height)
            box = keep_out[max(0, int(y - s)):int(y + s), max(0, int(x - s)):int(x + s)]
            if not box.any():
                layer, shade = img.copy(), Image.new("L", (width, height), 0)
                _prop(rng, ImageDraw.Draw(layer), ImageDraw.Draw(shade), x, y, s)
                img.paste(layer, (0, 0), shade)
                foot.paste(255, (0, 0), shade)
                break
    photo = np.asarray(img, np.float32).copy()
    light = _u(rng, 0.6, 2.4)
    d = _u(rng, 0.01, 0.04) * min(width, height)
    shadow = _blur(np.maximum(_shift(coverage, d * math.cos(light), d * math.sin(light)),
                              _shift(np.asarray(foot, np.float32) / 255, d * math.cos(light), d * math.sin(light))),
                   _u(rng, 0.01, 0.03) * min(width, height))
    shadow *= 1 - np.asarray(foot, np.float32) / 255  # props do not shadow themselves
    photo *= (1 - _u(rng, 0.15, 0.4) * shadow)[..., None]
    colour = _product_colour(rng, ("normal", "white", "black")[int(rng.choice(3, p=[0.7, 0.15, 0.15]))])
    product = colour * (_u(rng, 0.5, 0.65) + _u(rng, 0.35, 0.5) * _luminance(pixels, side))[..., None]
    a = cov[..., None]
    crop = photo[y0:y0 + side, x0:x0 + side]
    photo[y0:y0 + side, x0:x0 + side] = crop + (np.clip(product, 0, 255) - crop) * a
    photo += rng.standard_normal(photo.shape, dtype=np.float32) * _u(rng, 0.8, 3.0)
    out = Image.fromarray(np.clip(photo + 0.5, 0, 255).astype(np.uint8), "RGB")
    if rng.random() < 0.3:
        out = out.filter(ImageFilter.GaussianBlur(_u(rng, 0.4, 1.0)))
    return out, Image.fromarray(np.where(coverage >= 0.5, 255, 0).astype(np.uint8), "L"), \
        {"quality": int(rng.integers(80, 96))}


_RENDERERS = {"studio": render_studio, "props": render_props}


# ---------------------------------------------------------------------------------------------- the set

def build_benchmark(out_dir: Path, n: int, seed: int, *, min_side: int = 320, max_side: int = 900,
                    val_share: float = 0.5, source_dir: Path | None = None, training_drop: Path | None = None,
                    progress: bool = True) -> list[dict]:
    """Render ``n`` photos per style into ``out_dir``; returns the index rows. Reruns rewrite the same
    bytes; files of an earlier, larger build that are no longer indexed are removed."""
    from tqdm import tqdm

    from backdrop.data.fashion_mnist import CLASSES, PACKAGE, _inside, load_split

    out_dir = Path(out_dir)
    if training_drop is not None and _inside(out_dir, Path(training_drop)):
        raise ValueError(f"{out_dir}: the benchmark must never be written into (or over) the training drop "
                         f"{training_drop}; pick another benchmark.out_dir")
    if not 64 <= min_side <= max_side:
        raise ValueError(f"need 64 <= min_side <= max_side, got {min_side}, {max_side}")
    test_x, test_y, digests = load_split("test", source_dir)
    train_x, _, train_digests = load_split("train", source_dir)
    chosen = pick_products(test_x, train_x, n, seed)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    (out_dir / "masks").mkdir(parents=True, exist_ok=True)
    rows, sources = [], []
    jobs = [(style, idx) for style in STYLES for idx in chosen[style]]
    for style, idx in tqdm(jobs, desc="benchmark", unit="img", disable=not progress):
        photo, mask, save = _RENDERERS[style](test_x[idx], idx, seed, min_side, max_side)
        item_id = f"{style}-{idx:05d}"
        image_rel, mask_rel = f"images/{item_id}.jpg", f"masks/{item_id}.png"
        with atomic_path(out_dir / image_rel) as tmp:
            photo.save(tmp, format="JPEG", **save)
        with atomic_path(out_dir / mask_rel) as tmp:
            mask.save(tmp, format="PNG")
        rows.append({"id": item_id, "image": image_rel, "mask": mask_rel, "style": style,
                     "part": part_of(item_id, val_share)})
        sources.append({"id": item_id, "style": style, "source": "fashion-mnist", "split": "test",
                        "source_index": idx, "class_name": CLASSES[int(test_y[idx])], "width": photo.width,
                        "height": photo.height,
                        "photo_sha256": hashlib.sha256((out_dir / image_rel).read_bytes()).hexdigest(),
                        "mask_sha256": hashlib.sha256((out_dir / mask_rel).read_bytes()).hexdigest()})
    keep = {r["image"] for r in rows} | {r["mask"] for r in rows}
    for sub, ext in (("images", "*.jpg"), ("masks", "*.png")):
        for stale in (out_dir / sub).glob(ext):
            if f"{sub}/{stale.name}" not in keep:
                stale.unlink()
    write_csv(out_dir / "index.csv", rows, INDEX_FIELDS)
    write_csv(out_dir / "sources.csv", sources, SOURCE_FIELDS)
    write_json(out_dir / "benchmark.json", {
        "name": "ood", "training": False, "styles": list(STYLES), "n_per_style": n, "seed": seed,
        "min_side": min_side, "max_side": max_side, "val_share": val_share, "source": "fashion-mnist test split",
        "package": PACKAGE, "idx_sha256": {**digests, **train_digests},
        "parts": {p: sum(r["part"] == p for r in rows) for p in ("val", "test")},
        "note": "EVALUATION ONLY: never train on these photos (tests/data/test_ood_benchmark.py checks it)"})
    return rows
