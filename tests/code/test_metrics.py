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
