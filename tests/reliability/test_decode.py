"""One decoder for every photo and mask (issue 22, class 3): every supported mode decodes to 8-bit
RGB photos / L masks with the right values, or is refused with a reason validate can quarantine.

Pillow's own `convert("RGB"/"L")` clips 16-bit and 32-bit modes at 255: a 16-bit grey photo became
pure white. Each case builds an image in one mode with known pixel values and checks the decoded
arrays; the last test runs a pair with a 16-bit photo through validate and prepare.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from backdrop.io import BadImageError, mask_channel, normalize_image, open_image

GREY16 = np.array([[0, 257, 32768, 65535]], dtype=np.uint16)
GREY16_AS_8 = [[0, 1, 128, 255]]  # 16-bit / 257, rounded: scaled, never clipped


def _save(path: Path, image: Image.Image, **kwargs) -> Path:
    image.save(path, **kwargs)
    return path


def _palette_with_transparency() -> Image.Image:
    image = Image.new("P", (3, 1))
    image.putpalette([255, 0, 0, 0, 255, 0, 20, 40, 60] + [0] * (253 * 3))
    image.putdata([0, 1, 2])
    image.info["transparency"] = 2
    return image


def _cmyk() -> Image.Image:
    image = Image.new("CMYK", (2, 1))
    image.putdata([(0, 0, 0, 0), (0, 255, 255, 0)])  # white, red
    return image


# name → (file builder, expected RGB of open_image(mode="RGB"), expected L of open_image(mode="L"))
CASES = {
    "16-bit grey PNG (I;16)": (
        lambda d: _save(d / "a.png", Image.fromarray(GREY16)),
        [[[v] * 3 for v in GREY16_AS_8[0]]], GREY16_AS_8),
    "16-bit big-endian TIFF (I;16B)": (
        lambda d: _save(d / "a.tif", Image.fromarray(GREY16.astype(">u2"))),
        [[[v] * 3 for v in GREY16_AS_8[0]]], GREY16_AS_8),
    "16-bit values in a 32-bit TIFF (I)": (
        lambda d: _save(d / "a.tif", Image.fromarray(GREY16.astype(np.int32))),
        [[[v] * 3 for v in GREY16_AS_8[0]]], GREY16_AS_8),
    "32-bit int TIFF (I, full range)": (
        lambda d: _save(d / "a.tif", Image.fromarray(np.array([[0, 2**30, 2**31 - 1]], np.int32))),
        [[[0] * 3, [128] * 3, [255] * 3]], [[0, 128, 255]]),
    "32-bit float TIFF in [0, 1] (F)": (
        lambda d: _save(d / "a.tif", Image.fromarray(np.array([[0.0, 0.5, 1.0]], np.float32))),
        [[[0] * 3, [128] * 3, [255] * 3]], [[0, 128, 255]]),
    "1-bit PNG": (
        lambda d: _save(d / "a.png", Image.fromarray(np.array([[0, 255, 0]], np.uint8)).convert("1")),
        [[[0] * 3, [255] * 3, [0] * 3]], [[0, 255, 0]]),
    "grey + alpha PNG (LA)": (
        lambda d: _save(d / "a.png", Image.merge("LA", [
            Image.fromarray(np.array([[10, 200]], np.uint8)), Image.fromarray(np.array([[255, 0]], np.uint8))])),
        [[[10] * 3, [200] * 3]], [[10, 200]]),
    "palette with transparency (P)": (
        lambda d: _save(d / "a.png", _palette_with_transparency()),
        [[[255, 0, 0], [0, 255, 0], [20, 40, 60]]], None),
    "palette + alpha (PA, in memory: no format writes it)": (
        lambda d: _palette_with_transparency().convert("PA"),
        [[[255, 0, 0], [0, 255, 0], [20, 40, 60]]], None),
    "CMYK TIFF": (
        lambda d: _save(d / "a.tif", _cmyk()),
        [[[255, 255, 255], [255, 0, 0]]], None),
}


@pytest.mark.parametrize("name", list(CASES))
def test_every_mode_decodes_to_8_bit_rgb_and_grey_with_the_right_values(tmp_path, name):
    build, rgb, grey = CASES[name]
    built = build(tmp_path)
    if isinstance(built, Image.Image):  # serving decodes uploads in memory: the same function
        decoded = normalize_image(built)
        photo, mask = decoded.convert("RGB"), decoded.convert("L")
    else:
        decoded = open_image(built)
        photo, mask = open_image(built, mode="RGB"), open_image(built, mode="L")
    assert photo.mode == "RGB"
    assert np.asarray(photo).tolist() == rgb
    if grey is not None:
        assert mask.mode == "L"
        assert np.asarray(mask).tolist() == grey
    # without a mode: an 8-bit mode every later .convert() handles correctly
    assert decoded.mode in ("L", "LA", "RGB", "RGBA")


@pytest.mark.parametrize("dtype, ext", [(np.uint16, "png"), (">u2", "tif"), (np.int32, "tif")])
def test_a_16_bit_gradient_stays_a_gradient(tmp_path, dtype, ext):
    ramp = np.tile(np.linspace(0, 65535, 300).astype(np.uint16), (40, 1))
    path = _save(tmp_path / f"ramp.{ext}", Image.fromarray(ramp.astype(dtype)))
    decoded = np.asarray(open_image(path, mode="RGB"))[..., 0].astype(int)
    row = decoded[0]
    assert (np.diff(row) >= 0).all()                  # monotonic
    assert row[0] == 0 and row[-1] == 255
    assert (decoded == 255).mean() < 0.05             # not clipped to white
    assert len(np.unique(row)) > 200                  # not collapsed to a few levels
    # the 16-bit mask decodes the same way: no 16-bit value is read as "foreground" just for being > 255
    assert np.array_equal(np.asarray(mask_channel(open_image(path))), decoded)


@pytest.mark.parametrize("orientation, turn", [(6, -1), (8, 1), (3, 2)])
def test_exif_orientation_is_applied(tmp_path, orientation, turn):
    stored = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3) * 10
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = _save(tmp_path / "a.png", Image.fromarray(stored), exif=exif)
    decoded = np.asarray(open_image(path, mode="RGB"))
    assert np.array_equal(decoded, np.rot90(stored, k=turn))  # 6: 90° clockwise, 8: counter-clockwise


def _lab_tiff(d: Path) -> Path:
    return _save(d / "a.tif", Image.new("LAB", (4, 4), (50, 0, 0)))


@pytest.mark.parametrize("build, why", [
    (_lab_tiff, "LAB"),
    (lambda d: _save(d / "a.tif", Image.fromarray(np.array([[0.0, np.nan]], np.float32))), "NaN"),
    (lambda d: _save(d / "a.tif", Image.fromarray(np.array([[-5, 100]], np.int32))), "negative"),
])
def test_modes_that_cannot_be_decoded_are_refused_with_a_reason(tmp_path, build, why):
    path = build(tmp_path)
    with pytest.raises(BadImageError, match=why) as info:
        open_image(path, mode="RGB")
    assert info.value.reason == "unsupported_mode"
    assert str(path) in str(info.value)


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def test_unsupported_mode_is_a_quarantine_reason_of_validate(project, synth):
    from backdrop.stages.validate import REASONS, pair_stats

    assert "unsupported_mode" in REASONS
    photo = _lab_tiff(project)
    mask = project / "m.png"
    mask.write_bytes(_png(Image.new("L", (4, 4), 255)))
    stats = pair_stats(photo, mask, 64_000_000)
    assert stats["image_status"] == "unsupported_mode"


@pytest.mark.parametrize("dtype, ext", [(np.uint16, "png"), (">u2", "tif"), (np.int32, "tif")])
def test_a_pair_with_a_16_bit_photo_is_prepared_as_its_grey_photo_not_white(project, synth, dtype, ext):
    from backdrop.config import PrepareParams
    from backdrop.io import read_csv
    from backdrop.stages.ingest import ingest
    from backdrop.stages.prepare import prepare, split_of
    from backdrop.stages.validate import validate
    from tests.data.conftest import make_stage, write, write_tree_drop

    stage = make_stage(project)
    drop = project / "drop"
    write_tree_drop(drop, synth, range(1, 8))
    grey = np.asarray(synth.photo(0).convert("L"), dtype=np.uint16) * 257  # 16-bit grey packshot
    write(drop, f"images/{synth.stem(0)}.{ext}", b"")
    Image.fromarray(grey.astype(dtype)).save(drop / f"images/{synth.stem(0)}.{ext}")
    write(drop, f"masks/{synth.stem(0)}.png", synth.mask_png(0))
    ingest(stage.ingest)
    result = validate(stage.validate, stage.ingest)
    assert result.quarantined == 0, result.reasons
    rows = read_csv(stage.validated / "manifest.csv")
    ids = [r["pair_id"] for r in rows]
    seed = next(s for s in range(10_000) if {split_of(i, s, 0.3, 0.3) for i in ids} == {"train", "val", "test"})
    params = PrepareParams(size=64, val_share=0.3, test_share=0.3, seed=seed, object_crops=False,
                           out_dir=Path("data/prepared"))
    prepare(params, stage.validate, stage.ingest)
    (row,) = [r for r in rows if r["stem"] == synth.stem(0)]
    prepared = np.asarray(Image.open(project / "data/prepared/images" / f"{row['pair_id']}.png"))
    assert not (prepared == 255).all()
    expected = np.asarray(synth.photo(0).convert("L").resize((64, 64), Image.Resampling.LANCZOS), dtype=int)
    assert np.abs(prepared[..., 0].astype(int) - expected).mean() < 3  # the photo, in grey


@pytest.mark.parametrize("scale", [1, 16, 257])
def test_api_uploads_use_the_same_decoder(scale):
    """The API's upload decoder (serving.images.decode) scales 16-bit photos like io.open_image does."""
    from backdrop.serving.images import decode

    grey = (np.arange(64 * 64, dtype=np.uint32).reshape(64, 64) * scale % 65536).astype(np.uint16)
    buf = io.BytesIO()
    Image.fromarray(grey).save(buf, format="PNG")
    got = np.asarray(decode(buf.getvalue(), 10**8))[..., 0].astype(int)
    want = (grey.astype(np.int64) * 255 + 32767) // 65535
    assert np.abs(got - want).max() <= 1
    assert got.min() < 250  # not the clipped all-white photo
