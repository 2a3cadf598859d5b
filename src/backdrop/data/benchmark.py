"""Frozen benchmark sets: photos and vendor masks that never change, scored next to the test split.

A benchmark set is a directory with `index.csv` (columns `id,image,mask,style,part`; `part` is val
or test; image and mask paths relative to the directory; masks 8-bit PNG, foreground > 127). The
gate scores champion and challenger on the same frozen photos every night, so a model that only
fits the newest drop cannot win on easier photos. This module only reads sets; the builder lives
elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

COLUMNS = ("id", "image", "mask", "style", "part")
PARTS = ("val", "test")


class BenchmarkError(ValueError):
    """A benchmark directory that cannot be read: the message names the file and the problem."""


@dataclass
class Benchmark:
    name: str            # the directory's name: how its photos are labelled in reports
    root: Path
    rows: list[dict]     # index rows of the requested part (id, image, mask, style, part)

    @property
    def styles(self) -> list[str]:
        return [r["style"] for r in self.rows]

    def load(self, row: dict):
        """(RGB photo, (H,W) bool mask) at the photo's own size, as `data.heldout.HeldOut.load`."""
        from backdrop.io import mask_channel, open_image

        photo = open_image(self.root / row["image"]).convert("RGB")
        truth = np.asarray(mask_channel(open_image(self.root / row["mask"]))) > 127
        if truth.shape != (photo.height, photo.width):
            raise BenchmarkError(f"{self.root / row['mask']}: mask is {truth.shape[1]}×{truth.shape[0]}, "
                                 f"photo {row['image']} is {photo.width}×{photo.height}")
        return photo, truth


def load_benchmark(directory: str | Path, part: str = "test") -> Benchmark:
    """The rows of one part (val | test) of the benchmark set in `directory`, checked."""
    import csv

    root = Path(directory)
    if part not in PARTS:
        raise ValueError(f"part {part!r} is not one of {PARTS}")
    index = root / "index.csv"
    if not index.is_file():
        raise BenchmarkError(f"{index}: no benchmark index (expected columns {','.join(COLUMNS)})")
    with index.open(newline="") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise BenchmarkError(f"{index}: missing column(s) {', '.join(missing)}")
        rows = list(reader)
    seen: set[str] = set()
    for line, row in enumerate(rows, start=2):
        if row["part"] not in PARTS:
            raise BenchmarkError(f"{index}:{line}: part {row['part']!r} is not val or test")
        if row["id"] in seen:
            raise BenchmarkError(f"{index}:{line}: id {row['id']!r} appears twice")
        seen.add(row["id"])
        for col in ("image", "mask"):
            rel = Path(row[col])
            if rel.is_absolute() or ".." in rel.parts:
                raise BenchmarkError(f"{index}:{line}: {col} {row[col]!r} must be relative, inside the set")
            if not (root / rel).is_file():
                raise BenchmarkError(f"{index}:{line}: {col} file {root / rel} does not exist")
    chosen = [r for r in rows if r["part"] == part]
    if not chosen:
        raise BenchmarkError(f"{index}: no rows with part={part}")
    return Benchmark(root.name, root, chosen)


def benchmark_arrays(directories, part: str, size: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Every photo of `part` in the benchmark sets at the network's square input, as the prepare stage
    makes training pairs (LANCZOS photo, area-averaged mask): photos (N,size,size,3) uint8, masks
    (N,size,size) float in [0,1], and each photo's group `<set>/<style>`. For model selection in the
    training loop (`train.select_benchmarks`), which scores at the training size, not the served path."""
    from PIL import Image

    from backdrop.io import resize_pair

    photos, masks, groups = [], [], []
    for directory in directories:
        bench = load_benchmark(directory, part)
        for row in bench.rows:
            photo, truth = bench.load(row)
            photo, mask = resize_pair(photo, Image.fromarray(truth.astype(np.uint8) * 255), size)
            photos.append(np.asarray(photo))
            masks.append(np.asarray(mask, dtype=np.float32) / 255.0)
            groups.append(f"{bench.name}/{row['style']}")
    if not photos:
        return np.zeros((0, size, size, 3), np.uint8), np.zeros((0, size, size), np.float32), []
    return np.stack(photos), np.stack(masks), groups
