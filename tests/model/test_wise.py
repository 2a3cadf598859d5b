"""WiSE-FT after training (`train.wise_alphas`): model.pt is the best-scoring point of the line
between the official weights and the fine-tune, chosen by the same selection score as the epoch;
reruns start from the kept fine-tune, and an empty grid gives the fine-tune back."""

from __future__ import annotations

import json

import mlflow
import pytest
import torch
from PIL import Image

from backdrop.config import TrainParams
from backdrop.models import build_model
from backdrop.training.wise import FINETUNED, WISE_JSON, WISE_PNG, interpolate
from tests.model.test_training import _tiny_benchmark, tiny_project, train_in_process, write_params


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    return tiny_project(tmp_path_factory)


def test_interpolate_walks_the_line_from_the_official_weights_to_the_fine_tune():
    official = {"w": torch.zeros(3), "b": torch.ones(2, dtype=torch.float64), "n": torch.tensor(7)}
    tuned = {"w": torch.full((3,), 2.0), "b": torch.full((2,), 3.0, dtype=torch.float64), "n": torch.tensor(9)}
    assert torch.equal(interpolate(official, tuned, 0.0)["w"], official["w"])
    assert torch.equal(interpolate(official, tuned, 1.0)["w"], tuned["w"])
    half = interpolate(official, tuned, 0.5)
    assert torch.equal(half["w"], torch.ones(3)) and torch.equal(half["b"], torch.full((2,), 2.0, dtype=torch.float64))
    assert half["b"].dtype == torch.float64 and torch.equal(half["n"], tuned["n"])  # counters: the fine-tune's


def test_wise_alphas_are_checked():
    assert TrainParams(init="official", wise_alphas=[0.5, 0.8]).wise_alphas == [0.5, 0.8]
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        TrainParams(init="official", wise_alphas=[1.2])
    with pytest.raises(ValueError, match="needs init: official"):
        TrainParams(init="scratch", wise_alphas=[0.5])


def _states_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_blend_picks_the_best_alpha_logs_it_and_reruns_from_the_fine_tune(project, monkeypatch):
    bench = _tiny_benchmark(project)
    recipe = {"init": "official", "epochs": 1, "lr": 3e-3, "iou_loss_weight": 0.0, "hard_sampling": 0.0,
              "select_benchmarks": [str(bench)], "select_benchmark_weight": 0.5}
    out = project / "models/wise"
    result = train_in_process(project, write_params(project, "wise", wise_alphas=[0.0, 0.5], **recipe), monkeypatch)

    report = json.loads((out / WISE_JSON).read_text())
    candidates = {c["alpha"]: c for c in report["candidates"]}
    assert sorted(candidates) == [0.0, 0.5, 1.0]  # the fine-tune itself always competes
    best = max(candidates.values(), key=lambda c: (c["selection_score"], c["alpha"]))
    assert report["alpha"] == best["alpha"] and result.best_val_iou == pytest.approx(best["val_iou_mean"])
    for c in candidates.values():
        assert c["selection_score"] == pytest.approx(0.5 * c["val_iou_mean"] + 0.5 * c["ood_val_iou_mean"])
    # α = 1 is the epoch the loop picked, scored by the same code
    history = json.loads((out / "history.json").read_text())
    assert candidates[1.0]["selection_score"] == pytest.approx(history[0]["selection_score"])

    official = build_model("u2netp", init="official").state_dict()
    tuned = torch.load(out / FINETUNED, weights_only=False)
    assert tuned["epoch"] == 1 and "wise_alpha" not in tuned
    saved = torch.load(out / "model.pt", weights_only=False)
    assert saved["wise_alpha"] == report["alpha"] and saved["finetuned_epoch"] == 1
    assert _states_equal(saved["state_dict"], interpolate(official, tuned["state_dict"], report["alpha"]))

    client = mlflow.tracking.MlflowClient(f"sqlite:///{project}/mlflow.db")
    assert client.get_run(result.run_id).data.metrics["wise_alpha"] == report["alpha"]
    assert {a.path for a in client.list_artifacts(result.run_id, "wise")} == {"wise/wise.json", "wise/wise.png"}
    with Image.open(out / WISE_PNG) as plot:
        assert plot.size[0] > 300 and len(set(plot.convert("L").getdata())) > 10  # a drawn chart, not blank
    steps = client.get_metric_history(result.run_id, "wise_selection_score")
    assert sorted(m.step for m in steps) == [0, 50, 100]
    assert {m.step: m.value for m in steps}[50] == pytest.approx(candidates[0.5]["selection_score"])

    # another grid on --resume: no retraining (same history), the blend starts from the kept fine-tune
    again = train_in_process(project, write_params(project, "wise", wise_alphas=[0.25], **recipe), monkeypatch,
                             resume=True)
    assert json.loads((out / "history.json").read_text()) == history and again.run_id == result.run_id
    report = json.loads((out / WISE_JSON).read_text())
    assert [c["alpha"] for c in report["candidates"]] == [0.25, 1.0]
    assert candidates[1.0]["selection_score"] == pytest.approx(report["candidates"][1]["selection_score"])
    saved = torch.load(out / "model.pt", weights_only=False)
    assert _states_equal(saved["state_dict"], interpolate(official, tuned["state_dict"], report["alpha"]))

    # an empty grid: model.pt is the fine-tune again
    train_in_process(project, write_params(project, "wise", wise_alphas=[], **recipe), monkeypatch, resume=True)
    assert not any((out / name).exists() for name in (FINETUNED, WISE_JSON, WISE_PNG))
    restored = torch.load(out / "model.pt", weights_only=False)
    assert "wise_alpha" not in restored and _states_equal(restored["state_dict"], tuned["state_dict"])
