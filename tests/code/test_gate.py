"""The champion gate as a pure function: mean must improve, no cluster may collapse."""

from backdrop.stages.register import gate

CHAMP = {"iou_mean": 0.95, "iou_cluster_0": 0.96, "iou_cluster_1": 0.94}


def test_first_model_is_promoted():
    assert gate(CHAMP, None, 0.0, 0.01).promote


def test_better_mean_without_cluster_drop_is_promoted():
    challenger = {"iou_mean": 0.96, "iou_cluster_0": 0.965, "iou_cluster_1": 0.955}
    assert gate(challenger, CHAMP, 0.0, 0.01).promote


def test_worse_mean_is_refused():
    decision = gate({"iou_mean": 0.90, "iou_cluster_0": 0.9, "iou_cluster_1": 0.9}, CHAMP, 0.0, 0.01)
    assert not decision.promote and "does not beat" in decision.reason


def test_cluster_drop_beyond_margin_is_refused_even_if_mean_improves():
    challenger = {"iou_mean": 0.97, "iou_cluster_0": 0.99, "iou_cluster_1": 0.92}  # c1 drops 0.02
    decision = gate(challenger, CHAMP, 0.0, 0.01)
    assert not decision.promote and "iou_cluster_1" in decision.reason


def test_improvement_must_exceed_min_improvement():
    challenger = {"iou_mean": 0.955, "iou_cluster_0": 0.96, "iou_cluster_1": 0.95}
    assert not gate(challenger, CHAMP, 0.01, 0.01).promote
