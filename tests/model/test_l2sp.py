"""Keep what the official weights know (issue 19): L2-SP towards the initial weights, a lower
encoder learning rate and distillation of the official model's maps. All are off by default, and
then training is exactly what it was."""

from __future__ import annotations

import pytest
import torch

from backdrop.config import TrainParams
from backdrop.distributed import Dist
from backdrop.models import build_model
from backdrop.training.loop import _optimizer
from backdrop.training.losses import anchor_weights, encoder_param_groups, l2sp_penalty


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return build_model("u2netp", init="scratch")


def test_l2sp_is_zero_at_the_initial_weights_and_grows_with_the_distance(net):
    anchor = anchor_weights(net)
    assert set(anchor) == {n for n, p in net.named_parameters() if p.requires_grad}
    assert float(l2sp_penalty(net, anchor)) == 0.0
    moved = {n: w + 0.01 for n, w in anchor.items()}  # the same net, seen from a shifted anchor
    expected = sum(w.numel() for w in anchor.values()) * 0.01 ** 2
    assert float(l2sp_penalty(net, moved)) == pytest.approx(expected, rel=1e-4)
    assert float(l2sp_penalty(net, {n: w + 0.02 for n, w in anchor.items()})) == pytest.approx(4 * expected, rel=1e-4)


def test_l2sp_gradient_pulls_every_weight_back_towards_the_anchor():
    torch.manual_seed(1)
    model = build_model("u2netp", init="scratch")
    anchor = anchor_weights(model)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    distance = [float(l2sp_penalty(model, anchor))]
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(3):
        opt.zero_grad()
        penalty = l2sp_penalty(model, anchor)
        penalty.backward()
        for name, p in model.named_parameters():  # d/dw Σ‖w − w₀‖² = 2 (w − w₀)
            torch.testing.assert_close(p.grad, 2 * (p.detach() - anchor[name]))
        opt.step()
        distance.append(float(l2sp_penalty(model, anchor)))
    assert all(b < a for a, b in zip(distance, distance[1:], strict=False))
    assert distance[-1] == pytest.approx(0.8 ** 6 * distance[0], rel=1e-3)  # each step: offset × (1 − 2·lr)


def test_encoder_groups_split_the_parameters_once_and_scale_the_encoder(net):
    groups = encoder_param_groups(net, 1e-3, 0.1)
    assert [g["lr"] for g in groups] == pytest.approx([1e-4, 1e-3])
    names = {id(p): n for n, p in net.named_parameters()}
    encoder = [names[id(p)] for p in groups[0]["params"]]
    rest = [names[id(p)] for p in groups[1]["params"]]
    assert sorted(encoder + rest) == sorted(names.values())
    assert {n.split(".")[0] for n in encoder} == {f"stage{i}" for i in range(1, 7)}
    assert not any(n.split(".")[0].startswith("stage") and not n.split(".")[0].endswith("d") for n in rest)


def test_defaults_keep_one_learning_rate_and_no_penalty(net):
    tp = TrainParams()
    assert tp.l2sp_weight == 0.0 and tp.encoder_lr_scale == 1.0
    optimizer, scheduler = _optimizer(net, tp, steps_per_epoch=3, dist=Dist())
    assert len(optimizer.param_groups) == 1 and optimizer.param_groups[0]["lr"] == pytest.approx(
        tp.lr * scheduler.lr_lambdas[0](0))
    assert [id(p) for p in optimizer.param_groups[0]["params"]] == [id(p) for p in net.parameters()]
    scaled, _ = _optimizer(net, TrainParams(encoder_lr_scale=0.25), steps_per_epoch=3, dist=Dist())
    assert [g["initial_lr"] for g in scaled.param_groups] == pytest.approx([0.25 * tp.lr, tp.lr])


def test_l2sp_in_the_loop_keeps_the_weights_nearer_the_start(tmp_path_factory, monkeypatch):
    """One real epoch from the official weights, with and without L2-SP: the regularised run ends
    nearer its initial weights (the loop hook works; its train_loss stays the data loss)."""
    import json

    from tests.model.test_training import final_state, tiny_project, train_in_process, write_params

    project = tiny_project(tmp_path_factory)
    start = {n: w.detach().clone() for n, w in build_model("u2netp", init="official").state_dict().items()}
    recipe = {"init": "official", "epochs": 1, "lr": 3e-4, "warmup_epochs": 0}
    plain = train_in_process(project, write_params(project, "l2sp-0", **recipe), monkeypatch)
    pulled = train_in_process(project, write_params(project, "l2sp-big", l2sp_weight=500.0, **recipe), monkeypatch)

    def distance(name: str) -> float:
        state = final_state(project / "models" / name)
        return sum(float((state[n].double() - start[n].double()).pow(2).sum()) for n in start
                   if start[n].is_floating_point())

    assert distance("l2sp-big") < 0.5 * distance("l2sp-0"), (distance("l2sp-big"), distance("l2sp-0"))
    losses = {}
    for name, result in (("l2sp-0", plain), ("l2sp-big", pulled)):
        history = json.loads((project / "models" / name / "history.json").read_text())
        assert len(history) == 1 and result.epochs_run == 1 and history[0]["val_iou_mean"] > 0.3, history
        losses[name] = history[0]["train_loss"]
    # the logged train_loss is the data loss alone: same order with and without the penalty
    assert abs(losses["l2sp-big"] - losses["l2sp-0"]) < 0.25 * losses["l2sp-0"], losses


# ------------------------------------------------------------- distillation (Learning without Forgetting)

def test_distillation_is_smallest_and_flat_where_the_student_answers_as_the_teacher():
    from backdrop.training.losses import distillation_loss

    teacher = torch.randn(2, 1, 8, 8) * 3
    same = teacher.clone().requires_grad_(True)
    distillation_loss(same, teacher).backward()
    assert float(same.grad.abs().max()) < 1e-7  # d/ds BCE(s, σ(t)) = (σ(s) − σ(t)) / n = 0 at s = t
    off = [float(distillation_loss(teacher + shift, teacher)) for shift in (0.0, 0.5, 2.0)]
    assert off[0] < off[1] < off[2]


def test_distillation_needs_the_official_weights_as_its_teacher():
    from pydantic import ValidationError

    assert TrainParams().distill_weight == 0.0  # off unless the recipe asks for it
    with pytest.raises(ValidationError, match="distill_weight"):
        TrainParams(distill_weight=1.0, init="scratch")


def test_distillation_in_the_loop_keeps_the_maps_nearer_the_official_model(tmp_path_factory, monkeypatch):
    """One real epoch from the official weights with and without distillation: the distilled run's
    maps on the val photos stay nearer the official model's, and its train_loss stays the data loss."""
    import json

    import numpy as np

    from backdrop.models.trained import predict_probs
    from tests.model.test_training import final_state, tiny_project, train_in_process, write_params

    project = tiny_project(tmp_path_factory)
    recipe = {"init": "official", "epochs": 1, "lr": 3e-4, "warmup_epochs": 0}
    train_in_process(project, write_params(project, "kd-0", **recipe), monkeypatch)
    train_in_process(project, write_params(project, "kd-big", distill_weight=20.0, **recipe), monkeypatch)
    from PIL import Image

    files = sorted((project / "data/prepared/images").glob("*.png"))[:8]
    photos = np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files])  # (8, 64, 64, 3) uint8
    official = predict_probs(build_model("u2netp", init="official"), photos)

    def gap(name: str) -> float:
        net = build_model("u2netp", init="scratch")
        net.load_state_dict(final_state(project / "models" / name))
        return float(np.abs(predict_probs(net, photos) - official).mean())

    assert gap("kd-big") < 0.85 * gap("kd-0"), (gap("kd-big"), gap("kd-0"))  # 0.31 vs 0.42 on 2026-12-06
    losses = {n: json.loads((project / "models" / n / "history.json").read_text())[0]["train_loss"]
              for n in ("kd-0", "kd-big")}
    assert abs(losses["kd-big"] - losses["kd-0"]) < 0.5 * losses["kd-0"], losses
