"""Broad studio variety (`variety: broad`): what differs between studios, cameras and vendors.

The classic renders shoot every product in one studio (light sweep, soft shadow, JPEG 90). A model
fine-tuned on that alone learns the studio instead of the product (issue 19). With ``variety: broad``
both training renderers draw a :class:`Look` per item from ``default_rng([seed, index, LOOK_SALT])``:

- background: flat, gradient, paper sweep, textured (paper grain, linen, concrete), coloured,
  vignetted, or a tone close to the product's;
- light and shadow: none, soft drop, contact, hard, or a floor shadow touching the product;
- camera: JPEG quality 60-98 with 4:4:4 / 4:2:2 / 4:2:0 chroma, sensor noise (some of it chroma),
  defocus or motion blur, downscale-then-upscale, slight perspective, exposure and gamma;
- product extras: fine texture, a graphic print, stripes, sheen, thin parts (handles, laces), holes
  where the background shows through, and straps: a few see-through gaps of their own widths, tilts
  and curves cut across the product (sandal straps, a cage back, fringe), slots closed at both ends
  or straps free at one;
- framing: normal, small or large fill, off-centre, cut by the frame edge;
- clutter: abstract distractors beside the product (blocks, balls, rods, rings, cylinders) that are
  background, so the model learns that the garment, not the most salient object, is the product;
- tabletop scenes (``household``): a share of the items lie on a tabletop (knit, gingham, cork, felt)
  among everyday objects (bottles, vases with flowers, fruit, phones, keys, candles, bowls, pencils,
  clocks, napkins) that are background too, some of them tucked under the product.

Everything here draws from its own generators, never the item's main one, so the classic path is
untouched. The benchmark renderer (:mod:`backdrop.data.benchmark_build`) uses none of this.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

from backdrop.data.synth.geometry import uniform
from backdrop.data.synth.studio import _resize_f, _smooth_noise

VARIETIES = ("classic", "broad")
BACKGROUNDS = ("flat", "gradient", "sweep", "textured", "coloured", "vignetted", "tone")
LIGHTS = ("none", "soft", "contact", "hard", "touching")
FRAMINGS = ("normal", "small", "large", "off_centre", "cut")
EXTRAS = ("texture", "print", "stripes", "sheen", "thin", "holes", "straps")
_EXTRA_P = {"texture": 0.25, "print": 0.15, "stripes": 0.15, "sheen": 0.2, "thin": 0.3, "holes": 0.3}
LOOK_SALT = 0x19B0AD  # issue 19, broad
STRAPS_SALT = 0x19B057  # straps draw from their own generator too: the other looks stay as they were
STRAPS_SHARE = 0.2      # share of items cut into straps (the champion filled the gaps between sandal straps)
SCENE_SALT = 0x19B05C  # tabletop scenes draw from their own generator: the other looks stay as they were
SCENE_SHARE = 0.3      # share of items shot as a tabletop scene among household objects
LOOK_FIELDS = ["stem", "background", "light", "framing", "extras", "clutter", "household", "jpeg_quality",
               "subsampling", "noise", "blur", "rescale", "perspective", "exposure"]


@dataclass(frozen=True)
class Look:
    """One item's studio, light, camera, framing and product extras."""

    background: str
    light: str
    framing: str
    extras: tuple[str, ...]
    jpeg_quality: int      # 60..98
    subsampling: int       # PIL: 0 = 4:4:4, 1 = 4:2:2, 2 = 4:2:0
    noise: float           # sensor noise sigma (8-bit levels)
    blur: str              # none | defocus | motion
    blur_px: float
    rescale: float         # 1 = none, else the downscale factor before upscaling back
    perspective: float     # 0 = none, else the largest corner shift as a share of the side
    exposure: float        # gain
    gamma: float
    clutter: int = 0       # distractor objects beside the product (background)
    household: int = 0     # everyday objects of a tabletop scene (background); 0 = no scene

    def row(self, stem: str) -> dict:
        return {"stem": stem, "background": self.background, "light": self.light, "framing": self.framing,
                "extras": "+".join(self.extras) or "none", "clutter": self.clutter,
                "household": self.household, "jpeg_quality": self.jpeg_quality,
                "subsampling": ("4:4:4", "4:2:2", "4:2:0")[self.subsampling], "noise": round(self.noise, 2),
                "blur": self.blur if self.blur == "none" else f"{self.blur}:{self.blur_px:.1f}",
                "rescale": round(self.rescale, 2), "perspective": round(self.perspective, 3),
                "exposure": round(self.exposure, 2)}


def check_variety(variety: str) -> str:
    if variety not in VARIETIES:
        raise ValueError(f"variety must be one of {', '.join(VARIETIES)}, got {variety!r}")
    return variety


def draw_look(seed: int, index: int) -> Look:
    """The look of item ``index`` of ``seed``: a pure function of the two."""
    rng = np.random.default_rng([int(seed), int(index), LOOK_SALT])
    background = BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
    light = LIGHTS[int(rng.integers(len(LIGHTS)))]
    framing = FRAMINGS[int(rng.choice(len(FRAMINGS), p=[0.4, 0.15, 0.15, 0.15, 0.15]))]
    extras = tuple(e for e in _EXTRA_P if rng.random() < _EXTRA_P[e])
    if np.random.default_rng([int(seed), int(index), STRAPS_SALT]).random() < STRAPS_SHARE:
        extras += ("straps",)
    quality = int(rng.integers(60, 99))
    subsampling = int(rng.choice(3, p=[0.25, 0.25, 0.5]))
    noise = uniform(rng, 0.5, 5.0)
    r = rng.random()
    blur = "defocus" if r < 0.25 else "motion" if r < 0.4 else "none"
    blur_px = uniform(rng, 0.6, 2.2) if blur == "defocus" else uniform(rng, 2.0, 7.0) if blur == "motion" else 0.0
    rescale = uniform(rng, 0.35, 0.8) if rng.random() < 0.3 else 1.0
    perspective = uniform(rng, 0.01, 0.04) if rng.random() < 0.3 else 0.0
    exposure, gamma = uniform(rng, 0.85, 1.15), uniform(rng, 0.85, 1.15)
    clutter = int(rng.integers(1, 5)) if rng.random() < 0.3 else 0
    scene = np.random.default_rng([int(seed), int(index), SCENE_SALT])
    household = int(scene.integers(2, 7)) if scene.random() < SCENE_SHARE else 0
    if household and framing in ("normal", "large", "cut"):  # room on the table for the objects
        framing = "small" if scene.random() < 0.4 else "off_centre"
    return Look(background, light, framing, extras, quality, subsampling, noise, blur, blur_px, rescale,
                perspective, exposure, gamma, clutter, household)


def fill_range(look: Look) -> tuple[float, float]:
    """Share of the frame the product's box fills, by framing."""
    return {"normal": (0.62, 0.88), "small": (0.3, 0.45), "large": (0.88, 0.98), "off_centre": (0.4, 0.62),
            "cut": (0.8, 1.1)}[look.framing]


def place(rng, look: Look, free: float, extent: float) -> float:
    """Top-left coordinate along one axis of a product ``extent`` long with ``free`` pixels to spare
    (negative when it is larger than the frame). A cut framing pushes it over one edge."""
    if look.framing == "off_centre":
        return free / 2 + (1 if rng.random() < 0.5 else -1) * uniform(rng, 0.4, 0.5) * free
    if look.framing == "cut":
        return free / 2 + uniform(rng, -0.5, 0.5) * abs(free) + 0.0
    return free / 2 + uniform(rng, -0.35, 0.35) * free


def cut_shift(rng, look: Look, width: int, height: int, box: tuple[float, float, float, float]):
    """(dx, dy) that moves a product box (x, y, w, h) so 8-25 % of it leaves the frame on one side."""
    if look.framing != "cut":
        return 0.0, 0.0
    x, y, w, h = box
    side = int(rng.integers(4))
    share = uniform(rng, 0.08, 0.25)
    if side == 0:
        return -(x + w * share), 0.0
    if side == 1:
        return width - (x + w * (1 - share)), 0.0
    if side == 2:
        return 0.0, height - (y + h * (1 - share))
    return 0.0, -(y + h * share)


# ---------------------------------------------------------------------------------------------- backdrop

def _hsv(h: float, s: float, v: float) -> np.ndarray:
    i, f = int(h * 6) % 6, h * 6 - int(h * 6)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    return np.array([(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i], np.float32) * 255


def _base_colour(rng, look: Look, style: str, product: np.ndarray) -> np.ndarray:
    if look.background == "tone":  # close to the product's own tone: the low-contrast case
        return np.clip(product * uniform(rng, 0.88, 1.12) + rng.uniform(-10, 10, 3), 4, 252).astype(np.float32)
    if style == "white_on_white":
        return np.full(3, uniform(rng, 236, 254), np.float32) + rng.uniform(-2, 2, 3).astype(np.float32)
    if style == "black_on_black":
        return np.full(3, uniform(rng, 30, 75), np.float32) + rng.uniform(-3, 3, 3).astype(np.float32)
    if look.background == "coloured":
        return _hsv(uniform(rng, 0, 1), uniform(rng, 0.25, 0.8), uniform(rng, 0.45, 0.95))
    kind = rng.random()
    if kind < 0.4:
        return np.full(3, uniform(rng, 232, 252), np.float32) + rng.uniform(-3, 3, 3).astype(np.float32)
    if kind < 0.75:
        return np.full(3, uniform(rng, 150, 232), np.float32) + rng.uniform(-4, 4, 3).astype(np.float32)
    return np.array([uniform(rng, 200, 240)] * 3, np.float32) + np.array([5.0, 0.0, -9.0], np.float32) * uniform(
        rng, 0.5, 1.8)


def _texture(rng, width: int, height: int) -> np.ndarray:
    """(H, W) float32 around 0: paper grain, linen or concrete."""
    kind = int(rng.integers(3))
    if kind == 0:  # paper grain: fine isotropic noise, a little smoothed
        small = rng.standard_normal((max(2, height // 2), max(2, width // 2))).astype(np.float32)
        return _resize_f(small, (width, height)) * np.float32(0.6)
    if kind == 1:  # linen: streaks along both axes
        rows = rng.standard_normal((max(2, height // 2), max(2, width // 12))).astype(np.float32)
        cols = rng.standard_normal((max(2, height // 12), max(2, width // 2))).astype(np.float32)
        return (_resize_f(rows, (width, height)) + _resize_f(cols, (width, height))) * np.float32(0.5)
    octaves = [_smooth_noise(rng, (height, width), c) * np.float32(a) for c, a in ((4, 1.0), (16, 0.5), (64, 0.3))]
    return sum(octaves)


def backdrop(rng, look: Look, width: int, height: int, style: str, product: np.ndarray) -> np.ndarray:
    """The empty set: (H, W, 3) float32 in 0..255."""
    base = _base_colour(rng, look, style, product)
    yy = (np.arange(height, dtype=np.float32)[:, None] + 0.5) / height
    xx = (np.arange(width, dtype=np.float32)[None, :] + 0.5) / width
    light = np.ones((height, width), np.float32)
    kind = look.background
    if kind in ("gradient", "coloured", "tone") and rng.random() < 0.7:
        ang = uniform(rng, 0, 2 * math.pi)
        t = (xx - 0.5) * np.float32(math.cos(ang)) + (yy - 0.5) * np.float32(math.sin(ang))
        light = light + t * np.float32(uniform(rng, 0.08, 0.3))
    elif kind == "sweep":  # wall above, floor below, a soft curve between them
        horizon = uniform(rng, 0.45, 0.8)
        floor = np.float32(uniform(rng, -0.12, 0.08))
        curve = 1 / (1 + np.exp(-(yy - horizon) / np.float32(uniform(rng, 0.03, 0.1))))
        light = light + floor * curve - np.float32(uniform(rng, 0.0, 0.1)) * (1 - yy)
    elif kind == "textured":
        light = light + _texture(rng, width, height) * np.float32(uniform(rng, 0.02, 0.08))
    if kind == "vignetted" or rng.random() < 0.2:
        strength = uniform(rng, 0.2, 0.5) if kind == "vignetted" else uniform(rng, 0.03, 0.12)
        cx, cy = uniform(rng, 0.35, 0.65), uniform(rng, 0.35, 0.65)
        light = light * (1 - np.float32(strength) * (((xx - cx) ** 2 + (yy - cy) ** 2) / 0.5) ** np.float32(1.3))
    return base[None, None, :] * light[..., None]


# ---------------------------------------------------------------------------------------------- light

def _blur(arr: np.ndarray, radius: float) -> np.ndarray:
    """Gaussian blur of a 0..1 map (PIL blurs 8-bit images only)."""
    if radius <= 0.3:
        return arr
    img = Image.fromarray(np.clip(arr * 255 + 0.5, 0, 255).astype(np.uint8), "L")
    return np.asarray(img.filter(ImageFilter.GaussianBlur(radius)), np.float32) * np.float32(1 / 255)


def _shift(arr: np.ndarray, dx: float, dy: float) -> np.ndarray:
    img = Image.fromarray(arr.astype(np.float32), mode="F")
    return np.asarray(img.transform(img.size, Image.Transform.AFFINE, (1, 0, -dx, 0, 1, -dy),
                                    Image.Resampling.BILINEAR))


def cast_light(rng, look: Look, bg: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Darken the backdrop with the product's shadow (shadows belong to the background, never the mask)."""
    if look.light == "none" or not alpha.any():
        return bg
    height, width = alpha.shape
    ys, xs = np.nonzero(alpha > 0.5)
    if ys.size == 0:
        return bg
    size = float(max(xs.max() - xs.min(), ys.max() - ys.min(), 8))
    q = 2  # shadows are smooth: work at half resolution
    small = _resize_f(alpha, (max(2, width // q), max(2, height // q)))
    if look.light == "soft":
        shadow = _blur(_shift(small, uniform(rng, -0.03, 0.06) * size / q, uniform(rng, 0.0, 0.06) * size / q),
                       uniform(rng, 0.02, 0.06) * size / q)
        strength = uniform(rng, 0.1, 0.3)
    elif look.light == "hard":
        ang = uniform(rng, -0.3, 1.9)
        d = uniform(rng, 0.02, 0.08) * size / q
        shadow = _blur(_shift(small, d * math.cos(ang), d * math.sin(ang)), uniform(rng, 0.3, 1.5))
        strength = uniform(rng, 0.25, 0.5)
    elif look.light == "contact":
        bottom = float(ys.max()) / q
        cx = float(xs[ys >= ys.max() - 0.1 * size].mean()) / q
        yy = np.arange(small.shape[0], dtype=np.float32)[:, None]
        xx = np.arange(small.shape[1], dtype=np.float32)[None, :]
        ew, eh = uniform(rng, 0.25, 0.5) * size / q, max(1.0, uniform(rng, 0.015, 0.04) * size / q)
        shadow = _blur((((xx - cx) / ew) ** 2 + ((yy - bottom) / eh) ** 2 <= 1).astype(np.float32),
                       uniform(rng, 0.005, 0.02) * size / q)
        strength = uniform(rng, 0.2, 0.45)
    else:  # touching: the silhouette mirrored onto the floor from the product's base, sheared, squashed
        yb = float(ys.max()) / q
        s, k = uniform(rng, 0.25, 0.6), uniform(rng, -0.8, 0.8)
        img = Image.fromarray(small.astype(np.float32), mode="F")
        shadow = np.asarray(img.transform(img.size, Image.Transform.AFFINE,
                                          (1, k, -k * yb, 0, -1 / s, yb * (1 + 1 / s)), Image.Resampling.BILINEAR))
        rows = np.arange(small.shape[0], dtype=np.float32)[:, None]
        shadow = _blur(shadow * (rows >= yb - 1), uniform(rng, 0.5, 2.5))
        strength = uniform(rng, 0.2, 0.45)
    shadow = _resize_f(np.clip(shadow, 0, 1), (width, height))
    return bg * (1 - np.float32(strength) * shadow)[..., None]


# ---------------------------------------------------------------------------------------------- camera

def _perspective_coeffs(src: np.ndarray, dst: np.ndarray) -> tuple[float, ...]:
    """PIL PERSPECTIVE data mapping output points ``dst`` to input points ``src``."""
    rows = []
    for (x, y), (u, v) in zip(dst, src, strict=True):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y])
    return tuple(np.linalg.solve(np.array(rows, np.float64), src.reshape(-1)).tolist())


def camera(rng, look: Look, photo: np.ndarray, alpha: np.ndarray) -> tuple[Image.Image, np.ndarray]:
    """Exposure, slight perspective (photo and coverage alike), blur, down-up scaling, sensor noise.
    JPEG (quality, chroma subsampling) happens when the photo is written."""
    height, width = alpha.shape
    photo = 255.0 * (np.clip(photo * np.float32(look.exposure), 0, 255) / 255.0) ** np.float32(look.gamma)
    img = Image.fromarray(np.clip(photo + 0.5, 0, 255).astype(np.uint8), "RGB")
    if look.perspective:  # output corners sample points inside the frame: no empty border
        dst = np.array([(0, 0), (width, 0), (width, height), (0, height)], np.float64)
        src = dst + rng.uniform(0, look.perspective, (4, 2)) * np.array([width, height]) * np.array(
            [(1, 1), (-1, 1), (-1, -1), (1, -1)])
        coeffs = _perspective_coeffs(src, dst)
        img = img.transform(img.size, Image.Transform.PERSPECTIVE, coeffs, Image.Resampling.BICUBIC)
        alpha = np.asarray(Image.fromarray(alpha.astype(np.float32), mode="F").transform(
            img.size, Image.Transform.PERSPECTIVE, coeffs, Image.Resampling.BILINEAR))
    if look.blur == "defocus":
        img = img.filter(ImageFilter.GaussianBlur(look.blur_px))
    elif look.blur == "motion":
        arr = np.asarray(img, np.float32)
        ang = uniform(rng, 0, math.pi)
        n = max(2, int(round(look.blur_px)))
        pad = n + 1
        padded = np.pad(arr, ((pad, pad), (pad, pad), (0, 0)), mode="edge")
        acc = np.zeros_like(arr)
        for t in np.linspace(-look.blur_px / 2, look.blur_px / 2, n):
            dx, dy = int(round(t * math.cos(ang))), int(round(t * math.sin(ang)))
            acc += padded[pad + dy:pad + dy + height, pad + dx:pad + dx + width]
        img = Image.fromarray(np.clip(acc / n + 0.5, 0, 255).astype(np.uint8), "RGB")
    if look.rescale < 1:
        small = (max(16, int(width * look.rescale)), max(16, int(height * look.rescale)))
        img = img.resize(small, Image.Resampling.BILINEAR).resize((width, height), Image.Resampling.BICUBIC)
    arr = np.asarray(img, np.float32)
    grain = rng.standard_normal((height, width, 1), dtype=np.float32) * np.float32(look.noise)
    chroma = rng.standard_normal((height, width, 3), dtype=np.float32) * np.float32(look.noise * uniform(rng, 0, 0.5))
    arr = arr + grain + chroma
    return Image.fromarray(np.clip(arr + 0.5, 0, 255).astype(np.uint8), "RGB"), alpha


# ---------------------------------------------------------------------------------------------- product

def decorate(rng, look: Look, prod: np.ndarray, colour: np.ndarray, coverage: np.ndarray, scale: float) -> np.ndarray:
    """Texture, graphic print, stripes and sheen on the product pixels (ch, cw, 3) of a crop whose
    soft coverage is ``coverage`` (ch, cw); ``scale`` is about the product's height in pixels."""
    ch, cw = coverage.shape
    ref = np.maximum(colour, 8.0)
    if "stripes" in look.extras:
        other = _hsv(uniform(rng, 0, 1), uniform(rng, 0.0, 0.8), uniform(rng, 0.1, 0.98))
        period = max(3.0, scale * uniform(rng, 0.015, 0.08))
        ang = uniform(rng, 0, math.pi)
        t = ((np.arange(cw, dtype=np.float32)[None, :] * np.float32(math.cos(ang))
              + np.arange(ch, dtype=np.float32)[:, None] * np.float32(math.sin(ang))) / np.float32(period)) % 1.0
        band = np.clip((uniform(rng, 0.2, 0.6) - np.abs(t - 0.5) * 2) * period * 0.5 + 0.5, 0, 1)[..., None]
        prod = prod * (1 - band) + prod * (other / ref) * band
    if "print" in look.extras:
        ys, xs = np.nonzero(coverage > 0.99)
        if ys.size:
            from PIL import ImageDraw

            art = Image.new("L", (cw, ch), 0)
            draw = ImageDraw.Draw(art)
            cy, cx = float(np.median(ys)), float(np.median(xs))
            r = 0.12 * scale
            for _ in range(int(rng.integers(2, 7))):
                x, y = cx + uniform(rng, -r, r), cy + uniform(rng, -r, r)
                a, b = uniform(rng, 0.02, 0.1) * scale, uniform(rng, 0.01, 0.06) * scale
                if rng.random() < 0.5:
                    draw.ellipse((x - a, y - b, x + a, y + b), fill=255)
                else:
                    draw.rectangle((x - a, y - b / 3, x + a, y + b / 3), fill=255)
            ink = _hsv(uniform(rng, 0, 1), uniform(rng, 0.0, 0.9), uniform(rng, 0.05, 0.98))
            m = (np.asarray(art, np.float32) / 255)[..., None] * np.float32(uniform(rng, 0.7, 1.0))
            prod = prod * (1 - m) + prod * (ink / ref) * m
    if "texture" in look.extras:  # boucle / crinkle: fine multiplicative noise
        cells = max(4, int(max(cw, ch) / uniform(rng, 2.0, 6.0)))
        prod = prod * (1 + _smooth_noise(rng, (ch, cw), cells) * np.float32(uniform(rng, 0.03, 0.1)))[..., None]
    if "sheen" in look.extras:  # satin: a broad highlight band
        ang = uniform(rng, 0, math.pi)
        u = (np.arange(cw, dtype=np.float32)[None, :] * np.float32(math.cos(ang))
             + np.arange(ch, dtype=np.float32)[:, None] * np.float32(math.sin(ang))) / np.float32(max(scale, 1))
        c, w = uniform(rng, float(u.min()), float(u.max())), uniform(rng, 0.05, 0.2)
        prod = prod + (np.exp(-((u - c) / w) ** 2) * np.float32(uniform(rng, 25, 80)))[..., None]
    return prod.astype(np.float32)


def cut_strap_gaps(rng, hi: Image.Image, ss: int) -> Image.Image:
    """Cut 2-5 see-through gaps across a supersampled coverage image (L, 255 = product), so what is
    left between them reads as straps: slots closed at both ends, or gaps open on one side so the
    straps hang free from the rest of the product (a sandal's straps from its sole). Each gap has its
    own width, a slight tilt off the others and a gentle curve: a regular grille of parallel slats
    taught the model that any striped surface (wood grain, tile joints) is product. Returns the edited
    image, or ``hi`` itself when the cut would take more than 40 % of the product or almost none."""
    cover = np.asarray(hi)
    inside = cover > 127                                               # (H*ss, W*ss)
    ys, xs = np.nonzero(inside)
    if ys.size < 50 * ss * ss:
        return hi
    size = float(max(xs.max() - xs.min(), ys.max() - ys.min()))
    ang = uniform(rng, 0, math.pi)
    c, s = math.cos(ang), math.sin(ang)
    u_in, v_in = xs * c + ys * s, ys * c - xs * s
    umin, umax, vmin, vmax = float(u_in.min()), float(u_in.max()), float(v_in.min()), float(v_in.max())
    k = int(rng.integers(2, 6))
    gaps = [max(uniform(rng, 0.015, 0.06) * size, 3.0 * ss) for _ in range(k)]  # >= 3 px at the photo's size
    straps = [uniform(rng, 0.03, 0.12) * size for _ in range(k - 1)]
    span = sum(gaps) + sum(straps)
    if span > umax - umin - 0.1 * size:
        return hi
    start = uniform(rng, umin + 0.05 * size, umax - 0.05 * size - span)
    yy, xx = np.mgrid[0:cover.shape[0], 0:cover.shape[1]].astype(np.float32)
    cx, cy = float(xs.mean()), float(ys.mean())
    cut = np.zeros(cover.shape, bool)
    for i, g in enumerate(gaps):
        mid = start + sum(gaps[:i]) + sum(straps[:i]) + g / 2          # the gap's centre along the row
        ox, oy = cx + (mid - (cx * c + cy * s)) * c, cy + (mid - (cx * c + cy * s)) * s
        tilt = ang + uniform(rng, -0.2, 0.2)
        ct, st = np.float32(math.cos(tilt)), np.float32(math.sin(tilt))
        along = (yy - np.float32(oy)) * ct - (xx - np.float32(ox)) * st
        bend = np.float32(uniform(rng, 0.0, 0.03) * size) * np.sin(along / np.float32(uniform(rng, 0.1, 0.3) * size)
                                                                   + np.float32(uniform(rng, 0, 2 * math.pi)))
        cut |= np.abs((xx - np.float32(ox)) * ct + (yy - np.float32(oy)) * st - bend) < np.float32(g / 2)
    if rng.random() < 0.5:  # slots: closed at both ends, inside the product by a margin
        margin = uniform(rng, 0.03, 0.08) * size
        cut &= np.asarray(hi.filter(ImageFilter.BoxBlur(max(1.0, margin)))) >= 250
    else:                   # straps free at one end: the gaps run out through the product's edge
        v = yy * np.float32(c) - xx * np.float32(s)
        cut_from = vmin + uniform(rng, 0.25, 0.6) * (vmax - vmin)
        cut &= (v >= cut_from) if rng.random() < 0.5 else (v <= vmax + vmin - cut_from)
    removed = int((cut & inside).sum())
    if removed > 0.4 * ys.size or removed < 0.02 * ys.size:
        return hi
    return Image.fromarray(np.where(cut, 0, cover).astype(np.uint8), "L")


def cut_holes_and_add_thin_parts(rng, look: Look, hi: Image.Image, ss: int) -> Image.Image:
    """Edit a supersampled coverage image (L, 255 = product): see-through holes inside the product,
    strap gaps across it, thin straps / laces / handles leaving it. Returns the edited image."""
    from PIL import ImageDraw

    if not ({"holes", "thin", "straps"} & set(look.extras)):
        return hi
    if "straps" in look.extras:
        hi = cut_strap_gaps(rng, hi, ss)
    inside = np.asarray(hi.reduce(ss)) > 127
    ys, xs = np.nonzero(inside)
    if ys.size < 50:
        return hi
    size = float(max(xs.max() - xs.min(), ys.max() - ys.min()))
    out = hi.copy()
    draw = ImageDraw.Draw(out)
    if "holes" in look.extras:
        for _ in range(int(rng.integers(1, 6))):
            r = uniform(rng, 0.015, 0.05) * size
            # centres whose box of half-side r + margin lies inside the product (a box blur stays at 255)
            room = np.asarray(Image.fromarray(inside.astype(np.uint8) * 255).filter(
                ImageFilter.BoxBlur(max(1.0, r + 0.015 * size))))
            cy, cx = np.nonzero(room >= 254)
            if cy.size == 0:
                break
            j = int(rng.integers(cy.size))
            x, y = float(cx[j]) * ss, float(cy[j]) * ss
            a, b = r * ss * uniform(rng, 0.4, 1.0), r * ss * uniform(rng, 0.4, 1.0)
            draw.ellipse((x - a, y - b, x + a, y + b), fill=0)
    if "thin" in look.extras:
        w = max(1, int(round(uniform(rng, 0.006, 0.015) * size * ss)))
        for _ in range(int(rng.integers(1, 3))):
            if rng.random() < 0.5:  # a handle: a loop over the top edge
                top = int(ys.min())
                row = np.nonzero(inside[min(top + max(2, int(0.03 * size)), inside.shape[0] - 1)])[0]
                if row.size < 2:
                    continue
                xa, xb = sorted(rng.choice(row, 2, replace=False).tolist())
                y0 = (top + 0.04 * size) * ss
                rise = uniform(rng, 0.08, 0.25) * size * ss
                t = np.linspace(0, 1, 24)
                px = (1 - t) ** 3 * xa * ss + 3 * (1 - t) ** 2 * t * xa * ss + 3 * (1 - t) * t ** 2 * xb * ss + t ** 3 * xb * ss
                py = y0 - 3 * (1 - t) * t * rise * 1.33
                draw.line(list(zip(px.tolist(), py.tolist(), strict=True)), fill=255, width=w, joint="curve")
            else:  # a lace or strap hanging from a low point
                j = int(rng.integers(ys.size))
                x, y = float(xs[j]), float(ys[j])
                length = uniform(rng, 0.1, 0.3) * size
                ang = uniform(rng, 0.2, math.pi - 0.2)
                t = np.linspace(0, 1, 20)
                wob = np.sin(t * math.pi * uniform(rng, 1, 3)) * uniform(rng, 0.0, 0.05) * size
                px = (x + t * length * math.cos(ang) + wob * math.sin(ang)) * ss
                py = (y + t * length * math.sin(ang) - wob * math.cos(ang)) * ss
                draw.line(list(zip(px.tolist(), py.tolist(), strict=True)), fill=255, width=w, joint="curve")
    return out


def _set_table(bg: np.ndarray, coverage: np.ndarray, margin_div: int) -> tuple[np.ndarray, Image.Image]:
    """Where objects may not stand (the product widened by min side / ``margin_div``) and the 8-bit
    backdrop they are drawn on."""
    height, width = coverage.shape
    keep_out = np.asarray(Image.fromarray((coverage > 0.02).astype(np.uint8) * 255).filter(
        ImageFilter.BoxBlur(max(2, min(width, height) // margin_div)))) > 0
    return keep_out, Image.fromarray(np.clip(bg + 0.5, 0, 255).astype(np.uint8), "RGB")


def add_clutter(rng, look: Look, bg: np.ndarray, coverage: np.ndarray) -> np.ndarray:
    """Abstract distractors (shaded blocks, balls, rods, rings, cylinders) on the backdrop, clear of
    the product, each with a soft shadow. They are background: the mask never includes them."""
    from PIL import ImageDraw

    if not look.clutter:
        return bg
    height, width = coverage.shape
    keep_out, img = _set_table(bg, coverage, 40)
    for _ in range(look.clutter):
        s = min(width, height) * uniform(rng, 0.08, 0.25)
        for _try in range(10):
            x, y = uniform(rng, 0, width), uniform(rng, 0, height)
            if keep_out[max(0, int(y - s)):int(y + s) + 1, max(0, int(x - s)):int(x + s) + 1].any():
                continue
            fill = tuple(int(v) for v in _hsv(uniform(rng, 0, 1), uniform(rng, 0, 0.9), uniform(rng, 0.1, 0.98)))
            dark = tuple(int(v * 0.7) for v in fill)
            shade = Image.new("L", (width, height), 0)
            layer = img.copy()
            draw, sdraw = ImageDraw.Draw(layer), ImageDraw.Draw(shade)
            kind = int(rng.integers(5))
            if kind == 0:  # block: front face and a darker side face
                w, h = s * uniform(rng, 0.5, 1.0), s * uniform(rng, 0.5, 1.0)
                d = s * 0.2
                for dr, c in ((draw, dark), (sdraw, 255)):
                    dr.polygon([(x + w / 2, y - h / 2), (x + w / 2 + d, y - h / 2 - d), (x + w / 2 + d, y + h / 2 - d),
                                (x + w / 2, y + h / 2)], fill=c)
                for dr, c in ((draw, fill), (sdraw, 255)):
                    dr.rectangle((x - w / 2, y - h / 2, x + w / 2, y + h / 2), fill=c)
            elif kind == 1:  # ball with a highlight
                r = s / 2
                for dr, c in ((draw, dark), (sdraw, 255)):
                    dr.ellipse((x - r, y - r, x + r, y + r), fill=c)
                draw.ellipse((x - r * 0.8, y - r * 0.85, x + r * 0.5, y + r * 0.45), fill=fill)
            elif kind == 2:  # rod
                a = uniform(rng, 0, math.pi)
                dx, dy = math.cos(a) * s, math.sin(a) * s
                for dr, c in ((draw, fill), (sdraw, 255)):
                    dr.line((x - dx, y - dy, x + dx, y + dy), fill=c, width=max(2, int(s * uniform(rng, 0.04, 0.12))))
            elif kind == 3:  # ring
                r = s / 2
                for dr, c in ((draw, fill), (sdraw, 255)):
                    dr.ellipse((x - r, y - r * 0.7, x + r, y + r * 0.7), outline=c, width=max(2, int(s * 0.1)))
            else:  # cylinder seen from the side
                w, h = s * uniform(rng, 0.3, 0.6), s * uniform(rng, 0.6, 1.2)
                for dr, c in ((draw, fill), (sdraw, 255)):
                    dr.rectangle((x - w / 2, y - h / 2, x + w / 2, y + h / 2), fill=c)
                    dr.ellipse((x - w / 2, y + h / 2 - w * 0.15, x + w / 2, y + h / 2 + w * 0.15), fill=c)
                draw.ellipse((x - w / 2, y - h / 2 - w * 0.15, x + w / 2, y - h / 2 + w * 0.15), fill=dark)
            soft = shade.filter(ImageFilter.GaussianBlur(max(1.0, s * 0.08)))
            img = Image.composite(Image.new("RGB", img.size, 0), img, soft.point(lambda v: v * 0.3))
            img.paste(layer, (0, 0), shade)
            keep_out[max(0, int(y - s)):int(y + s) + 1, max(0, int(x - s)):int(x + s) + 1] = True
            break
    return np.asarray(img, np.float32)


# ---------------------------------------------------------------------------------------------- tabletop

def tabletop(rng, width: int, height: int) -> np.ndarray:
    """(H, W, 3) float32: a table covered in knit, gingham, cork or felt, lit from one side."""
    yy = (np.arange(height, dtype=np.float32)[:, None] + 0.5)
    xx = (np.arange(width, dtype=np.float32)[None, :] + 0.5)
    base = _hsv(uniform(rng, 0, 1), uniform(rng, 0.05, 0.6), uniform(rng, 0.45, 0.95))
    kind = int(rng.integers(4))
    if kind == 0:  # knit: rows of V-shaped stitches
        pitch = uniform(rng, 5, 14)
        v = np.abs(((xx / pitch) % 1) - 0.5) * 2
        tone = 1 + 0.12 * np.sin((yy / pitch + v) * 2 * math.pi)
    elif kind == 1:  # gingham: two crossed bands of a second colour
        pitch = uniform(rng, 12, 40)
        bx, by = ((xx / pitch) % 2) < 1, ((yy / pitch) % 2) < 1
        second = _hsv(uniform(rng, 0, 1), uniform(rng, 0.3, 0.8), uniform(rng, 0.3, 0.8))
        mix = (bx.astype(np.float32) + by.astype(np.float32)) * np.float32(0.5)
        return (base[None, None, :] * (1 - mix[..., None]) + second[None, None, :] * mix[..., None]) * \
            np.float32(uniform(rng, 0.9, 1.05))
    elif kind == 2:  # cork: speckles of darker and lighter grains
        tone = 1 + _smooth_noise(rng, (height, width), max(8, min(width, height) // 6)) * np.float32(0.15)
        tone = tone + rng.standard_normal((height, width)).astype(np.float32) * np.float32(0.06)
        base = np.array([uniform(rng, 150, 200), uniform(rng, 110, 150), uniform(rng, 70, 100)], np.float32)
    else:  # felt: soft fibrous noise
        tone = 1 + _texture(rng, width, height) * np.float32(uniform(rng, 0.04, 0.1))
    ang = uniform(rng, 0, 2 * math.pi)
    light = 1 + np.float32(uniform(rng, 0.05, 0.2)) * ((xx / width - 0.5) * np.float32(math.cos(ang))
                                                         + (yy / height - 0.5) * np.float32(math.sin(ang)))
    return base[None, None, :] * (tone * light)[..., None]


def _household_object(rng, draw, shade, x: float, y: float, s: float) -> None:
    """One everyday object of size ~s centred at (x, y): its pixels on ``draw``, its footprint on ``shade``."""
    c = tuple(int(v) for v in _hsv(uniform(rng, 0, 1), uniform(rng, 0.1, 0.9), uniform(rng, 0.15, 0.95)))
    dark = tuple(int(v * 0.65) for v in c)
    light = tuple(int(min(255, v * 1.3 + 30)) for v in c)
    both = ((draw, None), (shade, 255))
    kind = int(rng.integers(10))
    if kind == 0:  # bottle: body, shoulder, neck, cap, a highlight
        w, h = s * uniform(rng, 0.25, 0.4), s * uniform(rng, 0.8, 1.1)
        for d, f in both:
            d.rounded_rectangle((x - w / 2, y - h / 4, x + w / 2, y + h / 2), radius=w * 0.2, fill=f or c)
            d.polygon([(x - w / 2, y - h / 4), (x - w / 6, y - h / 2.6), (x + w / 6, y - h / 2.6),
                       (x + w / 2, y - h / 4)], fill=f or c)
            d.rectangle((x - w / 6, y - h / 2, x + w / 6, y - h / 2.6), fill=f or dark)
        draw.rectangle((x - w / 3, y - h / 6, x - w / 5, y + h / 2.4), fill=light)
    elif kind == 1:  # vase with flowers: stems, petals around a centre
        w, h = s * 0.3, s * 0.45
        for _ in range(int(rng.integers(2, 5))):
            fx, fy = x + uniform(rng, -s / 3, s / 3), y - h / 2 - uniform(rng, s * 0.15, s * 0.45)
            petal = tuple(int(v) for v in _hsv(uniform(rng, 0, 1), uniform(rng, 0.4, 0.9), uniform(rng, 0.6, 1.0)))
            r = s * uniform(rng, 0.05, 0.1)
            for d, f in both:
                d.line((x, y - h / 2, fx, fy), fill=f or (60, 120, 50), width=max(1, int(s * 0.02)))
                for k in range(5):
                    a = k * 2 * math.pi / 5
                    d.ellipse((fx + math.cos(a) * r - r * 0.7, fy + math.sin(a) * r - r * 0.7,
                               fx + math.cos(a) * r + r * 0.7, fy + math.sin(a) * r + r * 0.7), fill=f or petal)
            draw.ellipse((fx - r * 0.5, fy - r * 0.5, fx + r * 0.5, fy + r * 0.5), fill=(240, 200, 40))
        for d, f in both:
            d.polygon([(x - w / 3, y - h / 2), (x + w / 3, y - h / 2), (x + w / 2, y + h / 2),
                       (x - w / 2, y + h / 2)], fill=f or c)
    elif kind == 2:  # fruit: one to three shaded rounds with a leaf
        for _ in range(int(rng.integers(1, 4))):
            r = s * uniform(rng, 0.15, 0.25)
            fx, fy = x + uniform(rng, -s / 4, s / 4), y + uniform(rng, -s / 4, s / 4)
            for d, f in both:
                d.ellipse((fx - r, fy - r, fx + r, fy + r), fill=f or dark)
            draw.ellipse((fx - r * 0.9, fy - r * 0.95, fx + r * 0.6, fy + r * 0.6), fill=c)
            draw.ellipse((fx - r * 0.5, fy - r * 0.6, fx - r * 0.1, fy - r * 0.2), fill=light)
            for d, f in both:
                d.ellipse((fx, fy - r * 1.3, fx + r * 0.6, fy - r * 0.9), fill=f or (70, 140, 60))
    elif kind == 3:  # phone: a dark slab with a lit screen
        w, h = s * 0.4, s * 0.8
        for d, f in both:
            d.rounded_rectangle((x - w / 2, y - h / 2, x + w / 2, y + h / 2), radius=w * 0.15, fill=f or (25, 25, 30))
        draw.rectangle((x - w * 0.42, y - h * 0.42, x + w * 0.42, y + h * 0.42), fill=light)
    elif kind == 4:  # keys on a ring: thin parts
        r, t = s * 0.15, max(2, int(s * 0.025))
        metal = tuple(int(v) for v in np.full(3, uniform(rng, 120, 210)))
        for d, f in both:
            d.ellipse((x - r, y - r, x + r, y + r), outline=f or metal, width=t)
            for _ in range(int(rng.integers(2, 4))):
                a = uniform(rng, 0, 2 * math.pi)
                kx, ky = x + math.cos(a) * r, y + math.sin(a) * r
                ex, ey = kx + math.cos(a) * s * 0.35, ky + math.sin(a) * s * 0.35
                d.ellipse((kx - r * 0.5, ky - r * 0.5, kx + r * 0.5, ky + r * 0.5), fill=f or metal)
                d.line((kx, ky, ex, ey), fill=f or metal, width=t * 2)
    elif kind == 5:  # candle: a pillar, its top and a flame
        w, h = s * 0.35, s * 0.6
        for d, f in both:
            d.rectangle((x - w / 2, y - h / 2, x + w / 2, y + h / 2), fill=f or c)
            d.ellipse((x - w / 2, y + h / 2 - w * 0.15, x + w / 2, y + h / 2 + w * 0.15), fill=f or c)
            d.ellipse((x - w * 0.08, y - h / 2 - w * 0.45, x + w * 0.08, y - h / 2), fill=f or (255, 200, 80))
        draw.ellipse((x - w / 2, y - h / 2 - w * 0.15, x + w / 2, y - h / 2 + w * 0.15), fill=light)
    elif kind == 6:  # bowl seen from above: a rim and its darker inside
        r = s * uniform(rng, 0.3, 0.45)
        for d, f in both:
            d.ellipse((x - r, y - r, x + r, y + r), fill=f or c)
        draw.ellipse((x - r * 0.8, y - r * 0.8, x + r * 0.8, y + r * 0.8), fill=dark)
    elif kind == 7:  # pencils: thin rods with a sharpened tip
        for _ in range(int(rng.integers(1, 4))):
            a = uniform(rng, 0, math.pi)
            dx, dy = math.cos(a) * s * 0.45, math.sin(a) * s * 0.45
            px, py = x + uniform(rng, -s / 5, s / 5), y + uniform(rng, -s / 5, s / 5)
            w = max(2, int(s * 0.05))
            for d, f in both:
                d.line((px - dx, py - dy, px + dx * 0.8, py + dy * 0.8), fill=f or c, width=w)
                d.line((px + dx * 0.8, py + dy * 0.8, px + dx, py + dy), fill=f or (225, 190, 150), width=max(1, w // 2))
    elif kind == 8:  # clock: a rim, a face and two hands
        r = s * 0.35
        for d, f in both:
            d.ellipse((x - r, y - r, x + r, y + r), fill=f or c)
        draw.ellipse((x - r * 0.85, y - r * 0.85, x + r * 0.85, y + r * 0.85), fill=(245, 245, 240))
        for a, ln in ((uniform(rng, 0, 2 * math.pi), 0.5), (uniform(rng, 0, 2 * math.pi), 0.75)):
            draw.line((x, y, x + math.cos(a) * r * ln, y + math.sin(a) * r * ln), fill=(20, 20, 20),
                      width=max(1, int(r * 0.06)))
    else:  # a folded napkin with stripes
        w, h = s * uniform(rng, 0.5, 0.8), s * uniform(rng, 0.35, 0.6)
        for d, f in both:
            d.rectangle((x - w / 2, y - h / 2, x + w / 2, y + h / 2), fill=f or light)
        for k in range(int(rng.integers(2, 5))):
            yy = y - h / 2 + h * (k + 1) / 6
            draw.line((x - w / 2, yy, x + w / 2, yy), fill=c, width=max(1, int(h * 0.06)))


def add_household(rng, look: Look, bg: np.ndarray, coverage: np.ndarray) -> np.ndarray:
    """A tabletop scene's everyday objects, each with its own soft shadow, most of them clear of the
    product and some tucked under it (the product is composed over them). Background: never masked."""
    from PIL import ImageDraw

    if not look.household:
        return bg
    height, width = coverage.shape
    keep_out, img = _set_table(bg, coverage, 60)
    light = uniform(rng, 0, 2 * math.pi)
    for _ in range(look.household):
        s = min(width, height) * uniform(rng, 0.14, 0.4)
        tucked = rng.random() < 0.25
        for _try in range(12):
            x, y = uniform(rng, 0, width), uniform(rng, 0, height)
            box = keep_out[max(0, int(y - s / 2)):int(y + s / 2) + 1, max(0, int(x - s / 2)):int(x + s / 2) + 1]
            if box.any() and not (tucked and not box.all()):
                continue
            layer, foot = img.copy(), Image.new("L", (width, height), 0)
            _household_object(rng, ImageDraw.Draw(layer), ImageDraw.Draw(foot), x, y, s)
            d = s * uniform(rng, 0.04, 0.1)
            cast = foot.transform(foot.size, Image.Transform.AFFINE,
                                  (1, 0, -d * math.cos(light), 0, 1, -d * math.sin(light)))
            cast = cast.filter(ImageFilter.GaussianBlur(max(1.0, s * 0.05)))
            img = Image.composite(Image.new("RGB", img.size, 0), img, cast.point(lambda v: v * 0.35))
            img.paste(layer, (0, 0), foot)
            keep_out[max(0, int(y - s / 2)):int(y + s / 2) + 1, max(0, int(x - s / 2)):int(x + s / 2) + 1] = True
            break
    return np.asarray(img, np.float32)


def paste(canvas: np.ndarray, part: np.ndarray, x0: int, y0: int) -> np.ndarray:
    """Write ``part`` into ``canvas`` with its top-left at (x0, y0), clipped to the canvas."""
    h, w = part.shape[:2]
    fx0, fy0, fx1, fy1 = max(0, x0), max(0, y0), min(canvas.shape[1], x0 + w), min(canvas.shape[0], y0 + h)
    if fx1 > fx0 and fy1 > fy0:
        canvas[fy0:fy1, fx0:fx1] = part[fy0 - y0:fy1 - y0, fx0 - x0:fx1 - x0]
    return canvas


def compose(rng, look: Look, style: str, colour: np.ndarray, prod: np.ndarray,
            coverage: np.ndarray, scale: float) -> tuple[Image.Image, Image.Image]:
    """Product extras + backdrop + shadow + product + camera → (RGB photo, L mask in {0, 255}).

    ``prod`` (H, W, 3) is the product's pixels over the whole frame (outside the product: its plain
    colour, which added straps take), ``coverage`` (H, W) its soft coverage in 0..1."""
    height, width = coverage.shape
    if {"holes", "thin", "straps"} & set(look.extras):  # edited at 2x so the new edges are antialiased too
        hi = Image.fromarray(np.clip(coverage * 255 + 0.5, 0, 255).astype(np.uint8), "L").resize(
            (width * 2, height * 2), Image.Resampling.BILINEAR)
        hi = cut_holes_and_add_thin_parts(rng, look, hi, 2)
        coverage = np.asarray(hi.reduce(2), np.float32) * np.float32(1 / 255)
    prod = decorate(rng, look, prod, colour, coverage, scale)
    scene = tabletop(rng, width, height) if look.household else backdrop(rng, look, width, height, style, colour)
    photo = cast_light(rng, look, add_household(rng, look, add_clutter(rng, look, scene, coverage), coverage),
                       coverage)
    a = coverage[..., None]
    photo = photo + (np.clip(prod, 0, 255) - photo) * a
    img, alpha = camera(rng, look, photo, coverage)
    mask = Image.fromarray(np.where(alpha >= 0.5, 255, 0).astype(np.uint8), "L")
    return img, mask
