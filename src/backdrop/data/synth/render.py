"""Render one synthetic packshot (:func:`render_item`) or a whole drop on disk (:func:`synthesize`).

See :mod:`backdrop.data.synth` for how an item is made.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageFilter
from tqdm import tqdm

from backdrop.data.synth.garments import _BUILDERS
from backdrop.data.synth.geometry import uniform
from backdrop.data.synth.studio import (
    _draw_layer,
    _fabric_texture,
    _Frame,
    _print_pattern,
    _resize_f,
    _smooth_noise,
    background,
    pick_colour,
    pick_size,
)
from backdrop.io import atomic_path, write_csv, write_json

CATEGORIES = ("tee", "longsleeve", "trousers", "shorts", "dress", "accessory")
STYLES = ("normal", "white_on_white", "black_on_black")
LABEL_FIELDS = ["stem", "category", "style", "width", "height"]
JPEG_QUALITY = 90

# Standard normal quantiles of 256 equally likely bins: uint8 draws -> Gaussian sensor noise, fast.
_NORMAL_QUANTILES = np.array([statistics.NormalDist().inv_cdf((k + 0.5) / 256) for k in range(256)])
_BINARY_LUT = [0] * 128 + [255] * 128
_METALS = np.array([(212, 184, 120), (200, 202, 206), (150, 130, 96), (60, 60, 64)], np.float32)


@dataclass(frozen=True)
class SynthItem:
    stem: str
    category: str
    style: str
    width: int
    height: int


def stem_for(seed: int, index: int) -> str:
    return f"synth-{seed}-{index:05d}"


def render_item(
    seed: int,
    index: int,
    *,
    min_side: int = 600,
    max_side: int = 1200,
    white_share: float = 0.15,
    black_share: float = 0.05,
) -> tuple[Image.Image, Image.Image, SynthItem]:
    """Render one synthetic packshot: (RGB photo, L mask in {0, 255} with 255 = product, metadata).

    Deterministic from ``(seed, index)`` and the keyword arguments alone.
    """
    rng = np.random.default_rng([int(seed), int(index)])
    width, height = pick_size(rng, min_side, max_side)
    category = CATEGORIES[int(rng.integers(len(CATEGORIES)))]
    r = rng.random()
    style = (
        "white_on_white"
        if r < white_share
        else "black_on_black"
        if r < white_share + black_share
        else "normal"
    )
    shape = _BUILDERS[category](rng)

    # ---- framing: fit the product's local bounding box into the photo
    angle = math.radians(uniform(rng, -3.0, 3.0) if category != "accessory" else uniform(rng, -8.0, 8.0))
    mask_pts = np.concatenate([o.pts for o in shape.ops if o.layer == "mask"])
    rotate = _Frame(1.0, angle, np.zeros(2))
    lo = np.min([rotate(o.pts).min(axis=0) - o.width / 2 for o in shape.ops if o.layer == "mask"], axis=0)
    hi = np.max([rotate(o.pts).max(axis=0) + o.width / 2 for o in shape.ops if o.layer == "mask"], axis=0)
    gw, gh = (float(v) for v in hi - lo)
    fill_w, fill_h = uniform(rng, 0.62, 0.88), uniform(rng, 0.62, 0.88)
    if category == "accessory":  # smaller objects are shot closer
        fill_w, fill_h = fill_w + 0.04, fill_h + 0.04
    scale = min(fill_w * width / gw, fill_h * height / gh)
    pw, ph = gw * scale, gh * scale
    free_x, free_y = width - pw, height - ph
    px = free_x / 2 + uniform(rng, -0.35, 0.35) * free_x
    py = free_y / 2 + uniform(rng, -0.35, 0.25) * free_y
    frame = _Frame(scale, angle, np.array([px, py]) - lo * scale)

    # ---- geometry, supersampled then box-filtered, inside the product's crop only
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

    # ---- background: gradient, horizon, vignette, shadows (computed at 1/8 resolution)
    bg_top, bg_bottom = background(rng, style)
    q = 8
    lw_, lh_ = max(2, width // q), max(2, height // q)
    yy = (np.arange(lh_, dtype=np.float32)[:, None] + 0.5) / lh_
    xx = (np.arange(lw_, dtype=np.float32)[None, :] + 0.5) / lw_
    grad = yy ** np.float32(uniform(rng, 0.7, 1.6))
    light = np.ones((lh_, lw_), np.float32)
    if rng.random() < 0.3:  # a table edge / floor horizon behind the product
        hy = (py + ph * uniform(rng, 0.5, 0.8)) / height
        light *= 1.0 - np.float32(uniform(rng, 0.02, 0.06)) / (
            1.0 + np.exp(-(yy - hy) * np.float32(uniform(rng, 30, 120)))
        )
    vig = uniform(rng, 0.04, 0.18)
    cxv, cyv = uniform(rng, 0.4, 0.6), uniform(rng, 0.35, 0.55)
    light *= 1.0 - np.float32(vig) * (((xx - cxv) ** 2 + (yy - cyv) ** 2) / 0.5) ** np.float32(1.2)
    shadow = Image.new("L", (lw_, lh_), 0)
    small = alpha_img.resize((max(1, cw // q), max(1, ch // q)), Image.Resampling.BILINEAR)
    sdx, sdy = uniform(rng, -0.03, 0.05) * pw, uniform(rng, 0.0, 0.04) * ph
    shadow.paste(small, (int(round((x0 + sdx) / q)), int(round((y0 + sdy) / q))), small)
    contact = ImageDraw.Draw(shadow)
    bot = float(frame(mask_pts)[:, 1].max())
    cx_prod = px + pw / 2
    ew, eh = pw * uniform(rng, 0.3, 0.5), max(2.0, ph * uniform(rng, 0.015, 0.04))
    contact.ellipse(((cx_prod - ew) / q, (bot - eh) / q, (cx_prod + ew) / q, (bot + eh) / q), fill=255)
    shadow = shadow.filter(ImageFilter.GaussianBlur(max(1.0, uniform(rng, 0.01, 0.035) * max(pw, ph) / q)))
    strength = uniform(rng, 0.06, 0.22) if style != "black_on_black" else uniform(rng, 0.1, 0.3)
    light *= 1.0 - np.float32(strength) * np.asarray(shadow, np.float32) * np.float32(1 / 255)
    bg_small = (bg_top + (bg_bottom - bg_top) * grad[..., None]) * light[..., None]
    bg_small = np.clip(bg_small + 0.5, 0, 255).astype(np.uint8)

    # ---- product appearance on the crop
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

    # ---- composite (antialiased by the soft coverage), sensor noise
    photo = Image.fromarray(bg_small, "RGB").resize((width, height), Image.Resampling.BILINEAR)
    prod_img = Image.fromarray(np.clip(prod, 0, 255, out=prod).astype(np.uint8), "RGB")
    photo.paste(prod_img, (x0, y0), alpha_img)
    table = np.clip(np.rint(_NORMAL_QUANTILES * uniform(rng, 0.8, 2.6)) + 128, 0, 255).astype(np.uint8)
    grain = Image.fromarray(table[rng.integers(0, 256, (height, width), dtype=np.uint8)], "L")
    photo = ImageChops.add(photo, Image.merge("RGB", (grain, grain, grain)), scale=1.0, offset=-128)

    mask = Image.new("L", (width, height), 0)
    mask.paste(alpha_img.point(_BINARY_LUT), (x0, y0))  # coverage >= 1/2 -> product
    item = SynthItem(stem_for(seed, index), category, style, width, height)
    return photo, mask, item


def synthesize(
    out_dir: Path,
    n: int,
    seed: int,
    *,
    min_side: int = 600,
    max_side: int = 1200,
    white_share: float = 0.15,
    black_share: float = 0.05,
    progress: bool = True,
) -> list[SynthItem]:
    """Render ``n`` items one at a time into ``out_dir``.

    Writes ``images/<stem>.jpg``, ``masks/<stem>.png``, ``labels.csv`` (stem, category, style, width,
    height) and ``drop.json``, the drop descriptor that declares ``labels.csv`` as drop metadata (ingest
    keeps it in ``raw/metadata/`` instead of quarantining it as a stray non-image file).
    Reruns with the same arguments rewrite identical files.
    """
    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    (out_dir / "masks").mkdir(parents=True, exist_ok=True)
    items: list[SynthItem] = []
    for index in tqdm(range(n), desc="synth", unit="img", disable=not progress):
        photo, mask, item = render_item(
            seed,
            index,
            min_side=min_side,
            max_side=max_side,
            white_share=white_share,
            black_share=black_share,
        )
        with atomic_path(out_dir / "images" / f"{item.stem}.jpg") as tmp:
            photo.save(tmp, format="JPEG", quality=JPEG_QUALITY)
        with atomic_path(out_dir / "masks" / f"{item.stem}.png") as tmp:
            mask.save(tmp, format="PNG")
        items.append(item)
    write_csv(out_dir / "labels.csv", (vars(it) for it in items), LABEL_FIELDS)
    write_json(
        out_dir / "drop.json",
        {"source": "backdrop synth", "seed": seed, "n": n, "training": True, "metadata": ["labels.csv"]},
    )
    return items
