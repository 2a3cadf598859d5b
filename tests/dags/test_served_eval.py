"""evaluate scores what `backdrop remove` publishes, and register's gate compares models on the same photos.

Both read the session's real pipeline run (`airflow dags test backdrop_training` on tiny data, demo overlay).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.conftest import BIN, REPO, run

pytestmark = pytest.mark.slow


def test_evaluate_and_quality_bench_report_the_same_mean_iou(project_cwd, tmp_path):
    """One scoring function (`backdrop.serving.scoring.score`): the bench's served row equals eval.json."""
    metrics = json.loads((project_cwd / "metrics/eval.json").read_text())
    out = tmp_path / "quality.json"
    run([str(BIN / "python"), str(REPO / "bench/quality_bench.py"), "--model",
         str(project_cwd / "models/train/model.pt"), "--out", str(out)], project_cwd)
    bench = json.loads(out.read_text())
    served = bench["original"]["champion_served"]
    assert served["n"] == metrics["n"] > 0
    assert served["iou_mean"] == pytest.approx(metrics["iou_mean"], abs=1e-5)  # the bench rounds to 5 places
    per_photo = {r["pair_id"]: r["champion_served"] for r in bench["per_image"]}
    from backdrop.io import read_csv

    rows = [r for r in read_csv(project_cwd / "metrics/per_image.csv") if r["set"] == "test"]
    assert {r["id"]: round(float(r["iou"]), 5) for r in rows} == per_photo


def test_evaluate_scores_original_size_photos_through_the_served_engine(project_cwd):
    import mlflow

    from backdrop import tracking
    from backdrop.config import load_params
    from backdrop.data.heldout import held_out
    from backdrop.io import read_csv

    params = load_params(project_cwd / "params.yaml")
    rows = read_csv(project_cwd / "metrics/per_image.csv")
    test = held_out(params, "test")
    assert [r["id"] for r in rows] == [r["pair_id"] for r in test.rows]
    for row, ref in zip(rows[:3], test.rows[:3], strict=True):
        photo, truth = test.load(ref)
        # the vendor mask's own pixels at the photo's own size (not prepare.size²)
        assert int(row["tp"]) + int(row["fn"]) == int(np.count_nonzero(truth))
        assert photo.width * photo.height > params.prepare.size ** 2
        assert row["group"] == f"c{ref['cluster']}"
    metrics = json.loads((project_cwd / "metrics/eval.json").read_text())
    assert metrics["iou_mean"] == pytest.approx(np.mean([float(r["iou"]) for r in rows]))
    tracking.setup(params)
    reg = json.loads((project_cwd / "metrics/register.json").read_text())
    run_ = mlflow.get_run(reg["run_id"])
    assert run_.data.metrics["test_iou_mean"] == pytest.approx(metrics["iou_mean"])
    assert run_.data.tags["evaluate.engine"] == params.remove.engine
    assert run_.data.tags["evaluate.refine"] == params.serve.refine


def test_first_run_report_scores_the_stock_model_on_the_same_photos(project_cwd):
    import mlflow

    from backdrop import tracking
    from backdrop.config import load_params

    reg = json.loads((project_cwd / "metrics/register.json").read_text())
    assert reg["promoted"] and "no champion yet" in reg["reason"]
    assert set(reg["means"]) == {"challenger", "stock"} and reg["compared_photos"] > 0
    report = (project_cwd / "metrics/gate/report.md").read_text()
    assert reg["reason"] in report and "| group | photos |" in report
    tracking.setup(load_params(project_cwd / "params.yaml"))
    client = mlflow.MlflowClient()
    assert "gate/report.md" in {a.path for a in client.list_artifacts(reg["run_id"], "gate")}
    assert client.get_run(reg["run_id"]).data.metrics["gate_stock_iou_mean"] == pytest.approx(reg["means"]["stock"])


def test_evaluate_reports_the_model_and_the_stock_model_on_the_benchmark_per_style_and_cluster(project_cwd, tmp_path):
    """With benchmark sets, evaluate logs issue 19's names (`ood_iou_mean`, `ood_share_ge_099`, per style and
    per product cluster) for the model and, as `stock_ood_*`, for the stock model scored on the same photos.
    The session's run keeps `evaluate.benchmarks: []` (the demo overlay); this reruns the stage on the
    benchmark the DAG built, into another metrics folder."""
    import mlflow
    from PIL import Image

    from backdrop import tracking
    from backdrop.config import load_params
    from backdrop.data.benchmark import load_benchmark
    from backdrop.data.clusters import assign
    from backdrop.io import read_csv
    from backdrop.stages.evaluate import evaluate

    params = load_params(project_cwd / "params.yaml")
    out = tmp_path / "metrics"
    params = params.model_copy(update={"evaluate": params.evaluate.model_copy(
        update={"benchmarks": ["data/benchmark"], "out_dir": str(out)})})
    metrics = evaluate(params).metrics
    assert json.loads((out / "eval.json").read_text()) == pytest.approx(metrics, nan_ok=True)

    bench = load_benchmark(project_cwd / "data/benchmark", "test")
    rows = [r for r in read_csv(out / "per_image.csv") if r["set"] == "benchmark"]
    assert [r["id"] for r in rows] == [r["id"] for r in bench.rows] and rows
    assert metrics["ood_n"] == len(rows) == metrics["stock_ood_n"]
    assert metrics["ood_iou_mean"] == pytest.approx(np.mean([float(r["iou"]) for r in rows]))
    assert metrics["ood_share_ge_099"] == pytest.approx(np.mean([float(r["iou"]) >= 0.99 for r in rows]))
    for style in {r["style"] for r in bench.rows}:
        mine = [float(r["iou"]) for r in rows if r["group"] == f"benchmark/{style}"]
        assert metrics[f"ood_iou_mean_{style}"] == pytest.approx(np.mean(mine))
        assert 0 <= metrics[f"stock_ood_iou_mean_{style}"] <= 1 and f"stock_ood_share_ge_099_{style}" in metrics

    # every benchmark photo in the product cluster its true mask falls in (the cluster stage's model)
    model = project_cwd / params.cluster.out_dir / "model.joblib"
    want: dict[int, list[float]] = {}
    for ref, row in zip(bench.rows, rows, strict=True):
        photo, truth = bench.load(ref)
        cid = assign(model, photo, Image.fromarray(truth.astype(np.uint8) * 255, "L"))[0]
        want.setdefault(cid, []).append(float(row["iou"]))
    got = {int(k.rsplit("_", 1)[1]): v for k, v in metrics.items() if k.startswith("ood_iou_cluster_")}
    assert got == pytest.approx({c: float(np.mean(v)) for c, v in want.items()})
    assert sum(metrics[f"ood_n_cluster_{c}"] for c in got) == len(rows)
    assert {f"stock_ood_iou_cluster_{c}" for c in got} <= metrics.keys()
    for who in ("", "stock_"):  # the IoU lost per region is part of what the photos lost
        for region in ("edge", "gap", "outside", "inner"):
            assert 0 <= metrics[f"{who}ood_lost_{region}"] <= 1 - metrics[f"{who}ood_iou_mean"] + 1e-9

    # the stock model's figures are what `backdrop data benchmark-score` gives it on the same part
    score_file = tmp_path / "stock.json"
    run([str(BIN / "backdrop"), "data", "benchmark-score", "--model", params.register_.stock_model,
         "--bench", "data/benchmark", "--out", str(score_file)], project_cwd)
    stock = json.loads(score_file.read_text())["metrics"]
    assert {f"stock_{k}": v for k, v in stock.items()} == pytest.approx(
        {k: v for k, v in metrics.items() if k.startswith("stock_")})

    tracking.setup(params)
    run_id = json.loads((project_cwd / "models/train/run.json").read_text())["run_id"]
    logged = mlflow.get_run(run_id).data.metrics
    for key in ("ood_iou_mean", "ood_share_ge_099", "stock_ood_iou_mean", "stock_ood_share_ge_099"):
        assert logged[key] == pytest.approx(metrics[key])
    assert "ood_n" not in logged and "test_ood_iou_mean" not in logged
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(run_id, "evaluation")}
    assert "evaluation/ood_cluster_iou.png" in artifacts and (out / "plots/ood_cluster_iou.png").is_file()
