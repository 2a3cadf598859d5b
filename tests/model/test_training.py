"""Training: augmentation, loss, sampling, fingerprint, and a real SIGKILL → --resume round trip.

The data are real stage outputs: `backdrop.data.synth` renders a drop, `prepare` and `cluster`
turn it into a tiny prepared set (64 px). Trainings run the real `backdrop train` CLI in
subprocesses where a process must die (u2netp, scratch init, 3 epochs), in-process otherwise;
MLflow on a SQLite file in the tmp project.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

BIN = Path(sys.executable).parent
TINY_TRAIN = {"model": "u2netp", "init": "scratch", "epochs": 3, "batch_size": 4, "lr": 0.001,
              "warmup_epochs": 1, "seed": 5, "num_threads": 1, "aug_hflip": 0.5, "aug_scale": [0.85, 1.15],
              "aug_jitter": 0.1, "aug_bg_replace": 0.3, "iou_loss_weight": 0.5, "balanced_sampling": True,
              "hard_sampling": 0.5, "overlay_every": 3,
              "precision": "fp32"}  # the same arithmetic on every host (auto would be bf16 where the CPU has it)


# ------------------------------------------------------------------------------- shared tiny data

def build_tiny_data(root: Path, n: int = 16, seed: int = 5) -> Path:
    """A project dir with data/prepared (64 px) and data/clusters (k=2) made by the real stages.

    Skips ingest/validate (Great Expectations costs ~20 s): the drop itself serves as raw store
    and a minimal validated manifest lists every pair.
    """
    from backdrop.config import parse_params
    from backdrop.data.synth import synthesize
    from backdrop.io import write_csv
    from backdrop.stages.cluster import cluster
    from backdrop.stages.prepare import prepare

    old = os.environ.get("BACKDROP_PROJECT_DIR")
    os.environ["BACKDROP_PROJECT_DIR"] = str(root)
    try:
        params = parse_params(base_params(root))
        items = synthesize(root / "data/drop", n, seed, min_side=256, max_side=320, progress=False)
        write_csv(root / "data/validated/manifest.csv",
                  [{"pair_id": it.stem, "image_path": f"images/{it.stem}.jpg",
                    "mask_path": f"masks/{it.stem}.png"} for it in items],
                  ["pair_id", "image_path", "mask_path"])
        prepare(params.prepare, params.validate_, params.ingest)
        cluster(params.cluster, params.prepare)
    finally:
        if old is None:
            os.environ.pop("BACKDROP_PROJECT_DIR", None)
        else:
            os.environ["BACKDROP_PROJECT_DIR"] = old
    return root


def base_params(root: Path, **train) -> dict:
    return {
        "ingest": {"raw_dir": "data/drop"},
        "validate": {"out_dir": "data/validated"},
        "prepare": {"size": 64, "val_share": 0.25, "test_share": 0.1, "seed": 1},
        "cluster": {"k": 2, "pca_components": 4, "feature_size": 16, "overrides": "data/none.csv"},
        "train": {**TINY_TRAIN, **train},
        "mlflow": {"tracking_uri": f"sqlite:///{root}/mlflow.db", "artifact_root": str(root / "artifacts"),
                   "experiment": "tests"},
    }


def tiny_project(tmp_path_factory) -> Path:
    """Built once per pytest session (both training test modules share it)."""
    root = tmp_path_factory.getbasetemp() / "tiny-project"
    if not (root / "data/clusters/assignments.csv").exists():
        root.mkdir(exist_ok=True)
        build_tiny_data(root)
    return root


def write_params(root: Path, name: str, **train) -> Path:
    path = root / f"params-{name}.yaml"
    path.write_text(yaml.safe_dump(base_params(root, out_dir=f"models/{name}", **train)))
    return path


def env_for(root: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW", "BACKDROP"))}
    env.update(BACKDROP_PROJECT_DIR=str(root), PYTHONUNBUFFERED="1", TQDM_DISABLE="1",
               PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}")
    return env


def backdrop_train(root: Path, params: Path, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(BIN / "backdrop"), "train", "--params", str(params), *args], cwd=root,
                          env=env_for(root), capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"rc={proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc


def train_until_first_checkpoint_then_sigkill(root: Path, params: Path, *args: str,
                                              timeout: float = 240) -> dict:
    """Start `backdrop train`, SIGKILL its whole process group as soon as checkpoint.pt appears."""
    out = root / "models" / params.stem.removeprefix("params-")
    ckpt = out / "checkpoint.pt"
    log_path = root / f"{params.stem}.killed.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([str(BIN / "backdrop"), "train", "--params", str(params), *args], cwd=root,
                                env=env_for(root), stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    deadline = time.monotonic() + timeout
    try:
        while not ckpt.exists():
            assert proc.poll() is None, f"training ended before a checkpoint:\n{log_path.read_text()[-5000:]}"
            assert time.monotonic() < deadline, f"no checkpoint in time:\n{log_path.read_text()[-5000:]}"
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, log_path.read_text()[-5000:]
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    return {"epoch": state["epoch"], "done": state["done"], "history": state["history"], "out": out,
            "hardness": np.asarray(state["sampler"]["hardness"], dtype=float)}


def final_state(out: Path) -> dict[str, torch.Tensor]:
    return torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=False)["model"]


def max_abs_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) if a[k].numel() else 0.0 for k in a)


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    return tiny_project(tmp_path_factory)


# ------------------------------------------------------------------------------------ unit level

def _tp(**kw):
    from backdrop.config import TrainParams

    return TrainParams(**kw)


def _striped_batch(b: int = 4, s: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Photos whose red channel encodes the column and green the row, a box-shaped mask."""
    yy, xx = np.mgrid[0:s, 0:s]
    photo = np.stack([xx * 255 // (s - 1), yy * 255 // (s - 1), np.full_like(xx, 128)], -1).astype(np.uint8)
    mask = ((yy > s // 4) & (yy < 3 * s // 4) & (xx > s // 3) & (xx < 5 * s // 6)).astype(np.float32)
    return np.repeat(photo[None], b, 0), np.repeat(mask[None], b, 0)


def test_augment_flips_photo_and_mask_together():
    from backdrop.training.augment import augment

    photos, masks = _striped_batch(64)
    x, y = augment(photos, masks, _tp(aug_hflip=0.5, aug_vflip=0.5), np.random.default_rng(0))
    base_x = torch.from_numpy(photos).permute(0, 3, 1, 2).float() / 255
    base_y = torch.from_numpy(masks)[:, None]
    kinds = set()
    for i in range(64):
        for h in (False, True):
            for v in (False, True):
                dims = [d for d, on in ((-1, h), (-2, v)) if on]
                bx = base_x[i].flip(dims) if dims else base_x[i]
                by = base_y[i].flip(dims) if dims else base_y[i]
                if torch.equal(x[i], bx):
                    assert torch.equal(y[i], by), "photo and mask were flipped differently"
                    kinds.add((h, v))
    assert len(kinds) == 4  # all four flip combinations occurred over 64 draws


def test_augment_zoom_keeps_photo_and_mask_aligned():
    from backdrop.training.augment import augment

    photos, masks = _striped_batch(16, 64)
    x, y = augment(photos, masks, _tp(aug_hflip=0.0, aug_scale=(0.6, 1.6)), np.random.default_rng(1))
    assert x.shape == (16, 3, 64, 64) and y.shape == (16, 1, 64, 64)
    changed = 0
    for i in range(16):
        fg = y[i, 0] > 0.5
        changed += int(not torch.equal(fg, torch.from_numpy(masks[i] > 0.5)))
        # the mask box still covers the pixels whose (column, row) colour code was inside the box
        col = x[i, 0][fg] * 63
        row = x[i, 1][fg] * 63
        assert col.min() > 64 / 3 - 2.5 and col.max() < 5 * 64 / 6 + 2.5
        assert row.min() > 16 - 2.5 and row.max() < 48 + 2.5
    assert changed >= 12  # zoom really moved the masks


def test_background_replacement_changes_only_the_background():
    from backdrop.training.augment import augment

    photos, masks = _striped_batch(32)
    x, y = augment(photos, masks, _tp(aug_hflip=0.0, aug_bg_replace=1.0), np.random.default_rng(2))
    base = torch.from_numpy(photos).permute(0, 3, 1, 2).float() / 255
    fg = torch.from_numpy(masks)[:, None].bool().expand_as(base)
    assert torch.equal(x[fg], base[fg])  # the product is untouched
    assert torch.equal(y, torch.from_numpy(masks)[:, None])
    bg_changed = [(x[i][~fg[i]] - base[i][~fg[i]]).abs().mean() > 0.02 for i in range(32)]
    assert sum(bg_changed) >= 30


def test_augment_is_a_function_of_the_rng_and_jitter_stays_in_range():
    from backdrop.training.augment import augment

    photos, masks = _striped_batch(8)
    tp = _tp(aug_scale=(0.8, 1.2), aug_jitter=0.3, aug_bg_replace=0.5)
    a = augment(photos, masks, tp, np.random.default_rng(7))
    b = augment(photos, masks, tp, np.random.default_rng(7))
    c = augment(photos, masks, tp, np.random.default_rng(8))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])
    assert float(a[0].min()) >= 0.0 and float(a[0].max()) <= 1.0


def test_deep_supervision_loss_adds_the_soft_iou_term():
    from backdrop.training.losses import deep_supervision_loss, soft_iou_loss

    target = torch.zeros(2, 1, 16, 16)
    target[:, :, 4:12, 4:12] = 1
    perfect = [(target * 2 - 1) * 30 for _ in range(7)]
    wrong = [-(target * 2 - 1) * 30 for _ in range(7)]
    assert float(soft_iou_loss(perfect[0], target)) < 1e-3
    assert float(soft_iou_loss(wrong[0], target)) > 0.95
    bce = deep_supervision_loss(wrong, target)
    both = deep_supervision_loss(wrong, target, iou_weight=0.5)
    assert float(both - bce) == pytest.approx(0.5 * 7 * float(soft_iou_loss(wrong[0], target)), rel=1e-5)


def test_balanced_sampling_evens_out_clusters_and_shards_cover_the_epoch():
    from backdrop.training.sampling import epoch_order, shard

    clusters = np.array([0] * 90 + [1] * 10)
    plain = np.concatenate([epoch_order(clusters, 1, e, balanced=False) for e in range(20)])
    balanced = np.concatenate([epoch_order(clusters, 1, e, balanced=True) for e in range(20)])
    assert sorted(plain[:100]) == list(range(100))  # a permutation
    assert abs((clusters[plain] == 1).mean() - 0.1) < 1e-9
    assert abs((clusters[balanced] == 1).mean() - 0.5) < 0.05
    np.testing.assert_array_equal(epoch_order(clusters, 1, 3, True), epoch_order(clusters, 1, 3, True))
    order = epoch_order(clusters[:13], 2, 0, False)
    parts = [shard(order, r, 3) for r in range(3)]
    assert {len(p) for p in parts} == {5}  # equal steps on every rank
    assert set(np.concatenate(parts)) == set(range(13))


def test_hard_sampling_draws_high_loss_pairs_more_often_and_keeps_the_rest():
    from backdrop.training.sampling import epoch_order, update_hardness

    clusters = np.zeros(100, int)
    hardness = np.full(100, np.nan)
    hardness = update_hardness(hardness, [[(0, 0.5), (1, 0.01)], [(0, 0.3), (2, 0.01)]])
    assert hardness[0] == pytest.approx(0.4) and hardness[1] == 0.01 and np.isnan(hardness[3])
    again = update_hardness(hardness, [[(1, 0.02)]])
    assert again[0] == pytest.approx(0.4) and again[1] == 0.02  # undrawn pairs keep their loss

    hardness = np.full(100, 0.01)
    hardness[7] = 1.0  # one pair the model still gets badly wrong
    draws = np.concatenate([epoch_order(clusters, 3, e, False, hardness, 0.5) for e in range(50)])
    share = (draws == 7).mean()
    # half the weight uniform (1/100 each) + half by loss (1.0 / 1.99): about 0.256 of all draws
    assert 0.22 < share < 0.29
    others = np.bincount(draws[draws != 7], minlength=100)[np.arange(100) != 7]
    assert others.min() > 0  # every other pair is still drawn
    np.testing.assert_array_equal(epoch_order(clusters, 3, 4, False, hardness, 0.5),
                                  epoch_order(clusters, 3, 4, False, hardness, 0.5))
    # off (share 0) or no losses yet (first epoch): exactly the plain and balanced orders
    np.testing.assert_array_equal(epoch_order(clusters, 3, 4, False, hardness, 0.0),
                                  epoch_order(clusters, 3, 4, False))
    np.testing.assert_array_equal(epoch_order(clusters, 3, 4, True, None, 0.5),
                                  epoch_order(clusters, 3, 4, True))
    # balanced and hard together: unseen pairs count as the mean loss
    two = np.array([0] * 90 + [1] * 10)
    partial = np.full(100, np.nan)
    partial[:90] = 0.01
    mixed = np.concatenate([epoch_order(two, 1, e, True, partial, 0.5) for e in range(20)])
    assert abs((two[mixed] == 1).mean() - 0.3) < 0.05  # 0.5 × 0.5 balanced + 0.5 × 0.1 by loss


def test_draw_batch_swaps_in_object_crops_at_the_asked_share():
    from backdrop.training.sampling import draw_batch

    frames = (np.zeros((10, 4, 4, 3), np.uint8), np.zeros((10, 4, 4), np.float32))
    crops = (np.full((10, 4, 4, 3), 7, np.uint8), np.ones((10, 4, 4), np.float32))
    idx = np.array([3, 1, 4, 1, 5, 9, 2, 6] * 50)
    x, y = draw_batch(idx, frames, crops, 0.0, np.random.default_rng(0))
    assert not x.any() and not y.any()
    x, y = draw_batch(idx, frames, crops, 1.0, np.random.default_rng(0))
    assert (x == 7).all() and (y == 1).all()
    x, y = draw_batch(idx, frames, crops, 0.3, np.random.default_rng(1))
    use = x[:, 0, 0, 0] == 7
    assert np.array_equal(use, y[:, 0, 0] == 1)  # photo and mask come from the same source
    assert abs(use.mean() - 0.3) < 0.08
    assert not frames[0].any() and not frames[1].any()  # the loaded arrays are not edited
    again, _ = draw_batch(idx, frames, crops, 0.3, np.random.default_rng(1))
    assert np.array_equal(again, x)  # a function of the rng (resume gives the same batches)


def test_fingerprint_tracks_what_changes_the_result(project):
    from backdrop.config import parse_params
    from backdrop.training.checkpoint import FINGERPRINT_IGNORES, fingerprint_of, fingerprint_parts

    rows = {"train": [{"pair_id": "a", "cluster": 0}], "val": [{"pair_id": "b", "cluster": 1}]}
    arrays = [np.zeros((1, 4, 4, 3), np.uint8), np.zeros((1, 4, 4), np.float32)]

    def fp(world=1, rows=rows, arrays=arrays, **train):
        return fingerprint_of(fingerprint_parts(parse_params(base_params(project, **train)), world, rows,
                                                arrays, "init"))

    ref = fp()
    assert fp(out_dir="elsewhere", num_threads=1, processes=4, backend="ddp") == ref
    assert {"out_dir", "num_threads"} <= FINGERPRINT_IGNORES
    assert fp(lr=0.5) != ref and fp(epochs=9) != ref and fp(aug_jitter=0.2) != ref
    assert fp(world=2) != ref
    moved = {"train": [{"pair_id": "a", "cluster": 1}], "val": rows["val"]}
    assert fp(rows=moved) != ref
    assert fp(arrays=[arrays[0] + 1, arrays[1]]) != ref


# ------------------------------------------------------------------------------ real trainings

def train_in_process(project: Path, params_file: Path, monkeypatch, resume: bool = False):
    """The public `train()` in this process (saves the subprocess start-up where a CLI adds nothing)."""
    from backdrop.config import parse_params
    from backdrop.stages.train import train

    monkeypatch.setenv("BACKDROP_PROJECT_DIR", str(project))
    monkeypatch.setenv("TQDM_DISABLE", "1")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return train(parse_params(yaml.safe_load(params_file.read_text())), resume=resume)


@pytest.mark.slow  # `backdrop train` in a subprocess, SIGKILLed
def test_sigkilled_run_resumes_to_the_same_weights(project, monkeypatch, caplog):
    """Uninterrupted 3 epochs vs. `backdrop train` SIGKILLed after its first checkpoint, then
    resumed: same weights and history. Then a changed run refuses the checkpoint.

    (The CLI's `--resume` flag itself runs in test_distributed: `backdrop train --np 2 --resume`.)"""
    full = write_params(project, "full")
    result = train_in_process(project, full, monkeypatch)
    out_full = project / "models/full"
    assert result.epochs_run == 3 and result.model_path == out_full / "model.pt"
    history = json.loads((out_full / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert {"val_iou_mean", "lr", "images_per_s"} <= set(history[0])

    killed = write_params(project, "killed")
    state = train_until_first_checkpoint_then_sigkill(project, killed)
    assert state["epoch"] < 3 and not state["done"], "the run finished before it could be killed"
    assert state["history"][0]["train_loss"] == pytest.approx(history[0]["train_loss"], rel=1e-6)
    assert np.isfinite(state["hardness"]).sum() > 0  # train.hard_sampling: the next epoch's weights

    with caplog.at_level(logging.INFO, logger="backdrop.training.loop"):
        train_in_process(project, killed, monkeypatch, resume=True)  # what `backdrop train --resume` runs
    assert f"continuing with epoch {state['epoch'] + 1}" in caplog.text, caplog.text[-3000:]
    caplog.clear()
    out = state["out"]
    result_resumed = json.loads((out / "result.json").read_text())
    assert result_resumed["resumed_from_epoch"] == state["epoch"] and result_resumed["epochs_run"] == 3
    assert result_resumed["run_id"] == json.loads((out / "run.json").read_text())["run_id"]
    diff = max_abs_diff(final_state(out), final_state(out_full))
    assert diff < 1e-5, f"resumed weights differ from the uninterrupted run by {diff}"

    def hardness(out_dir: Path) -> np.ndarray:
        ckpt = torch.load(out_dir / "checkpoint.pt", map_location="cpu", weights_only=False)
        return np.asarray(ckpt["sampler"]["hardness"], dtype=float)

    np.testing.assert_allclose(hardness(out), hardness(out_full), rtol=1e-5)  # NaNs (never drawn) match too
    resumed_history = json.loads((out / "history.json").read_text())
    for a, b in zip(resumed_history, history, strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
        assert a["val_iou_mean"] == pytest.approx(b["val_iou_mean"], abs=1e-4)

    # The resumed MLflow run holds each epoch once: the killed run continued, not a second one.
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{project}/mlflow.db")
    steps = [m.step for m in client.get_metric_history(result_resumed["run_id"], "train_loss")]
    assert sorted(set(steps)) == [1, 2, 3]

    # Next night: other params (or data) → --resume must not continue that checkpoint. This run
    # also checks early stopping: with lr≈0 val IoU cannot improve, patience 1 stops after 2 of 5.
    changed = write_params(project, "killed", epochs=5, lr=1e-12, early_stop_patience=1, init="official")
    with caplog.at_level(logging.INFO, logger="backdrop.training.loop"):
        fresh = train_in_process(project, changed, monkeypatch, resume=True)
    assert "starting fresh" in caplog.text and "train.epochs 3→5" in caplog.text, caplog.text[-3000:]
    assert "train.init 'scratch'→'official'" in caplog.text
    result_fresh = json.loads((out / "result.json").read_text())
    assert result_fresh["resumed_from_epoch"] is None and result_fresh["run_id"] != result_resumed["run_id"]
    assert fresh.epochs_run == 2 and result_fresh["stopped_early"] is True
    from backdrop.models.trained import load_trained

    net, meta = load_trained(out / "model.pt")
    assert meta["epoch"] == 1 and meta["arch"] == "u2netp" and meta["size"] == 64
    # official init keeps BatchNorm frozen: the stored (identity) statistics never moved
    means = [v for k, v in net.named_buffers() if k.endswith("running_mean")]
    assert means and all(float(m.abs().max()) == 0.0 for m in means)


def test_downsample_batch_keeps_target_coverage_and_alignment():
    import torch

    from backdrop.training.augment import downsample_batch

    photos, masks = _striped_batch(b=2, s=64)
    x = torch.from_numpy(photos).permute(0, 3, 1, 2).float() / 255  # (2,3,64,64)
    y = torch.from_numpy(masks)[:, None]  # (2,1,64,64)
    xs, ys = downsample_batch(x, y, 32)
    assert xs.shape == (2, 3, 32, 32) and ys.shape == (2, 1, 32, 32)
    assert float(ys.min()) >= 0.0 and float(ys.max()) == 1.0  # coverages, not re-binarised
    # the box covers the same share of the frame, and the red channel still encodes the column
    assert float(ys.mean()) == pytest.approx(float(y.mean()), abs=1e-6)  # area average keeps the share
    assert float(xs[0, 0, 0, -1]) > 0.95 and float(xs[0, 0, 0, 0]) < 0.05
    assert downsample_batch(x, y, 64)[0] is x


def test_official_init_beats_scratch_after_the_same_steps(project, monkeypatch):
    """Same recipe, same data, same number of steps (2 epochs, the first one progressively resized
    to 32 px): starting from the converted official weights must give a better val IoU than
    starting from random weights — the reason `init: official` is the default."""
    recipe = {"epochs": 2, "lr": 3e-4, "iou_loss_weight": 0.0, "low_res_size": 32, "low_res_epochs": 1}
    scratch = train_in_process(project, write_params(project, "scratch-2", init="scratch", **recipe),
                               monkeypatch)
    official = train_in_process(project, write_params(project, "official-2", init="official", **recipe),
                                monkeypatch)
    history = {name: json.loads((project / f"models/{name}/history.json").read_text())
               for name in ("scratch-2", "official-2")}
    assert [h["epoch"] for h in history["official-2"]] == [1, 2] == [h["epoch"] for h in history["scratch-2"]]
    assert official.best_val_iou > scratch.best_val_iou + 0.05, (official.best_val_iou, scratch.best_val_iou)
    # the 32 px epoch never trained at full size: only epoch 2 may become model.pt
    for name, result in (("scratch-2", scratch), ("official-2", official)):
        assert [h["selectable"] for h in history[name]] == [False, True]
        assert result.best_val_iou == history[name][1]["val_iou_mean"]
        assert torch.load(result.model_path, weights_only=False)["epoch"] == 2


def test_only_full_size_epochs_are_selectable():
    """Progressive resizing: low-res epochs cannot become model.pt while full-size ones exist."""
    from backdrop.config import TrainParams
    from backdrop.training.loop import selectable_epoch

    resized = TrainParams(epochs=8, low_res_size=160, low_res_epochs=5)
    assert [selectable_epoch(e, resized) for e in range(8)] == [False] * 5 + [True] * 3
    assert all(selectable_epoch(e, TrainParams(epochs=3)) for e in range(3))  # no resizing
    only_low = TrainParams(epochs=2, low_res_size=160, low_res_epochs=2)  # nothing at full size
    assert all(selectable_epoch(e, only_low) for e in range(2))


def _tiny_benchmark(root: Path, n: int = 6) -> Path:
    """A frozen benchmark set (index.csv id,image,mask,style,part) of n rendered photos, all in part val."""
    from backdrop.data.synth import render_item
    from backdrop.io import write_csv

    bench = root / "data" / "tiny-benchmark"
    (bench / "images").mkdir(parents=True, exist_ok=True)
    (bench / "masks").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        photo, mask, _ = render_item(4242, i, min_side=96, max_side=160)
        photo.save(bench / "images" / f"b{i}.jpg", quality=92)
        mask.save(bench / "masks" / f"b{i}.png")
        rows.append({"id": f"b{i}", "image": f"images/b{i}.jpg", "mask": f"masks/b{i}.png",
                     "style": ("studio", "props")[i % 2], "part": "val"})
    write_csv(bench / "index.csv", rows, ["id", "image", "mask", "style", "part"])
    return bench


def test_benchmark_val_part_takes_part_in_picking_model_pt(project, monkeypatch):
    """train.select_benchmarks: every epoch also scores the benchmark's val part (logged overall and per
    style), and model.pt is the selectable epoch with the best (1 − w)·val + w·benchmark score."""
    from backdrop.training.loop import selection_score

    bench = _tiny_benchmark(project)
    recipe = {"epochs": 3, "lr": 3e-4, "iou_loss_weight": 0.0, "select_benchmarks": [str(bench)],
              "select_benchmark_weight": 0.9}
    result = train_in_process(project, write_params(project, "select-ood", **recipe), monkeypatch)
    history = json.loads((project / "models/select-ood/history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2, 3]
    for h in history:
        assert 0.0 <= h["ood_val_iou_mean"] <= 1.0 and 0.0 <= h["ood_val_share_ge_099"] <= 1.0
        assert {"ood_val_iou_tiny-benchmark_studio", "ood_val_iou_tiny-benchmark_props"} <= h.keys()
        assert h["selection_score"] == pytest.approx(0.1 * h["val_iou_mean"] + 0.9 * h["ood_val_iou_mean"])
        assert h["selection_score"] == pytest.approx(
            selection_score(h["val_iou_mean"], h["ood_val_iou_mean"], _tp(select_benchmark_weight=0.9)))
    best = max(history, key=lambda h: h["selection_score"])  # ties: the first (an improvement is strict)
    saved = torch.load(result.model_path, weights_only=False)
    assert saved["epoch"] == best["epoch"] and saved["ood_val_iou"] == pytest.approx(best["ood_val_iou_mean"])
    assert result.best_val_iou == pytest.approx(best["val_iou_mean"])  # the chosen epoch's own val IoU
    summary = json.loads((project / "models/select-ood/result.json").read_text())
    assert summary["best_epoch"] == best["epoch"]


def test_selection_score_without_benchmarks_is_the_val_iou():
    from backdrop.training.loop import _chosen, selection_score

    assert selection_score(0.97, None, _tp(select_benchmark_weight=0.9)) == 0.97
    assert selection_score(0.9, 0.7, _tp(select_benchmark_weight=0.25)) == pytest.approx(0.85)
    history = [{"epoch": 1, "val_iou_mean": 0.99, "selection_score": 0.99, "selectable": False},
               {"epoch": 2, "val_iou_mean": 0.95, "selection_score": 0.93, "selectable": True},
               {"epoch": 3, "val_iou_mean": 0.97, "selection_score": 0.91, "selectable": True},
               {"epoch": 4, "val_iou_mean": 0.90, "selection_score": 0.93, "selectable": True}]
    assert _chosen(history)["epoch"] == 2  # low-res epoch 1 never; a tie keeps the earlier epoch
