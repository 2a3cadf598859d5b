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
