"""Zoom-pass geometry (`backdrop.zoom`): the box prepare cuts training crops with is the box serving
cuts photos with, and the crop's prediction lands back where it came from."""

from __future__ import annotations

import numpy as np
from PIL import Image

from backdrop.zoom import agreement, object_box, paste, refine, worth_zooming


def test_object_box_widens_by_the_margin_and_clips_to_the_frame():
    mask = np.zeros((200, 300), np.float32)
    mask[50:150, 100:200] = 1.0  # 100×100 product
    assert object_box(mask, 0.1) == (90, 40, 210, 160)
    assert object_box((mask * 255).astype(np.uint8), 0.1) == (90, 40, 210, 160)  # uint8 masks too
    mask[:, :] = 0
    mask[0:20, 280:300] = 0.9  # in a corner: the box stops at the border
    assert object_box(mask, 0.5) == (270, 0, 300, 30)
    assert object_box(np.zeros((10, 10), np.float32), 0.1) is None  # nothing found: no box
    tiny = np.zeros((50, 50), np.float32)
    tiny[25, 25] = 1.0
    assert object_box(tiny, 0.1) == (23, 23, 28, 28)  # at least 2 px of margin


def test_worth_zooming_only_when_the_box_leaves_enough_out():
    assert worth_zooming((0, 0, 50, 50), (100, 100), 0.3)       # 25 % of the frame
    assert not worth_zooming((0, 0, 60, 60), (100, 100), 0.3)   # 36 %
    assert not worth_zooming(None, (100, 100), 1.0)


def test_refine_pastes_the_crop_prediction_into_the_box():
    photo = Image.new("RGB", (200, 100), (255, 255, 255))
    photo.paste((20, 20, 20), (120, 40, 150, 70))  # a dark 30×30 product
    dark = lambda img: (np.asarray(img.convert("L"), np.float32) < 128).astype(np.float32)  # noqa: E731
    first = np.zeros((100, 200), np.float32)
    first[38:72, 118:152] = 0.8  # a blurry first pass, a little too big
    calls = []

    def predict(crop):
        calls.append(crop.size)
        return dark(crop)

    prob, box = refine(photo, first, predict, margin=0.1, max_area=0.5)
    assert box == (115, 35, 155, 75) and calls == [(40, 40)]
    assert np.array_equal(prob, dark(photo))  # the crop pass found the exact square
    assert prob is not first and first[40, 120] == np.float32(0.8)  # the first pass is not edited
    untouched, no_box = refine(photo, first, predict, margin=0.1, max_area=0.01)
    assert no_box is None and untouched is first and len(calls) == 1
    assert np.array_equal(paste(first, (0, 0, 2, 1), np.ones((1, 2), np.float32))[0, :3], [1, 1, 0])


def test_a_zoom_pass_that_loses_the_product_is_dropped():
    """`min_agreement`: the zoom pass places edges; where its mask and the first pass's share less than
    that IoU inside the box (here an empty crop map), it lost the product and the first pass stands."""
    photo = Image.new("RGB", (200, 100), (255, 255, 255))
    photo.paste((20, 20, 20), (120, 40, 150, 70))
    first = np.zeros((100, 200), np.float32)
    first[38:72, 118:152] = 0.8
    sharper = lambda crop: (np.asarray(crop.convert("L"), np.float32) < 128).astype(np.float32)  # noqa: E731
    lost = lambda crop: np.zeros(crop.size[::-1], np.float32)  # noqa: E731

    box = (115, 35, 155, 75)
    assert agreement(first, box, sharper(photo.crop(box))) == (30 * 30) / (34 * 34)
    assert agreement(first, box, lost(photo.crop(box))) == 0.0
    assert agreement(np.zeros_like(first), box, lost(photo.crop(box))) == 1.0  # both empty: they agree

    kept, kept_box = refine(photo, first, sharper, margin=0.1, max_area=0.5, min_agreement=0.75)
    assert kept_box == box and np.array_equal(kept, sharper(photo))  # 0.78 ≥ 0.75: edges placed anew
    stands, no_box = refine(photo, first, lost, margin=0.1, max_area=0.5, min_agreement=0.75)
    assert no_box is None and stands is first
    strict, strict_box = refine(photo, first, sharper, margin=0.1, max_area=0.5, min_agreement=0.8)
    assert strict_box is None and strict is first  # 0.78 < 0.8
    blank, blank_box = refine(photo, first, lost, margin=0.1, max_area=0.5)  # 0 (off): any zoom stands
    assert blank_box == box and not blank.any()


def test_both_engines_take_the_guard_from_params():
    """The segmenter factory hands `serve.zoom_min_agreement` to the ONNX and the PyTorch engine alike."""
    from backdrop.config import Params
    from backdrop.serving.segmenter import load_segmenter

    params = Params()
    serve = params.serve.model_copy(update={"zoom": "always", "zoom_min_agreement": 0.65})
    params = params.model_copy(update={"serve": serve})
    for engine in ("onnx", "torch"):
        seg = load_segmenter("official:u2netp", engine, "fp32", params=params)
        assert seg.zoom_margin > 0 and seg.zoom_min_agreement == 0.65, engine
