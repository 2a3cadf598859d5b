"""Publishable outputs: white canvas at the shop's aspect, guided-filter refinement, RGBA alpha = mask,
the int8 fast path against fp32, and `backdrop remove` on a folder through the fast path."""

from __future__ import annotations

import io
import subprocess

import numpy as np
import pytest
from PIL import Image

from backdrop.serving.outputs import (
    OutputOptions,
    compose,
    final_prob,
    guided_filter,
    guided_filter_rgb,
    parse_aspect,
    refine,
)

from .conftest import BIN, env_for, write_photos, write_project


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


def _scene(w: int = 400, h: int = 300):
    """A red box on a grey background, and its exact probability map."""
    rgb = np.full((h, w, 3), 128, np.uint8)
    rgb[100:220, 60:160] = (200, 30, 30)
    prob = np.zeros((h, w), np.float32)
    prob[100:220, 60:160] = 1.0
    return Image.fromarray(rgb, "RGB"), prob


def test_white_output_is_centred_on_the_shop_aspect_with_margin():
    photo, prob = _scene()
    out = compose(photo, prob, "white", OutputOptions(white_aspect="1:1", white_margin=0.1))
    assert out.mode == "RGB" and out.width == out.height  # 1:1
    a = np.asarray(out).astype(int)
    product = np.all(np.abs(a - (200, 30, 30)) < 3, axis=-1)
    ys, xs = np.nonzero(product)
    assert (ys.max() - ys.min() + 1, xs.max() - xs.min() + 1) == (120, 100)  # not scaled
    # the box's longer side (120) fills the canvas minus 10 % of it on each side: 120 / 0.8 = 150
    assert out.size == (150, 150)
    assert abs((ys.min() + ys.max()) / 2 - 74.5) <= 1 and abs((xs.min() + xs.max()) / 2 - 74.5) <= 1  # centred
    assert np.all(a[~product] >= 250)  # everything else is white
    tall = compose(photo, prob, "white", OutputOptions(white_aspect="4:5", white_margin=0.0))
    assert tall.size[0] * 5 == pytest.approx(tall.size[1] * 4, abs=5)
    assert compose(photo, prob, "white").size == photo.size  # "original" and no margin: the photo's frame
    with pytest.raises(ValueError):
        parse_aspect("square")


def test_rgba_alpha_is_the_mask_and_guided_refinement_follows_the_photo_edge():
    photo, prob = _scene()
    # a coarse map: the true edge (x=60) blurred over ±12 px, like an upsampled 320 px prediction;
    # the filter radius must cover the blur
    xs = np.arange(photo.width, dtype=np.float32)
    coarse = prob.copy()
    ramp = np.clip((xs - 48) / 24, 0, 1)[None, :].repeat(photo.height, 0)
    coarse[100:220, 40:80] = ramp[100:220, 40:80]
    refined = final_prob(photo, coarse, OutputOptions(refine="guided", refine_radius=16, refine_eps=1e-4))
    row = 160
    # the refined map's edge sits on the photo's edge (x = 59 → 60) and is much steeper than the blur
    steps = np.diff(refined[row, 40:80])
    assert 40 + int(np.argmax(steps)) == 59
    assert steps.max() > 5 * np.diff(coarse[row, 40:80]).max()
    assert np.abs(refined - prob)[100:220, 40:80].mean() < np.abs(coarse - prob)[100:220, 40:80].mean()
    assert refined[row, 200] == coarse[row, 200] == 0.0 and refined[row, 100] == 1.0  # certain pixels kept
    rgba = compose(photo, refined, "rgba")
    mask = compose(photo, refined, "mask")
    assert rgba.mode == "RGBA" and rgba.size == photo.size
    assert np.array_equal(np.asarray(rgba)[..., 3], np.asarray(mask))
    shown = np.asarray(mask) > 0
    assert np.array_equal(np.asarray(rgba)[..., :3][shown], np.asarray(photo)[shown])  # the photo where visible
    assert not np.asarray(rgba)[..., :3][~shown].any()  # no colour where fully transparent
    # guided filter of a constant is that constant
    g = np.random.default_rng(0).random((40, 50), dtype=np.float32)
    assert np.allclose(guided_filter(g, np.full_like(g, 0.3), 4, 1e-3), 0.3, atol=1e-4)


def _coarse(prob: np.ndarray) -> np.ndarray:
    """The box's left edge (x=60) blurred over ±12 px, like an upsampled 320 px prediction."""
    xs = np.arange(prob.shape[1], dtype=np.float32)
    coarse = prob.copy()
    ramp = np.clip((xs - 48) / 24, 0, 1)[None, :].repeat(prob.shape[0], 0)
    coarse[100:220, 40:80] = ramp[100:220, 40:80]
    return coarse


def test_colour_guide_finds_an_edge_the_grey_guide_cannot_see():
    # a red product on a grey of the same luminance (0.299·200 + 0.587·30 + 0.114·30 ≈ 81)
    rgb = np.full((300, 400, 3), 81, np.uint8)
    rgb[100:220, 60:160] = (200, 30, 30)
    photo = Image.fromarray(rgb, "RGB")
    truth = np.zeros((300, 400), bool)
    truth[100:220, 60:160] = True
    coarse = _coarse(truth.astype(np.float32))
    grey = final_prob(photo, coarse, OutputOptions(refine="guided", refine_radius=16, refine_eps=1e-4))
    colour = final_prob(photo, coarse, OutputOptions(refine="guided_rgb", refine_radius=16, refine_eps=1e-4))
    row = 160
    assert 40 + int(np.argmax(np.diff(colour[row, 40:80]))) == 59  # snapped onto the hue edge
    assert np.diff(colour[row, 40:80]).max() > 5 * np.diff(grey[row, 40:80]).max()  # grey stays blurred
    assert _iou(colour > 0.5, truth) > _iou(coarse > 0.5, truth) - 1e-9
    assert _iou(colour > 0.5, truth) == 1.0
    g = np.random.default_rng(1).random((40, 50, 3), dtype=np.float32)
    assert np.allclose(guided_filter_rgb(g, np.full(g.shape[:2], 0.3, np.float32), 4, 1e-3), 0.3, atol=1e-4)


def test_refinement_on_the_band_tiles_equals_filtering_the_whole_photo():
    photo, prob = _scene()
    coarse = _coarse(prob)
    for colour in (False, True):
        fast = refine(photo, coarse, radius=5, eps=1e-3, colour=colour)
        if colour:
            whole = guided_filter_rgb(np.asarray(photo, np.float32) / 255, coarse, 5, 1e-3)
        else:
            whole = guided_filter(np.asarray(photo.convert("L"), np.float32) / 255, coarse, 5, 1e-3)
        band = np.zeros_like(coarse, bool)
        band[100 - 5:220 + 5, 49 - 5:72 + 5] = True  # uncertain pixels (the ramp, x 49..71) widened by the radius
        expect = np.where(band, np.clip(whole, 0, 1), coarse)
        assert np.allclose(fast, expect, atol=1e-5)
    certain = np.zeros_like(prob)
    assert np.array_equal(refine(photo, certain, 5), certain)  # nothing uncertain: nothing to do


def test_int8_path_agrees_with_fp32_on_held_out_photos():
    from backdrop.config import load_params
    from backdrop.data.synth import render_item
    from backdrop.serving.segmenter import load_segmenter

    params = load_params()
    fp32 = load_segmenter("official:u2netp", "onnx", precision="fp32", params=params)
    int8 = load_segmenter("official:u2netp", "onnx", precision="int8", params=params)  # quantized once, then cached
    assert int8.precision == "int8" and "int8" in int8.onnx_file and fp32.precision == "fp32"
    photos = [render_item(31337, i, min_side=700, max_side=1100)[0] for i in range(3)]
    ious = [_iou(a.prob >= 0.5, b.prob >= 0.5)
            for a, b in zip(int8.predict_batch(photos), fp32.predict_batch(photos), strict=True)]
    assert min(ious) >= 0.99 and np.mean(ious) >= 0.995, ious
    # another input size cannot use the 320 px calibration: it falls back to fp32
    assert load_segmenter("official:u2netp", "onnx", precision="int8", params=params, size=160).precision == "fp32"

    # the int8 region: every stage conv but the first and stage2d's concat-fed pair reads int8 weights
    import onnx

    from backdrop.serving.quantize import FIRST_CONV, SENSITIVE_CONVS

    graph = onnx.load(int8.onnx_file).graph
    dequantized = {n.output[0] for n in graph.node if n.op_type == "DequantizeLinear"}
    convs = {n.name: n.input[1] in dequantized for n in graph.node if n.op_type == "Conv"}
    stage_convs = {name: q for name, q in convs.items() if name.startswith("/net/stage")}
    assert not any(convs[name] for name in (FIRST_CONV, *SENSITIVE_CONVS))
    assert not any(q for name, q in convs.items() if "/side" in name or "outconv" in name)
    assert sum(stage_convs.values()) == len(stage_convs) - 3 > 100


@pytest.mark.slow  # the `backdrop remove` CLI in subprocesses
def test_remove_cli_uses_the_fast_path_with_progress_at_original_sizes(tmp_path):
    project = write_project(tmp_path / "proj", monitoring={"record_predictions": False})
    src = project / "photos"
    sizes = write_photos(src, 5, seed=4711, min_side=300, max_side=500)
    out = project / "out"
    proc = subprocess.run([str(BIN / "backdrop"), "remove", str(src), "--out", str(out), "--model", "official:u2netp"],
                          cwd=project, env=env_for(project), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    log = proc.stdout + proc.stderr
    assert "remove: 5/5 img (100%" in log  # the progress helper's line (a tqdm bar on a terminal)
    assert "PyTorch" not in log  # no fallback: the ONNX path ran
    for stem, size in sizes.items():
        cut = Image.open(out / f"{stem}.png")
        assert cut.mode == "RGBA" and cut.size == size
        alpha = np.asarray(cut)[..., 3]
        assert 0.05 < (alpha > 127).mean() < 0.95
    proc = subprocess.run([str(BIN / "backdrop"), "remove", str(src / "p000.jpg"), "--out", str(out / "m"),
                           "--model", "official:u2netp", "--format", "mask"],
                          cwd=project, env=env_for(project), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    mask = np.asarray(Image.open(out / "m" / "p000.png"))
    assert np.array_equal(mask, np.asarray(Image.open(out / "p000.png"))[..., 3])  # RGBA alpha == the mask
    white = subprocess.run([str(BIN / "backdrop"), "remove", str(src / "p001.jpg"), "--out", str(out / "w"),
                            "--model", "official:u2netp", "--format", "white"],
                           cwd=project, env=env_for(project), capture_output=True, text=True, timeout=600)
    assert white.returncode == 0, white.stderr
    img = Image.open(io.BytesIO((out / "w" / "p001.jpg").read_bytes()))
    assert img.format == "JPEG" and img.width == img.height  # params.yaml: white_aspect "1:1"


def test_stream_lanes_keep_order_errors_and_predictions():
    """Parallel lanes (1-thread sessions) yield items in order, hand a bad photo back in its place,
    and predict what the single session predicts."""
    from backdrop.config import load_params
    from backdrop.data.synth import render_item
    from backdrop.serving.segmenter import load_segmenter

    seg = load_segmenter("official:u2netp", "onnx", precision="fp32", params=load_params())
    photos = {i: render_item(4242, i, min_side=300, max_side=420)[0] for i in range(7)}

    def load(i):
        if i == 3:
            raise ValueError("truncated")
        return photos[i]

    one = list(seg.stream(range(7), load, 1, workers=1))
    lanes = list(seg.stream(range(7), load, 2, workers=2))
    assert [item for item, _, _ in lanes] == list(range(7))
    assert isinstance(lanes[3][1], ValueError) and lanes[3][2] is None
    assert len(seg._lanes) == 2  # made once, kept for the next call
    for (_, _, a), (i, photo, b) in zip(one, lanes, strict=True):
        if i == 3:
            continue
        assert b.prob.shape == (photo.size[1], photo.size[0])
        assert np.abs(a.small - b.small).max() < 1e-4 and a.disagreement == pytest.approx(b.disagreement, abs=1e-4)


def test_tiled_refinement_equals_the_whole_photo_filter_at_tile_edges_and_photo_borders():
    """The band's tiles (+ context) give what filtering the whole photo gives, wherever the band
    falls: across tile corners, on the photo's border, a photo whose sides are not tile multiples."""
    from backdrop.serving.outputs import REFINE_TILE, _box

    rng = np.random.default_rng(3)
    h, w = 3 * REFINE_TILE + 7, 4 * REFINE_TILE + 13
    photo = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    prob = np.zeros((h, w), np.float32)
    prob[20:70, 30:95] = 1.0
    prob[REFINE_TILE - 1, REFINE_TILE - 1] = 0.5        # a lone uncertain pixel on a tile corner
    prob[h - 1, 5:9] = 0.3                             # on the bottom border
    prob[0, 100:104] = 0.4                             # on the top border
    prob[50:53, 0] = 0.8                               # on the left border
    prob[40:44, w - 2:] = 0.7                          # on the right border, in the partial tile
    prob[69, 30:95] = 0.6                              # an uncertain edge row
    for radius in (1, 2, 5):
        uncertain = ((prob > 0.02) & (prob < 0.98)).astype(np.float32)
        band = _box(uncertain, radius) > 0.5 / (2 * radius + 1) ** 2
        assert band.sum() > uncertain.sum()  # the band widens the uncertain pixels
        for colour in (False, True):
            fast = refine(photo, prob, radius=radius, eps=1e-3, colour=colour)
            if colour:
                whole = guided_filter_rgb(np.asarray(photo, np.float32) / 255, prob, radius, 1e-3)
            else:
                whole = guided_filter(np.asarray(photo.convert("L"), np.float32) / 255, prob, radius, 1e-3)
            expect = np.where(band, np.clip(whole, 0, 1), prob)
            assert fast.shape == prob.shape
            assert np.abs(fast - expect).max() < 1e-4, (radius, colour)
            assert not np.array_equal(fast, prob)  # the filter did change the band


def test_a_single_threaded_model_session_is_the_first_lane():
    """A folder run loads its model with one thread (`backdrop remove`); that session is lane 0, so
    two lanes cost one more session, not two."""
    from backdrop.config import load_params
    from backdrop.serving.segmenter import load_segmenter

    seg = load_segmenter("official:u2netp", "onnx", precision="int8", params=load_params(), threads=1)
    lanes = seg.lane_sessions(2)
    assert lanes[0] is seg.session and lanes[1] is not seg.session and len(seg._lanes) == 2
    two = load_segmenter("official:u2netp", "onnx", precision="int8", params=load_params(), threads=2)
    assert all(lane is not two.session for lane in two.lane_sessions(2))  # a 2-thread session is no lane


def test_clean_edges_on_the_band_tiles_equal_the_whole_photo_computation():
    """`clean_edges` works on the edge band's tiles and their context only; the alpha it tightens and
    the colours it solves are what the same formulas give over the whole photo, tile edges and photo
    borders included."""
    from backdrop.serving.outputs import (
        CLEAN_HI,
        CLEAN_LO,
        CLEAN_RADIUS,
        CLEAN_TILE,
        _box,
        _line_alpha,
        _solve_colours,
        clean_edges,
    )

    rng = np.random.default_rng(5)
    h, w = 3 * CLEAN_TILE + 9, 4 * CLEAN_TILE + 5
    rgb = np.full((h, w, 3), 235, np.uint8)                       # a light backdrop
    rgb[25:90, 20:110] = (30, 40, 60)                              # a dark product
    rgb = np.clip(rgb.astype(int) + rng.integers(-8, 9, rgb.shape), 0, 255).astype(np.uint8)
    photo = Image.fromarray(rgb)
    prob = np.zeros((h, w), np.float32)
    prob[25:90, 20:110] = 1.0
    ys, xs = np.mgrid[0:h, 0:w]
    edge = (np.abs(ys - 25) < 3) | (np.abs(xs - 20) < 3)
    prob[edge & (prob == 0)] = rng.uniform(0.05, 0.5, (edge & (prob == 0)).sum())  # a soft fringe
    prob[h - 1, 7:12] = 0.4                                       # on the bottom border
    prob[10:14, w - 1] = 0.6                                      # on the right border, in a partial tile
    tight, shown = clean_edges(photo, prob)

    img = np.moveaxis(rgb.astype(np.float32) / 255, -1, 0)[None]    # (1,3,H,W)
    a = prob[None]
    local = []
    for weight in (a <= CLEAN_LO, a >= CLEAN_HI):
        share = _box(weight[0].astype(np.float32), CLEAN_RADIUS)[None]
        sums = np.stack([_box(img[0, c] * weight[0], CLEAN_RADIUS) for c in range(3)])[None]
        local.append((share > 1e-3, sums / np.maximum(share, 1e-6)[:, None]))
    (has_bg, bg), (has_fg, fg) = local
    whole_alpha = _line_alpha(a, img, bg, has_bg, fg, has_fg)
    whole_colours = _solve_colours(whole_alpha, img, bg, has_bg, fg, has_fg)[0]
    assert np.abs(tight - whole_alpha[0]).max() < 1e-4
    assert np.abs(np.asarray(shown).astype(int) - whole_colours).max() <= 1
    assert (tight < prob - 0.01).any() and not np.array_equal(np.asarray(shown), rgb)  # it did change the fringe
