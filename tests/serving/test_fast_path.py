"""The ONNX fast path agrees with the PyTorch path; confidence behaves; the decoder refuses bad bytes."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from backdrop.io import BadImageError
from backdrop.serving.images import decode, sniff
from backdrop.serving.review import confidence

from .conftest import jpeg_bytes


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


def test_onnx_agrees_with_torch_at_original_size():
    from backdrop.config import load_params
    from backdrop.data.synth import render_item
    from backdrop.serving.segmenter import load_segmenter
    from backdrop.serving.specs import official_cutout
    from backdrop.serving.torch_engine import TorchSegmenter

    size = 160  # any multiple of 32 runs on the one exported graph; smaller keeps the test quick
    fast = load_segmenter("official:u2netp", "onnx", "fp32", params=load_params(), size=size)
    assert fast.has_disagreement and fast.size == size and fast.scale_to_max
    fast.scale_to_max = False  # the PyTorch path feeds x/255 (what models trained here expect)
    # official weights never saw object crops: serve.zoom auto leaves them one pass; force the zoom
    # pass here so both engines are compared with it
    assert fast.zoom_margin == 0
    fast = dataclasses.replace(fast, zoom_margin=0.1, zoom_max_area=0.6)
    torch_path = TorchSegmenter(official_cutout("u2netp"), size, "torch", fast.zoom_margin, fast.zoom_max_area)
    photos = [render_item(21, i, min_side=300, max_side=520)[0] for i in range(2)]
    preds = fast.predict_batch(photos)  # one batched session run
    for photo, pred in zip(photos, preds, strict=True):
        ref = torch_path.probabilities(photo)
        assert pred.prob.shape == ref.shape == (photo.height, photo.width)
        assert _iou(pred.prob > 0.5, ref > 0.5) >= 0.995
        assert np.abs(pred.prob - ref).mean() < 0.01
        assert pred.disagreement is not None and 0 <= pred.disagreement < 1
    # a batch of 2 == two single runs
    single = fast.probabilities(photos[1])
    assert np.abs(single - preds[1].prob).max() < 1e-3


def test_confidence_prefers_crisp_maps():
    yy, xx = np.mgrid[0:100, 0:100]
    crisp = ((np.abs(xx - 50) < 25) & (np.abs(yy - 50) < 30)).astype(np.float32)
    soft = np.clip(1.2 - np.hypot(xx - 50, yy - 50) / 30, 0, 1).astype(np.float32)
    assert confidence(crisp).score == 1.0
    assert confidence(soft).score < 0.8
    assert confidence(crisp, disagreement=0.2).score == pytest.approx(0.8)
    assert confidence(np.zeros((50, 50), np.float32)).score == 0.0  # nothing found: review


def test_decoder_sniffs_bytes_and_checks_the_header_first():
    good = jpeg_bytes((120, 160))
    assert sniff(good).mime == "image/jpeg" and sniff(b"GIF89a....") is None
    assert decode(good, max_pixels=10**6).size in ((120, 160), (160, 120))
    with pytest.raises(BadImageError) as err:
        decode(good, max_pixels=1000)  # too many pixels for this limit: refused before decoding
    assert err.value.reason == "too_large"
    with pytest.raises(BadImageError) as err:
        decode(good[:200], max_pixels=10**6)
    assert err.value.reason == "corrupt_file"


def test_tap_split_heads_compute_the_same_side_outputs():
    """The export swaps each 1-channel 3×3 side head for taps (1×1 to 9) + a one-hot stencil: same
    numbers as the original heads, every side, borders included."""
    import torch

    from backdrop.models import build_model
    from backdrop.serving.onnx_fast import _fast_heads

    net = build_model("u2netp", init="scratch").eval()
    fast = _fast_heads(net)
    assert isinstance(net.side1, torch.nn.Conv2d) and isinstance(fast.side1, torch.nn.Sequential)
    x = torch.rand(2, 3, 64, 64)
    with torch.inference_mode():
        for a, b in zip(net(x), fast(x), strict=True):
            assert a.shape == b.shape and float((a - b).abs().max()) < 1e-4


def test_zoom_pass_segments_a_small_product_again_inside_its_box():
    """A product filling little of the frame gets a second run on its box; outside the box the
    first pass stands, inside it is the crop's prediction pasted back."""
    from dataclasses import replace

    from PIL import Image

    from backdrop.config import load_params
    from backdrop.data.synth import render_item
    from backdrop.serving.preprocess import upsample
    from backdrop.serving.segmenter import load_segmenter
    from backdrop.zoom import object_box, worth_zooming

    one_pass = load_segmenter("official:u2netp", "onnx", "fp32", params=load_params(), size=160)
    fast = replace(one_pass, zoom_margin=0.1, zoom_max_area=0.6)
    product = render_item(5, 0, min_side=300, max_side=400)[0]
    photo = Image.new("RGB", (product.width * 2, product.height * 2), (236, 236, 236))
    photo.paste(product, (product.width // 3, product.height // 2))  # now a small part of the frame
    first = one_pass.probabilities(photo)
    box = object_box(first, fast.zoom_margin)
    assert worth_zooming(box, photo.size, fast.zoom_max_area), box
    zoomed = fast.probabilities(photo)
    outside = np.ones(first.shape, bool)
    outside[box[1]:box[3], box[0]:box[2]] = False
    assert np.array_equal(zoomed[outside], first[outside])
    crop = photo.crop(box)
    expected = upsample(one_pass.run(one_pass.prepare([crop]))[0][0], crop.size)
    assert np.abs(zoomed[box[1]:box[3], box[0]:box[2]] - expected).max() < 1e-5
    assert np.abs(expected - first[box[1]:box[3], box[0]:box[2]]).max() > 0.05  # the second pass counted
    # serve.zoom_blend: inside the box, that share of the whole-photo pass + the rest of the zoom pass
    blended = replace(fast, zoom_blend=0.25).probabilities(photo)
    assert np.array_equal(blended[outside], first[outside])
    mix = 0.25 * first[box[1]:box[3], box[0]:box[2]] + 0.75 * expected
    assert np.abs(blended[box[1]:box[3], box[0]:box[2]] - mix).max() < 1e-5
    # a product that fills the frame is left to the first pass (no gain in resolution)
    assert not worth_zooming(object_box(one_pass.probabilities(product), fast.zoom_margin), product.size, 0.05)


def test_zoom_pass_is_on_for_models_trained_on_crops(tmp_path):
    """serve.zoom auto: a model.pt trained with train.crop_share > 0 gets the zoom pass, one trained
    without does not; always/never override."""
    import torch

    from backdrop.config import load_params
    from backdrop.models import build_model
    from backdrop.serving.segmenter import load_segmenter
    from backdrop.serving.specs import zoom_settings

    params = load_params()
    assert params.serve.zoom == "auto"
    net = build_model("u2netp", init="scratch")
    for share in (0.5, 0.0):
        path = tmp_path / f"crops{share}.pt"
        torch.save({"state_dict": net.state_dict(), "arch": "u2netp", "size": 64, "epoch": 1, "val_iou": 0.5,
                    "crop_share": share}, path)
        seg = load_segmenter(str(path), "torch", params=params)
        assert seg.zoom_margin == (params.prepare.crop_margin if share else 0.0)
        assert seg.zoom_max_area == params.serve.zoom_max_area
    always = params.model_copy(update={"serve": params.serve.model_copy(update={"zoom": "always"})})
    never = params.model_copy(update={"serve": params.serve.model_copy(update={"zoom": "never"})})
    assert zoom_settings(always, trained_on_crops=False)["zoom_margin"] == params.prepare.crop_margin
    assert zoom_settings(never, trained_on_crops=True)["zoom_margin"] == 0.0


def test_flip_tta_averages_the_photo_and_its_mirror_image_in_both_engines():
    """serve.tta hflip: each pass = mean of the map and the mirrored photo's map mirrored back; a
    mirrored photo then gets exactly the mirrored cut-out, which the plain pass does not promise."""
    from PIL import Image

    from backdrop.config import load_params
    from backdrop.data.synth import render_item
    from backdrop.serving.segmenter import load_segmenter
    from backdrop.serving.specs import official_cutout, zoom_settings
    from backdrop.serving.torch_engine import TorchSegmenter

    params = load_params()
    hflip = params.model_copy(update={"serve": params.serve.model_copy(update={"tta": "hflip"})})
    assert zoom_settings(hflip, trained_on_crops=False)["flip_tta"] is True
    assert zoom_settings(params, trained_on_crops=False)["flip_tta"] is (params.serve.tta == "hflip")

    photo = render_item(33, 2, min_side=300, max_side=420)[0]
    mirror = photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    plain = dataclasses.replace(load_segmenter("official:u2netp", "onnx", "fp32", params=params, size=160),
                                flip_tta=False, zoom_margin=0.0)
    tta = dataclasses.replace(plain, flip_tta=True)
    x = plain.prepare([photo])
    expected = 0.5 * (plain.run(x)[0] + plain.run(np.ascontiguousarray(x[..., ::-1]))[0][..., ::-1])
    assert np.abs(tta.run(x)[0] - expected).max() < 1e-6
    assert np.abs(tta.run(x)[0] - plain.run(x)[0]).max() > 1e-3  # the mirrored run counted
    a, b = tta.probabilities(photo), tta.probabilities(mirror)[:, ::-1]
    assert _iou(a > 0.5, b > 0.5) >= 0.999  # mirror-consistent (up to resampling)

    torch_tta = TorchSegmenter(official_cutout("u2netp"), 160, "torch", flip_tta=True)
    torch_plain = TorchSegmenter(official_cutout("u2netp"), 160, "torch")
    ref = torch_tta.probabilities(photo)
    rgb = photo.convert("RGB")
    by_hand = 0.5 * (torch_plain.single_pass(rgb) + torch_plain.single_pass(mirror.convert("RGB"))[:, ::-1])
    assert _iou(ref > 0.5, by_hand > 0.5) >= 0.995
    assert _iou(ref > 0.5, tta.probabilities(photo) > 0.5) >= 0.99  # the engines agree with TTA on
