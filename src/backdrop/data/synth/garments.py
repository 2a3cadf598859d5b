"""Category builders: one parametric :class:`~.geometry._Shape` per apparel category.

A builder returns the product's silhouette (polygons, strokes, ellipses) about one unit tall, its
interior details (seams, collars, waistbands, pockets, hardware) and fold lines, drawing its
parameters from the item's generator.  :data:`_BUILDERS` maps each category to its builder.
"""

from __future__ import annotations

import math

import numpy as np

from backdrop.data.synth.geometry import (
    _arc,
    _cbez,
    _chain,
    _mirror,
    _pts,
    _qbez,
    _random_folds,
    _Shape,
    uniform,
)

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
    sh.seam(front, uniform(rng, 0.012, 0.022), int(rng.integers(108, 122)))
    sh.seam(front + np.array([0.0, 0.02]), 0.003, 104)


def _top(rng, long: bool) -> _Shape:
    sh = _Shape()
    nw = uniform(rng, 0.095, 0.13)
    sw = uniform(rng, 0.28, 0.34) if long else uniform(rng, 0.29, 0.36)
    sh_y = uniform(rng, 0.03, 0.065)
    arm_y = uniform(rng, 0.27, 0.34)
    bw = sw + uniform(rng, -0.025, 0.01)
    flare = uniform(rng, -0.015, 0.02)
    back_y = uniform(rng, 0.01, 0.025)
    hem = bw + flare
    hoodie = long and rng.random() < 0.3
    polo = (not long) and rng.random() < 0.25
    if hoodie:
        sh.fill(
            _arc(
                0.0, 0.0, nw + uniform(rng, 0.03, 0.06), uniform(rng, 0.12, 0.16), math.pi, 2 * math.pi, 32
            ).tolist()
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
        theta = math.radians(uniform(rng, 14, 36))
        length, cuff = uniform(rng, 0.7, 0.84), uniform(rng, 0.11, 0.15)
    else:
        theta = math.radians(uniform(rng, 50, 70))
        length, cuff = uniform(rng, 0.19, 0.28), uniform(rng, 0.16, 0.21)
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
        sh.shade(_arc(0.0, 0.0, nw, uniform(rng, 0.05, 0.08), 0, 2 * math.pi, 24), 70)
        for m in (1.0, -1.0):
            x = m * uniform(rng, 0.03, 0.05)
            cord = _pts((x, 0.05), (x + m * uniform(rng, -0.01, 0.02), uniform(rng, 0.25, 0.33)))
            sh.stroke(cord, 0.009)
            sh.seam(cord, 0.009, 118)
        pocket = _pts((-0.15, 0.62), (0.15, 0.62), (0.2, 0.88), (-0.2, 0.88), (-0.15, 0.62))
        sh.seam(pocket, 0.004, 98)
        sh.shade(_pts((-hem, 0.93), (hem, 0.93), (hem, 1.0), (-hem, 1.0)), 116)
        sh.seam(_pts((-hem, 0.93), (hem, 0.93)), 0.004, 100)
        sh.fabric = "heather" if rng.random() < 0.5 else "knit"
    else:
        _neckline(sh, rng, nw, back_y, "v" if rng.random() < 0.25 else "round", uniform(rng, 0.07, 0.12))
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
        hw = uniform(rng, 0.36, 0.44)
        hip_y, hh = 0.32, hw + uniform(rng, 0.03, 0.07)
        cy = uniform(rng, 0.52, 0.66)
        ho = hh + uniform(rng, 0.03, 0.09)
        hi = uniform(rng, 0.07, 0.15)
        inner_y = 1.0 - uniform(rng, 0.0, 0.07)
        wb = uniform(rng, 0.06, 0.1)
        style = "elastic" if rng.random() < 0.45 else "tailored"
    else:
        hw = uniform(rng, 0.17, 0.21)
        hip_y, hh = 0.22, hw + uniform(rng, 0.03, 0.06)
        cy = uniform(rng, 0.27, 0.34)
        style = str(rng.choice(["slim", "straight", "straight", "wide", "jogger"]))
        lw = {"slim": (0.14, 0.16), "straight": (0.17, 0.2), "wide": (0.22, 0.27), "jogger": (0.12, 0.14)}[
            style
        ]
        dho = {"slim": (-0.02, 0.0), "straight": (0.0, 0.02), "wide": (0.03, 0.07), "jogger": (-0.04, -0.02)}[
            style
        ]
        ho = hh + uniform(rng, *dho)
        hi = max(ho - uniform(rng, *lw), 0.04)
        inner_y = 1.0
        wb = uniform(rng, 0.035, 0.055)
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
            x = m * uniform(rng, 0.015, 0.03)
            cord = _qbez(
                (x, wb * 0.6),
                (x + m * 0.02, wb + 0.08),
                (x + m * uniform(rng, 0.0, 0.05), wb + uniform(rng, 0.12, 0.2)),
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
                y = uniform(rng, 0.5, 0.85)
                x = hi + (ho - hi) * 0.5 + uniform(rng, -0.03, 0.03)
                sh.fold(_pts((x - 0.07, y), (x + 0.07, y + uniform(rng, -0.03, 0.03))) * f, 0.02, -1)
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
    bb = uniform(rng, 0.13, 0.17)
    yw = uniform(rng, 0.3, 0.4)
    ww = bb - uniform(rng, 0.01, 0.035)
    hh = uniform(rng, 0.26, 0.42)
    side_drop = uniform(rng, 0.0, 0.04)
    skirt = _chain(
        _cbez((ww, yw), (ww + (hh - ww) * 0.15, yw + 0.15), (hh * 0.9, 0.75), (hh, 1.0 - side_drop), 14),
        _qbez((hh, 1.0 - side_drop), (hh * 0.5, 1.0 + side_drop * 0.3), (0.0, 1.0), 10),
    )
    if kind == "sleeve":
        nw, sh_y, back_y = uniform(rng, 0.07, 0.1), uniform(rng, 0.02, 0.04), uniform(rng, 0.008, 0.02)
        sw = bb + uniform(rng, 0.0, 0.02)
        arm_y = uniform(rng, 0.16, 0.2)
        right = _chain(
            _qbez((0.0, back_y), (nw * 0.6, back_y), (nw, 0.0), 6),
            _pts((sw, sh_y), (bb + 0.005, arm_y)),
            _qbez((bb + 0.005, arm_y), (bb, (arm_y + yw) / 2), (ww, yw), 6),
            skirt,
        )
        S, A = np.array([sw, sh_y]), np.array([bb + 0.005, arm_y])
        poly, e1, e2, d = _sleeve(
            S,
            A,
            math.radians(uniform(rng, 45, 65)),
            uniform(rng, 0.08, 0.14),
            uniform(rng, 0.1, 0.13),
            bb + 0.02,
        )
        for m in (1.0, -1.0):
            sh.fill(poly * np.array([m, 1.0]))
            sh.seam(_pts(S, A) * np.array([m, 1.0]), 0.003, 104)
        _neckline(sh, rng, nw, back_y, "v" if rng.random() < 0.4 else "round", uniform(rng, 0.06, 0.12))
        sh.fill(_mirror(right))
    else:
        yb = uniform(rng, 0.12, 0.17)
        scoop = uniform(rng, 0.0, 0.04) if kind == "strap" else uniform(rng, 0.04, 0.09)
        right = _chain(
            _qbez((0.0, yb + scoop), (bb * 0.55, yb + scoop * 0.2 - 0.01), (bb, yb), 8),
            _pts((bb + 0.006, yb + 0.05)),
            _qbez((bb + 0.006, yb + 0.05), (bb, (yb + yw) / 2), (ww, yw), 6),
            skirt,
        )
        sh.fill(_mirror(right))
        sx = uniform(rng, 0.055, 0.1)
        for m in (1.0, -1.0):
            f = np.array([m, 1.0])
            if kind == "strap":
                strap = _pts((bb - 0.035, yb + 0.004), (sx, 0.0))
                sh.stroke(strap * f, uniform(rng, 0.006, 0.012))
            else:
                w = uniform(rng, 0.035, 0.055)
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
        x0 = uniform(rng, -ww, ww)
        x1 = x0 / max(ww, 1e-3) * hh * uniform(rng, 0.8, 1.0)
        sh.fold(
            _qbez((x0, yw + 0.05), (x0 * 1.1, (yw + 1) / 2), (x1, 0.99), 8),
            uniform(rng, 0.015, 0.04),
            -1 if rng.random() < 0.6 else 1,
        )
    return sh


# ---- accessories ----------------------------------------------------------------------------------


def _handbag(rng) -> _Shape:
    sh = _Shape(fabric="leather", printable=False)
    tb = uniform(rng, 0.34, 0.48)
    tw = uniform(rng, 0.3, 0.42)
    bw = tw + uniform(rng, -0.02, 0.08)
    r = uniform(rng, 0.03, 0.1)
    sag = uniform(rng, -0.01, 0.02)
    body = _chain(
        _qbez((-tw, tb), (0.0, tb + sag), (tw, tb), 8),
        _pts((bw, 1.0 - r)),
        _qbez((bw, 1.0 - r), (bw, 1.0), (bw - r, 1.0), 6),
        _pts((-bw + r, 1.0)),
        _qbez((-bw + r, 1.0), (-bw, 1.0), (-bw, 1.0 - r), 6),
    )
    t = uniform(rng, 0.025, 0.045)
    handles = 2 if rng.random() < 0.5 else 1
    for h in range(handles):
        a = uniform(rng, 0.16, min(0.3, tw - 0.04))
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
        fy = tb + uniform(rng, 0.18, 0.3)
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
    t = uniform(rng, 0.12, 0.16)
    a = uniform(rng, 0.55, 0.72)
    b = 0.5 - t / 2
    ring = _arc(0.0, 0.5, a, b, 0, 2 * math.pi, 96)
    sh.stroke(ring, t)
    sh.stroke(ring[:1], t)  # closes the join of the polyline
    for off in (t / 2 - 0.018, -(t / 2 - 0.018)):
        sh.seam(_arc(0.0, 0.5, a + off, b + off, 0, 2 * math.pi, 96), 0.003, 108)
    # tongue lying on top of the strap, from the buckle to one side
    tongue = _arc(0.0, 0.5, a, b, math.pi * 0.5, math.pi * 0.5 - uniform(rng, 0.3, 0.6), 16)
    sh.seam(tongue + np.array([0.0, -t * 0.35]), 0.004, 90)
    sh.seam(tongue + np.array([0.0, t * 0.35]), 0.004, 90)
    for k in range(1, 5):
        ang = math.pi * 0.5 + 0.12 * k + 0.1
        p = np.array([a * math.cos(ang), 0.5 + b * math.sin(ang)])
        sh.shade(_arc(p[0], p[1], 0.008, 0.008, n=12), 40)
    bx = uniform(rng, 0.05, 0.08)
    by = t / 2 + uniform(rng, 0.015, 0.03)
    frame = _pts(
        (-bx, 1.0 - t / 2 - by), (bx, 1.0 - t / 2 - by), (bx, 1.0 - t / 2 + by), (-bx, 1.0 - t / 2 + by)
    )
    sh.hardware(np.vstack([frame, frame[:1]]), stroke=uniform(rng, 0.014, 0.022))
    sh.hardware(_pts((0.0, 1.0 - t / 2), (-bx, 1.0 - t / 2)), stroke=0.008)
    sh.fold(_arc(0.0, 0.5, a, b, 0.2, 1.2, 10), 0.03, 1)
    return sh


def _cap(rng) -> _Shape:
    """Baseball cap in a three-quarter view: a flattened dome and a curved brim reaching forward-right."""
    sh = _Shape(fabric="cotton", printable=False)
    a = uniform(rng, 0.48, 0.56)
    hc = uniform(rng, 0.48, 0.6)
    top = 0.02
    yb = top + hc
    bottom = _qbez((a, yb), (0.0, yb + uniform(rng, 0.05, 0.09)), (-a, yb), 12)
    crown = _chain(_arc(0.0, yb, a, hc, math.pi, 2 * math.pi, 48), bottom)
    tip = np.array([a + uniform(rng, 0.22, 0.38), yb + uniform(rng, 0.08, 0.16)])
    low = np.array([uniform(rng, 0.25, 0.4), yb + uniform(rng, 0.15, 0.22)])
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
