"""Geometry of one product in its local frame, and the recipe that draws it.

The local frame: y grows downwards, the product spans roughly y in [0, 1], x centred on 0.  Curve and
polyline helpers build outlines; a :class:`_Shape` collects fills and strokes on three layers
(``mask``, ``detail``, ``hw``) plus fold lines.  :mod:`.garments` builds one per item and
:mod:`.render` draws it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np


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


def uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


def _random_folds(rng, sh: _Shape, box, n: int, angle_deg: tuple[float, float], length: tuple[float, float]):
    x0, y0, x1, y1 = box
    for _ in range(n):
        c = np.array([uniform(rng, x0, x1), uniform(rng, y0, y1)])
        ang = math.radians(uniform(rng, *angle_deg)) * (1 if rng.random() < 0.5 else -1)
        half = 0.5 * uniform(rng, *length)
        d = np.array([math.sin(ang), math.cos(ang)]) * half
        bend = np.array([-d[1], d[0]]) * uniform(rng, -0.3, 0.3)
        sh.fold(
            _qbez(c - d, c + bend, c + d, 8), uniform(rng, 0.01, 0.03), -1.0 if rng.random() < 0.65 else 1.0
        )
