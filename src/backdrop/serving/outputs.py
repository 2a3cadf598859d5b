"""Outputs a shop can publish: RGBA cut-out, product on white at the shop's aspect ratio, the mask.

* `rgba`  — the photo at its original size with alpha = the (optionally refined) mask.
* `mask`  — that alpha as an 8-bit L image (identical to the RGBA alpha).
* `white` — the product composited on white, cropped to its bounding box, centred on a canvas of the
  shop's aspect ratio (`serve.white_aspect`, e.g. "1:1", "4:5", or "original" for the photo's own
  frame) with `serve.white_margin` of the canvas' shorter side left free around it. The product is
  never scaled, so nothing is resampled twice.
* clean edges (`serve.clean_edges`, `backdrop remove -a`) — backdrop-coloured fringe pixels lose
  their alpha (`tighten_alpha`) and the edge band shows the product's own colour (`decontaminate`),
  so no white halo rings a dark product; `halo_share` measures what is left.
* edge refinement (`serve.refine: guided`) — a guided filter (He et al., 2010) of the upsampled
  probability map with the photo's luminance as guide, in numpy (box filters by cumulative sums): the
  mask's edge follows the photo's edges instead of the 320 px map's bilinear staircase.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from backdrop.config import parse_aspect

FORMATS = ("rgba", "white", "mask")


@dataclass(frozen=True)
class OutputOptions:
    white_aspect: str = "original"  # "W:H" or "original"
    white_margin: float = 0.0       # share of the canvas' shorter side kept free on each side
    refine: str = "none"            # none | guided | guided_rgb
    refine_radius: int = 8
    refine_eps: float = 1e-3
    clean_edges: bool = False       # `tighten_alpha` + `decontaminate` the edge band (`serve.clean_edges`)

    @classmethod
    def from_params(cls, sp) -> OutputOptions:
        return cls(sp.white_aspect, sp.white_margin, sp.refine, sp.refine_radius, sp.refine_eps,
                   getattr(sp, "clean_edges", False))




# ------------------------------------------------------------------------------------ guided filter


def prefetch_filters() -> None:
    """Import scipy's filters (`_box`) in a background thread: the import takes ~0.2 s of a CLI
    run's start, and can overlap the onnxruntime session builds instead of delaying the first edge pass."""
    import importlib
    import threading

    threading.Thread(target=importlib.import_module, args=("scipy.ndimage",), name="backdrop-imports",
                     daemon=True).start()


def _box(img: np.ndarray, r: int, keep: slice = slice(None)) -> np.ndarray:
    """Mean over a (2r+1)² window of the last two axes (a photo, or a stack of tiles), edges
    replicated; separable running sums in C (scipy), O(pixels) for any r. `keep` crops both axes
    to the part the caller needs (a tile's inner part): the columns pass then runs on fewer rows."""
    from scipy.ndimage import uniform_filter1d

    size = 2 * r + 1
    rows = uniform_filter1d(img.astype(np.float32, copy=False), size, axis=-2, mode="nearest")[..., keep, :]
    return uniform_filter1d(rows, size, axis=-1, mode="nearest")[..., keep]


def guided_filter(guide: np.ndarray, src: np.ndarray, radius: int, eps: float, edges=None) -> np.ndarray:
    """Grey-guide guided filter; guide and src float32 (H,W) (or stacks of tiles) in [0,1]. `edges`
    re-replicates a tile's outside-the-photo context in the coefficients before their own box."""
    mean_i, mean_p = _box(guide, radius), _box(src, radius)
    cov_ip = _box(guide * src, radius) - mean_i * mean_p
    var_i = _box(guide * guide, radius) - mean_i * mean_i
    a = cov_ip / (var_i + eps)
    b = mean_p - a * mean_i
    if edges is not None:
        a, b = edges(a), edges(b)
    return _box(a, radius) * guide + _box(b, radius)


def guided_filter_rgb(guide: np.ndarray, src: np.ndarray, radius: int, eps: float, edges=None) -> np.ndarray:
    """Colour-guide guided filter (He et al., eq. 14): guide float32 (H,W,3), src (H,W), both in [0,1].

    Why colour: a product whose luminance matches its background's (a red bag on a grey-green
    floor, a cream tee on white) still differs in hue; the grey guide loses that edge."""
    chans = [np.ascontiguousarray(guide[..., c]) for c in range(3)]
    mean_i = [_box(c, radius) for c in chans]
    mean_p = _box(src, radius)
    cov_ip = [_box(c * src, radius) - m * mean_p for c, m in zip(chans, mean_i, strict=True)]
    # the guide's 3×3 covariance per pixel (+ eps on the diagonal), its inverse by the adjugate
    var = {(i, j): _box(chans[i] * chans[j], radius) - mean_i[i] * mean_i[j]
           for i in range(3) for j in range(i, 3)}
    rr, rg, rb = var[0, 0] + eps, var[0, 1], var[0, 2]
    gg, gb, bb = var[1, 1] + eps, var[1, 2], var[2, 2] + eps
    inv_rr, inv_rg, inv_rb = gg * bb - gb * gb, gb * rb - rg * bb, rg * gb - gg * rb
    inv_gg, inv_gb, inv_bb = rr * bb - rb * rb, rb * rg - rr * gb, rr * gg - rg * rg
    det = rr * inv_rr + rg * inv_rg + rb * inv_rb
    a_r = (inv_rr * cov_ip[0] + inv_rg * cov_ip[1] + inv_rb * cov_ip[2]) / det
    a_g = (inv_rg * cov_ip[0] + inv_gg * cov_ip[1] + inv_gb * cov_ip[2]) / det
    a_b = (inv_rb * cov_ip[0] + inv_gb * cov_ip[1] + inv_bb * cov_ip[2]) / det
    b = mean_p - a_r * mean_i[0] - a_g * mean_i[1] - a_b * mean_i[2]
    if edges is not None:
        a_r, a_g, a_b, b = (edges(v) for v in (a_r, a_g, a_b, b))
    return (_box(a_r, radius) * chans[0] + _box(a_g, radius) * chans[1] + _box(a_b, radius) * chans[2]
            + _box(b, radius))


REFINE_TILE = 32  # px; the filter runs on the tiles the uncertain band touches (+ 2r+1 around each)


def _grid(shape: tuple[int, ...], tile: int) -> tuple[int, int]:
    """Tile rows and columns covering an (H,W) image; the last ones may reach past its edge."""
    return -(-shape[0] // tile), -(-shape[1] // tile)


def _band_tiles(uncertain: np.ndarray, radius: int, tile: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols) of the tiles holding a pixel within `radius` (Chebyshev) of an uncertain one:
    the tile itself, or the facing `radius`-wide strip / corner of a neighbour tile."""
    h, w = uncertain.shape
    ny, nx = _grid(uncertain.shape, tile)
    u = np.zeros((ny * tile, nx * tile), bool)
    u[:h, :w] = uncertain
    u = u.reshape(ny, tile, nx, tile)
    r, t = radius, tile
    row_any = u.any(axis=3)                    # (ny,T,nx): each tile row's pixels
    col_any = u.any(axis=1)                    # (ny,nx,T): each tile column's pixels
    act = row_any.any(axis=1)
    act[:-1] |= row_any[:, :r].any(axis=1)[1:]           # the tile below starts with uncertain rows
    act[1:] |= row_any[:, t - r:].any(axis=1)[:-1]       # the tile above ends with them
    act[:, :-1] |= col_any[:, :, :r].any(axis=2)[:, 1:]
    act[:, 1:] |= col_any[:, :, t - r:].any(axis=2)[:, :-1]

    def corner(ys, xs):
        return u[:, ys][:, :, :, xs].any(axis=(1, 3))

    top, bottom, left, right = slice(0, r), slice(t - r, t), slice(0, r), slice(t - r, t)
    act[:-1, :-1] |= corner(top, left)[1:, 1:]   # diagonal neighbours' facing corners
    act[:-1, 1:] |= corner(top, right)[1:, :-1]
    act[1:, :-1] |= corner(bottom, left)[:-1, 1:]
    act[1:, 1:] |= corner(bottom, right)[:-1, :-1]
    return np.nonzero(act)


def _tiles(img: np.ndarray, rows: np.ndarray, cols: np.ndarray, tile: int, pad: int) -> np.ndarray:
    """The listed tiles of `img` (H,W[,C]), each with `pad` pixels around it, edges replicated as the
    whole-photo filter's `nearest` mode does → (n, tile+2·pad, tile+2·pad[, C])."""
    h, w = img.shape[:2]
    ny, nx = _grid(img.shape, tile)
    extra = ((pad, ny * tile - h + pad), (pad, nx * tile - w + pad)) + ((0, 0),) * (img.ndim - 2)
    padded = np.pad(img, extra, mode="edge")
    side = tile + 2 * pad
    s0, s1 = padded.strides[:2]
    view = np.lib.stride_tricks.as_strided(
        padded, (ny, nx, side, side) + padded.shape[2:], (tile * s0, tile * s1, s0, s1) + padded.strides[2:],
        writeable=False)
    return view[rows, cols]


def _photo_edges(rows: np.ndarray, cols: np.ndarray, tile: int, pad: int, shape: tuple[int, int]):
    """For a tile stack: a function that refills each tile's context outside the photo with the
    photo's border values, as the whole-photo filter's `nearest` mode does at every box it runs."""
    h, w = shape
    side = tile + 2 * pad
    y0, x0 = rows * tile - pad, cols * tile - pad  # photo coordinates of each tile's first context pixel
    lo_y, hi_y = np.maximum(0, -y0), np.minimum(side, h - y0)
    lo_x, hi_x = np.maximum(0, -x0), np.minimum(side, w - x0)
    border = np.flatnonzero((lo_y > 0) | (hi_y < side) | (lo_x > 0) | (hi_x < side))

    def edges(stack: np.ndarray) -> np.ndarray:
        for i in border:
            t = stack[i]
            t[:lo_y[i]] = t[lo_y[i]]
            t[hi_y[i]:] = t[hi_y[i] - 1]
            t[:, :lo_x[i]] = t[:, lo_x[i], None]
            t[:, hi_x[i]:] = t[:, hi_x[i] - 1, None]
        return stack

    return edges


def refine(photo, prob: np.ndarray, radius: int = 6, eps: float = 1e-3, colour: bool = False) -> np.ndarray:
    """The probability map with edges snapped to the photo's, only near the predicted outline.

    Only the uncertain band (0.02 < p < 0.98, widened by the radius) may change. The filter runs on a
    stack of the 32 px tiles (2·radius for a larger radius) that band touches, each with 2·radius+1
    pixels of context: every value a band pixel reads lies inside its tile's context, so the result
    equals filtering the whole photo (tested). An outline touches ~13 % of a product photo's tiles;
    the filter took 20 ms instead of 42 ms on the band's bounding box (1 Mpx photo)."""
    prob = prob.astype(np.float32, copy=False)
    uncertain = (prob > 0.02) & (prob < 0.98)
    tile, pad = max(REFINE_TILE, 2 * radius), 2 * radius + 1  # a neighbour tile is at least radius wide
    rows, cols = _band_tiles(uncertain, radius, tile)
    if not len(rows):
        return prob.copy()
    src = _tiles(prob, rows, cols, tile, pad)                       # (n,T+2p,T+2p)
    # any uncertain pixel in the window (half a pixel's share: running sums leave ~1e-8 behind)
    band = _box(_tiles(uncertain, rows, cols, tile, pad), radius) > 0.5 / (2 * radius + 1) ** 2
    edges = _photo_edges(rows, cols, tile, pad, prob.shape)
    if colour:
        rgb = _tiles(np.asarray(photo.convert("RGB")), rows, cols, tile, pad)  # (n,T+2p,T+2p,3) uint8
        filtered = guided_filter_rgb(rgb.astype(np.float32) * np.float32(1 / 255), src, radius, eps, edges)
    else:
        grey = _tiles(np.asarray(photo.convert("L")), rows, cols, tile, pad)
        filtered = guided_filter(grey.astype(np.float32) * np.float32(1 / 255), src, radius, eps, edges)
    inner = slice(pad, pad + tile)
    src, band, filtered = src[:, inner, inner], band[:, inner, inner], filtered[:, inner, inner]
    h, w = prob.shape
    ny, nx = _grid(prob.shape, tile)
    out = np.zeros((ny * tile, nx * tile), np.float32)
    out[:h, :w] = prob
    out.reshape(ny, tile, nx, tile)[rows, :, cols, :] = np.where(band, np.clip(filtered, 0.0, 1.0), src)
    return np.ascontiguousarray(out[:h, :w])


# ------------------------------------------------------------------------------------- clean edges

CLEAN_LO, CLEAN_HI = 0.02, 0.98  # the edge band: neither clearly backdrop nor clearly product
CLEAN_RADIUS = 8                 # px around a band pixel where its backdrop and product colours are sampled
CLEAN_TILE = 32                  # px; tiles the band touches, each with radius + 1 px of context
CLEAN_MIN_ALPHA = 0.15           # below: the pixel takes its neighbourhood's product colour (1/alpha blows up)


def _edge_tiles(photo, prob: np.ndarray, radius: int):
    """The tiles the edge band touches, with each pixel's local backdrop and product colours: the
    means of the clearly-backdrop (a <= CLEAN_LO) and clearly-product (a >= CLEAN_HI) pixels within
    `radius`, and whether there were any. None when the photo has no edge band."""
    rgb = np.asarray(photo.convert("RGB") if photo.mode != "RGB" else photo)
    prob = prob.astype(np.float32, copy=False)
    band = (prob > CLEAN_LO) & (prob < CLEAN_HI)
    tile, pad = max(CLEAN_TILE, 2 * radius), radius + 1
    rows, cols = _band_tiles(band, radius, tile)
    if not len(rows):
        return None
    a = np.ascontiguousarray(_tiles(prob, rows, cols, tile, pad))                 # (n,S,S)
    img = np.moveaxis(_tiles(rgb, rows, cols, tile, pad), -1, 1).astype(np.float32) * np.float32(1 / 255)
    n, side = a.shape[0], a.shape[1]
    stack = np.empty((n, 8, side, side), np.float32)  # one box pass over [w_bg, w_fg, I·w_bg (3), I·w_fg (3)]
    stack[:, 0], stack[:, 1] = a <= CLEAN_LO, a >= CLEAN_HI
    np.multiply(img, stack[:, 0:1], out=stack[:, 2:5])
    np.multiply(img, stack[:, 1:2], out=stack[:, 5:8])
    inner = slice(pad, pad + tile)
    boxed = _box(stack, radius, inner)  # (n,8,T,T): the context was only needed by the box
    a, img = a[:, inner, inner], img[:, :, inner, inner]
    local = [(boxed[:, k] > 1e-3, boxed[:, cs] / np.maximum(boxed[:, k:k + 1], 1e-6))
             for k, cs in ((0, slice(2, 5)), (1, slice(5, 8)))]
    return rgb, rows, cols, tile, a, img, local[0], local[1]


def _untile(full: np.ndarray, tiles: np.ndarray, rows, cols, tile: int) -> np.ndarray:
    """`full` (H,W[,C]) with the listed tiles replaced by `tiles` (n,T,T[,C])."""
    h, w = full.shape[:2]
    ny, nx = _grid(full.shape, tile)
    out = np.zeros((ny * tile, nx * tile) + full.shape[2:], full.dtype)
    out[:h, :w] = full
    out.reshape(ny, tile, nx, tile, *full.shape[2:])[rows, :, cols] = tiles
    return np.ascontiguousarray(out[:h, :w])


def tighten_alpha(photo, prob: np.ndarray, radius: int = CLEAN_RADIUS, min_contrast: float = 0.15) -> np.ndarray:
    """The probability map with backdrop-coloured fringe pixels let go: in the edge band, alpha is
    at most the pixel's place on the line from the local backdrop colour to the local product
    colour (a = <I−B, F−B> / |F−B|²), where those two differ by `min_contrast` or more. A pixel of
    pure backdrop colour that the network's soft, upsampled map still calls 30 % product is what
    shows as a light fringe around a dark product; no colour estimation can fix it, its alpha
    must go. Only lowers alpha, only in the band (measured on the bench photos: halo share 0.28 →
    0.13, IoU −0.0008)."""
    tiled = _edge_tiles(photo, prob, radius)
    if tiled is None:
        return prob
    _rgb, rows, cols, tile, a, img, (has_bg, bg), (has_fg, fg) = tiled
    tight = _line_alpha(a, img, bg, has_bg, fg, has_fg, min_contrast)
    return _untile(prob.astype(np.float32, copy=False), tight, rows, cols, tile)


def _line_alpha(a, img, bg, has_bg, fg, has_fg, min_contrast: float = 0.15) -> np.ndarray:
    d = fg - bg
    norm = (d * d).sum(axis=1)
    line = np.clip(((img - bg) * d).sum(axis=1) / np.maximum(norm, 1e-6), 0.0, 1.0)
    ok = has_bg & has_fg & (norm >= min_contrast ** 2) & (a > CLEAN_LO) & (a < CLEAN_HI)
    return np.where(ok, np.minimum(a, line), a)


def _solve_colours(a, img, bg, has_bg, fg, has_fg) -> np.ndarray:
    alpha = a[:, None]
    solved = (img - (1.0 - alpha) * bg) / np.maximum(alpha, CLEAN_MIN_ALPHA)
    thin = (a < CLEAN_MIN_ALPHA) & has_fg
    out = np.where((has_bg & ~thin)[:, None], solved, img)
    out = np.where(thin[:, None], fg, out)
    out = np.where(((a > CLEAN_LO) & (a < CLEAN_HI))[:, None], np.clip(out, 0.0, 1.0), img)
    return (np.moveaxis(out, 1, -1) * 255.0 + 0.5).astype(np.uint8)                # (n,T,T,3)


def clean_edges(photo, prob: np.ndarray, radius: int = CLEAN_RADIUS):
    """(`tighten_alpha(photo, prob)`, the photo `decontaminate`d with that alpha) from one pass over
    the edge band's tiles (the local colours are computed once): what a cut-out with clean edges
    publishes. Half the cost of the two calls."""
    from PIL import Image

    tiled = _edge_tiles(photo, prob, radius)
    if tiled is None:
        return prob, (photo.convert("RGB") if photo.mode != "RGB" else photo)
    rgb, rows, cols, tile, a, img, (has_bg, bg), (has_fg, fg) = tiled
    tight = _line_alpha(a, img, bg, has_bg, fg, has_fg)
    new_prob = _untile(prob.astype(np.float32, copy=False), tight, rows, cols, tile)
    colours = _solve_colours(tight, img, bg, has_bg, fg, has_fg)
    return new_prob, Image.fromarray(_untile(rgb, colours, rows, cols, tile), mode="RGB")


def decontaminate(photo, prob: np.ndarray, radius: int = CLEAN_RADIUS):
    """The photo with each edge-band pixel's colour replaced by the product's own (foreground colour
    estimation): I = a·F + (1−a)·B is solved for F, with B the mean colour of the clearly-backdrop
    pixels within `radius` (for a thin `a`, below CLEAN_MIN_ALPHA: the product pixels' mean).
    Pixels outside the band, or without backdrop pixels nearby, keep their colour. Runs only on the
    32 px tiles the band touches (`refine`'s tiling), a few ms for a 1 Mpx photo; pymatting's
    `estimate_foreground_ml` (rembg's alpha matting) solves the same model over the whole image."""
    from PIL import Image

    tiled = _edge_tiles(photo, prob, radius)
    if tiled is None:
        return photo.convert("RGB") if photo.mode != "RGB" else photo
    rgb, rows, cols, tile, a, img, (has_bg, bg), (has_fg, fg) = tiled
    colours = _solve_colours(a, img, bg, has_bg, fg, has_fg)
    return Image.fromarray(_untile(rgb, colours, rows, cols, tile), mode="RGB")


def halo_share(photo, rgba, truth: np.ndarray, band: int = 3, radius: int = CLEAN_RADIUS,
               min_contrast: float = 0.15) -> float:
    """How much backdrop colour a cut-out carries at the product's edge, in [0, 1] (0 = none).

    Over the pixels within `band` px of the true outline (`truth`: (H,W) mask in [0,1] or uint8)
    that the cut-out shows (alpha > 0.1), each visible colour C is placed on the line from the local
    product colour F to the local backdrop colour B (means of the photo's clearly-inside and
    clearly-outside pixels within `radius`): share s = clamp(<C−F, B−F> / |B−F|², 0, 1). The result
    is the alpha-weighted mean s where B and F differ by at least `min_contrast` (else no halo can
    show). A cut-out keeping the photo's mixed edge pixels (rembg's default) scores their backdrop
    share; `decontaminate` brings it towards 0."""
    from scipy.ndimage import binary_dilation, binary_erosion

    t = truth.astype(np.float32) / (255.0 if truth.dtype == np.uint8 else 1.0)
    out = np.asarray(rgba, dtype=np.float32) / 255.0
    colour, alpha = out[..., :3], out[..., 3]
    img = np.asarray(photo.convert("RGB"), dtype=np.float32) / 255.0
    inside, outside = t >= 0.98, t <= 0.02
    edge = binary_dilation(inside, iterations=band) & binary_dilation(outside, iterations=band)
    means = {}
    for name, w in (("fg", binary_erosion(inside, iterations=1)), ("bg", binary_erosion(outside, iterations=1))):
        w = w.astype(np.float32)
        share = _box(w, radius)
        means[name] = (share > 1e-3, np.stack([_box(img[..., c] * w, radius) for c in range(3)], -1)
                       / np.maximum(share, 1e-6)[..., None])
    (has_fg, fg), (has_bg, bg) = means["fg"], means["bg"]
    d = bg - fg
    norm = (d * d).sum(-1)
    use = edge & has_fg & has_bg & (norm >= min_contrast ** 2) & (alpha > 0.1)
    if not use.any():
        return 0.0
    s = np.clip(((colour - fg) * d).sum(-1) / np.maximum(norm, 1e-6), 0.0, 1.0)
    return float((s[use] * alpha[use]).sum() / alpha[use].sum())


# --------------------------------------------------------------------------------------- composing


def alpha_of(prob: np.ndarray) -> np.ndarray:
    return (np.clip(prob, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


MAX_CANVAS_PIXELS = 64_000_000  # the white canvas never exceeds this (the photo decoder's own default cap)


def white_canvas(photo, alpha: np.ndarray, aspect: str, margin: float):
    """Product on white, cropped to its bounding box and centred on a canvas of `aspect`."""
    from PIL import Image

    rgb = photo if photo.mode == "RGB" else photo.convert("RGB")
    a = alpha.astype(np.uint16)[..., None]
    on_white = ((np.asarray(rgb, dtype=np.uint16) * a + 255 * (255 - a) + 127) // 255).astype(np.uint8)
    full = Image.fromarray(on_white, mode="RGB")
    ratio = parse_aspect(aspect)
    if ratio is None and margin <= 0:
        return full
    ys, xs = np.nonzero(alpha > 8)
    if len(xs) == 0:  # nothing found: the photo's frame, all white
        x0, y0, x1, y1 = 0, 0, photo.width, photo.height
    else:
        x0, y0, x1, y1 = int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
    bw, bh = x1 - x0, y1 - y0
    rw, rh = ratio if ratio is not None else (photo.width, photo.height)
    # the smallest canvas t·(rw, rh) with `margin`·(its shorter side) free around the box on every side
    m, k = min(max(margin, 0.0), 0.45), min(rw, rh)
    t = max(bw / (rw - 2 * m * k), bh / (rh - 2 * m * k))
    cw, ch = t * rw, t * rh
    cw, ch = max(bw, math.ceil(cw - 1e-6)), max(bh, math.ceil(ch - 1e-6))
    product = full.crop((x0, y0, x1, y1))
    if cw * ch > MAX_CANVAS_PIXELS:  # a long thin product on a square canvas: scale both down, never OOM
        s = math.sqrt(MAX_CANVAS_PIXELS / (cw * ch))
        cw, ch, bw, bh = max(1, int(cw * s)), max(1, int(ch * s)), max(1, int(bw * s)), max(1, int(bh * s))
        product = product.resize((bw, bh), Image.Resampling.LANCZOS)
    canvas = Image.new("RGB", (cw, ch), (255, 255, 255))
    canvas.paste(product, ((cw - bw) // 2, (ch - bh) // 2))
    return canvas


def final_prob(photo, prob: np.ndarray, options: OutputOptions | None = None) -> np.ndarray:
    """The probability map that is published (and logged): refined, and with the backdrop-coloured
    fringe let go (`tighten_alpha`), when the options ask for it. Pass the photo through
    `shown_photo` before `compose` so the colours match (clean edges)."""
    opts = options or OutputOptions()
    if opts.refine in ("guided", "guided_rgb"):
        prob = refine(photo, prob, opts.refine_radius, opts.refine_eps, colour=opts.refine == "guided_rgb")
    if opts.clean_edges:
        prob = tighten_alpha(photo, prob)
    return prob


def finish(photo, prob: np.ndarray, fmt: str, options: OutputOptions | None = None):
    """(published probability map, the photo whose colours the cut-out shows): `final_prob` and
    `shown_photo` in one pass over the edge band when `clean_edges` is on (`clean_edges`)."""
    opts = options or OutputOptions()
    if not opts.clean_edges:
        return final_prob(photo, prob, opts), photo
    refined = final_prob(photo, prob, replace(opts, clean_edges=False))
    tight, shown = clean_edges(photo, refined)
    return tight, (shown if fmt in ("rgba", "white") else photo)


def shown_photo(photo, prob: np.ndarray, fmt: str, options: OutputOptions | None = None):
    """The photo whose colours a cut-out shows: edge-band colours decontaminated when
    `clean_edges` is on and the format shows colour through alpha (rgba, white)."""
    opts = options or OutputOptions()
    return decontaminate(photo, prob) if opts.clean_edges and fmt in ("rgba", "white") else photo


_VISIBLE = [0] + [255] * 255  # point() table: alpha > 0 → keep the pixel's colour


def compose(photo, prob: np.ndarray, fmt: str = "rgba", options: OutputOptions | None = None):
    """The publishable output for one photo and its final probability map (H,W at the photo's size).

    Refinement is not applied here: pass `final_prob(...)`, so that the mask in the prediction log
    is exactly the published alpha.
    """
    from PIL import Image

    if fmt not in FORMATS:
        raise ValueError(f"format {fmt!r} is not one of {FORMATS}")
    opts = options or OutputOptions()
    alpha = alpha_of(prob)
    if fmt == "mask":
        return Image.fromarray(alpha, mode="L")
    if fmt == "white":
        return white_canvas(photo, alpha, opts.white_aspect, opts.white_margin)
    rgb = photo.convert("RGB") if photo.mode != "RGB" else photo
    a = Image.fromarray(alpha, mode="L")
    # a fully transparent pixel shows nothing: it carries no backdrop colour either. Those runs of
    # zeros halve the PNG (0.97 → 0.48 MB) and its encoding time (83 → 42 ms) on the bench photos.
    # In PIL's C loops: 3.5 ms a 1 Mpx photo against 19.5 ms for the same bytes through numpy
    rgba = Image.composite(rgb, Image.new("RGB", rgb.size), a.point(_VISIBLE))
    rgba.putalpha(a)
    return rgba


def encode(image, fmt: str, parts: int = 1) -> tuple[bytes, str]:
    """A composed output as file bytes: PNG for rgba/mask (`backdrop.png`, deflated in
    `parts` pieces side by side), JPEG for white."""
    if fmt == "white":
        import io

        buf = io.BytesIO()
        image.save(buf, format="JPEG", quality=92, optimize=False)
        return buf.getvalue(), "image/jpeg"
    from backdrop.png import encode_png

    return encode_png(image, parts), "image/png"
