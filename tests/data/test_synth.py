"""Synthetic packshots: determinism, exact binary masks, framing, category/style mix, files on disk."""

from __future__ import annotations

import csv
import hashlib

import numpy as np
import pytest
from PIL import Image

from backdrop.data.synth import CATEGORIES, STYLES, SynthItem, render_item, synthesize

SMALL = {"min_side": 160, "max_side": 240}  # small photos keep the suite fast; the geometry is the same


@pytest.fixture(scope="module")
def batch():
    return [render_item(7, i, **SMALL) for i in range(60)]


def _runs(row: np.ndarray) -> int:
    """Number of separate foreground runs in a mask row."""
    on = (row > 0).astype(np.int8)
    return int(np.count_nonzero(np.diff(on) == 1) + on[0])


def test_same_seed_and_index_render_identically():
    photo_a, mask_a, item_a = render_item(3, 5, **SMALL)
    photo_b, mask_b, item_b = render_item(3, 5, **SMALL)
    assert item_a == item_b
    assert mask_a.tobytes() == mask_b.tobytes()
    assert np.array_equal(np.asarray(photo_a), np.asarray(photo_b))


def test_rendering_depends_on_seed_and_index_only():
    _, mask_a, _ = render_item(3, 5, **SMALL)
    for _ in range(3):  # rendering other items first changes nothing: no hidden global state
        render_item(1, 0, **SMALL)
    _, mask_b, _ = render_item(3, 5, **SMALL)
    assert mask_a.tobytes() == mask_b.tobytes()


@pytest.mark.parametrize("other", [(4, 5), (3, 6)])
def test_different_seed_or_index_differ(other):
    photo_a, mask_a, item_a = render_item(3, 5, **SMALL)
    photo_b, mask_b, item_b = render_item(*other, **SMALL)
    assert item_a.stem != item_b.stem
    same_size = photo_a.size == photo_b.size
    assert not (same_size and np.array_equal(np.asarray(photo_a), np.asarray(photo_b)))
    assert not (same_size and mask_a.tobytes() == mask_b.tobytes())


def test_masks_are_binary_and_match_the_photo(batch):
    for photo, mask, item in batch:
        assert isinstance(item, SynthItem)
        assert photo.mode == "RGB" and mask.mode == "L"
        assert photo.size == mask.size == (item.width, item.height)
        values = set(np.unique(np.asarray(mask)).tolist())
        assert values == {0, 255}, (item.stem, values)


def test_sizes_within_bounds_and_mostly_portrait(batch):
    sizes = [(item.width, item.height) for _, _, item in batch]
    for w, h in sizes:
        assert SMALL["min_side"] <= w <= SMALL["max_side"]
        assert SMALL["min_side"] <= h <= SMALL["max_side"]
    assert any(w != h for w, h in sizes), "all photos are square"
    assert len(set(sizes)) > 10
    assert sum(h > w for w, h in sizes) > len(sizes) / 2


def test_fixed_size_is_honoured():
    _, mask, item = render_item(0, 1, min_side=200, max_side=200)
    assert mask.size == (item.width, item.height) == (200, 200)


def test_every_category_appears_and_names_are_stable(batch):
    cats = {item.category for _, _, item in batch}
    assert cats == set(CATEGORIES)
    assert all(item.style in STYLES for _, _, item in batch)
    assert batch[12][2].stem == "synth-7-00012"


def test_foreground_coverage_is_sane(batch):
    for _, mask, item in batch:
        m = np.asarray(mask) > 0
        assert 0.05 <= m.mean() <= 0.90, (item.stem, item.category, m.mean())
        # the product is framed inside the photo, not cut by its border
        assert not (m[0].any() or m[-1].any() or m[:, 0].any() or m[:, -1].any()), item.stem


def test_style_shares_are_respected():
    tiny = {"min_side": 64, "max_side": 96}
    styles = [render_item(21, i, **tiny)[2].style for i in range(300)]
    assert 25 <= styles.count("white_on_white") <= 65  # expected 45
    assert 4 <= styles.count("black_on_black") <= 30  # expected 15
    assert {render_item(21, i, white_share=0.0, black_share=0.0, **tiny)[2].style for i in range(20)} == {
        "normal"
    }
    assert {render_item(21, i, white_share=1.0, black_share=0.0, **tiny)[2].style for i in range(10)} == {
        "white_on_white"
    }


def test_white_on_white_is_low_contrast():
    for i in range(40):
        photo, mask, item = render_item(5, i, white_share=0.5, black_share=0.0, **SMALL)
        if item.style != "white_on_white":
            continue
        px = np.asarray(photo, dtype=np.float32).mean(axis=2)
        m = np.asarray(mask) > 0
        assert px[~m].mean() > 200 and np.median(px[m]) > 190, item.stem
        assert abs(np.median(px[~m]) - np.median(px[m])) < 40, item.stem


def test_trousers_have_a_gap_between_the_legs():
    found = 0
    for i in range(200):
        _, mask, item = render_item(9, i, **SMALL)
        if item.category != "trousers":
            continue
        found += 1
        m = np.asarray(mask)
        ys, xs = np.nonzero(m)
        y = int(ys.min() + 0.8 * (ys.max() - ys.min()))
        assert _runs(m[y]) >= 2, item.stem
        # the gap is background, bounded by the two legs on the same row
        on = np.flatnonzero(m[y])
        gap = np.flatnonzero(np.diff(on) > 1)
        assert gap.size >= 1 and on[gap[0] + 1] - on[gap[0]] > 3, item.stem
        if found == 8:
            break
    assert found >= 5


def test_synthesize_writes_what_render_item_returns(tmp_path):
    items = synthesize(tmp_path, 5, 11, progress=False, **SMALL)
    assert [it.stem for it in items] == [f"synth-11-{i:05d}" for i in range(5)]
    for i, item in enumerate(items):
        photo, mask, expected = render_item(11, i, **SMALL)
        assert item == expected
        with Image.open(tmp_path / "masks" / f"{item.stem}.png") as fh:
            assert fh.mode == "L" and fh.tobytes() == mask.tobytes()
        with Image.open(tmp_path / "images" / f"{item.stem}.jpg") as fh:
            assert fh.format == "JPEG" and fh.size == photo.size
            diff = np.abs(np.asarray(fh.convert("RGB"), np.float32) - np.asarray(photo, np.float32))
        assert diff.mean() < 3.0, (item.stem, diff.mean())

    with open(tmp_path / "labels.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["stem", "category", "style", "width", "height"]
    assert [
        SynthItem(r["stem"], r["category"], r["style"], int(r["width"]), int(r["height"])) for r in rows
    ] == items


def test_synthesize_is_idempotent(tmp_path):
    def digest() -> dict[str, str]:
        return {
            str(p.relative_to(tmp_path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(tmp_path.rglob("*"))
            if p.is_file()
        }

    synthesize(tmp_path, 3, 2, progress=False, **SMALL)
    first = digest()
    assert len(first) == 3 * 2 + 2  # photos, masks, labels.csv, drop.json
    synthesize(tmp_path, 3, 2, progress=False, **SMALL)
    assert digest() == first
