"""The held-out splits at the photos' own size: what the quality benchmarks score.

The evaluate stage scores the prepared arrays (prepare.size); a shop sees the original photo. Both
come from the same split rows (`stages.train.split_rows`); this maps a row through the validated
manifest to its original photo and vendor mask.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class HeldOut:
    rows: list[dict]          # prepared index rows of the split (pair_id, cluster, ...)
    manifest: dict[str, dict]  # pair_id → validated manifest row
    raw_dir: Path

    @property
    def clusters(self) -> list[int]:
        return [int(r["cluster"]) for r in self.rows]

    def load(self, row: dict):
        """(RGB photo, (H,W) bool vendor mask) at the photo's own size."""
        from backdrop.io import mask_channel, open_image

        entry = self.manifest[row["pair_id"]]
        photo = open_image(self.raw_dir / entry["image_path"]).convert("RGB")
        truth = np.asarray(mask_channel(open_image(self.raw_dir / entry["mask_path"]))) > 127
        return photo, truth


def held_out(params, split: str, limit: int = 0) -> HeldOut:
    """The `split` (val / test) rows, the first `limit` of them when limit > 0."""
    from backdrop.config import resolve
    from backdrop.data.splits import split_rows
    from backdrop.io import read_csv

    rows = split_rows(params)[split]
    manifest = {r["pair_id"]: r for r in read_csv(resolve(params.validate_.out_dir) / "manifest.csv")}
    return HeldOut(rows[:limit] if limit else rows, manifest, resolve(params.ingest.raw_dir))
