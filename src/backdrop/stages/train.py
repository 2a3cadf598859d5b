"""train: U²-Net(P) with deep supervision on the prepared pairs, tracked live in MLflow.

Loss is BCE on the fused and all six side outputs (the paper's deep supervision). AdamW with a
linear warm-up then cosine decay, channels_last, seeded. Each epoch logs loss, val IoU overall
and per cluster, learning rate and images/s; an overlay grid is logged every few epochs.
The best epoch (by val IoU) is saved as `model.pt`; `checkpoint.pt` holds everything to resume.
"""

from __future__ import annotations

import logging
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from backdrop.config import Params, resolve
from backdrop.io import read_csv, write_json

log = logging.getLogger(__name__)

OVERLAY_EVERY = 2


@dataclass(frozen=True)
class TrainResult:
    best_val_iou: float
    epochs_run: int
    model_path: Path
    run_id: str


def load_arrays(prepared: Path, rows: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """Photos uint8 (N,S,S,3) and masks float32 (N,S,S) in {0,1} for the given index rows."""
    from PIL import Image

    photos = np.stack([np.asarray(Image.open(prepared / r["image"]).convert("RGB")) for r in rows])
    masks = np.stack([np.asarray(Image.open(prepared / r["mask"]).convert("L")) > 127 for r in rows])
    return photos, masks.astype(np.float32)


def split_rows(params: Params) -> dict[str, list[dict]]:
    """Prepared index rows per split, each carrying its cluster id."""
    prepared = resolve(params.prepare.out_dir)
    clusters = {r["pair_id"]: int(r["cluster"])
                for r in read_csv(resolve(params.cluster.out_dir) / "assignments.csv")}
    out: dict[str, list[dict]] = {"train": [], "val": [], "test": []}
    for row in read_csv(prepared / "index.csv"):
        out[row["split"]].append({**row, "cluster": clusters.get(row["pair_id"], -1)})
    return out


def lr_lambda(total_steps: int, warmup_steps: int):
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return factor


def deep_supervision_loss(outputs, target):
    """Sum of BCE-with-logits over the fused and six side outputs; outputs[i]: (N,1,S,S)."""
    import torch.nn.functional as F

    return sum(F.binary_cross_entropy_with_logits(o, target) for o in outputs)


def predict_probs(model, photos: np.ndarray, batch_size: int = 8) -> np.ndarray:
    """float32 (N,S,S) foreground probabilities for uint8 photos (N,S,S,3)."""
    import torch

    from backdrop.models.cutout import normalize, photos_to_tensor

    model.eval()
    out = []
    with torch.inference_mode():
        for i in range(0, len(photos), batch_size):
            x = normalize(photos_to_tensor(photos[i:i + batch_size])).contiguous(
                memory_format=torch.channels_last)
            out.append(torch.sigmoid(model(x)[0])[:, 0].float().numpy())
    return np.concatenate(out)


def set_train_mode(model, freeze_bn: bool) -> None:
    """Train mode, optionally with BatchNorm kept on its stored statistics.

    The official weights have BN folded into the convs (identity statistics); batch statistics
    in train mode would throw that function away, so fine-tuning from them freezes BN.
    """
    import torch

    model.train()
    if freeze_bn:
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.eval()


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def train(params: Params, resume: bool = False) -> TrainResult:
    import mlflow
    import torch
    from tqdm import tqdm

    from backdrop import tracking
    from backdrop.metrics import mask_iou, summarize
    from backdrop.models import build_model
    from backdrop.models.cutout import normalize, photos_to_tensor
    from backdrop.viz import overlay_grid

    tp = params.train
    torch.set_num_threads(tp.num_threads)
    seed_everything(tp.seed)
    out = resolve(tp.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    prepared = resolve(params.prepare.out_dir)
    rows = split_rows(params)
    train_x, train_y = load_arrays(prepared, rows["train"])
    val_x, val_y = load_arrays(prepared, rows["val"])
    val_clusters = [r["cluster"] for r in rows["val"]]

    model = build_model(tp.model, init=tp.init).to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=tp.lr, weight_decay=tp.weight_decay)
    steps_per_epoch = math.ceil(len(train_x) / tp.batch_size)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_lambda(tp.epochs * steps_per_epoch, tp.warmup_epochs * steps_per_epoch))
    generator = torch.Generator().manual_seed(tp.seed)
    start_epoch, history, best, run_id = 0, [], -1.0, None

    checkpoint_path = out / "checkpoint.pt"
    if resume and checkpoint_path.exists():
        state = torch.load(checkpoint_path, weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        start_epoch, history, best, run_id = (state["epoch"] + 1, state["history"], state["best"],
                                              state["run_id"])
        log.info("resuming from epoch %d (run %s)", start_epoch, run_id)

    experiment_id = tracking.setup(params)
    with mlflow.start_run(run_id=run_id, experiment_id=None if run_id else experiment_id,
                          log_system_metrics=False) as run:
        if not run_id:
            mlflow.log_params({f"train.{k}": v for k, v in tp.model_dump().items() if k != "out_dir"}
                              | {"prepare.size": params.prepare.size, "cluster.k": params.cluster.k,
                                 "n_train": len(train_x), "n_val": len(val_x)})
            mlflow.set_tags({"git_commit": tracking.git_commit(), "stage": "train",
                             **tracking.dvc_lineage()})
            for extra in (resolve(params.cluster.out_dir) / "montage.png",
                          resolve(params.validate_.out_dir) / "report.html"):
                if extra.exists():
                    mlflow.log_artifact(str(extra), artifact_path="data")
        write_json(out / "run.json", {"run_id": run.info.run_id,
                                      "experiment_id": run.info.experiment_id})
        for epoch in range(start_epoch, tp.epochs):
            set_train_mode(model, freeze_bn=tp.init == "official")
            perm = torch.randperm(len(train_x), generator=generator).numpy()
            t0, losses = time.perf_counter(), []
            bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{tp.epochs}", unit="batch",
                       disable=None)
            for step in bar:
                idx = perm[step * tp.batch_size:(step + 1) * tp.batch_size]
                photos, masks = train_x[idx], train_y[idx]
                flip = torch.rand(len(idx), generator=generator).numpy() < 0.5  # horizontal flips
                photos = np.where(flip[:, None, None, None], photos[:, :, ::-1], photos)
                masks = np.where(flip[:, None, None], masks[:, :, ::-1], masks)
                x = normalize(photos_to_tensor(photos)).contiguous(memory_format=torch.channels_last)
                y = torch.from_numpy(np.ascontiguousarray(masks))[:, None]  # (B,1,S,S)
                loss = deep_supervision_loss(model(x), y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                losses.append(float(loss))
                bar.set_postfix(loss=f"{losses[-1]:.3f}")
            seconds = time.perf_counter() - t0
            probs = predict_probs(model, val_x)
            ious = [mask_iou(p > 0.5, t > 0.5) for p, t in zip(probs, val_y, strict=True)]
            val = summarize(ious, val_clusters, params.cluster.k)
            metrics = {"train_loss": float(np.mean(losses)), "lr": scheduler.get_last_lr()[0],
                       "images_per_s": len(train_x) / seconds,
                       **{f"val_{k}": v for k, v in val.items() if k != "n"}}
            mlflow.log_metrics(metrics, step=epoch + 1)
            history.append({"epoch": epoch + 1, **metrics})
            log.info("epoch %d: loss %.4f val IoU %.4f (%.1f img/s)", epoch + 1,
                     metrics["train_loss"], val["iou_mean"], metrics["images_per_s"])
            if val["iou_mean"] > best:
                best = val["iou_mean"]
                torch.save({"state_dict": model.state_dict(), "arch": tp.model,
                            "size": params.prepare.size, "epoch": epoch + 1, "val_iou": best},
                           out / "model.pt")
            if (epoch + 1) % OVERLAY_EVERY == 0 or epoch + 1 == tp.epochs:
                grid = overlay_grid(val_x[:8], val_y[:8], probs[:8], out / f"overlay_epoch{epoch + 1}.png",
                                    titles=[f"{v:.3f}" for v in ious[:8]])
                mlflow.log_artifact(str(grid), artifact_path="overlays")
            torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(), "generator": generator.get_state(),
                        "torch_rng": torch.get_rng_state(), "epoch": epoch, "history": history,
                        "best": best, "run_id": run.info.run_id}, checkpoint_path)
        write_json(out / "history.json", history)
    return TrainResult(best, len(history), out / "model.pt", run.info.run_id)


def load_trained(model_path: Path):
    """The network saved by `train` (best epoch) and its metadata (arch, size, epoch, val_iou)."""
    import torch

    from backdrop.models import build_model

    if not model_path.exists():
        raise FileNotFoundError(f"{model_path}: no trained model (run `backdrop train`)")
    state = torch.load(model_path, map_location="cpu", weights_only=False)
    net = build_model(state["arch"], init="scratch")
    net.load_state_dict(state["state_dict"])
    net.eval()
    return net, {k: v for k, v in state.items() if k != "state_dict"}
