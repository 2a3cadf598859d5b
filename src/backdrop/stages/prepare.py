"""prepare: validated pairs → fixed-size training tensors on disk and a train/val/test split.

Photos are resized to `prepare.size`² (the network's input). Masks are area-averaged: with
`prepare.soft_masks` each edge pixel keeps its foreground share (0..255), so the network learns where
an edge lies inside a pixel and its upsampled output is sharp at the photo's own size; otherwise they
are re-binarised at 50 %.
With `prepare.object_crops` each pair is also cut to its mask's box (`backdrop.zoom.object_box`,
`prepare.crop_margin`) and resized the same way, into crops/: the view serving's zoom pass gives
the network, so training can draw it (`train.crop_share`).
The split is a hash of (seed, pair_id), so adding pairs never moves old pairs between splits.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

from backdrop.config import IngestParams, PrepareParams, ValidateParams, resolve
from backdrop.io import mask_channel, open_image, read_csv, resize_pair, write_csv

log = logging.getLogger(__name__)

INDEX_FIELDS = ["pair_id", "split", "image", "mask", "orig_width", "orig_height", "crop_image", "crop_mask",
                "crop_box"]


@dataclass(frozen=True)
class PrepareResult:
    counts: dict[str, int]
    index: Path


def split_of(pair_id: str, seed: int, val_share: float, test_share: float) -> str:
    """Deterministic, order-independent split assignment."""
    u = int(hashlib.sha256(f"{seed}:{pair_id}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    if u < test_share:
        return "test"
    if u < test_share + val_share:
        return "val"
    return "train"


def write_crop(image, mask, params: PrepareParams, out: Path, name: str) -> dict[str, str]:
    """The pair cut to its mask's box (as serving's zoom pass cuts a photo) at size², in crops/."""
    import numpy as np

    from backdrop.zoom import object_box

    box = object_box(np.asarray(mask), params.crop_margin) or (0, 0, image.width, image.height)
    photo, target = resize_pair(image.crop(box), mask.crop(box), params.size, params.soft_masks)
    photo.save(out / "crops" / "images" / f"{name}.png")
    target.save(out / "crops" / "masks" / f"{name}.png")
    return {"crop_image": f"crops/images/{name}.png", "crop_mask": f"crops/masks/{name}.png",
            "crop_box": " ".join(map(str, box))}




def prepare(params: PrepareParams, validate_params: ValidateParams,
            ingest_params: IngestParams) -> PrepareResult:
    from backdrop.progress import progress

    raw = resolve(ingest_params.raw_dir)
    rows = read_csv(resolve(validate_params.out_dir) / "manifest.csv")
    if not rows:
        raise FileNotFoundError("no validated pairs: run `backdrop validate` first")
    out = resolve(params.out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    if params.object_crops:
        (out / "crops" / "images").mkdir(parents=True, exist_ok=True)
        (out / "crops" / "masks").mkdir(parents=True, exist_ok=True)
    index, counts = [], {"train": 0, "val": 0, "test": 0}
    for row in progress(rows, desc=f"prepare {params.size}px", unit="pair"):
        # the one decoder validate used: upright, 16-bit scaled (not clipped), the mask by validate's rule
        image = open_image(raw / row["image_path"], max_pixels=validate_params.max_pixels, mode="RGB")
        mask = mask_channel(open_image(raw / row["mask_path"], max_pixels=validate_params.max_pixels))
        photo, target = resize_pair(image, mask, params.size, params.soft_masks)
        name = row["pair_id"]
        photo.save(out / "images" / f"{name}.png")
        target.save(out / "masks" / f"{name}.png")
        split = split_of(name, params.seed, params.val_share, params.test_share)
        counts[split] += 1
        row_out = {"pair_id": name, "split": split, "image": f"images/{name}.png",
                   "mask": f"masks/{name}.png", "orig_width": image.width,
                   "orig_height": image.height, "crop_image": "", "crop_mask": "", "crop_box": ""}
        if params.object_crops:
            row_out.update(write_crop(image, mask, params, out, name))
        index.append(row_out)
    if min(counts.values()) == 0:
        raise ValueError(f"split {counts} leaves a split empty: add pairs or change shares")
    write_csv(out / "index.csv", index, INDEX_FIELDS)
    log.info("prepare: %s", counts)
    return PrepareResult(counts, out / "index.csv")


def load_split(prepared_dir: Path, split: str | None = None) -> list[dict[str, str]]:
    rows = read_csv(prepared_dir / "index.csv")
    return [r for r in rows if split is None or r["split"] == split]
