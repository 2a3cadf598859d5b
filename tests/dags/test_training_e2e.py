"""The real training DAG, end to end on tiny data: `airflow dags test` → DVC stages → MLflow registry."""

from __future__ import annotations

import json
import sys

import pytest
import yaml

from tests.conftest import BIN, run

pytestmark = pytest.mark.slow
STAGES = ["ingest", "validate", "prepare", "cluster", "benchmark", "train", "evaluate", "register"]


def test_dag_run_succeeds_and_every_stage_is_locked(pipeline_run):
    proc, project = pipeline_run["dag_test"], pipeline_run["project"]
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert "state=success" in log and "DagRun Finished" in log, log[-4000:]
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    assert sorted(lock["stages"]) == sorted(STAGES)
    metrics = json.loads((project / "metrics/eval.json").read_text())
    assert 0.0 <= metrics["iou_mean"] <= 1.0 and metrics["n"] > 0
    assert any(k.startswith("iou_cluster_") for k in metrics)


def test_nothing_to_reproduce_after_the_run(pipeline_run):
    """Every stage of dvc.yaml (the DAG runs them all, the out-of-distribution `benchmark` included) is up to
    date afterwards."""
    project = pipeline_run["project"]
    status = run([str(BIN / "dvc"), "status", *STAGES], project)
    assert "Data and pipelines are up to date" in status.stdout, status.stdout
    repro = run([str(BIN / "dvc"), "repro", *STAGES], project)
    assert "didn't change, skipping" in repro.stdout + repro.stderr
    assert "Running stage" not in repro.stdout + repro.stderr


def test_data_and_model_pushed_to_the_dvc_remote(pipeline_run):
    project = pipeline_run["project"]
    storage = project / ".dvc-storage"
    assert storage.is_dir() and any(storage.rglob("*")), "dvc push left the remote empty"
    status = run([str(BIN / "dvc"), "status", "--cloud"], project)
    assert "Cache and remote 'local' are in sync" in status.stdout, status.stdout


def test_mlflow_run_has_lineage_metrics_and_pictures(project_cwd):
    import mlflow

    from backdrop import tracking
    from backdrop.config import load_params

    params = load_params(project_cwd / "params.yaml")
    tracking.setup(params)
    reg = json.loads((project_cwd / "metrics/register.json").read_text())
    run_ = mlflow.get_run(reg["run_id"])
    assert {"train_loss", "val_iou_mean", "test_iou_mean", "lr", "images_per_s"} <= set(run_.data.metrics)
    assert run_.data.params["train.model"] == "u2netp"
    assert len(run_.data.tags["git_commit"]) in (7, 40) or run_.data.tags["git_commit"] == "unknown"
    assert any(k.startswith("dvc.prepare.") for k in run_.data.tags), run_.data.tags
    client = mlflow.MlflowClient()
    history = client.get_metric_history(run_.info.run_id, "train_loss")
    assert [m.step for m in history] == [1]
    artifacts = {a.path for a in client.list_artifacts(run_.info.run_id, "evaluation")}
    assert "evaluation/cluster_iou.png" in artifacts and "evaluation/worst.png" in artifacts


def test_champion_round_trip_through_the_registry(project_cwd):
    """Register → load `models:/backdrop-u2net@champion` → predict, in a fresh process."""
    code = (
        "import mlflow, torch; from backdrop import tracking; from backdrop.config import load_params;"
        "p = load_params(); tracking.setup(p);"
        "m = mlflow.pytorch.load_model('models:/backdrop-u2net@champion');"
        "y = m(torch.rand(2, 3, m.size, m.size));"
        "print(tuple(y.shape), float(y.min()) >= 0.0, float(y.max()) <= 1.0)"
    )
    import subprocess

    out = subprocess.run([sys.executable, "-c", code], cwd=project_cwd, capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip().splitlines()[-1] == "(2, 1, 64, 64) True True"


def test_champion_onnx_export_is_logged_and_matches_pytorch(project_cwd):
    """register exports the model to ONNX, checks it against PyTorch, and links it from the version."""
    import mlflow
    import numpy as np
    import onnxruntime as ort

    from backdrop import tracking
    from backdrop.config import load_params

    tracking.setup(load_params())
    client = mlflow.MlflowClient()
    version = client.get_model_version_by_alias("backdrop-u2net", "champion")
    uri = version.tags["onnx"]
    assert uri.startswith(f"runs:/{version.run_id}/onnx/")
    run_ = client.get_run(version.run_id)
    assert run_.data.metrics["onnx_max_abs_diff"] < 1e-3
    path = mlflow.artifacts.download_artifacts(uri)
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    prob = session.run(["prob"], {"image": np.random.default_rng(0).random((1, 3, 64, 64), dtype=np.float32)})[0]
    assert prob.shape == (1, 1, 64, 64) and prob.min() >= 0.0 and prob.max() <= 1.0


def test_remove_writes_rgba_cutouts_at_original_size(project_cwd, tmp_path):
    from PIL import Image

    images = sorted((project_cwd / "data/drop/images").glob("*.jpg"))[:2]
    out = tmp_path / "cutouts"
    run([str(BIN / "backdrop"), "remove", *map(str, images), "--out", str(out)], project_cwd)
    for image in images:
        cut = Image.open(out / f"{image.stem}.png")
        assert cut.mode == "RGBA"
        assert cut.size == Image.open(image).size
    run([str(BIN / "backdrop"), "remove", str(images[0]), "--out", str(out), "--format", "mask"],
        project_cwd)
    assert Image.open(out / f"{images[0].stem}.png").mode == "L"


def test_gate_keeps_the_champion_against_a_worse_challenger(project_cwd, tmp_path):
    """A challenger that cuts the same photos worse is registered but not promoted: register scores the
    champion now, on the photos evaluate scored, and the paired gain's lower bound decides."""
    import shutil

    import mlflow

    from backdrop import tracking
    from backdrop.config import load_params
    from backdrop.io import read_csv, write_csv
    from backdrop.stages.register import register

    params = load_params(project_cwd / "params.yaml")
    tracking.setup(params)
    client = mlflow.MlflowClient()
    before = client.get_model_version_by_alias("backdrop-u2net", "champion").version
    metrics = project_cwd / "metrics"
    saved = tmp_path / "saved"
    shutil.copytree(metrics, saved)  # the pipeline's own outputs, put back for the other tests
    rows = read_csv(metrics / "per_image.csv")
    worse = [{**r, "iou": max(0.0, float(r["iou"]) - 0.2)} for r in rows]
    try:
        write_csv(metrics / "per_image.csv", worse, list(rows[0]))
        result = register(params)
        reg = json.loads((metrics / "register.json").read_text())
        report = (metrics / "gate/report.md").read_text()
    finally:
        shutil.rmtree(metrics)
        shutil.copytree(saved, metrics)
    assert result.promoted is False and "lower bound" in result.reason and "does not exceed" in result.reason
    assert client.get_model_version_by_alias("backdrop-u2net", "champion").version == before
    assert client.get_model_version("backdrop-u2net", result.version).tags["gate"] == result.reason
    assert reg["gain_mean"] < 0 and reg["gain_lower"] < 0 and reg["compared_photos"] == len(rows)
    assert reg["champion_before"] == str(before) and {"champion", "challenger", "stock"} == set(reg["means"])
    assert len(reg["worse"]) == sum(float(r["iou"]) > 0 for r in rows)  # every photo it could lose on
    assert "not promoted" in report and "got worse" in report
    assert (saved / "register.json").read_text() == (metrics / "register.json").read_text()


def test_mlflow_ui_can_tell_runs_apart(project_cwd):
    """What a data scientist comparing runs needs: a run name saying what started it, a description with
    the data version, recipe and gate decision, the dataset as an input, a training-kind experiment, and
    the test metrics as one readable tag each on the model version."""
    import mlflow

    from backdrop import tracking
    from backdrop.config import load_params

    params = load_params(project_cwd / "params.yaml")
    tracking.setup(params)
    reg = json.loads((project_cwd / "metrics/register.json").read_text())
    run_ = mlflow.get_run(reg["run_id"])
    assert run_.info.run_name.startswith("manual-")  # `airflow dags test` is a manual run
    note = run_.data.tags["mlflow.note.content"]
    assert run_.data.tags["data_version"] in note and "u2netp" in note and "**gate**" in note
    assert run_.data.tags["data_version"] != "untracked"
    inputs = run_.inputs.dataset_inputs
    assert [d.dataset.name for d in inputs] == [str(params.prepare.out_dir)]
    assert inputs[0].dataset.digest == run_.data.tags["data_version"][:36]
    experiment = mlflow.get_experiment(run_.info.experiment_id)
    assert experiment.tags[tracking.EXPERIMENT_KIND] == tracking.MODEL_TRAINING
    version = mlflow.MlflowClient().get_model_version(reg["model"], reg["version"])
    assert float(version.tags["test.iou_mean"]) == pytest.approx(reg["challenger_iou"], abs=1e-5)
    assert any(k.startswith("test.iou_cluster_") for k in version.tags)
    assert "test_metrics" not in version.tags
