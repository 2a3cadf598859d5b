"""train: U²-Net(P) with deep supervision on the prepared pairs, tracked live in MLflow.

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

Outputs in `train.out_dir`: `model.pt` (best full-size epoch by val IoU, see `selectable_epoch`),
`checkpoint.pt` (written
atomically after every epoch: model, optimizer, scheduler, sampler and RNG state, epoch, history,
early-stopping state, MLflow run id and the run's FINGERPRINT), `history.json`, `run.json`,
`result.json`, overlay PNGs.

Resume (`backdrop train --resume`): continues from `checkpoint.pt` only if its fingerprint equals
this run's — a hash of the train params that change the result, `prepare.size`, `cluster.k`,
the number of processes, the exact training/validation arrays and cluster ids, the initial
weights and the training code. Otherwise it says which part differs and starts fresh.

`train.processes > 1` (or `backdrop train --np N`) runs data-parallel workers: see
:mod:`backdrop.distributed`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from backdrop.config import Params, TrainParams, resolve
from backdrop.io import atomic_path, read_csv, write_json

if TYPE_CHECKING:
    from backdrop.distributed import Dist

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
CHECKPOINT_FORMAT = 2
# train params that do not change what is learned (a checkpoint stays valid across them)
FINGERPRINT_IGNORES = {"out_dir", "num_threads", "processes", "backend", "device", "overlay_every"}
_OUTPUTS = ("checkpoint.pt", "model.pt", "history.json", "run.json", "result.json")


@dataclass(frozen=True)
class TrainResult:
    best_val_iou: float
    epochs_run: int
    model_path: Path
    run_id: str


# ------------------------------------------------------------------------------------------ data

def load_arrays(prepared: Path, rows: list[dict], crops: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Photos uint8 (N,S,S,3) and masks float32 (N,S,S) in [0,1] (an edge pixel's foreground share
    when prepare wrote soft masks) for the given index rows; `crops`: their object crops instead."""
    from PIL import Image

    image_key, mask_key = ("crop_image", "crop_mask") if crops else ("image", "mask")
    missing = [r["pair_id"] for r in rows if not r.get(image_key)]
    if missing:
        raise ValueError(f"{prepared / 'index.csv'}: no object crops for {len(missing)} pair(s) "
                         f"(first: {missing[0]}); set prepare.object_crops: true or train.crop_share: 0")
    photos = np.stack([np.asarray(Image.open(prepared / r[image_key]).convert("RGB")) for r in rows])
    masks = np.stack([np.asarray(Image.open(prepared / r[mask_key]).convert("L")) for r in rows])
    return photos, masks.astype(np.float32) / 255.0


def draw_batch(idx: np.ndarray, frames: tuple[np.ndarray, np.ndarray],
               crops: tuple[np.ndarray, np.ndarray] | None, share: float, rng: np.random.Generator):
    """The batch's photos/masks: each sample is its object crop with probability `share`."""
    x, y = frames[0][idx], frames[1][idx]
    if crops is None or share <= 0:
        return x, y
    use = rng.random(len(idx)) < share  # (B,)
    x[use], y[use] = crops[0][idx[use]], crops[1][idx[use]]
    return x, y


def split_rows(params: Params) -> dict[str, list[dict]]:
    """Prepared index rows per split, each carrying its cluster id."""
    prepared = resolve(params.prepare.out_dir)
    clusters = {r["pair_id"]: int(r["cluster"])
                for r in read_csv(resolve(params.cluster.out_dir) / "assignments.csv")}
    out: dict[str, list[dict]] = {"train": [], "val": [], "test": []}
    for row in read_csv(prepared / "index.csv"):
        out[row["split"]].append({**row, "cluster": clusters.get(row["pair_id"], -1)})
    return out


def epoch_order(clusters: np.ndarray, seed: int, epoch: int, balanced: bool,
                hardness: np.ndarray | None = None, hard_share: float = 0.0) -> np.ndarray:
    """Global sample order of one epoch, the same on every rank and after a resume.

    Balanced: n draws with replacement, each cluster with equal total weight, so a rare product
    type is seen as often as a common one; else a permutation. Hard (`hard_share` > 0 and a
    per-sample `hardness`, e.g. last epoch's loss): that share of the draw weight follows hardness,
    so the few products the model still gets wrong are drawn again instead of once an epoch.
    """
    rng = np.random.default_rng([seed, epoch])
    n = len(clusters)
    hard = hardness is not None and hard_share > 0
    if not balanced and not hard:
        return rng.permutation(n)
    if balanced:
        _, inverse, counts = np.unique(clusters, return_inverse=True, return_counts=True)
        weights = 1.0 / counts[inverse]
    else:
        weights = np.ones(n)
    p = weights / weights.sum()
    if hard:
        known = np.isfinite(hardness)
        h = np.where(known, hardness, hardness[known].mean() if known.any() else 1.0).clip(min=0)
        if h.sum() > 0:
            p = (1 - hard_share) * p + hard_share * h / h.sum()
            p = p / p.sum()
    return rng.choice(n, size=n, replace=True, p=p)


def update_hardness(hardness: np.ndarray, seen: list[list[tuple[int, float]]]) -> np.ndarray:
    """Each drawn sample's mean loss over this epoch's draws (all ranks); undrawn ones keep theirs."""
    out = hardness.copy()
    sums: dict[int, list[float]] = {}
    for chunk in seen:
        for i, v in chunk:
            sums.setdefault(i, []).append(v)
    for i, vs in sums.items():
        out[i] = float(np.mean(vs))
    return out


def shard(order: np.ndarray, rank: int, size: int) -> np.ndarray:
    """Rank `rank`'s share of `order`, padded (cyclically) so every rank gets ceil(n/size) samples."""
    per_rank = math.ceil(len(order) / size)
    return np.resize(order, per_rank * size)[rank::size]


# ---------------------------------------------------------------------------------- augmentation

def random_background(rng: np.random.Generator, h: int, w: int):
    """(3,H,W) float in [0,1]: a solid colour, a linear gradient or smooth colour noise."""
    import torch
    import torch.nn.functional as F

    kind = int(rng.integers(3))
    c1 = torch.from_numpy(rng.random(3, dtype=np.float32)).view(3, 1, 1)
    if kind == 0:
        return c1.expand(3, h, w).clone()
    if kind == 1:
        c2 = torch.from_numpy(rng.random(3, dtype=np.float32)).view(3, 1, 1)
        vertical = bool(rng.integers(2))
        t = torch.linspace(0, 1, h if vertical else w)
        t = t.view(1, -1, 1) if vertical else t.view(1, 1, -1)
        return (c1 * (1 - t) + c2 * t).expand(3, h, w).clone()
    cells = torch.from_numpy(rng.random((1, 3, 4, 4), dtype=np.float32))
    return F.interpolate(cells, size=(h, w), mode="bilinear", align_corners=False)[0]


def _zoom(img, mask, z: float, rng: np.random.Generator):
    """Resize (3,H,W)+(1,H,W) by z; z>1 crops back to H×W at a random spot, z<1 pads (edge
    replicate for the photo, background for the mask)."""
    import torch
    import torch.nn.functional as F

    _, h, w = img.shape
    mh, mw = max(1, round(h * z)), max(1, round(w * z))
    if (mh, mw) == (h, w):
        return img, mask
    both = F.interpolate(torch.cat([img, mask])[None], size=(mh, mw), mode="bilinear",
                         align_corners=False, antialias=z < 1)[0]
    if mh >= h and mw >= w:
        oy, ox = int(rng.integers(mh - h + 1)), int(rng.integers(mw - w + 1))
        both = both[:, oy:oy + h, ox:ox + w]
        return both[:3], both[3:]
    py, px = int(rng.integers(h - mh + 1)), int(rng.integers(w - mw + 1))
    pad = (px, w - mw - px, py, h - mh - py)
    return (F.pad(both[None, :3], pad, mode="replicate")[0],
            F.pad(both[None, 3:], pad, value=0.0)[0])


def augment(photos: np.ndarray, masks: np.ndarray, tp: TrainParams, rng: np.random.Generator):
    """uint8 photos (B,S,S,3) + masks (B,S,S) → float (B,3,S,S) in [0,1] and (B,1,S,S) targets.

    Order: background replacement (needs the true mask), zoom/crop, flips, colour jitter (last, so
    new backgrounds are jittered too). Every random number comes from `rng`.
    """
    import torch

    from backdrop.models.cutout import photos_to_tensor

    x = photos_to_tensor(photos)
    y = torch.tensor(masks, dtype=torch.float32)[:, None]  # a copy: edited in place below
    b, _, h, w = x.shape
    if tp.aug_bg_replace > 0:
        for i in np.flatnonzero(rng.random(b) < tp.aug_bg_replace):
            x[i] = x[i] * y[i] + random_background(rng, h, w) * (1 - y[i])
    lo, hi = tp.aug_scale
    if (lo, hi) != (1.0, 1.0):
        for i in range(b):
            x[i], y[i] = _zoom(x[i], y[i], float(rng.uniform(lo, hi)), rng)
    for p, dim in ((tp.aug_hflip, -1), (tp.aug_vflip, -2)):
        if p > 0:
            flip = torch.from_numpy(rng.random(b) < p).view(b, 1, 1, 1)
            x = torch.where(flip, x.flip(dim), x)
            y = torch.where(flip, y.flip(dim), y)
    if tp.aug_jitter > 0:
        j = tp.aug_jitter

        def factors():
            return torch.from_numpy(rng.uniform(1 - j, 1 + j, b).astype(np.float32)).view(b, 1, 1, 1)

        x = x * factors()  # brightness
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) * factors() + mean  # contrast
        gray = (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])
        x = ((x - gray) * factors() + gray).clamp_(0, 1)  # saturation
    return x.contiguous(), y.contiguous()


# ------------------------------------------------------------------------------------------- loss

def downsample_batch(x, y, size: int):
    """Progressive resizing: (B,3,S,S) photos and (B,1,S,S) targets → size² (area average, so soft
    targets stay coverages), so early epochs cost (size/S)² of a full-size step and later ones refine at S."""
    import torch.nn.functional as F

    if x.shape[-1] == size:
        return x, y
    x = F.interpolate(x, size=(size, size), mode="area")
    y = F.interpolate(y, size=(size, size), mode="area")
    return x, y


def selectable_epoch(epoch: int, tp: TrainParams) -> bool:
    """Whether epoch `epoch` (0-based) may become `model.pt` and counts for early stopping.

    A progressively resized epoch (`epoch < low_res_epochs`) never trained at full size, yet its
    val IoU is measured at full size and can still top the list: session 8's bf16 run kept a 160 px
    epoch (val 0.9932) over three 320 px ones and lost 0.002 test IoU. So once full-size epochs
    exist, only they compete; a run made only of low-res epochs keeps the old rule.
    """
    return epoch >= tp.low_res_epochs or tp.low_res_epochs >= tp.epochs


def lr_lambda(total_steps: int, warmup_steps: int):
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return factor


def soft_iou_loss(logits, target, eps: float = 1.0, per_sample: bool = False):
    """1 − soft Jaccard of sigmoid(logits) and target per image, averaged (or (N,) per image);
    (N,1,S,S) each."""
    import torch

    p = torch.sigmoid(logits)
    inter = (p * target).sum(dim=(1, 2, 3))
    union = (p + target - p * target).sum(dim=(1, 2, 3))
    loss = 1 - (inter + eps) / (union + eps)  # (N,)
    return loss if per_sample else loss.mean()


def deep_supervision_loss(outputs, target, iou_weight: float = 0.0):
    """Sum of BCE-with-logits over the fused and six side outputs (+ iou_weight × soft IoU loss)."""
    import torch.nn.functional as F

    loss = sum(F.binary_cross_entropy_with_logits(o, target) for o in outputs)
    if iou_weight:
        loss = loss + iou_weight * sum(soft_iou_loss(o, target) for o in outputs)
    return loss


# ------------------------------------------------------------------------------------ model utils

def predict_probs(model, photos: np.ndarray, batch_size: int = 8) -> np.ndarray:
    """float32 (N,S,S) foreground probabilities for uint8 photos (N,S,S,3)."""
    import torch

    from backdrop.models.cutout import normalize, photos_to_tensor

    device = next(model.parameters()).device
    model.eval()
    out = []
    with torch.inference_mode():
        for i in range(0, len(photos), batch_size):
            x = normalize(photos_to_tensor(photos[i:i + batch_size])).to(device).contiguous(
                memory_format=torch.channels_last)
            out.append(torch.sigmoid(model(x)[0])[:, 0].float().cpu().numpy())
    if not out:
        return np.zeros((0, *photos.shape[1:3]), np.float32)
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


def autocast_dtype(tp: TrainParams, device):
    """bfloat16 where `train.precision` asks for it and the hardware runs it natively, else None."""
    import torch

    if tp.precision == "fp32":
        return None
    if device.type == "cuda":
        supported = torch.cuda.is_bf16_supported()
    else:
        supported = bool(torch.backends.mkldnn.is_available()
                         and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    if tp.precision == "auto":
        return torch.bfloat16 if device.type == "cuda" and supported else None
    if not supported:
        log.warning("train.precision bf16: not supported natively on this %s; training in fp32",
                    device.type)
        return None
    return torch.bfloat16


# ------------------------------------------------------------------------------ fingerprint/ckpt

def _source_digest() -> str:
    import backdrop.distributed
    import backdrop.models.u2net

    h = hashlib.sha256()
    for mod in (__file__, backdrop.distributed.__file__, backdrop.models.u2net.__file__):
        h.update(Path(mod).read_bytes())
    return h.hexdigest()[:16]


def fingerprint_parts(params: Params, world_size: int, rows: dict[str, list[dict]],
                      arrays: list[np.ndarray], init_digest: str) -> dict:
    """What a run trains on; a checkpoint is only resumed when all of it is unchanged."""
    h = hashlib.sha256()
    for split in ("train", "val"):
        h.update(json.dumps([(r["pair_id"], r["cluster"]) for r in rows[split]]).encode())
    for a in arrays:
        h.update(f"{a.dtype}{a.shape}".encode())
        h.update(np.ascontiguousarray(a).tobytes())
    train = {k: v for k, v in params.train.model_dump(mode="json").items() if k not in FINGERPRINT_IGNORES}
    return {"train": train, "prepare.size": params.prepare.size, "cluster.k": params.cluster.k,
            "world_size": world_size, "data": h.hexdigest()[:16], "init_weights": init_digest[:16],
            "code": _source_digest()}


def fingerprint_of(parts: dict) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def _differences(old: dict, new: dict) -> list[str]:
    diffs = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            diffs += [f"train.{k} {a.get(k)!r}→{b.get(k)!r}" for k in sorted(set(a) | set(b))
                      if a.get(k) != b.get(k)]
        elif a != b:
            diffs.append(f"{key} {a!r}→{b!r}")
    return diffs


def read_checkpoint(path: Path, parts: dict) -> tuple[dict | None, str]:
    """The checkpoint at `path` if it belongs to this run, else None; plus the reason."""
    import torch

    if not path.exists():
        return None, f"no checkpoint at {path}"
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # truncated or foreign file
        return None, f"{path} is unreadable ({type(exc).__name__}: {exc})"
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        return None, f"{path} has an old or unknown format"
    if state["fingerprint"] != fingerprint_of(parts):
        diff = _differences(state.get("fingerprint_parts", {}), parts)
        return None, (f"checkpoint fingerprint {state['fingerprint']} does not match this run's "
                      f"{fingerprint_of(parts)}: changed {'; '.join(diff) or 'unknown'}")
    return state, f"checkpoint after epoch {state['epoch']} matches (fingerprint {state['fingerprint']})"


def _save(obj, path: Path) -> None:
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def _clear_outputs(out: Path, everything: bool) -> None:
    """Temp files of writes a SIGKILL interrupted (`.checkpoint.pt.xyz.pt`); with `everything`,
    also the outputs of an earlier run, so a fresh run never mixes with stale files."""
    for tmp in out.glob(".*"):
        if tmp.is_file() and any(tmp.name.startswith(f".{name}.") for name in _OUTPUTS):
            tmp.unlink()
    if everything:
        for name in _OUTPUTS:
            (out / name).unlink(missing_ok=True)
        for png in out.glob("overlay_epoch*.png"):
            png.unlink()


# ----------------------------------------------------------------------------------------- mlflow

def _start_mlflow(stack: contextlib.ExitStack, params: Params, run_id: str | None, extra: dict) -> str:
    import mlflow
    from mlflow.exceptions import MlflowException

    from backdrop import tracking

    experiment_id = tracking.setup(params)
    if run_id:
        try:
            return stack.enter_context(mlflow.start_run(run_id=run_id, log_system_metrics=False)).info.run_id
        except MlflowException as exc:
            log.warning("MLflow run %s of the checkpoint is gone (%s); logging to a new run", run_id, exc)
    run = stack.enter_context(mlflow.start_run(experiment_id=experiment_id, log_system_metrics=False))
    tp = params.train
    mlflow.log_params({f"train.{k}": v for k, v in tp.model_dump().items() if k != "out_dir"}
                      | {"prepare.size": params.prepare.size, "cluster.k": params.cluster.k} | extra)
    mlflow.set_tags({"git_commit": tracking.git_commit(), "stage": "train", **tracking.dvc_lineage()})
    for path in (resolve(params.cluster.out_dir) / "montage.png",
                 resolve(params.validate_.out_dir) / "report.html"):
        if path.exists():
            mlflow.log_artifact(str(path), artifact_path="data")
    return run.info.run_id


# ------------------------------------------------------------------------------------------ train

def train(params: Params, resume: bool = False, *, dist: Dist | None = None,
          hosts: str | None = None) -> TrainResult:
    """Train per params; with `train.processes > 1` (and no `dist`) launch that many workers."""
    if dist is None:
        if params.train.processes > 1:
            from backdrop.distributed import launch

            return launch(params, resume=resume, hosts=hosts)
        from backdrop.distributed import Dist

        dist = Dist()
    return _train(params, resume, dist)


def _train(params: Params, resume: bool, dist: Dist) -> TrainResult:
    import torch

    from backdrop.distributed import convert_sync_batchnorm, state_digest
    from backdrop.metrics import mask_iou, summarize
    from backdrop.models import build_model
    from backdrop.models.cutout import normalize
    from backdrop.progress import progress
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
    fmt = torch.channels_last if tp.channels_last else torch.contiguous_format
    out = resolve(tp.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    prepared = resolve(params.prepare.out_dir)
    rows = split_rows(params)
    train_x, train_y = load_arrays(prepared, rows["train"])
    crops = load_arrays(prepared, rows["train"], crops=True) if tp.crop_share > 0 else None
    val_x, val_y = load_arrays(prepared, rows["val"])
    train_clusters = np.array([r["cluster"] for r in rows["train"]])
    val_clusters = [r["cluster"] for r in rows["val"]]

    model = build_model(tp.model, init=tp.init)
    parts = fingerprint_parts(params, dist.size, rows, [train_x, train_y, val_x, val_y, *(crops or ())],
                              state_digest(model))
    fingerprint = fingerprint_of(parts)
    freeze_bn = tp.init == "official"  # BN folded into the official weights: keep it fixed
    if dist.size > 1 and not freeze_bn:
        convert_sync_batchnorm(model, dist)

    state = None
    if root:
        if resume:
            state, why = read_checkpoint(out / CHECKPOINT, parts)
            if state is None:
                log.warning("--resume: starting fresh: %s", why)
            else:
                log.info("--resume: %s; continuing with epoch %d", why, state["epoch"] + 1)
        _clear_outputs(out, everything=state is None)
    state = dist.broadcast_object(state)

    per_rank = math.ceil(len(train_x) / dist.size)
    steps_per_epoch = math.ceil(per_rank / tp.batch_size)
    start_epoch, history, best, bad_epochs, run_id, done = 0, [], -1.0, 0, None, False
    hardness = np.full(len(train_x), np.nan)  # last training loss per pair (NaN: not drawn yet)
    if state is not None:
        model.load_state_dict(state["model"])
    dist.broadcast_parameters(model)  # one starting point for every rank (before channels_last)
    model.to(device=device, memory_format=fmt)
    optimizer = torch.optim.AdamW(model.parameters(), lr=tp.lr, weight_decay=tp.weight_decay)
    optimizer = dist.wrap_optimizer(optimizer, model)  # before the scheduler binds to it
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_lambda(tp.epochs * steps_per_epoch, tp.warmup_epochs * steps_per_epoch))
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        random.setstate(state["rng"]["python"])
        np.random.set_state(state["rng"]["numpy"])
        torch.set_rng_state(state["rng"]["torch"])
        start_epoch, history, best, bad_epochs = (state["epoch"], state["history"], state["best"],
                                                  state["bad_epochs"])
        run_id, done = state["run_id"], state["done"]
        hardness = np.asarray(state["sampler"].get("hardness", hardness), dtype=float)
    net = dist.wrap_model(model)  # DDP wrapper, or the model itself

    with contextlib.ExitStack() as stack:
        if root and not done:
            run_id = _start_mlflow(stack, params, run_id, {"world_size": dist.size,
                                                           "n_train": len(train_x), "n_val": len(val_x),
                                                           "fingerprint": fingerprint,
                                                           # what ran: `bf16` falls back to fp32 on CPUs
                                                           # without native bf16 (train.precision)
                                                           "autocast": "bf16" if amp_dtype else "fp32"})
            write_json(out / "run.json", {"run_id": run_id,
                                          "experiment_id": mlflow.active_run().info.experiment_id})
        run_id = dist.broadcast_object(run_id)
        for epoch in range(start_epoch, tp.epochs if not done else start_epoch):
            set_train_mode(model, freeze_bn)
            order = epoch_order(train_clusters, tp.seed, epoch, tp.balanced_sampling,
                                hardness if epoch else None, tp.hard_sampling)
            mine = shard(order, dist.rank, dist.size)
            rng = np.random.default_rng([tp.seed, epoch, dist.rank])
            t0, loss_sum, seen = time.perf_counter(), 0.0, []
            for step in progress(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{tp.epochs}", unit="batch",
                                 enabled=root):
                idx = mine[step * tp.batch_size:(step + 1) * tp.batch_size]
                x, y = augment(*draw_batch(idx, (train_x, train_y), crops, tp.crop_share, rng), tp, rng)
                if epoch < tp.low_res_epochs:
                    x, y = downsample_batch(x, y, tp.low_res_size)
                x = normalize(x).to(device=device, memory_format=fmt)
                y = y.to(device)
                with torch.autocast(device.type, dtype=amp_dtype or torch.bfloat16,
                                    enabled=amp_dtype is not None):
                    outputs = net(x)
                loss = deep_supervision_loss([o.float() for o in outputs], y, tp.iou_loss_weight)
                if tp.hard_sampling:
                    per_pair = soft_iou_loss(outputs[0].detach().float(), y, per_sample=True)  # (B,)
                    seen += [(int(i), float(v)) for i, v in zip(idx, per_pair, strict=True)]
                optimizer.zero_grad()  # set_to_none (the default); Horovod's override takes no argument
                loss.backward()
                optimizer.step()
                scheduler.step()
                loss_sum += float(loss.detach())
            seconds = dist.allreduce([time.perf_counter() - t0], "max")[0]
            train_loss = dist.allreduce([loss_sum / steps_per_epoch], "mean")[0]
            if tp.hard_sampling:
                hardness = update_hardness(hardness, dist.allgather_object(seen))

            mine_val = np.arange(dist.rank, len(val_x), dist.size)
            probs = predict_probs(model, val_x[mine_val])
            part = [(int(i), mask_iou(p > 0.5, val_y[i] > 0.5)) for i, p in zip(mine_val, probs, strict=True)]
            ious = [v for _, v in sorted(pair for chunk in dist.allgather_object(part) for pair in chunk)]
            val = summarize(ious, val_clusters, params.cluster.k)
            metrics = {"train_loss": train_loss, "lr": scheduler.get_last_lr()[0],
                       "images_per_s": len(mine) * dist.size / seconds,
                       **{f"val_{k}": v for k, v in val.items() if k != "n"}}
            candidate = selectable_epoch(epoch, tp)
            history.append({"epoch": epoch + 1, **metrics, "selectable": candidate})
            improved = candidate and val["iou_mean"] > best
            if candidate:
                best, bad_epochs = (val["iou_mean"], 0) if improved else (best, bad_epochs + 1)
            stop = tp.early_stop_patience > 0 and bad_epochs >= tp.early_stop_patience
            done = stop or epoch + 1 == tp.epochs
            if root:
                log.info("epoch %d: loss %.4f val IoU %.4f (%.1f img/s)%s", epoch + 1, train_loss,
                         val["iou_mean"], metrics["images_per_s"],
                         " *" if improved else "" if candidate else " (low-res: not selectable)")
                mlflow.log_metrics(metrics, step=epoch + 1)
                if improved:
                    _save({"state_dict": model.state_dict(), "arch": tp.model, "size": params.prepare.size,
                           "epoch": epoch + 1, "val_iou": best, "crop_share": tp.crop_share}, out / "model.pt")
                if (epoch + 1) % tp.overlay_every == 0 or done:
                    shown = predict_probs(model, val_x[:8])
                    grid = overlay_grid(val_x[:8], val_y[:8], shown, out / f"overlay_epoch{epoch + 1}.png",
                                        titles=[f"{v:.3f}" for v in ious[:8]])
                    mlflow.log_artifact(str(grid), artifact_path="overlays")
                write_json(out / "history.json", history)
                _save({"format": CHECKPOINT_FORMAT, "fingerprint": fingerprint, "fingerprint_parts": parts,
                       "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                       "scheduler": scheduler.state_dict(),
                       "sampler": {"seed": tp.seed, "next_epoch": epoch + 1, "balanced": tp.balanced_sampling,
                                   "world_size": dist.size, "hardness": hardness.tolist()},
                       "rng": {"python": random.getstate(), "numpy": np.random.get_state(),
                               "torch": torch.get_rng_state()},
                       "epoch": epoch + 1, "history": history, "best": best, "bad_epochs": bad_epochs,
                       "done": done, "run_id": run_id}, out / CHECKPOINT)
            if stop:
                log.info("early stop: val IoU has not improved for %d epoch(s)", bad_epochs)
                break

    digests = dist.allgather_object(state_digest(model))
    if len(set(digests)) != 1:
        raise RuntimeError(f"replicas diverged: weight digests per rank {digests}")
    if root:
        write_json(out / "history.json", history)
        write_json(out / "result.json", {
            "best_val_iou": best, "epochs_run": len(history), "model_path": str(out / "model.pt"),
            "run_id": run_id, "world_size": dist.size, "backend": dist.backend,
            "resumed_from_epoch": state["epoch"] if state is not None else None,
            "stopped_early": bool(history) and len(history) < tp.epochs, "fingerprint": fingerprint,
            "replica_digests": digests})
    return TrainResult(best, len(history), out / "model.pt", run_id)


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
