"""Class 12: config validation refuses values that cannot work, naming the dotted key.

`serve.white_aspect: "nan:1"` made every white request fail with a 500, `"100000:1"` grew one request
to 14 GB. Every float setting must be finite, and settings that size memory, divide, or wait need bounds.
"""

from __future__ import annotations

import math

import pytest

from backdrop.config import ConfigError, ServeParams, load_params, parse_aspect


@pytest.mark.parametrize("text", ["nan:1", "1:nan", "inf:1", "1:inf", "-inf:1", "100000:1", "1:100000",
                                  "21:1", "1e308:1e-308", "0:1", "1:-2", "4:5:6", "square"])
def test_parse_aspect_refuses_non_finite_absurd_and_malformed_ratios(text):
    with pytest.raises(ValueError, match="aspect"):
        parse_aspect(text)


@pytest.mark.parametrize(("text", "want"), [("1:1", (1.0, 1.0)), ("4:5", (4.0, 5.0)), ("20:1", (20.0, 1.0)),
                                            ("1:20", (1.0, 20.0)), (" 16 : 9 ", (16.0, 9.0)), ("original", None)])
def test_parse_aspect_keeps_what_shops_use(text, want):
    assert parse_aspect(text) == want


BAD = [
    ("serve", "white_aspect", "'nan:1'"),
    ("serve", "white_aspect", "'100000:1'"),
    ("serve", "white_margin", "0.45"),          # a canvas 100x the product's box
    ("serve", "refine_eps", ".inf"),
    ("serve", "refine_eps", ".nan"),
    ("serve", "refresh_s", ".inf"),
    ("serve", "watch_settle_s", ".nan"),
    ("serve", "watch_poke_s", "1e300"),
    ("serve", "zoom_blend", ".nan"),
    ("serve", "max_pixels", "1000000000000"),
    ("serve", "max_upload_bytes", "100000000000"),
    ("serve", "batch_size", "1000000"),
    ("serve", "max_batch_files", "1000000"),
    ("serve", "threads", "1000000"),
    ("serve", "workers", "100000"),
    ("serve", "workers", "true"),              # a boolean is not a count
    ("remove", "batch_size", "1000000"),
    ("remove", "workers", "1000000"),
    ("monitoring", "window_hours", ".inf"),
    ("monitoring", "reference_hours", "1e300"),
    ("monitoring", "webhook_timeout_s", ".inf"),
    ("monitoring", "worst_examples", "1000000000"),
    ("monitoring", "threshold", ".nan"),
    ("train", "lr", ".inf"),
]


@pytest.mark.parametrize(("section", "key", "value"), BAD, ids=[f"{s}.{k}={v}" for s, k, v in BAD])
def test_unworkable_values_fail_naming_the_dotted_key(tmp_path, section, key, value):
    path = tmp_path / "params.yaml"
    path.write_text(f"{section}:\n  {key}: {value}\n")
    with pytest.raises(ConfigError) as err:
        load_params(path)
    assert f"  {section}.{key}:" in str(err.value) and str(path) in str(err.value)


@pytest.mark.parametrize("text", [
    "monitoring:\n  smtp:\n    timeout_s: .inf\n",
    "monitoring:\n  smtp:\n    timeout_s: 1e12\n",
    "monitoring:\n  smtp:\n    port: 0\n",
])
def test_nested_sections_name_the_full_path(tmp_path, text):
    path = tmp_path / "params.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=r"  monitoring\.smtp\.(timeout_s|port):"):
        load_params(path)


@pytest.mark.parametrize(("white", "black"), [(0.8, 0.3), (1.0, 0.01), (0.5, 0.51)])
def test_simulated_shift_shares_must_fit_in_one(tmp_path, white, black):
    path = tmp_path / "params.yaml"
    path.write_text(f"monitoring:\n  simulate_shift_white_share: {white}\n  simulate_shift_black_share: {black}\n")
    with pytest.raises(ConfigError, match=r"  monitoring: .*simulate_shift_white_share \+ simulate_shift_black_share"):
        load_params(path)


@pytest.mark.parametrize("aspect", ["20:1", "1:20", "4:5"])
def test_the_white_canvas_stays_within_a_bounded_multiple_of_the_product(aspect):
    """At the limits (ratio 20:1, margin 0.25) the canvas is at most 20 / 0.5² = 80x the product's box."""
    import numpy as np
    from PIL import Image

    from backdrop.serving.outputs import white_canvas

    widest = next(m.le for m in ServeParams.model_fields["white_margin"].metadata if hasattr(m, "le"))
    sp = ServeParams(white_aspect=aspect, white_margin=widest)
    photo = Image.new("RGB", (64, 64), (200, 10, 10))
    alpha = np.zeros((64, 64), np.uint8)
    alpha[16:48, 16:48] = 255
    canvas = white_canvas(photo, alpha, sp.white_aspect, sp.white_margin)
    w, h = parse_aspect(aspect)
    assert math.isclose(canvas.width / canvas.height, w / h, rel_tol=0.05)
    assert canvas.width * canvas.height <= 80 * 32 * 32 * 1.05


@pytest.mark.parametrize("size", [(40000, 1000), (1000, 40000), (30000, 3000)])
def test_a_long_thin_product_on_a_square_canvas_stays_bounded(size):
    """`serve.white_aspect` 1:1 around a 40:1 product would be a 1.6 GPx canvas: scaled to the cap instead."""
    import numpy as np
    from PIL import Image

    from backdrop.serving.outputs import MAX_CANVAS_PIXELS, white_canvas

    w, h = size
    photo = Image.new("RGB", (w, h), (10, 20, 30))
    alpha = np.full((h, w), 255, np.uint8)
    canvas = white_canvas(photo, alpha, "1:1", 0.05)
    assert canvas.width * canvas.height <= MAX_CANVAS_PIXELS
    assert abs(canvas.width - canvas.height) <= 1  # still the shop's aspect
    assert canvas.getpixel((canvas.width // 2, canvas.height // 2)) == (10, 20, 30)  # the product is on it
