"""Deterministic synthetic product photography with exact masks.

Every item is a studio packshot of one apparel product (tee, longsleeve, trousers, shorts, dress or
accessory) on a light seamless background, rendered from ``numpy.random.default_rng([seed, index])``
alone, so items can be rendered independently, in any order, on any worker.

How an item is made:

1. Photo size and framing: a portrait-leaning aspect (2:3, 3:4, 4:5, 1:1), each side in
   ``[min_side, max_side]``; the product is scaled and offset so that it fills a random share of the
   frame.
2. Geometry: a category builder returns a parametric silhouette (polygons, strokes, ellipses) in a
   local frame where the product is about one unit tall, plus interior details (seams, collars,
   waistbands, pockets, hardware) and fold lines.  The silhouette is drawn 2-4x supersampled and box
   downsampled: the soft coverage antialiases the photo, the mask is that coverage thresholded at
   one half, so it is exactly 0 or 255 and exactly matches the product's pixels.
3. Background: vertical gradient, optional table horizon, vignette, soft drop shadow behind the
   product and a contact shadow on the floor (the shadows belong to the background, never the mask).
4. Product appearance: solid colour or a print (stripes, gingham checks, dots, denim twill, heather
   grain), low-frequency shading, folds, darker edges, seams and hardware.
5. Sensor noise; JPEG compression happens when :func:`synthesize` writes the photo.

``style`` says which of the three colour regimes an item uses: ``normal``, ``white_on_white`` (white
product on a near-white background, the low-contrast hard case) or ``black_on_black``.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageFilter
from tqdm import tqdm

from backdrop.io import atomic_path, write_csv, write_json

CATEGORIES = ("tee", "longsleeve", "trousers", "shorts", "dress", "accessory")
STYLES = ("normal", "white_on_white", "black_on_black")
LABEL_FIELDS = ["stem", "category", "style", "width", "height"]
JPEG_QUALITY = 90

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
# Standard normal quantiles of 256 equally likely bins: uint8 draws -> Gaussian sensor noise, fast.
_NORMAL_QUANTILES = np.array([statistics.NormalDist().inv_cdf((k + 0.5) / 256) for k in range(256)])
_BINARY_LUT = [0] * 128 + [255] * 128
_METALS = np.array([(212, 184, 120), (200, 202, 206), (150, 130, 96), (60, 60, 64)], np.float32)
# fmt: on


@dataclass(frozen=True)
class SynthItem:
    stem: str
    category: str
    style: str
    width: int
    height: int


def stem_for(seed: int, index: int) -> str:
    return f"synth-{seed}-{index:05d}"


# --------------------------------------------------------------------------------------------------
# Geometry in a local frame: y grows downwards, the product spans roughly y in [0, 1], x centred on 0.


def _pts(*points) -> np.ndarray:
    return np.asarray(points, dtype=np.float64).reshape(-1, 2)


def _qbez(p0, p1, p2, n: int = 12) -> np.ndarray:
    t = np.linspace(0.0, 1.0, n)[:, None]
    p0, p1, p2 = (np.asarray(p, dtype=np.float64) for p in (p0, p1, p2))
    return (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2


def _cbez(p0, p1, p2, p3, n: int = 16) -> np.ndarray:
    t = np.linspace(0.0, 1.0, n)[:, None]
    p0, p1, p2, p3 = (np.asarray(p, dtype=np.float64) for p in (p0, p1, p2, p3))
    return (1 - t) ** 3 * p0 + 3 * (1 - t) ** 2 * t * p1 + 3 * (1 - t) * t**2 * p2 + t**3 * p3


def _arc(cx: float, cy: float, a: float, b: float, t0: float = 0.0, t1: float = 2 * math.pi, n: int = 48):
    t = np.linspace(t0, t1, n)
    return np.stack([cx + a * np.cos(t), cy + b * np.sin(t)], axis=1)


def _chain(*parts) -> np.ndarray:
    """Concatenate polylines, dropping a point that repeats the previous part's last point."""
    out = [np.asarray(parts[0], dtype=np.float64).reshape(-1, 2)]
    for part in parts[1:]:
        part = np.asarray(part, dtype=np.float64).reshape(-1, 2)
        if np.allclose(out[-1][-1], part[0]):
            part = part[1:]
        out.append(part)
    return np.concatenate(out)


def _mirror(right: np.ndarray) -> np.ndarray:
    """Right half outline from the top centre round to the bottom centre -> whole symmetric outline."""
    left = right[::-1] * np.array([-1.0, 1.0])
    return np.concatenate([right, left[1:-1]])


def _flip(pts: np.ndarray) -> np.ndarray:
    return pts * np.array([-1.0, 1.0])


@dataclass
class _Op:
    layer: str  # mask | detail | hw
    kind: str  # poly | line
    pts: np.ndarray
    value: int
    width: float = 0.0


@dataclass
class _Shape:
    """Drawing recipe of one product in local units."""

    ops: list[_Op] = field(default_factory=list)
    folds: list[tuple[np.ndarray, float, float]] = field(default_factory=list)  # (polyline, width, sign)
    fabric: str = "cotton"  # cotton | heather | denim | leather | knit
    printable: bool = True

    def fill(self, pts, value: int = 255, layer: str = "mask") -> None:
        self.ops.append(_Op(layer, "poly", np.asarray(pts, dtype=np.float64), value))

    def stroke(self, pts, width: float, value: int = 255, layer: str = "mask") -> None:
        self.ops.append(_Op(layer, "line", np.asarray(pts, dtype=np.float64), value, width))

    def seam(self, pts, width: float = 0.004, value: int = 100) -> None:
        self.stroke(pts, width, value, layer="detail")

    def shade(self, pts, value: int) -> None:
        self.fill(pts, value, layer="detail")

    def hardware(self, pts, *, stroke: float = 0.0, in_mask: bool = True) -> None:
        if stroke:
            if in_mask:
                self.stroke(pts, stroke)
            self.stroke(pts, stroke, layer="hw")
        else:
            if in_mask:
                self.fill(pts)
            self.fill(pts, layer="hw")

    def fold(self, pts, width: float, sign: float) -> None:
        self.folds.append((np.asarray(pts, dtype=np.float64), width, sign))

    def flipped(self) -> _Shape:
        out = _Shape(fabric=self.fabric, printable=self.printable)
        out.ops = [_Op(o.layer, o.kind, _flip(o.pts), o.value, o.width) for o in self.ops]
        out.folds = [(_flip(p), w, s) for p, w, s in self.folds]
        return out


def _u(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


def _random_folds(rng, sh: _Shape, box, n: int, angle_deg: tuple[float, float], length: tuple[float, float]):
    x0, y0, x1, y1 = box
    for _ in range(n):
        c = np.array([_u(rng, x0, x1), _u(rng, y0, y1)])
        ang = math.radians(_u(rng, *angle_deg)) * (1 if rng.random() < 0.5 else -1)
        half = 0.5 * _u(rng, *length)
        d = np.array([math.sin(ang), math.cos(ang)]) * half
        bend = np.array([-d[1], d[0]]) * _u(rng, -0.3, 0.3)
        sh.fold(_qbez(c - d, c + bend, c + d, 8), _u(rng, 0.01, 0.03), -1.0 if rng.random() < 0.65 else 1.0)


# ---- tops -----------------------------------------------------------------------------------------


def _sleeve(S, A, theta: float, length: float, cuff: float, min_x: float):
    d = np.array([math.sin(theta), math.cos(theta)])
    n = np.array([-math.cos(theta), math.sin(theta)])
    e1 = S + length * d
    e2 = e1 + cuff * n
    e2[0] = max(e2[0], min_x)
    inner_a = A + np.array([-0.06, 0.0])
    inner_s = S + np.array([-0.06, 0.03])
    return _pts(S, e1, e2, A, inner_a, inner_s), e1, e2, d


def _neckline(sh: _Shape, rng, nw: float, back_y: float, kind: str, depth: float) -> None:
    """Collar seen from the front: the inside of the back neck shows between back and front necklines."""
    back = _qbez((-nw, 0.0), (0.0, 2 * back_y), (nw, 0.0), 12)
    if kind == "v":
        front = _pts((nw, 0.0), (0.0, depth), (-nw, 0.0))
    else:
        front = _chain(
            _qbez((nw, 0.0), (nw * 0.95, depth), (0.0, depth), 8),
            _qbez((0.0, depth), (-nw * 0.95, depth), (-nw, 0.0), 8),
        )
    sh.shade(_chain(back, front), int(rng.integers(70, 95)))
    sh.seam(front, _u(rng, 0.012, 0.022), int(rng.integers(108, 122)))
    sh.seam(front + np.array([0.0, 0.02]), 0.003, 104)


def _top(rng, long: bool) -> _Shape:
    sh = _Shape()
    nw = _u(rng, 0.095, 0.13)
    sw = _u(rng, 0.28, 0.34) if long else _u(rng, 0.29, 0.36)
    sh_y = _u(rng, 0.03, 0.065)
    arm_y = _u(rng, 0.27, 0.34)
    bw = sw + _u(rng, -0.025, 0.01)
    flare = _u(rng, -0.015, 0.02)
    back_y = _u(rng, 0.01, 0.025)
    hem = bw + flare
    hoodie = long and rng.random() < 0.3
    polo = (not long) and rng.random() < 0.25
    if hoodie:
        sh.fill(
            _arc(0.0, 0.0, nw + _u(rng, 0.03, 0.06), _u(rng, 0.12, 0.16), math.pi, 2 * math.pi, 32).tolist()
            + [(nw + 0.03, 0.04), (-nw - 0.03, 0.04)]
        )
    right = _chain(
        _qbez((0.0, back_y), (nw * 0.6, back_y), (nw, 0.0), 6),
        _qbez((nw, 0.0), ((nw + sw) / 2, sh_y * 0.4), (sw, sh_y), 6),
        _pts((bw, arm_y)),
        _qbez((bw, arm_y), (bw + flare * 0.2, 0.65), (hem, 0.985), 10),
        _qbez((hem, 0.985), (hem * 0.5, 1.0), (0.0, 1.0), 8),
    )
    sh.fill(_mirror(right))
    if long:
        theta = math.radians(_u(rng, 14, 36))
        length, cuff = _u(rng, 0.7, 0.84), _u(rng, 0.11, 0.15)
    else:
        theta = math.radians(_u(rng, 50, 70))
        length, cuff = _u(rng, 0.19, 0.28), _u(rng, 0.16, 0.21)
    S, A = np.array([sw, sh_y]), np.array([bw, arm_y])
    poly, e1, e2, d = _sleeve(S, A, theta, length, cuff, bw + 0.025)
    for m in (1.0, -1.0):
        f = np.array([m, 1.0])
        sh.fill(poly * f)
        sh.seam(_pts(S, A) * f, 0.004, 102)  # armhole seam
        sh.seam(_pts((nw, 0.0), S) * f, 0.003, 104)  # shoulder seam
        if long:
            band = _pts(e1, e2, e2 - 0.07 * d, e1 - 0.07 * d) * f
            sh.shade(band, int(rng.integers(110, 122)))
            sh.seam(_pts(e1 - 0.07 * d, e2 - 0.07 * d) * f, 0.004, 100)
        else:
            sh.seam(_pts(e1 - 0.03 * d, e2 - 0.03 * d) * f, 0.003, 100)
        # folds at the armpit and along the sleeve
        sh.fold(_pts(A + np.array([0.01, 0.0]), A + np.array([-0.1, 0.12])) * f, 0.02, -1)
        sh.fold(_pts((S + A) / 2 + 0.05 * d, (e1 + e2) / 2 - 0.03 * d) * f, 0.025, 1)
    if hoodie:
        sh.shade(_arc(0.0, 0.0, nw, _u(rng, 0.05, 0.08), 0, 2 * math.pi, 24), 70)
        for m in (1.0, -1.0):
            x = m * _u(rng, 0.03, 0.05)
            cord = _pts((x, 0.05), (x + m * _u(rng, -0.01, 0.02), _u(rng, 0.25, 0.33)))
            sh.stroke(cord, 0.009)
            sh.seam(cord, 0.009, 118)
        pocket = _pts((-0.15, 0.62), (0.15, 0.62), (0.2, 0.88), (-0.2, 0.88), (-0.15, 0.62))
        sh.seam(pocket, 0.004, 98)
        sh.shade(_pts((-hem, 0.93), (hem, 0.93), (hem, 1.0), (-hem, 1.0)), 116)
        sh.seam(_pts((-hem, 0.93), (hem, 0.93)), 0.004, 100)
        sh.fabric = "heather" if rng.random() < 0.5 else "knit"
    else:
        _neckline(sh, rng, nw, back_y, "v" if rng.random() < 0.25 else "round", _u(rng, 0.07, 0.12))
        sh.seam(_pts((-hem, 0.955), (hem, 0.955)), 0.003, 102)
        if rng.random() < 0.3:
            sh.fabric = "heather"
    if polo:
        sh.fill(
            _pts((-nw - 0.02, -0.01), (-0.0, 0.09), (nw + 0.02, -0.01), (nw * 0.3, 0.1), (-nw * 0.3, 0.1))
        )
        sh.seam(_pts((0.0, 0.09), (0.0, 0.24)), 0.003, 98)
        for k in range(2):
            sh.shade(_arc(0.012, 0.13 + 0.05 * k, 0.009, 0.009, n=12), 150)
    _random_folds(rng, sh, (-bw, 0.35, bw, 0.95), int(rng.integers(2, 6)), (0, 70), (0.15, 0.4))
    return sh


# ---- bottoms --------------------------------------------------------------------------------------


def _bottoms(rng, shorts: bool) -> _Shape:
    sh = _Shape()
    if shorts:
        hw = _u(rng, 0.36, 0.44)
        hip_y, hh = 0.32, hw + _u(rng, 0.03, 0.07)
        cy = _u(rng, 0.52, 0.66)
        ho = hh + _u(rng, 0.03, 0.09)
        hi = _u(rng, 0.07, 0.15)
        inner_y = 1.0 - _u(rng, 0.0, 0.07)
        wb = _u(rng, 0.06, 0.1)
        style = "elastic" if rng.random() < 0.45 else "tailored"
    else:
        hw = _u(rng, 0.17, 0.21)
        hip_y, hh = 0.22, hw + _u(rng, 0.03, 0.06)
        cy = _u(rng, 0.27, 0.34)
        style = str(rng.choice(["slim", "straight", "straight", "wide", "jogger"]))
        lw = {"slim": (0.14, 0.16), "straight": (0.17, 0.2), "wide": (0.22, 0.27), "jogger": (0.12, 0.14)}[
            style
        ]
        dho = {"slim": (-0.02, 0.0), "straight": (0.0, 0.02), "wide": (0.03, 0.07), "jogger": (-0.04, -0.02)}[
            style
        ]
        ho = hh + _u(rng, *dho)
        hi = max(ho - _u(rng, *lw), 0.04)
        inner_y = 1.0
        wb = _u(rng, 0.035, 0.055)
    right = _chain(
        _pts((0.0, 0.0), (hw, 0.0)),
        _qbez((hw, 0.0), (hh, hip_y * 0.35), (hh, hip_y), 8),
        _qbez((hh, hip_y), (hh + (ho - hh) * 0.3, (hip_y + 1.0) / 2), (ho, 1.0), 10),
        _pts((hi, inner_y)),
        _qbez((hi, inner_y), (hi * 0.45, (inner_y + cy) / 2), (0.0, cy), 10),
    )
    sh.fill(_mirror(right))
    band = _pts((-hw, 0.0), (hw, 0.0), (hw + 0.004, wb), (-hw - 0.004, wb))
    sh.seam(_pts((-hw, wb), (hw, wb)), 0.004, 98)
    sh.shade(_pts((-hw, 0.0), (hw, 0.0), (hw, 0.012), (-hw, 0.012)), 88)  # inside of the back waistband
    elastic = style in ("elastic", "jogger")
    if elastic:
        sh.shade(band, 116)
        for k in range(1, 4):
            sh.seam(_pts((-hw, wb * k / 4), (hw, wb * k / 4)), 0.002, 112)
        for m in (1.0, -1.0):
            x = m * _u(rng, 0.015, 0.03)
            cord = _qbez(
                (x, wb * 0.6),
                (x + m * 0.02, wb + 0.08),
                (x + m * _u(rng, 0.0, 0.05), wb + _u(rng, 0.12, 0.2)),
                8,
            )
            sh.stroke(cord, 0.008)
            sh.seam(cord, 0.008, 122)
        sh.fabric = "heather" if rng.random() < 0.5 else "cotton"
    else:
        for x in np.linspace(-hw * 0.85, hw * 0.85, 5):
            loop = _pts(
                (x - 0.008, -0.004), (x + 0.008, -0.004), (x + 0.008, wb + 0.004), (x - 0.008, wb + 0.004)
            )
            sh.fill(loop)
            sh.seam(np.vstack([loop, loop[:1]]), 0.003, 96)
        sh.hardware(_arc(0.0, wb / 2, 0.012, 0.012, n=16))
        fly = _chain(
            _pts((0.035, wb), (0.035, cy * 0.8)),
            _qbez((0.035, cy * 0.8), (0.035, cy * 0.92), (0.0, cy * 0.95), 6),
        )
        sh.seam(fly, 0.004, 96)
        for m in (1.0, -1.0):
            sh.seam(
                _qbez((hw - 0.07, wb), (hw - 0.05, wb + 0.09), (hh, hip_y * 0.75), 8) * np.array([m, 1.0]),
                0.004,
                96,
            )
        if rng.random() < 0.6:
            sh.fabric = "denim"
    hem_y = 1.0 - (0.04 if not shorts else 0.05)
    for m in (1.0, -1.0):
        f = np.array([m, 1.0])
        sh.seam(_pts((hi, inner_y - (1.0 - hem_y)), (ho, hem_y)) * f, 0.004, 100)
        if style == "jogger":
            sh.shade(_pts((hi, hem_y - 0.02), (ho, hem_y - 0.02), (ho, 1.0), (hi, 1.0)) * f, 116)
        mid_top = np.array([(hh + 0.0) / 2, hip_y + 0.05])
        mid_bot = np.array([(ho + hi) / 2, 0.97])
        if not shorts:
            sh.fold(_pts(mid_top, mid_bot) * f, 0.012, 1)  # pressed crease
            for _ in range(int(rng.integers(1, 4))):
                y = _u(rng, 0.5, 0.85)
                x = hi + (ho - hi) * 0.5 + _u(rng, -0.03, 0.03)
                sh.fold(_pts((x - 0.07, y), (x + 0.07, y + _u(rng, -0.03, 0.03))) * f, 0.02, -1)
        sh.fold(_pts((0.02, cy - 0.03), (0.12, cy - 0.12)) * f, 0.02, -1)  # whiskers at the crotch
    if shorts and rng.random() < 0.3:
        for m in (1.0, -1.0):
            pk = _pts(
                (hh - 0.02, 0.55), (hh - 0.2, 0.55), (hh - 0.2, 0.82), (hh - 0.02, 0.82), (hh - 0.02, 0.55)
            )
            sh.seam(pk * np.array([m, 1.0]), 0.004, 98)
    _random_folds(rng, sh, (-hh, 0.15, hh, 0.95), int(rng.integers(1, 4)), (0, 40), (0.1, 0.3))
    sh.printable = shorts or sh.fabric != "denim"
    return sh


# ---- dress ----------------------------------------------------------------------------------------


def _dress(rng) -> _Shape:
    sh = _Shape()
    kind = str(rng.choice(["strap", "tank", "sleeve"]))
    bb = _u(rng, 0.13, 0.17)
    yw = _u(rng, 0.3, 0.4)
    ww = bb - _u(rng, 0.01, 0.035)
    hh = _u(rng, 0.26, 0.42)
    side_drop = _u(rng, 0.0, 0.04)
    skirt = _chain(
        _cbez((ww, yw), (ww + (hh - ww) * 0.15, yw + 0.15), (hh * 0.9, 0.75), (hh, 1.0 - side_drop), 14),
        _qbez((hh, 1.0 - side_drop), (hh * 0.5, 1.0 + side_drop * 0.3), (0.0, 1.0), 10),
    )
    if kind == "sleeve":
        nw, sh_y, back_y = _u(rng, 0.07, 0.1), _u(rng, 0.02, 0.04), _u(rng, 0.008, 0.02)
        sw = bb + _u(rng, 0.0, 0.02)
        arm_y = _u(rng, 0.16, 0.2)
        right = _chain(
            _qbez((0.0, back_y), (nw * 0.6, back_y), (nw, 0.0), 6),
            _pts((sw, sh_y), (bb + 0.005, arm_y)),
            _qbez((bb + 0.005, arm_y), (bb, (arm_y + yw) / 2), (ww, yw), 6),
            skirt,
        )
        S, A = np.array([sw, sh_y]), np.array([bb + 0.005, arm_y])
        poly, e1, e2, d = _sleeve(
            S, A, math.radians(_u(rng, 45, 65)), _u(rng, 0.08, 0.14), _u(rng, 0.1, 0.13), bb + 0.02
        )
        for m in (1.0, -1.0):
            sh.fill(poly * np.array([m, 1.0]))
            sh.seam(_pts(S, A) * np.array([m, 1.0]), 0.003, 104)
        _neckline(sh, rng, nw, back_y, "v" if rng.random() < 0.4 else "round", _u(rng, 0.06, 0.12))
        sh.fill(_mirror(right))
    else:
        yb = _u(rng, 0.12, 0.17)
        scoop = _u(rng, 0.0, 0.04) if kind == "strap" else _u(rng, 0.04, 0.09)
        right = _chain(
            _qbez((0.0, yb + scoop), (bb * 0.55, yb + scoop * 0.2 - 0.01), (bb, yb), 8),
            _pts((bb + 0.006, yb + 0.05)),
            _qbez((bb + 0.006, yb + 0.05), (bb, (yb + yw) / 2), (ww, yw), 6),
            skirt,
        )
        sh.fill(_mirror(right))
        sx = _u(rng, 0.055, 0.1)
        for m in (1.0, -1.0):
            f = np.array([m, 1.0])
            if kind == "strap":
                strap = _pts((bb - 0.035, yb + 0.004), (sx, 0.0))
                sh.stroke(strap * f, _u(rng, 0.006, 0.012))
            else:
                w = _u(rng, 0.035, 0.055)
                strap = _pts(
                    (bb - w - 0.02, yb + 0.03),
                    (bb - 0.002, yb + 0.03),
                    (sx + w * 0.6, 0.0),
                    (sx - w * 0.4, 0.0),
                )
                sh.fill(strap * f)
        sh.seam(_qbez((-bb, yb), (0.0, yb + scoop + 0.03), (bb, yb), 10), 0.003, 104)
    if rng.random() < 0.4:
        sh.shade(
            _pts(
                (-ww - 0.005, yw - 0.02),
                (ww + 0.005, yw - 0.02),
                (ww + 0.01, yw + 0.02),
                (-ww - 0.01, yw + 0.02),
            ),
            104,
        )
        if rng.random() < 0.5:
            knot = _pts((-0.01, yw), (0.03, yw + 0.2), (0.05, yw + 0.19), (0.015, yw))
            sh.fill(knot)
            sh.seam(knot, 0.003, 100)
    else:
        sh.seam(_pts((-ww, yw), (ww, yw)), 0.004, 100)
    if rng.random() < 0.3:  # tiered skirt
        for y in (yw + (1 - yw) * 0.38, yw + (1 - yw) * 0.7):
            x = ww + (hh - ww) * ((y - yw) / (1 - yw)) ** 0.8
            sh.seam(_qbez((-x, y), (0.0, y + 0.015), (x, y), 10), 0.004, 98)
    sh.seam(
        _qbez((-hh, 0.975 - side_drop), (0.0, 0.98 + side_drop * 0.3), (hh, 0.975 - side_drop), 12),
        0.003,
        104,
    )
    for _ in range(int(rng.integers(3, 8))):  # skirt folds fanning out from the waist
        x0 = _u(rng, -ww, ww)
        x1 = x0 / max(ww, 1e-3) * hh * _u(rng, 0.8, 1.0)
        sh.fold(
            _qbez((x0, yw + 0.05), (x0 * 1.1, (yw + 1) / 2), (x1, 0.99), 8),
            _u(rng, 0.015, 0.04),
            -1 if rng.random() < 0.6 else 1,
        )
    return sh


# ---- accessories ----------------------------------------------------------------------------------


def _handbag(rng) -> _Shape:
    sh = _Shape(fabric="leather", printable=False)
    tb = _u(rng, 0.34, 0.48)
    tw = _u(rng, 0.3, 0.42)
    bw = tw + _u(rng, -0.02, 0.08)
    r = _u(rng, 0.03, 0.1)
    sag = _u(rng, -0.01, 0.02)
    body = _chain(
        _qbez((-tw, tb), (0.0, tb + sag), (tw, tb), 8),
        _pts((bw, 1.0 - r)),
        _qbez((bw, 1.0 - r), (bw, 1.0), (bw - r, 1.0), 6),
        _pts((-bw + r, 1.0)),
        _qbez((-bw + r, 1.0), (-bw, 1.0), (-bw, 1.0 - r), 6),
    )
    t = _u(rng, 0.025, 0.045)
    handles = 2 if rng.random() < 0.5 else 1
    for h in range(handles):
        a = _u(rng, 0.16, min(0.3, tw - 0.04))
        cx = 0.0 if handles == 1 else (0.03 if h == 0 else -0.02)
        arc = _arc(cx, tb + 0.02, a, tb + 0.02 - t / 2 - (0.03 if h == 1 else 0.0), math.pi, 2 * math.pi, 40)
        sh.stroke(arc, t)
        sh.seam(arc, t, 92 if h == 0 else 80)
        sh.seam(arc, t * 0.15, 120)
        for end in (arc[0], arc[-1]):
            tab = _pts(end + (-0.025, -0.01), end + (0.025, -0.01), end + (0.025, 0.05), end + (-0.025, 0.05))
            sh.fill(tab)
            sh.seam(np.vstack([tab, tab[:1]]), 0.003, 96)
            sh.hardware(_arc(end[0], end[1] - 0.01, 0.018, 0.018, n=20), stroke=0.008)
    sh.fill(body)
    inset = body * np.array([0.94, 1.0]) + np.array([0.0, 0.0])
    inset[:, 1] = tb + (inset[:, 1] - tb) * 0.95 + 0.02
    sh.seam(np.vstack([inset, inset[:1]]), 0.003, 100)
    sh.shade(
        _qbez((-tw, tb), (0.0, tb + sag), (tw, tb), 8).tolist() + [(tw, tb + 0.02), (-tw, tb + 0.02)], 80
    )
    if rng.random() < 0.5:  # flap with a clasp
        fy = tb + _u(rng, 0.18, 0.3)
        flap = _chain(
            _pts((-tw, tb), (tw, tb)),
            _qbez((tw * 1.01, tb), (tw * 1.02, fy), (0.0, fy + 0.05), 8),
            _qbez((0.0, fy + 0.05), (-tw * 1.02, fy), (-tw * 1.01, tb), 8),
        )
        sh.shade(flap, 134)
        sh.seam(flap[1:-1], 0.004, 84)
        sh.hardware(_pts((-0.04, fy), (0.04, fy), (0.04, fy + 0.05), (-0.04, fy + 0.05)))
    else:
        sh.seam(_pts((-tw + 0.04, tb + 0.04), (tw - 0.04, tb + 0.04)), 0.01, 90)
        sh.hardware(
            _pts(
                (tw - 0.06, tb + 0.03), (tw - 0.03, tb + 0.03), (tw - 0.035, tb + 0.1), (tw - 0.055, tb + 0.1)
            )
        )
    sh.fold(_pts((-bw + 0.03, 1.0 - r), (-bw + 0.12, tb + 0.1)), 0.05, 1)
    sh.fold(_pts((bw - 0.05, 0.95), (bw - 0.05, tb + 0.08)), 0.04, -1)
    return sh


def _belt(rng) -> _Shape:
    sh = _Shape(fabric="leather", printable=False)
    t = _u(rng, 0.12, 0.16)
    a = _u(rng, 0.55, 0.72)
    b = 0.5 - t / 2
    ring = _arc(0.0, 0.5, a, b, 0, 2 * math.pi, 96)
    sh.stroke(ring, t)
    sh.stroke(ring[:1], t)  # closes the join of the polyline
    for off in (t / 2 - 0.018, -(t / 2 - 0.018)):
        sh.seam(_arc(0.0, 0.5, a + off, b + off, 0, 2 * math.pi, 96), 0.003, 108)
    # tongue lying on top of the strap, from the buckle to one side
    tongue = _arc(0.0, 0.5, a, b, math.pi * 0.5, math.pi * 0.5 - _u(rng, 0.3, 0.6), 16)
    sh.seam(tongue + np.array([0.0, -t * 0.35]), 0.004, 90)
    sh.seam(tongue + np.array([0.0, t * 0.35]), 0.004, 90)
    for k in range(1, 5):
        ang = math.pi * 0.5 + 0.12 * k + 0.1
        p = np.array([a * math.cos(ang), 0.5 + b * math.sin(ang)])
        sh.shade(_arc(p[0], p[1], 0.008, 0.008, n=12), 40)
    bx = _u(rng, 0.05, 0.08)
    by = t / 2 + _u(rng, 0.015, 0.03)
    frame = _pts(
        (-bx, 1.0 - t / 2 - by), (bx, 1.0 - t / 2 - by), (bx, 1.0 - t / 2 + by), (-bx, 1.0 - t / 2 + by)
    )
    sh.hardware(np.vstack([frame, frame[:1]]), stroke=_u(rng, 0.014, 0.022))
    sh.hardware(_pts((0.0, 1.0 - t / 2), (-bx, 1.0 - t / 2)), stroke=0.008)
    sh.fold(_arc(0.0, 0.5, a, b, 0.2, 1.2, 10), 0.03, 1)
    return sh


def _cap(rng) -> _Shape:
    """Baseball cap in a three-quarter view: a flattened dome and a curved brim reaching forward-right."""
    sh = _Shape(fabric="cotton", printable=False)
    a = _u(rng, 0.48, 0.56)
    hc = _u(rng, 0.48, 0.6)
    top = 0.02
    yb = top + hc
    bottom = _qbez((a, yb), (0.0, yb + _u(rng, 0.05, 0.09)), (-a, yb), 12)
    crown = _chain(_arc(0.0, yb, a, hc, math.pi, 2 * math.pi, 48), bottom)
    tip = np.array([a + _u(rng, 0.22, 0.38), yb + _u(rng, 0.08, 0.16)])
    low = np.array([_u(rng, 0.25, 0.4), yb + _u(rng, 0.15, 0.22)])
    upper = _cbez((-0.1, yb + 0.02), (0.3, yb - 0.01), tip + (-0.15, -0.08), tip, 16)
    lower = _cbez(tip, tip + (-0.04, 0.07), low + (0.1, 0.0), low, 10)
    brim = _chain(upper, lower, _qbez(low, (0.0, low[1] - 0.01), (-0.2, yb + 0.08), 8))
    sh.fill(brim)
    sh.shade(
        _chain(
            lower,
            _qbez(low, (0.0, low[1] - 0.01), (-0.2, yb + 0.08), 8),
            _cbez((-0.2, yb + 0.08), (0.2, yb + 0.1), low + (0.15, -0.06), tip, 12),
        ),
        82,
    )
    sh.seam(
        _cbez((0.0, yb + 0.08), (0.3, yb + 0.05), tip + (-0.15, -0.04), tip + (-0.03, 0.0), 12), 0.003, 104
    )
    sh.fill(crown)
    for xb in (-0.7, -0.25, 0.3, 0.78):
        sh.seam(
            _qbez((0.04, top + 0.015), (a * xb * 1.05, top + hc * 0.25), (a * xb, yb + 0.06 * (1 - xb * xb))),
            0.004,
            100,
        )
    button = _arc(0.04, top + 0.005, 0.035, 0.022, n=20)
    sh.fill(button)
    sh.shade(button, 112)
    for xe in (-0.45, 0.55):
        sh.shade(_arc(a * xe, top + hc * 0.35, 0.012, 0.01, n=12), 60)
    if rng.random() < 0.5:  # embroidered patch / logo on the front panels
        px = a * 0.05
        sh.shade(
            _pts(
                (px - 0.12, yb - hc * 0.55),
                (px + 0.12, yb - hc * 0.55),
                (px + 0.12, yb - hc * 0.3),
                (px - 0.12, yb - hc * 0.3),
            ),
            int(rng.choice([70, 180])),
        )
    sh.seam(bottom, 0.02, 110)
    sh.fold(_pts((-a * 0.6, yb - hc * 0.5), (-a * 0.3, yb - 0.02)), 0.05, -1)
    sh.fold(_pts((a * 0.5, yb - hc * 0.7), (a * 0.7, yb - 0.05)), 0.04, 1)
    return sh


def _accessory(rng) -> _Shape:
    kind = str(rng.choice(["handbag", "handbag", "belt", "cap"]))
    sh = {"handbag": _handbag, "belt": _belt, "cap": _cap}[kind](rng)
    return sh.flipped() if rng.random() < 0.5 else sh


_BUILDERS = {
    "tee": lambda rng: _top(rng, long=False),
    "longsleeve": lambda rng: _top(rng, long=True),
    "trousers": lambda rng: _bottoms(rng, shorts=False),
    "shorts": lambda rng: _bottoms(rng, shorts=True),
    "dress": _dress,
    "accessory": _accessory,
}


# --------------------------------------------------------------------------------------------------
# Rendering


def _pick_size(rng, min_side: int, max_side: int) -> tuple[int, int]:
    lo, hi = int(min_side), int(max_side)
    if lo < 1 or hi < lo:
        raise ValueError(f"need 1 <= min_side <= max_side, got {min_side}, {max_side}")
    weights = np.array([w for _, w in _ASPECTS])
    aspect = _ASPECTS[int(rng.choice(len(_ASPECTS), p=weights / weights.sum()))][0]
    long_lo = min(hi, math.ceil(lo / aspect))
    long_side = int(rng.integers(long_lo, hi + 1))
    short_side = int(min(max(round(long_side * aspect), lo), hi))
    return short_side, long_side  # width, height: portrait or square


def _colour(rng, style: str, fabric: str) -> np.ndarray:
    if style == "white_on_white":
        return np.full(3, _u(rng, 228, 250), np.float32) + rng.uniform(-3, 3, 3).astype(np.float32)
    if style == "black_on_black":
        return np.full(3, _u(rng, 12, 34), np.float32) + rng.uniform(-3, 3, 3).astype(np.float32)
    if fabric == "denim":
        base = _DENIM[int(rng.integers(len(_DENIM)))]
    elif fabric == "leather":
        base = _LEATHER[int(rng.integers(len(_LEATHER)))]
    elif rng.random() < 0.3:  # a random hue
        h, s, v = _u(rng, 0, 1), _u(rng, 0.2, 0.7), _u(rng, 0.3, 0.85)
        i, f = int(h * 6) % 6, h * 6 - int(h * 6)
        p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
        base = (
            np.array([(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i], np.float32) * 255
        )
    else:
        base = _PALETTE[int(rng.integers(len(_PALETTE)))]
    return np.clip(base * _u(rng, 0.9, 1.1) + rng.uniform(-8, 8, 3), 8, 245).astype(np.float32)


def _background(rng, style: str) -> tuple[np.ndarray, np.ndarray]:
    """Top and bottom colour of the studio sweep."""
    if style == "white_on_white":
        top = np.full(3, _u(rng, 238, 255), np.float32)
        tint = rng.uniform(-2, 2, 3)
    elif style == "black_on_black":
        top = np.full(3, _u(rng, 38, 72), np.float32)
        tint = rng.uniform(-2, 2, 3)
    else:
        kind = rng.random()
        if kind < 0.4:  # white
            top = np.full(3, _u(rng, 236, 252), np.float32)
            tint = rng.uniform(-2, 2, 3)
        elif kind < 0.75:  # light grey
            top = np.full(3, _u(rng, 196, 236), np.float32)
            tint = rng.uniform(-3, 3, 3)
        else:  # beige / warm paper
            top = np.array([_u(rng, 225, 245)] * 3, np.float32)
            tint = np.array([4.0, 0.0, -8.0]) * _u(rng, 0.5, 1.6)
    top = top + tint.astype(np.float32)
    bottom = top * _u(rng, 0.88, 1.04)
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
    period = max(4.0, scale * _u(rng, 0.025, 0.09))
    c, s = math.cos(angle), math.sin(angle)
    ys = np.arange(h, dtype=np.float32)[:, None]
    xs = np.arange(w, dtype=np.float32)[None, :]
    u = (xs * c + ys * s) / period
    v = (ys * c - xs * s) / period
    if style != "normal":
        other = colour * _u(rng, 0.9, 0.96)
    elif rng.random() < 0.5:
        other = np.array([238, 236, 230], np.float32) * _u(rng, 0.95, 1.02)
    else:
        other = _PALETTE[int(rng.integers(len(_PALETTE)))]

    def band(t, duty):
        tri = np.abs((t % 1.0) - 0.5) * 2.0  # 0 in the band centre, 1 at its edge
        return np.clip((duty - tri) * period * 0.5 + 0.5, 0.0, 1.0)

    if kind == "stripes":
        wgt = band(v if rng.random() < 0.8 else u, _u(rng, 0.2, 0.6))
    elif kind == "checks":
        wgt = 0.5 * (band(u, 0.5) + band(v, 0.5))
    else:
        radius = _u(rng, 0.12, 0.3)
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
        return 1.0 + _streaky_noise(rng, shape) * np.float32(_u(rng, 0.01, 0.025))
    if fabric == "denim":
        ys = np.arange(h, dtype=np.float32)[:, None]
        xs = np.arange(w, dtype=np.float32)[None, :]
        twill = np.sin((xs + ys) * np.float32(2 * math.pi / _u(rng, 3.0, 5.0)))
        return 1.0 + np.float32(0.035) * twill + _streaky_noise(rng, shape) * np.float32(0.02)
    if fabric == "knit":  # vertical ribs, (1, w) broadcasts over the rows
        xs = np.arange(w, dtype=np.float32)[None, :]
        return 1.0 + np.float32(0.04) * np.sin(xs * np.float32(2 * math.pi / _u(rng, 3.0, 6.0)))
    return None


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
    width, height = _pick_size(rng, min_side, max_side)
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
    angle = math.radians(_u(rng, -3.0, 3.0) if category != "accessory" else _u(rng, -8.0, 8.0))
    mask_pts = np.concatenate([o.pts for o in shape.ops if o.layer == "mask"])
    rotate = _Frame(1.0, angle, np.zeros(2))
    lo = np.min([rotate(o.pts).min(axis=0) - o.width / 2 for o in shape.ops if o.layer == "mask"], axis=0)
    hi = np.max([rotate(o.pts).max(axis=0) + o.width / 2 for o in shape.ops if o.layer == "mask"], axis=0)
    gw, gh = (float(v) for v in hi - lo)
    fill_w, fill_h = _u(rng, 0.62, 0.88), _u(rng, 0.62, 0.88)
    if category == "accessory":  # smaller objects are shot closer
        fill_w, fill_h = fill_w + 0.04, fill_h + 0.04
    scale = min(fill_w * width / gw, fill_h * height / gh)
    pw, ph = gw * scale, gh * scale
    free_x, free_y = width - pw, height - ph
    px = free_x / 2 + _u(rng, -0.35, 0.35) * free_x
    py = free_y / 2 + _u(rng, -0.35, 0.25) * free_y
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
    bg_top, bg_bottom = _background(rng, style)
    q = 8
    lw_, lh_ = max(2, width // q), max(2, height // q)
    yy = (np.arange(lh_, dtype=np.float32)[:, None] + 0.5) / lh_
    xx = (np.arange(lw_, dtype=np.float32)[None, :] + 0.5) / lw_
    grad = yy ** np.float32(_u(rng, 0.7, 1.6))
    light = np.ones((lh_, lw_), np.float32)
    if rng.random() < 0.3:  # a table edge / floor horizon behind the product
        hy = (py + ph * _u(rng, 0.5, 0.8)) / height
        light *= 1.0 - np.float32(_u(rng, 0.02, 0.06)) / (
            1.0 + np.exp(-(yy - hy) * np.float32(_u(rng, 30, 120)))
        )
    vig = _u(rng, 0.04, 0.18)
    cxv, cyv = _u(rng, 0.4, 0.6), _u(rng, 0.35, 0.55)
    light *= 1.0 - np.float32(vig) * (((xx - cxv) ** 2 + (yy - cyv) ** 2) / 0.5) ** np.float32(1.2)
    shadow = Image.new("L", (lw_, lh_), 0)
    small = alpha_img.resize((max(1, cw // q), max(1, ch // q)), Image.Resampling.BILINEAR)
    sdx, sdy = _u(rng, -0.03, 0.05) * pw, _u(rng, 0.0, 0.04) * ph
    shadow.paste(small, (int(round((x0 + sdx) / q)), int(round((y0 + sdy) / q))), small)
    contact = ImageDraw.Draw(shadow)
    bot = float(frame(mask_pts)[:, 1].max())
    cx_prod = px + pw / 2
    ew, eh = pw * _u(rng, 0.3, 0.5), max(2.0, ph * _u(rng, 0.015, 0.04))
    contact.ellipse(((cx_prod - ew) / q, (bot - eh) / q, (cx_prod + ew) / q, (bot + eh) / q), fill=255)
    shadow = shadow.filter(ImageFilter.GaussianBlur(max(1.0, _u(rng, 0.01, 0.035) * max(pw, ph) / q)))
    strength = _u(rng, 0.06, 0.22) if style != "black_on_black" else _u(rng, 0.1, 0.3)
    light *= 1.0 - np.float32(strength) * np.asarray(shadow, np.float32) * np.float32(1 / 255)
    bg_small = (bg_top + (bg_bottom - bg_top) * grad[..., None]) * light[..., None]
    bg_small = np.clip(bg_small + 0.5, 0, 255).astype(np.uint8)

    # ---- product appearance on the crop
    colour = _colour(rng, style, shape.fabric)
    albedo = _print_pattern(rng, colour, style, (ch, cw), angle, scale, shape.printable)
    lq = 4
    sw_, sh_ = max(2, cw // lq), max(2, ch // lq)
    shading = 1.0 + _smooth_noise(rng, (sh_, sw_), int(rng.integers(3, 7))) * np.float32(_u(rng, 0.015, 0.04))
    ang = _u(rng, 0, 2 * math.pi)
    gx = (np.arange(sw_, dtype=np.float32)[None, :] / sw_ - 0.5) * np.float32(math.cos(ang))
    gy = (np.arange(sh_, dtype=np.float32)[:, None] / sh_ - 0.5) * np.float32(math.sin(ang))
    shading += (gx + gy) * np.float32(_u(rng, 0.06, 0.18))
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
    shading += (np.asarray(fold_img, np.float32) - 128.0) * np.float32(_u(rng, 0.1, 0.25) / 128)
    edge = alpha_img.resize((sw_, sh_), Image.Resampling.BILINEAR).filter(
        ImageFilter.GaussianBlur(max(1.0, 0.01 * scale / lq))
    )
    edge_f = np.asarray(edge, np.float32) * np.float32(1 / 255)
    shading *= 1.0 - np.float32(_u(rng, 0.15, 0.4)) * np.clip(1.0 - edge_f, 0.0, 1.0) ** 2 * 1.5
    shading = _resize_f(shading, (cw, ch))
    detail = np.asarray(detail_img, np.float32) * np.float32(1 / 128) if detail_img is not None else 1.0
    texture = _fabric_texture(rng, shape.fabric, (ch, cw))
    lum = shading * detail if texture is None else shading * detail * texture
    sheen = np.float32(_u(rng, 20, 50) if float(colour.mean()) < 70 else _u(rng, 0, 12))
    prod = lum[..., None] * (albedo + sheen)
    prod -= sheen - np.float32(0.5)  # albedo * lum + sheen * (lum - 1), +0.5 to round on the cast
    if shape.fabric == "leather":  # glossy highlights on the folds
        prod += (np.clip(shading - 1.0, 0.0, None) * np.float32(_u(rng, 60, 140)))[..., None]
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
    table = np.clip(np.rint(_NORMAL_QUANTILES * _u(rng, 0.8, 2.6)) + 128, 0, 255).astype(np.uint8)
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
    write_json(out_dir / "drop.json", {"source": "backdrop synth", "seed": seed, "n": n,
                                       "training": True, "metadata": ["labels.csv"]})
    return items
