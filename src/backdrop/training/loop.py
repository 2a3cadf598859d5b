"""The training loop: U²-Net(P) with deep supervision on the prepared pairs, tracked live in MLflow.

Loss: BCE on the fused and all six side outputs (the paper's deep supervision), plus an optional
soft-Jaccard (IoU) term (`train.iou_loss_weight`). AdamW with a linear warm-up then cosine decay,
channels_last, bf16 autocast where the hardware has it and `train.precision` asks for it.
Augmentation from params (flips, zoom with crop/pad, colour jitter, background replacement through
the mask), optional cluster-balanced and hard-example sampling (`train.hard_sampling`: a share of the
draws weighted by each pair's last loss), early stopping on val IoU. Each epoch logs loss,
val IoU overall and per cluster, learning rate and images/s; an overlay grid every few epochs.

Determinism: the sample order of epoch e is a pure function of (seed, e) and the per-pair losses
of the epochs before (gathered from every rank, kept in the checkpoint), each rank's
augmentation draws of (seed, e, rank); a run killed and resumed from its last checkpoint
therefore replays exactly the epochs an uninterrupted run would have.

Outputs in `train.out_dir`: `model.pt` (the full-size epoch with the best selection score, see
`selectable_epoch` and `selection_score`: val IoU, and with `train.select_benchmarks` the val part of
out-of-distribution benchmark sets too), `checkpoint.pt` (written
atomically after every epoch: model, optimizer, scheduler, sampler and RNG state, epoch, history,
early-stopping state, MLflow run id and the run's FINGERPRINT), `history.json`, `run.json`,
`result.json`, overlay PNGs.

Resume (`backdrop train --resume`): continues from `checkpoint.pt` only if its fingerprint equals
this run's — a hash of the train params that change the result, `prepare.size`, `cluster.k`,
the number of processes, the exact training/validation arrays and cluster ids, the initial
weights and the training code. Otherwise it says which part differs and starts fresh.

`train.processes > 1` (or `backdrop train --np N`) runs data-parallel workers: see
:mod:`backdrop.training.launcher` and :mod:`backdrop.distributed` (comms, SyncBatchNorm).
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from backdrop.config import Params, TrainParams, resolve
from backdrop.data.benchmark import benchmark_arrays
from backdrop.data.splits import load_arrays, split_rows
from backdrop.io import write_json
from backdrop.training.augment import augment, downsample_batch
from backdrop.training.checkpoint import (
    CHECKPOINT,
    CHECKPOINT_FORMAT,
    clear_outputs,
    fingerprint_of,
    fingerprint_parts,
    read_checkpoint,
    save_checkpoint,
)
from backdrop.training.losses import (
    anchor_weights,
    deep_supervision_loss,
    distillation_loss,
    encoder_param_groups,
    l2sp_penalty,
    lr_lambda,
    soft_iou_loss,
)
from backdrop.training.mlflow_run import start_run
from backdrop.training.sampling import draw_batch, epoch_order, shard, update_hardness

if TYPE_CHECKING:
    from backdrop.distributed import Dist

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainResult:
    best_val_iou: float
    epochs_run: int
    model_path: Path
    run_id: str


def selectable_epoch(epoch: int, tp: TrainParams) -> bool:
    """Whether epoch `epoch` (0-based) may become `model.pt` and counts for early stopping.

    A progressively resized epoch (`epoch < low_res_epochs`) never trained at full size, yet its
    val IoU is measured at full size and can still top the list: a bf16 run (2026-11) kept a 160 px
    epoch (val 0.9932) over three 320 px ones and lost 0.002 test IoU. So once full-size epochs
    exist, only they compete; a run made only of low-res epochs keeps the old rule.
    """
    return epoch >= tp.low_res_epochs or tp.low_res_epochs >= tp.epochs


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
    # CPU kernels are deterministic for a fixed thread count (checked: resumed == uninterrupted,
    # Horovod == DDP bit for bit). torch.use_deterministic_algorithms is left alone: it imports
    # torch._inductor (seconds) and only matters for CUDA kernels, which cuDNN settings cover.
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True


def pick_device(tp: TrainParams, local_rank: int = 0):
    import torch

    cuda = torch.cuda.is_available()
    if tp.device == "cuda" and not cuda:
        raise ValueError("train.device is cuda but no CUDA device is available")
    if tp.device == "cpu" or not cuda:
        return torch.device("cpu")
    return torch.device("cuda", local_rank % torch.cuda.device_count())


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (AMX or AVX512-BF16), not by emulation: oneDNN
    also accepts bf16 on plain AVX-512, where it is slower than fp32."""
    from backdrop.host import cpu_flags

    return bool({"amx_bf16", "avx512_bf16"} & cpu_flags())


def uses_channels_last(tp: TrainParams, device, amp_dtype) -> bool:
    """`train.channels_last`; `auto` is NHWC except for fp32 on a CPU without AVX-512, where oneDNN's
    NHWC convolutions are slower: a U²-NetP 320 px step of batch 8 on one thread (what each of two
    Horovod workers runs) took 1.18× as long in NHWC on AMD Zen 1, AVX2 (bench/precision_bench.py)."""
    from backdrop.host import cpu_flags

    if tp.channels_last != "auto":
        return tp.channels_last
    return device.type == "cuda" or amp_dtype is not None or "avx512f" in cpu_flags()


def autocast_dtype(tp: TrainParams, device):
    """bfloat16 where `train.precision` asks for it and the hardware runs it natively, else None.

    `auto` picks bf16 on CUDA that supports it and on a CPU with native bf16 (`cpu_has_native_bf16`:
    a 320 px step 2.2–2.7× faster there, bench/precision_bench.py), fp32 elsewhere."""
    import torch

    if tp.precision == "fp32":
        return None
    if device.type == "cuda":
        supported = torch.cuda.is_bf16_supported()
    else:
        supported = bool(torch.backends.mkldnn.is_available()
                         and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    if tp.precision == "auto":
        native = supported and (device.type == "cuda" or cpu_has_native_bf16())
        return torch.bfloat16 if native else None
    if not supported:
        log.warning("train.precision bf16: not supported natively on this %s; training in fp32",
                    device.type)
        return None
    return torch.bfloat16




@dataclass
class _Data:
    """What one run trains and validates on: uint8 photos (N,S,S,3), float masks (N,S,S)."""
    rows: dict[str, list[dict]]
    train_x: np.ndarray
    train_y: np.ndarray
    crops: tuple[np.ndarray, np.ndarray] | None  # object crops of the training pairs (train.crop_share)
    val_x: np.ndarray
    val_y: np.ndarray
    bench_x: np.ndarray        # the val part of train.select_benchmarks at the training size (N may be 0)
    bench_y: np.ndarray
    bench_groups: list[str]    # `<set>/<style>` per benchmark photo

    @property
    def train_clusters(self) -> np.ndarray:
        return np.array([r["cluster"] for r in self.rows["train"]])

    @property
    def val_clusters(self) -> list[int]:
        return [r["cluster"] for r in self.rows["val"]]

    def arrays(self) -> list[np.ndarray]:
        return [self.train_x, self.train_y, self.val_x, self.val_y, *(self.crops or ()),
                *((self.bench_x, self.bench_y) if len(self.bench_x) else ())]


def load_data(params: Params, train: bool = True) -> _Data:
    """The arrays of one run; `train=False` leaves the training pairs empty (scoring only: WiSE-FT)."""
    prepared = resolve(params.prepare.out_dir)
    rows = split_rows(params)
    size = params.prepare.size
    train_x, train_y = (load_arrays(prepared, rows["train"]) if train
                        else (np.zeros((0, size, size, 3), np.uint8), np.zeros((0, size, size), np.float32)))
    crops = load_arrays(prepared, rows["train"], crops=True) if train and params.train.crop_share > 0 else None
    val_x, val_y = load_arrays(prepared, rows["val"])
    bench = benchmark_arrays([resolve(d) for d in params.train.select_benchmarks], "val", size)
    return _Data(rows, train_x, train_y, crops, val_x, val_y, *bench)


@dataclass
class _Progress:
    """The resumable part of a run besides weights and optimizer: kept in every checkpoint."""
    hardness: np.ndarray            # last training loss per pair (NaN: not drawn yet)
    epoch: int = 0                  # epochs done
    history: list = None            # one dict of metrics per epoch
    best: float = -1.0              # best val IoU of a selectable epoch
    bad_epochs: int = 0             # selectable epochs since the best (early stopping)
    run_id: str | None = None       # the MLflow run
    done: bool = False

    def __post_init__(self) -> None:
        self.history = [] if self.history is None else self.history

    @classmethod
    def from_checkpoint(cls, state: dict, n_train: int) -> _Progress:
        hardness = np.asarray(state["sampler"].get("hardness", np.full(n_train, np.nan)), dtype=float)
        return cls(hardness, state["epoch"], state["history"], state["best"], state["bad_epochs"],
                   state["run_id"], state["done"])


def _resumable_state(params: Params, out: Path, parts: dict, resume: bool, dist: Dist) -> dict | None:
    """Rank 0 decides whether the checkpoint belongs to this run and clears stale outputs; every rank
    gets its decision (the checkpoint itself, or None)."""
    state = None
    if dist.is_root:
        if resume:
            state, why = read_checkpoint(out / CHECKPOINT, parts)
            if state is None:
                log.warning("--resume: starting fresh: %s", why)
            else:
                log.info("--resume: %s; continuing with epoch %d", why, state["epoch"] + 1)
        clear_outputs(out, everything=state is None)
    return dist.broadcast_object(state)


def _optimizer(model, tp: TrainParams, steps_per_epoch: int, dist: Dist):
    """AdamW wrapped for the ranks (before the scheduler binds to it), warm-up then cosine."""
    import torch

    groups = model.parameters() if tp.encoder_lr_scale == 1.0 else encoder_param_groups(model, tp.lr,
                                                                                         tp.encoder_lr_scale)
    optimizer = torch.optim.AdamW(groups, lr=tp.lr, weight_decay=tp.weight_decay)
    optimizer = dist.wrap_optimizer(optimizer, model)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_lambda(tp.epochs * steps_per_epoch, tp.warmup_epochs * steps_per_epoch))
    return optimizer, scheduler


def _train_epoch(net, optimizer, scheduler, data: _Data, mine: np.ndarray, epoch: int, tp: TrainParams,
                 dist: Dist, device, fmt, amp_dtype, steps_per_epoch: int, regulariser=None, teacher=None):
    """One pass over this rank's shard: (summed loss, [(pair index, per-pair loss)] for hard sampling).
    ``regulariser()`` (L2-SP) and the distillation towards ``teacher`` (the frozen initial model) are
    added to each step's loss for the gradient, not to the summed loss."""
    import torch

    from backdrop.models.cutout import normalize
    from backdrop.progress import progress

    rng = np.random.default_rng([tp.seed, epoch, dist.rank])
    loss_sum, seen = 0.0, []
    for step in progress(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{tp.epochs}", unit="batch",
                         enabled=dist.is_root):
        idx = mine[step * tp.batch_size:(step + 1) * tp.batch_size]
        x, y = augment(*draw_batch(idx, (data.train_x, data.train_y), data.crops, tp.crop_share, rng), tp, rng)
        if epoch < tp.low_res_epochs:
            x, y = downsample_batch(x, y, tp.low_res_size)
        x = normalize(x).to(device=device, memory_format=fmt)
        y = y.to(device)
        with torch.autocast(device.type, dtype=amp_dtype or torch.bfloat16, enabled=amp_dtype is not None):
            outputs = net(x)
        loss = deep_supervision_loss([o.float() for o in outputs], y, tp.iou_loss_weight)
        if tp.hard_sampling:
            per_pair = soft_iou_loss(outputs[0].detach().float(), y, per_sample=True)  # (B,)
            seen += [(int(i), float(v)) for i, v in zip(idx, per_pair, strict=True)]
        optimizer.zero_grad()  # set_to_none (the default); Horovod's override takes no argument
        objective = loss if regulariser is None else loss + regulariser()
        if teacher is not None:
            with torch.no_grad(), torch.autocast(device.type, dtype=amp_dtype or torch.bfloat16,
                                                 enabled=amp_dtype is not None):
                hint = teacher(x)[0]  # (B, 1, H, W) fused logits of the official weights
            objective = objective + tp.distill_weight * distillation_loss(outputs[0].float(), hint.float())
        objective.backward()
        optimizer.step()
        scheduler.step()
        loss_sum += float(loss.detach())
    return loss_sum, seen


def _ious(model, x: np.ndarray, y: np.ndarray, dist: Dist) -> list[float]:
    """IoU per image at 0.5 (each rank scores every size-th image, gathered back in order)."""
    from backdrop.metrics import mask_iou
    from backdrop.models.trained import predict_probs

    mine = np.arange(dist.rank, len(x), dist.size)
    probs = predict_probs(model, x[mine]) if len(mine) else []
    part = [(int(i), mask_iou(p > 0.5, y[i] > 0.5)) for i, p in zip(mine, probs, strict=True)]
    return [v for _, v in sorted(pair for chunk in dist.allgather_object(part) for pair in chunk)]


def validate(model, data: _Data, dist: Dist, k: int) -> tuple[list[float], dict]:
    """Val IoU per image and its summary (overall, per cluster)."""
    from backdrop.metrics import summarize

    ious = _ious(model, data.val_x, data.val_y, dist)
    return ious, summarize(ious, data.val_clusters, k)


def validate_benchmarks(model, data: _Data, dist: Dist) -> dict[str, float]:
    """The benchmark sets' val part: `ood_val_iou_mean`, `ood_val_share_ge_099` and the mean per
    `<set>/<style>` group (`ood_val_iou_<set>_<style>`); empty without `train.select_benchmarks`."""
    if not len(data.bench_x):
        return {}
    ious = np.asarray(_ious(model, data.bench_x, data.bench_y, dist))
    groups = np.asarray(data.bench_groups)
    out = {"ood_val_iou_mean": float(ious.mean()), "ood_val_share_ge_099": float((ious >= 0.99).mean())}
    for group in sorted(set(data.bench_groups)):
        out[f"ood_val_iou_{group.replace('/', '_')}"] = float(ious[groups == group].mean())
    return out


def selection_score(val_iou: float, ood_val_iou: float | None, tp: TrainParams) -> float:
    """What picks model.pt among the selectable epochs: val IoU alone, or with benchmark sets
    (`train.select_benchmarks`) (1 − w)·val + w·benchmark val, w = `train.select_benchmark_weight`.
    A model that only fits the training renderer's look does not win on its own val split."""
    if ood_val_iou is None:
        return val_iou
    w = tp.select_benchmark_weight
    return (1 - w) * val_iou + w * ood_val_iou


def _checkpoint(model, optimizer, scheduler, fingerprint: str, parts: dict, tp: TrainParams, dist: Dist,
                prog: _Progress) -> dict:
    import torch

    return {"format": CHECKPOINT_FORMAT, "fingerprint": fingerprint, "fingerprint_parts": parts,
            "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "sampler": {"seed": tp.seed, "next_epoch": prog.epoch, "balanced": tp.balanced_sampling,
                        "world_size": dist.size, "hardness": prog.hardness.tolist()},
            "rng": {"python": random.getstate(), "numpy": np.random.get_state(),
                    "torch": torch.get_rng_state()},
            "epoch": prog.epoch, "history": prog.history, "best": prog.best, "bad_epochs": prog.bad_epochs,
            "done": prog.done, "run_id": prog.run_id}




def run(params: Params, resume: bool, dist: Dist) -> TrainResult:
    """One rank's training: every worker of a data-parallel run, or the only process."""
    import torch

    from backdrop.distributed import convert_sync_batchnorm, state_digest
    from backdrop.models import build_model
    from backdrop.models.trained import predict_probs
    from backdrop.viz import overlay_grid

    tp = params.train
    root = dist.is_root
    if root:  # the only rank that talks to MLflow (the import alone costs seconds)
        import mlflow
    torch.set_num_threads(max(1, tp.num_threads // dist.local_size))
    seed_everything(tp.seed)
    device = pick_device(tp, dist.local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)  # before any NCCL collective
    amp_dtype = autocast_dtype(tp, device)
    channels_last = uses_channels_last(tp, device, amp_dtype)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    out = resolve(tp.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = load_data(params)

    model = build_model(tp.model, init=tp.init)
    parts = fingerprint_parts(params, dist.size, data.rows, data.arrays(), state_digest(model))
    fingerprint = fingerprint_of(parts)
    freeze_bn = tp.init == "official"  # BN folded into the official weights: keep it fixed
    if dist.size > 1 and not freeze_bn:
        convert_sync_batchnorm(model, dist)
    state = _resumable_state(params, out, parts, resume, dist)
    anchor = anchor_weights(model) if tp.l2sp_weight else None  # the initial weights, not a checkpoint's

    steps_per_epoch = math.ceil(math.ceil(len(data.train_x) / dist.size) / tp.batch_size)
    prog = _Progress(np.full(len(data.train_x), np.nan))
    if state is not None:
        model.load_state_dict(state["model"])
    dist.broadcast_parameters(model)  # one starting point for every rank (before channels_last)
    model.to(device=device, memory_format=fmt)
    regulariser = None
    if anchor is not None:
        anchor = {name: w.to(device) for name, w in anchor.items()}
        regulariser = lambda: tp.l2sp_weight * l2sp_penalty(model, anchor)  # noqa: E731
    teacher = None  # the initial (official) model, frozen: what distillation keeps the student near
    if tp.distill_weight:
        teacher = build_model(tp.model, init=tp.init).eval().requires_grad_(False)
        teacher.to(device=device, memory_format=fmt)
    optimizer, scheduler = _optimizer(model, tp, steps_per_epoch, dist)
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        random.setstate(state["rng"]["python"])
        np.random.set_state(state["rng"]["numpy"])
        torch.set_rng_state(state["rng"]["torch"])
        prog = _Progress.from_checkpoint(state, len(data.train_x))
    start_epoch = prog.epoch
    net = dist.wrap_model(model)  # DDP wrapper, or the model itself

    with contextlib.ExitStack() as stack:
        if root and not prog.done:
            prog.run_id = start_run(stack, params, prog.run_id, {
                "world_size": dist.size, "n_train": len(data.train_x), "n_val": len(data.val_x),
                "fingerprint": fingerprint,
                # what ran: `bf16` falls back to fp32 on CPUs without native bf16 (train.precision)
                "autocast": "bf16" if amp_dtype else "fp32",
                "memory_format": "channels_last" if channels_last else "contiguous"})
            write_json(out / "run.json", {"run_id": prog.run_id,
                                          "experiment_id": mlflow.active_run().info.experiment_id})
        prog.run_id = dist.broadcast_object(prog.run_id)
        for epoch in range(start_epoch, tp.epochs if not prog.done else start_epoch):
            set_train_mode(model, freeze_bn)
            order = epoch_order(data.train_clusters, tp.seed, epoch, tp.balanced_sampling,
                                prog.hardness if epoch else None, tp.hard_sampling)
            mine = shard(order, dist.rank, dist.size)
            t0 = time.perf_counter()
            loss_sum, seen = _train_epoch(net, optimizer, scheduler, data, mine, epoch, tp, dist, device, fmt,
                                          amp_dtype, steps_per_epoch, regulariser, teacher)
            seconds = dist.allreduce([time.perf_counter() - t0], "max")[0]
            train_loss = dist.allreduce([loss_sum / steps_per_epoch], "mean")[0]
            if tp.hard_sampling:
                prog.hardness = update_hardness(prog.hardness, dist.allgather_object(seen))

            ious, val = validate(model, data, dist, params.cluster.k)
            ood = validate_benchmarks(model, data, dist)
            score = selection_score(val["iou_mean"], ood.get("ood_val_iou_mean"), tp)
            metrics = {"train_loss": train_loss, "lr": scheduler.get_last_lr()[0],
                       "images_per_s": len(mine) * dist.size / seconds,
                       **{f"val_{k}": v for k, v in val.items() if k != "n"}, **ood, "selection_score": score}
            candidate = selectable_epoch(epoch, tp)
            prog.history.append({"epoch": epoch + 1, **metrics, "selectable": candidate})
            improved = candidate and score > prog.best
            if candidate:
                prog.best, prog.bad_epochs = (score, 0) if improved else (prog.best, prog.bad_epochs + 1)
            stop = tp.early_stop_patience > 0 and prog.bad_epochs >= tp.early_stop_patience
            prog.epoch, prog.done = epoch + 1, stop or epoch + 1 == tp.epochs
            if root:
                log.info("epoch %d: loss %.4f val IoU %.4f%s (%.1f img/s)%s", epoch + 1, train_loss,
                         val["iou_mean"], f", benchmark val IoU {ood['ood_val_iou_mean']:.4f}" if ood else "",
                         metrics["images_per_s"],
                         " *" if improved else "" if candidate else " (low-res: not selectable)")
                mlflow.log_metrics(metrics, step=epoch + 1)
                if improved:
                    save_checkpoint({"state_dict": model.state_dict(), "arch": tp.model, "size": params.prepare.size,
                                     "epoch": epoch + 1, "val_iou": val["iou_mean"], "selection_score": score,
                                     "ood_val_iou": ood.get("ood_val_iou_mean"), "crop_share": tp.crop_share},
                                    out / "model.pt")
                if (epoch + 1) % tp.overlay_every == 0 or prog.done:
                    shown = predict_probs(model, data.val_x[:8])
                    grid = overlay_grid(data.val_x[:8], data.val_y[:8], shown, out / f"overlay_epoch{epoch + 1}.png",
                                        titles=[f"{v:.3f}" for v in ious[:8]])
                    mlflow.log_artifact(str(grid), artifact_path="overlays")
                write_json(out / "history.json", prog.history)
                save_checkpoint(_checkpoint(model, optimizer, scheduler, fingerprint, parts, tp, dist, prog),
                                out / CHECKPOINT)
            if stop:
                log.info("early stop: val IoU has not improved for %d epoch(s)", prog.bad_epochs)
                break

    chosen = _chosen(prog.history)
    digests = dist.allgather_object(state_digest(model))
    if len(set(digests)) != 1:
        raise RuntimeError(f"replicas diverged: weight digests per rank {digests}")
    if root:
        write_json(out / "history.json", prog.history)
        write_json(out / "result.json", {
            "best_val_iou": chosen.get("val_iou_mean", prog.best), "best_epoch": chosen.get("epoch"),
            "selection_score": prog.best, "best_ood_val_iou": chosen.get("ood_val_iou_mean"),
            "epochs_run": len(prog.history), "model_path": str(out / "model.pt"),
            "run_id": prog.run_id, "world_size": dist.size, "backend": dist.backend,
            "resumed_from_epoch": state["epoch"] if state is not None else None,
            "stopped_early": bool(prog.history) and len(prog.history) < tp.epochs, "fingerprint": fingerprint,
            "replica_digests": digests})
    return TrainResult(chosen.get("val_iou_mean", prog.best), len(prog.history), out / "model.pt", prog.run_id)


def _chosen(history: list[dict]) -> dict:
    """The history entry of the epoch in model.pt: the first selectable one with the best selection
    score (an improvement must be strict); {} before any epoch ran."""
    best: dict = {}
    for entry in history:
        score = entry.get("selection_score", entry.get("val_iou_mean"))
        if entry.get("selectable", True) and (not best or score > best["_score"]):
            best = {**entry, "_score": score}
    return best
