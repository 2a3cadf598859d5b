"""The prepared splits: index rows per split with their cluster, and their arrays."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from backdrop.config import Params, resolve
from backdrop.io import read_csv

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)


def split_rows(params: Params) -> dict[str, list[dict]]:
    """Prepared index rows per split, each carrying its cluster id."""
    prepared = resolve(params.prepare.out_dir)
    clusters = {r["pair_id"]: int(r["cluster"])
                for r in read_csv(resolve(params.cluster.out_dir) / "assignments.csv")}
    out: dict[str, list[dict]] = {"train": [], "val": [], "test": []}
    for row in read_csv(prepared / "index.csv"):
        out[row["split"]].append({**row, "cluster": clusters.get(row["pair_id"], -1)})
    return out


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
