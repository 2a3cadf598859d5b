"""Which pairs each rank trains on, epoch by epoch: a pure function of (seed, epoch, losses so far)."""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)


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


def draw_batch(idx: np.ndarray, frames: tuple[np.ndarray, np.ndarray],
               crops: tuple[np.ndarray, np.ndarray] | None, share: float, rng: np.random.Generator):
    """The batch's photos/masks: each sample is its object crop with probability `share`."""
    x, y = frames[0][idx], frames[1][idx]
    if crops is None or share <= 0:
        return x, y
    use = rng.random(len(idx)) < share  # (B,)
    x[use], y[use] = crops[0][idx[use]], crops[1][idx[use]]
    return x, y
