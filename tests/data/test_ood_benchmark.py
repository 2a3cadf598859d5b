"""The out-of-distribution benchmark (issue 19): format, determinism, and no overlap with training.

Reads the real Fashion-MNIST idx files of `dataset-fashion-mnist` (installed by scripts/install.sh).
"""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from backdrop.cli import app
from backdrop.config import FashionMnistParams, SynthParams
from backdrop.data.benchmark import load_benchmark
from backdrop.data.benchmark_build import (
    INDEX_FIELDS,
    STYLES,
    _coverage,
    build_benchmark,
    part_of,
    pick_products,
    render_props,
    render_studio,
)
from backdrop.data.drop_mix import write_mix
from backdrop.data.fashion_mnist import load_split, render_drop
from backdrop.data.synth import synthesize

N, SEED = 4, 23
SIZES = {"min_side": 200, "max_side": 360}


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def splits(source):
    test_x, _, _ = load_split("test", source)
    train_x, _, _ = load_split("train", source)
    return test_x, train_x


@pytest.fixture(scope="module")
def bench(tmp_path_factory, source) -> Path:
    out = tmp_path_factory.mktemp("bench") / "benchmark"
    build_benchmark(out, N, SEED, source_dir=source, progress=False, **SIZES)
    return out


def test_index_is_what_the_reader_expects(bench):
    with open(bench / "index.csv", newline="") as fh:
        assert next(csv.reader(fh)) == INDEX_FIELDS
    rows = _rows(bench / "index.csv")
    assert len(rows) == N * len(STYLES) and {r["style"] for r in rows} == set(STYLES)
    assert all(sum(r["style"] == s for r in rows) == N for s in STYLES)
    for r in rows:
        assert r["part"] == part_of(r["id"], 0.5)
        photo, mask = Image.open(bench / r["image"]), Image.open(bench / r["mask"])
        assert photo.format == "JPEG" and mask.mode == "L" and photo.size == mask.size
        assert SIZES["min_side"] <= min(photo.size) and max(photo.size) <= SIZES["max_side"]
        m = np.asarray(mask)
        assert set(np.unique(m)) == {0, 255} and 0.003 < (m > 0).mean() < 0.9
    loaded = {part: load_benchmark(bench, part).rows for part in ("val", "test") if
              any(r["part"] == part for r in rows)}
    assert sum(len(v) for v in loaded.values()) == len(rows)
    desc = json.loads((bench / "benchmark.json").read_text())
    assert desc["training"] is False and desc["n_per_style"] == N and desc["styles"] == list(STYLES)


def test_small_enclosed_gaps_are_product_large_ones_stay_see_through():
    """White parts of a negated Fashion-MNIST product look like background: a small enclosed gap is
    product again, a large one (between a handle and the bag) stays a hole, a far speck goes."""
    img = np.zeros((28, 28), np.uint8)
    img[12:26, 4:24] = 200          # the bag
    img[17, 13] = 0                 # a white dot on it: a small enclosed gap
    img[2:12, 7:9] = img[2:12, 19:21] = img[2:4, 7:21] = 200  # the handle encloses a large gap
    img[1, 26] = 255                # a speck
    cov = _coverage(img, 112) >= 0.5
    assert cov[17 * 4 + 2, 13 * 4 + 2]                      # the dot is filled
    assert not cov[7 * 4, 14 * 4]                           # the handle's gap is still background
    assert not cov[:8, 100:].any()                          # the speck is gone
    assert cov[2 * 4 + 4, 7 * 4 + 4] and cov[20 * 4, 10 * 4]  # handle and body are product


def test_parts_split_by_id_hash_about_evenly():
    ids = [f"{s}-{i:05d}" for s in STYLES for i in range(2000)]
    val = sum(part_of(i, 0.5) == "val" for i in ids) / len(ids)
    assert 0.47 < val < 0.53 and part_of(ids[0], 0.5) == part_of(ids[0], 0.5)


@pytest.mark.parametrize("render", [render_studio, render_props])
def test_each_benchmark_style_is_deterministic_per_seed(render, splits):
    test_x, _ = splits
    a = [render(test_x[i], i, SEED, 200, 360) for i in range(3)]
    b = [render(test_x[i], i, SEED, 200, 360) for i in range(3)]
    c = [render(test_x[i], i, SEED + 1, 200, 360) for i in range(3)]

    def digest(photo, mask, save):
        return hashlib.sha256(photo.tobytes() + mask.tobytes() + repr(save).encode()).hexdigest()

    assert [digest(*x) for x in a] == [digest(*x) for x in b]
    assert {digest(*x) for x in a}.isdisjoint(digest(*x) for x in c)
    assert len({digest(*x) for x in a}) == 3


def test_rebuild_writes_the_same_bytes_and_drops_files_of_a_bigger_build(bench, source, tmp_path):
    again = tmp_path / "again"
    build_benchmark(again, N + 1, SEED, source_dir=source, progress=False, **SIZES)
    build_benchmark(again, N, SEED, source_dir=source, progress=False, **SIZES)
    files = sorted(str(p.relative_to(bench)) for p in bench.rglob("*") if p.is_file())
    assert files == sorted(str(p.relative_to(again)) for p in again.rglob("*") if p.is_file())
    assert all(_sha(bench / f) == _sha(again / f) for f in files)


def test_products_come_from_the_test_split_only_and_never_from_train_bytes(bench, splits):
    test_x, train_x = splits
    sources = _rows(bench / "sources.csv")
    assert {r["split"] for r in sources} == {"test"}
    chosen = [int(r["source_index"]) for r in sources]
    assert len(set(chosen)) == len(chosen)  # styles share no product
    train_bytes = {img.tobytes() for img in train_x}
    assert not any(test_x[i].tobytes() in train_bytes for i in chosen)
    # a test image that duplicates a train image is skipped, whatever the permutation says
    fake_train = np.concatenate([train_x[:100], test_x[:50]])
    picked = pick_products(test_x[:60], fake_train, 4, SEED)
    assert all(i >= 50 for idx in picked.values() for i in idx)
    with pytest.raises(ValueError, match="only 10"):
        pick_products(test_x[:60], fake_train, 6, SEED)
    small, large = pick_products(test_x, train_x, 3, SEED), pick_products(test_x, train_x, 5, SEED)
    assert all(large[s][:3] == small[s] for s in STYLES)  # a larger n extends a smaller one


def test_no_benchmark_photo_or_silhouette_appears_in_any_training_drop(bench, source, tmp_path):
    """Hash check against every training renderer, classic and broad, and the mix."""
    drops = tmp_path / "drops"
    synthesize(drops / "synth", 6, 7, progress=False, min_side=256, max_side=320)
    synthesize(drops / "synth-broad", 6, 7, progress=False, min_side=256, max_side=320, variety="broad")
    render_drop(drops / "fmnist", "train", 6, 11, source_dir=source, progress=False, min_side=256, max_side=320)
    write_mix(drops / "mix", 8, {"synth": 0.5, "fashion_mnist": 0.5}, "broad",
              SynthParams(min_side=256, max_side=320), FashionMnistParams(source_dir=source, min_side=256,
                                                                          max_side=320), progress=False)
    training = {_sha(p) for p in drops.rglob("*") if p.suffix in (".jpg", ".png")}
    assert len(training) > 40
    sources = _rows(bench / "sources.csv")
    bench_hashes = {r["photo_sha256"] for r in sources} | {r["mask_sha256"] for r in sources}
    assert bench_hashes == {_sha(p) for p in bench.rglob("*") if p.suffix in (".jpg", ".png")}
    assert training.isdisjoint(bench_hashes)
    # silhouettes: every Fashion-MNIST product of a training drop is a train-split index, every
    # benchmark product a test-split index; the test images used share no bytes with any train image
    trained = [r for d in ("fmnist", "mix") for r in _rows(drops / d / "labels.csv") if r["stem"].startswith("fmnist")]
    assert trained and all(r["stem"].startswith("fmnist-train-") for r in trained)
    assert all(r.get("split", "train") == "train" for r in trained)
    assert {r["split"] for r in sources} == {"test"}


def test_refuses_to_write_into_the_training_drop(tmp_path, source):
    drop = tmp_path / "data" / "drop"
    with pytest.raises(ValueError, match="training drop"):
        build_benchmark(drop / "bench", 1, SEED, source_dir=source, training_drop=drop, progress=False, **SIZES)
    assert not drop.exists()


def test_cli_builds_the_benchmark_from_params(tmp_path, source, monkeypatch):
    monkeypatch.setenv("BACKDROP_PROJECT_DIR", str(tmp_path))
    params = yaml.safe_load((Path(__file__).resolve().parents[2] / "params.yaml").read_text())
    params["fashion_mnist"]["source_dir"] = str(source)
    params["benchmark"].update({"n": 1, **SIZES})
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    result = CliRunner().invoke(app, ["data", "benchmark", "--params", str(path)])
    assert result.exit_code == 0, result.output
    assert "wrote 2 benchmark photos" in result.output
    assert len(_rows(tmp_path / params["benchmark"]["out_dir"] / "index.csv")) == 2


def test_ood_metrics_overall_and_per_style():
    from backdrop.serving.scoring import ood_metrics

    rows = [{"style": "studio", "iou": 0.995}, {"style": "studio", "iou": 0.98},
            {"style": "props", "iou": 0.999}, {"style": "props", "iou": 0.99}]
    m = ood_metrics(rows)
    assert m["ood_iou_mean"] == pytest.approx(0.991) and m["ood_share_ge_099"] == 0.75
    assert m["ood_iou_mean_studio"] == pytest.approx(0.9875) and m["ood_share_ge_099_studio"] == 0.5
    assert m["ood_share_ge_099_props"] == 1.0 and m["ood_n_props"] == 2
    assert not any("cluster" in k for k in m)  # no cluster model, no per-cluster figures
    for r, c in zip(rows, [0, 1, 1, ""], strict=True):
        r["cluster"] = c
    m = ood_metrics(rows)
    assert m["ood_iou_cluster_0"] == 0.995 and m["ood_iou_cluster_1"] == pytest.approx(0.9895)
    assert m["ood_n_cluster_0"] == 1 and m["ood_n_cluster_1"] == 2 and "ood_iou_cluster_" not in m
    assert not any(k.startswith("ood_lost_") for k in m)  # rows scored without regions
    for r, edge in zip(rows, [0.004, 0.01, 0.0, 0.002], strict=True):
        r.update(lost_edge=edge, lost_gap=0.001, lost_outside=0.0, lost_inner=0.0)
    m = ood_metrics(rows)
    assert m["ood_lost_edge"] == pytest.approx(0.004) and m["ood_lost_edge_studio"] == pytest.approx(0.007)
    assert m["ood_lost_gap_props"] == pytest.approx(0.001) and m["ood_lost_inner"] == 0.0


def test_cli_scores_the_stock_model_on_the_benchmark_through_the_served_path(bench, tmp_path):
    out = tmp_path / "score.json"
    result = CliRunner().invoke(app, ["data", "benchmark-score", "--model", "official:u2netp", "--bench",
                                      str(bench), "--part", "test", "--out", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    test_rows = [r for r in _rows(bench / "index.csv") if r["part"] == "test"]
    assert [r["id"] for r in report["rows"]] == [r["id"] for r in test_rows]
    metrics = report["metrics"]
    assert metrics["ood_n"] == len(test_rows) and 0.5 < metrics["ood_iou_mean"] <= 1.0
    for style in {r["style"] for r in test_rows}:
        assert f"ood_iou_mean_{style}" in metrics and f"ood_share_ge_099_{style}" in metrics
    assert "ood_iou_mean" in result.output
    for r in report["rows"]:  # where the IoU went: each region's loss is part of what the photo lost
        lost = [r[f"lost_{region}"] for region in ("edge", "gap", "outside", "inner")]
        assert all(0 <= v <= 1 - r["iou"] + 1e-9 for v in lost)
    assert metrics["ood_lost_edge"] == pytest.approx(np.mean([r["lost_edge"] for r in report["rows"]]))
    missing = CliRunner().invoke(app, ["data", "benchmark-score", "--bench", str(tmp_path / "none")])
    assert missing.exit_code == 2 and "backdrop data benchmark" in missing.output


def test_quality_bench_scores_champion_and_stock_per_photo_on_the_benchmark(bench):
    """bench/quality_bench.py's benchmark section: both models on the same test photos, per photo with
    its class and predicted/true area, class means of champion − stock, and issue 19's targets. The
    stock model as its own challenger ties everywhere, so it is not above stock in any style."""
    import importlib.util

    from backdrop.config import load_params
    from tests.conftest import REPO

    spec = importlib.util.spec_from_file_location("quality_bench", REPO / "bench/quality_bench.py")
    quality_bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(quality_bench)
    params = load_params(REPO / "params.yaml")
    params = params.model_copy(update={"evaluate": params.evaluate.model_copy(update={"benchmarks": [str(bench)]})})
    ood = quality_bench.ood_section(params, "official:u2netp", 0)

    test_rows = [r for r in _rows(bench / "index.csv") if r["part"] == "test"]
    classes = {r["id"]: r["class_name"] for r in _rows(bench / "sources.csv")}
    assert ood["n"] == len(test_rows) == len(ood["per_photo"])
    assert [(r["id"], r["style"], r["class"]) for r in ood["per_photo"]] == [
        (r["id"], r["style"], classes[r["id"]]) for r in test_rows]
    for row in ood["per_photo"]:
        assert row["champion"] == row["stock"] and 0 <= row["champion"] <= 1
        assert row["champion_area_ratio"] == row["stock_area_ratio"] >= 0
        assert row["champion_lost_edge"] == row["stock_lost_edge"] >= 0 and "champion_lost_gap" in row
    assert ood["models"]["champion"] == ood["models"]["stock"]
    per_photo_mean = np.mean([r["stock"] for r in ood["per_photo"]])  # of IoUs rounded to 5 decimals
    assert ood["models"]["stock"]["ood_iou_mean"] == pytest.approx(per_photo_mean, abs=5e-6)
    by_class = ood["champion_minus_stock_by_class"]
    assert set(by_class) == {classes[r["id"]] for r in test_rows}
    assert sum(v["n"] for v in by_class.values()) == ood["n"] and all(v["mean"] == 0 for v in by_class.values())
    assert len(ood["largest_losses"]) == min(10, ood["n"])
    assert ood["targets"]["above_stock_in_every_style"] is False and ood["target_met"] is False
