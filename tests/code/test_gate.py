"""The champion gate as a pure function of per-photo rows: the same photos for every model, a paired
bootstrap bound on the gain, no group may collapse, never below the stock model."""

import numpy as np
import pytest

from backdrop.stages.register import bootstrap_lower, decision_report, gate, version_tags

RULES = {"min_improvement": 0.0, "max_cluster_drop": 0.01}


def rows(ious, groups=None, set_="test"):
    groups = groups or [f"c{i % 2}" for i in range(len(ious))]
    return [{"set": set_, "id": f"p{i}", "group": g, "iou": v} for i, (v, g) in enumerate(zip(ious, groups, strict=True))]


def noisy(base, shift, n=60, seed=0, spread=0.004):
    rng = np.random.default_rng(seed)
    return list(np.clip(base + shift + rng.normal(0, spread, n), 0, 1))


CHAMP = noisy(0.95, 0.0, seed=1)


def test_bootstrap_lower_bound_is_seeded_and_below_the_mean():
    gains = np.random.default_rng(3).normal(0.01, 0.02, 50)
    a, b = bootstrap_lower(gains, 2000, seed=7), bootstrap_lower(gains, 2000, seed=7)
    assert a == b and a < gains.mean()
    assert bootstrap_lower(gains, 2000, seed=7, confidence=0.99) < a  # more confidence, lower bound
    assert bootstrap_lower([0.02] * 10) == pytest.approx(0.02)  # no spread: the bound is the mean
    with pytest.raises(ValueError):
        bootstrap_lower([])


def test_first_model_is_promoted_when_not_below_stock():
    d = gate(rows(CHAMP), None, rows([v - 0.05 for v in CHAMP]), **RULES)
    assert d.promote and "no champion yet" in d.reason and d.means["stock"] < d.means["challenger"]


def test_clear_paired_gain_is_promoted_with_a_table_per_group():
    chall = [v + 0.01 for v in CHAMP]
    d = gate(rows(chall), rows(CHAMP), None, **RULES)
    assert d.promote and d.gain_lower > 0 and d.gain_mean == pytest.approx(0.01)
    assert set(d.groups) == {"c0", "c1"} and d.groups["c0"]["n"] == 30
    assert d.groups["c1"]["challenger"] - d.groups["c1"]["champion"] == pytest.approx(0.01)
    assert d.worse == []


def test_a_gain_within_noise_is_refused_though_the_mean_is_higher():
    # mean gain +0.0005 with ±0.02 per-photo noise: the old "mean beats mean" gate would promote
    rng = np.random.default_rng(5)
    chall = list(np.array(CHAMP) + 0.0005 + rng.normal(0, 0.02, len(CHAMP)))
    chall = [c + (0.0005 - (np.mean(chall) - np.mean(CHAMP))) for c in chall]  # exactly +0.0005
    d = gate(rows(chall), rows(CHAMP), None, **RULES)
    assert d.gain_mean == pytest.approx(0.0005) and d.gain_lower < 0
    assert not d.promote and "lower bound" in d.reason and "does not exceed" in d.reason
    assert d.worse and d.worse[0][2] - d.worse[0][1] == min(b - a for _, a, b in d.worse)  # worst first


def test_the_same_model_twice_is_refused():
    d = gate(rows(CHAMP), rows(CHAMP), None, **RULES)
    assert not d.promote and d.gain_lower == 0.0


def test_min_improvement_applies_to_the_lower_bound():
    chall = [v + 0.01 for v in CHAMP]
    assert gate(rows(chall), rows(CHAMP), None, min_improvement=0.005, max_cluster_drop=0.01).promote
    assert not gate(rows(chall), rows(CHAMP), None, min_improvement=0.02, max_cluster_drop=0.01).promote


def test_a_group_drop_beyond_the_margin_is_refused_even_if_the_mean_improves():
    # c0 gains 0.05, c1 loses 0.02: mean +0.015 but one cluster collapses
    chall = [v + (0.05 if i % 2 == 0 else -0.02) for i, v in enumerate(CHAMP)]
    d = gate(rows(chall), rows(CHAMP), None, **RULES)
    assert d.gain_lower > 0
    assert not d.promote and "group c1 drops by 0.0200" in d.reason


def test_benchmark_styles_are_groups_of_their_own():
    test_rows = rows(CHAMP)
    bench = rows([0.9] * 10, groups=["ood/flatlay"] * 10, set_="ood")
    champ = test_rows + bench
    chall = rows([v + 0.02 for v in CHAMP]) + rows([0.85] * 10, groups=["ood/flatlay"] * 10, set_="ood")
    d = gate(chall, champ, None, **RULES)
    assert "ood/flatlay" in d.groups and d.n == len(champ)
    assert not d.promote and "ood/flatlay drops by 0.0500" in d.reason


def test_below_stock_is_refused_even_without_a_champion():
    stock = [v + 0.02 for v in CHAMP]
    d = gate(rows(CHAMP), None, rows(stock), **RULES)
    assert not d.promote and "below the stock model" in d.reason
    assert gate(rows(CHAMP), None, rows(stock), stock_margin=0.03, **RULES).promote  # margin allows it
    better = [v + 0.01 for v in CHAMP]
    d = gate(rows(CHAMP), rows(better), rows(stock), **RULES)  # stock floor checked before the champion
    assert not d.promote and "stock" in d.reason


def test_below_stock_in_one_benchmark_style_is_refused_though_the_overall_mean_beats_it():
    # the 2026-12-03 full run: better than stock on its own drop's test split, worse on both OOD styles
    test_stock = [v - 0.06 for v in CHAMP]
    chall = rows(CHAMP) + rows([0.89] * 10, groups=["benchmark/props"] * 10, set_="benchmark")
    stock = rows(test_stock) + rows([0.91] * 10, groups=["benchmark/props"] * 10, set_="benchmark")
    d = gate(chall, None, stock, **RULES)
    assert d.means["challenger"] > d.means["stock"]  # the overall floor alone would promote
    assert not d.promote and "out-of-distribution" in d.reason and "benchmark/props 0.8900" in d.reason
    assert gate(chall, None, stock, stock_margin=0.03, **RULES).promote  # within the margin
    # test clusters are not floored one by one: the fine-tune may trade a cluster the stock model is good at
    chall_c1 = rows([v if i % 2 == 0 else v - 0.08 for i, v in enumerate(CHAMP)])
    assert gate(chall_c1, None, rows(test_stock), **RULES).promote


def test_only_photos_scored_for_every_model_are_compared():
    chall = rows([v + 0.01 for v in CHAMP])
    champ = rows(CHAMP)[:40]  # 20 photos the champion was not scored on
    d = gate(chall, champ, None, **RULES)
    assert d.n == 40 and d.promote
    with pytest.raises(ValueError, match="share no scored photo"):
        gate(chall, rows(CHAMP, set_="other"), None, **RULES)


def test_decision_report_has_the_reason_table_and_worse_photos():
    chall = [v + (0.05 if i % 2 == 0 else -0.02) for i, v in enumerate(CHAMP)]
    d = gate(rows(chall), rows(CHAMP), rows(CHAMP), **RULES)
    text = decision_report(d, "7", "6", "official:u2netp")
    assert "v7 not promoted" in text and d.reason in text
    assert "| c1 | 30 |" in text and "champion | challenger | stock" in text
    assert "30 photo(s) got worse" in text and "test:p" in text.split("got worse")[1]


# ------------------------------------------------------------------ frozen benchmark sets (the reader)

def _bench(root, rows, header="id,image,mask,style,part"):
    from PIL import Image

    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(exist_ok=True)
    lines = [header]
    for i, (style, part) in enumerate(rows):
        Image.new("RGB", (40, 30), (200, 10, 10)).save(root / f"images/b{i}.jpg")
        mask = np.zeros((30, 40), np.uint8)
        mask[5:20, 10:30] = 200  # foreground > 127
        mask[0, 0] = 100         # not foreground
        Image.fromarray(mask).save(root / f"masks/b{i}.png")
        lines.append(f"b{i},images/b{i}.jpg,masks/b{i}.png,{style},{part}")
    (root / "index.csv").write_text("\n".join(lines) + "\n")
    return root


def test_benchmark_reader_loads_a_part_with_its_masks(tmp_path):
    from backdrop.data.benchmark import load_benchmark

    root = _bench(tmp_path / "ood-v1", [("flatlay", "test"), ("model", "val"), ("model", "test")])
    bench = load_benchmark(root)
    assert bench.name == "ood-v1" and [r["id"] for r in bench.rows] == ["b0", "b2"]
    assert bench.styles == ["flatlay", "model"] and len(load_benchmark(root, "val").rows) == 1
    photo, truth = bench.load(bench.rows[0])
    assert photo.mode == "RGB" and photo.size == (40, 30)
    assert truth.dtype == bool and truth.shape == (30, 40) and truth.sum() == 15 * 20


@pytest.mark.parametrize(("change", "message"), [
    (lambda r: (r / "index.csv").unlink(), "no benchmark index"),
    (lambda r: (r / "index.csv").write_text("id,image,mask\nb0,images/b0.jpg,masks/b0.png\n"), "missing column(s) style, part"),
    (lambda r: (r / "masks/b0.png").unlink(), "mask file"),
    (lambda r: (r / "index.csv").write_text("id,image,mask,style,part\nb0,images/b0.jpg,masks/b0.png,x,train\n"),
     "part 'train' is not val or test"),
    (lambda r: (r / "index.csv").write_text("id,image,mask,style,part\nb0,../b0.jpg,masks/b0.png,x,test\n"),
     "must be relative, inside the set"),
    (lambda r: (r / "index.csv").write_text("id,image,mask,style,part\nb0,images/b0.jpg,masks/b0.png,x,val\n"),
     "no rows with part=test"),
])
def test_benchmark_reader_names_the_file_and_the_problem(tmp_path, change, message):
    from backdrop.data.benchmark import BenchmarkError, load_benchmark

    root = _bench(tmp_path / "set", [("flatlay", "test")])
    change(root)
    with pytest.raises(BenchmarkError, match=r"set/(index\.csv|masks)") as err:
        load_benchmark(root)
    assert message in str(err.value)


def test_version_tags_keep_the_headline_figures_and_leave_the_rest_to_the_run():
    metrics = {"iou_mean": 0.97, "iou_cluster_2": 0.961234567, "n": 12, "ood_iou_mean": 0.9377,
               "ood_share_ge_099_studio": 0.4478, "ood_iou_cluster_3": 0.95, "ood_n": 132, "ood_n_cluster_3": 9,
               "ood_lost_edge": 0.0159, "stock_ood_iou_mean": 0.93}
    assert version_tags(metrics) == {
        "test.iou_mean": "0.97", "test.iou_cluster_2": "0.961235", "test.n": "12",
        "benchmark.ood_iou_mean": "0.9377", "benchmark.ood_share_ge_099_studio": "0.4478",
        "benchmark.ood_iou_cluster_3": "0.95"}
