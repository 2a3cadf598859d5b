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

from backdrop.data.synth.broad import render_broad
from backdrop.data.synth.garments import _BUILDERS
from backdrop.data.synth.geometry import uniform
from backdrop.data.synth.product import appearance, rasterise
from backdrop.data.synth.studio import _Frame, background, pick_size
from backdrop.data.synth.variety import LOOK_FIELDS, check_variety, draw_look
from backdrop.io import atomic_path, write_csv, write_json

CATEGORIES = ("tee", "longsleeve", "trousers", "shorts", "dress", "accessory")
STYLES = ("normal", "white_on_white", "black_on_black")
LABEL_FIELDS = ["stem", "category", "style", "width", "height"]
JPEG_QUALITY = 90

# Standard normal quantiles of 256 equally likely bins: uint8 draws -> Gaussian sensor noise, fast.
_NORMAL_QUANTILES = np.array([statistics.NormalDist().inv_cdf((k + 0.5) / 256) for k in range(256)])
_BINARY_LUT = [0] * 128 + [255] * 128


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
    variety: str = "classic",
) -> tuple[Image.Image, Image.Image, SynthItem]:
    """Render one synthetic packshot: (RGB photo, L mask in {0, 255} with 255 = product, metadata).

    Deterministic from ``(seed, index)`` and the keyword arguments alone. ``variety="broad"`` puts the
    same product on a per-item studio, light, camera and framing (:mod:`.variety`); ``"classic"``
    renders exactly what it always did.
    """
    check_variety(variety)
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
    if variety == "broad":
        photo, mask = render_broad(rng, seed, index, width, height, category, style, shape)
        return photo, mask, SynthItem(stem_for(seed, index), category, style, width, height)

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
    x0, y0, cw, ch, offset, alpha_img, detail_img, hw_img = rasterise(shape, frame, width, height, scale)

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
    prod, _ = appearance(rng, style, shape, frame, offset, cw, ch, angle, scale, alpha_img, detail_img, hw_img)

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
    variety: str = "classic",
    progress: bool = True,
) -> list[SynthItem]:
    """Render ``n`` items one at a time into ``out_dir``.

    Writes ``images/<stem>.jpg``, ``masks/<stem>.png``, ``labels.csv`` (stem, category, style, width,
    height) and ``drop.json``, the drop descriptor that declares ``labels.csv`` as drop metadata (ingest
    keeps it in ``raw/metadata/`` instead of quarantining it as a stray non-image file).
    Reruns with the same arguments rewrite identical files. ``variety="broad"`` also writes
    ``looks.csv`` (each item's studio, light, camera and framing) and saves each JPEG at its look's
    quality and chroma subsampling.
    """
    check_variety(variety)
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
            variety=variety,
        )
        with atomic_path(out_dir / "images" / f"{item.stem}.jpg") as tmp:
            photo.save(tmp, format="JPEG", **jpeg_options(seed, index, variety))
        with atomic_path(out_dir / "masks" / f"{item.stem}.png") as tmp:
            mask.save(tmp, format="PNG")
        items.append(item)
    write_csv(out_dir / "labels.csv", (vars(it) for it in items), LABEL_FIELDS)
    descriptor = {"source": "backdrop synth", "seed": seed, "n": n, "training": True, "metadata": ["labels.csv"]}
    if variety != "classic":
        write_csv(out_dir / "looks.csv", (draw_look(seed, i).row(it.stem) for i, it in enumerate(items)),
                  LOOK_FIELDS)
        descriptor.update(variety=variety, metadata=["labels.csv", "looks.csv"])
    write_json(out_dir / "drop.json", descriptor)
    return items


def jpeg_options(seed: int, index: int, variety: str = "classic") -> dict:
    """PIL save options of item ``index``: quality 90 classic, the look's quality and chroma broad."""
    if check_variety(variety) == "classic":
        return {"quality": JPEG_QUALITY}
    look = draw_look(seed, index)
    return {"quality": look.jpeg_quality, "subsampling": look.subsampling}
