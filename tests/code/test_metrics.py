"""IoU and friends on cases small enough to check by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from backdrop.metrics import Stats, confusion, iou, mae, mask_iou, summarize


def _mask(rows: list[str]) -> np.ndarray:
    """A boolean mask drawn as text: '#' = foreground."""
    return np.array([[c == "#" for c in row] for row in rows])


def test_iou_of_two_partly_overlapping_4x4_masks_is_one_third():
    pred = _mask(["##..",
                  "##..",
                  "....",
                  "...."])
    target = _mask([".##.",
                    ".##.",
                    "....",
                    "...."])
    # overlap: column 1 of rows 0-1 = 2 px; union: columns 0-2 of rows 0-1 = 6 px -> 2/6 = 1/3
    stats = confusion(pred, target)
    assert stats == Stats(tp=2, fp=2, fn=2, tn=10)  # 2+2+2+10 = 16 px
    assert mask_iou(pred, target) == pytest.approx(1 / 3)


def test_iou_of_nested_masks_is_area_ratio():
    target = _mask(["####",
                    "####",
                    "####",
                    "####"])
    pred = _mask(["....",
                  ".##.",
                  ".##.",
                  "...."])
    # pred inside target: intersection 4 px, union 16 px -> 0.25
    assert mask_iou(pred, target) == pytest.approx(0.25)
    assert mask_iou(target, pred) == pytest.approx(0.25)  # symmetric


def test_identical_masks_score_one_and_disjoint_masks_zero():
    a = _mask(["##..", "##..", "....", "...."])
    b = _mask(["....", "....", "..##", "..##"])
    assert mask_iou(a, a) == 1.0
    assert mask_iou(a, b) == 0.0  # intersection 0 px of a union of 8 px


def test_two_empty_masks_agree_perfectly():
    empty = np.zeros((4, 4), dtype=bool)
    assert confusion(empty, empty) == Stats(0, 0, 0, 16)
    assert mask_iou(empty, empty) == 1.0  # union 0: nothing to disagree on
    one = empty.copy()
    one[0, 0] = True
    assert mask_iou(one, empty) == 0.0  # union 1 px, intersection 0


def test_uint8_masks_count_any_nonzero_value_as_foreground():
    pred = np.array([[0, 255], [1, 0]], dtype=np.uint8)
    target = np.array([[0, 255], [0, 0]], dtype=np.uint8)
    # pred foreground {(0,1), (1,0)}, target {(0,1)}: intersection 1, union 2
    assert mask_iou(pred, target) == pytest.approx(0.5)


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="shape"):
        confusion(np.zeros((4, 4)), np.zeros((4, 5)))


def test_iou_from_stats_directly():
    assert iou(Stats(tp=3, fp=1, fn=2, tn=100)) == pytest.approx(3 / 6)  # tn never counts


def test_mae_between_probabilities_and_target():
    prob = np.array([[0.9, 0.2], [0.5, 0.0]])
    target = np.array([[1, 0], [1, 0]])
    # |0.9-1| + |0.2-0| + |0.5-1| + |0-0| = 0.1 + 0.2 + 0.5 + 0 = 0.8 over 4 px = 0.2
    assert mae(prob, target) == pytest.approx(0.2)


def test_summarize_per_cluster_and_overall():
    ious = [1.0, 0.5, 0.995, 0.25]
    clusters = [0, 0, 1, 2]
    out = summarize(ious, clusters, k=4)
    assert out["n"] == 4
    assert out["iou_mean"] == pytest.approx((1.0 + 0.5 + 0.995 + 0.25) / 4)  # 0.68625
    assert out["iou_cluster_0"] == pytest.approx(0.75)   # (1.0 + 0.5) / 2
    assert out["iou_cluster_1"] == pytest.approx(0.995)
    assert out["iou_cluster_2"] == pytest.approx(0.25)
    assert "iou_cluster_3" not in out                    # an empty cluster has no mean
    assert out["share_iou_ge_099"] == pytest.approx(0.5)  # 1.0 and 0.995 of 4


def test_summarize_of_nothing_is_nan_not_an_error():
    out = summarize([], [], k=2)
    assert out["n"] == 0 and math.isnan(out["iou_mean"]) and math.isnan(out["share_iou_ge_099"])


def _square_with_hole() -> np.ndarray:
    truth = np.zeros((200, 200), bool)
    truth[40:160, 40:160] = True
    truth[90:110, 90:110] = False  # a see-through hole: background shows through the product
    return truth


def test_truth_regions_split_every_pixel_once():
    from backdrop.metrics import REGIONS, truth_regions

    truth = _square_with_hole()
    regions = truth_regions(truth)
    assert tuple(regions) == REGIONS
    assert (sum(r.astype(int) for r in regions.values()) == 1).all()
    assert not (regions["inner"] & ~truth).any() and not ((regions["gap"] | regions["outside"]) & truth).any()
    assert regions["gap"][100, 100] and regions["outside"][5, 5] and regions["inner"][60, 60]
    assert regions["edge"][40, 100] and regions["edge"][39, 100]  # both sides of the outline


def test_iou_lost_by_region_names_the_kind_of_error():
    from backdrop.metrics import iou_lost_by_region, mask_iou

    truth = _square_with_hole()
    assert iou_lost_by_region(truth, truth) == {"edge": 0.0, "gap": 0.0, "outside": 0.0, "inner": 0.0}

    filled = truth.copy()
    filled[90:110, 90:110] = True  # the hole painted as product
    lost = iou_lost_by_region(filled, truth)
    assert lost["gap"] > 0.01 and lost["outside"] == 0 and lost["inner"] == 0
    assert lost["gap"] + lost["edge"] == pytest.approx(1 - mask_iou(filled, truth), abs=1e-3)

    shadow = truth.copy()
    shadow[170:190, 40:160] = True  # a shadow under the product, away from it
    lost = iou_lost_by_region(shadow, truth)
    assert lost["outside"] == pytest.approx(1 - mask_iou(shadow, truth)) and lost["gap"] == lost["edge"] == 0

    grown = np.zeros_like(truth)
    grown[39:161, 39:161] = True  # one pixel too wide all round (and the hole filled a pixel in)
    grown[91:109, 91:109] = False
    lost = iou_lost_by_region(grown, truth)
    assert lost["edge"] == pytest.approx(1 - mask_iou(grown, truth)) and lost["gap"] == lost["outside"] == 0

    holed = truth.copy()
    holed[50:70, 130:150] = False  # a hole cut into the product
    lost = iou_lost_by_region(holed, truth)
    assert lost["inner"] > 0 and lost["inner"] + lost["edge"] == pytest.approx(1 - mask_iou(holed, truth))


def test_iou_lost_by_region_without_product():
    from backdrop.metrics import iou_lost_by_region

    empty = np.zeros((20, 20), bool)
    assert iou_lost_by_region(empty, empty) == {"edge": 0.0, "gap": 0.0, "outside": 0.0, "inner": 0.0}
    speck = empty.copy()
    speck[5, 5] = True
    assert iou_lost_by_region(speck, empty)["outside"] == 1.0
    line = empty.copy()
    line[10, 2:18] = True  # no area for a hull: the regions still cover the frame
    assert iou_lost_by_region(line, line) == {"edge": 0.0, "gap": 0.0, "outside": 0.0, "inner": 0.0}
