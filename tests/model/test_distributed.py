"""`backdrop train --np 2`: real Horovod and DDP processes (Gloo, CPU) on a tiny prepared set.

Scratch init, so BatchNorm runs in train mode and its statistics are synchronised across ranks
(SyncBatchNorm2d). One DDP run, one Horovod run SIGKILLed after its first checkpoint and resumed
with `--resume`; the two backends must agree (same seed, same sharding, averaged gradients).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import psutil
import pytest

from tests.model.test_training import (
    backdrop_train,
    final_state,
    max_abs_diff,
    tiny_project,
    train_until_first_checkpoint_then_sigkill,
    write_params,
)

DIST_TRAIN = {"epochs": 2, "num_threads": 2}  # one thread per process


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    return tiny_project(tmp_path_factory)


def _runs_in_experiment(project: Path) -> int:
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{project}/mlflow.db")
    exp = client.get_experiment_by_name("tests")
    return 0 if exp is None else len(client.search_runs([exp.experiment_id], max_results=1000))


@pytest.fixture(scope="module")
def ddp_run(project) -> dict:
    runs_before = _runs_in_experiment(project)
    params = write_params(project, "ddp", **DIST_TRAIN)
    proc = backdrop_train(project, params, "--np", "2", "--backend", "ddp")
    out = project / "models/ddp"
    return {"proc": proc, "out": out, "runs_added": _runs_in_experiment(project) - runs_before,
            "result": json.loads((out / "result.json").read_text()),
            "history": json.loads((out / "history.json").read_text())}


def test_ddp_two_processes_keep_identical_replicas_and_log_once(ddp_run, project):
    result = ddp_run["result"]
    assert result["world_size"] == 2 and result["backend"] == "ddp"
    digests = result["replica_digests"]
    assert len(digests) == 2 and digests[0] == digests[1]  # parameters AND BatchNorm buffers
    assert [h["epoch"] for h in ddp_run["history"]] == [1, 2]
    assert ddp_run["runs_added"] == 1  # rank 0 alone talks to MLflow

    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{project}/mlflow.db")
    assert [m.step for m in client.get_metric_history(result["run_id"], "train_loss")] == [1, 2]
    run = client.get_run(result["run_id"])
    assert run.data.params["world_size"] == "2" and run.data.params["train.processes"] == "2"
    # SyncBatchNorm really ran: the running statistics moved away from their (0, 1) init
    means = [v for k, v in final_state(ddp_run["out"]).items() if k.endswith("running_mean")]
    assert means and max(float(m.abs().max()) for m in means) > 1e-3


def _workers_of(out: Path) -> list[psutil.Process]:
    needle = str(out / "launch-params.yaml")
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmd = proc.info["cmdline"] or []
        if any(needle in part for part in cmd):
            found.append(proc)
    return found


def test_horovod_killed_run_resumes_and_matches_ddp(ddp_run, project):
    params = write_params(project, "hvd", backend="horovod", **DIST_TRAIN)
    state = train_until_first_checkpoint_then_sigkill(project, params, "--np", "2")
    out = state["out"]
    assert state["epoch"] == 1 and not state["done"], state["history"]
    deadline = time.monotonic() + 20
    while (alive := _workers_of(out)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not alive, f"ranks outlived the killed launcher: {[(p.pid, p.info['cmdline']) for p in alive]}"

    proc = backdrop_train(project, params, "--np", "2", "--resume")
    log = proc.stdout + proc.stderr
    assert "continuing with epoch 2" in log, log[-4000:]
    result = json.loads((out / "result.json").read_text())
    assert result["world_size"] == 2 and result["backend"] == "horovod"
    assert result["resumed_from_epoch"] == 1 and result["epochs_run"] == 2
    digests = result["replica_digests"]
    assert len(digests) == 2 and digests[0] == digests[1]

    # Same seed, same shards, averaged gradients: Horovod's loss curve is DDP's (within noise)
    hvd_losses = [h["train_loss"] for h in json.loads((out / "history.json").read_text())]
    ddp_losses = [h["train_loss"] for h in ddp_run["history"]]
    assert hvd_losses == pytest.approx(ddp_losses, rel=0.02)
    diff = max_abs_diff(final_state(out), final_state(ddp_run["out"]))
    assert diff < 1e-4, f"Horovod (killed + resumed) and DDP weights differ by {diff}"
