"""Checkpoints and the fingerprint that decides whether one may be resumed."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from backdrop.config import Params
from backdrop.io import atomic_path

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)


CHECKPOINT = "checkpoint.pt"


CHECKPOINT_FORMAT = 2


# train params that do not change what is learned (a checkpoint stays valid across them)
FINGERPRINT_IGNORES = {"out_dir", "num_threads", "processes", "backend", "device", "overlay_every",
                       "wise_alphas"}  # the blend after training (training.wise) starts from finetuned.pt


_OUTPUTS = ("checkpoint.pt", "model.pt", "history.json", "run.json", "result.json",
            "finetuned.pt", "wise.json", "wise.png")  # the last three: training.wise


# The code that changes what is learned: the loop, sampling, augmentation, losses, the comms/SyncBN
# module and the network. The launcher and this module are left out on purpose (read as files, not
# imported, so this module stays below the loop).
_PACKAGE = Path(__file__).resolve().parents[1]
MATH_SOURCES = ("training/loop.py", "training/sampling.py", "training/augment.py", "training/losses.py",
                "distributed.py", "models/u2net.py", "models/trained.py")  # predict_probs picks the epoch


def _source_digest() -> str:
    h = hashlib.sha256()
    for rel in MATH_SOURCES:
        h.update((_PACKAGE / rel).read_bytes())
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


def save_checkpoint(obj, path: Path) -> None:
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def clear_outputs(out: Path, everything: bool) -> None:
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
