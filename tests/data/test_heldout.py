"""The held-out photos the quality benchmarks score: each split row at its original size."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.slow  # project_cwd: the session's end-to-end pipeline run (airflow dags test)


def test_held_out_rows_load_the_original_photo_and_vendor_mask(project_cwd):
    from backdrop.config import load_params, resolve
    from backdrop.data.heldout import held_out
    from backdrop.data.splits import split_rows
    from backdrop.io import read_csv

    params = load_params()
    splits = split_rows(params)
    manifest = {r["pair_id"]: r for r in read_csv(resolve(params.validate_.out_dir) / "manifest.csv")}
    for split in ("val", "test"):
        pairs = held_out(params, split)
        assert [r["pair_id"] for r in pairs.rows] == [r["pair_id"] for r in splits[split]] and pairs.rows
        assert all(0 <= c < params.cluster.k for c in pairs.clusters)
        row = pairs.rows[0]
        photo, truth = pairs.load(row)
        entry = manifest[row["pair_id"]]
        original = Image.open(resolve(params.ingest.raw_dir) / entry["image_path"])
        assert photo.mode == "RGB" and photo.size == original.size  # not the prepared 320² copy
        vendor = np.asarray(Image.open(resolve(params.ingest.raw_dir) / entry["mask_path"]).convert("L")) > 127
        assert truth.shape == (photo.height, photo.width) and np.array_equal(truth, vendor)
    assert len(held_out(params, "test", limit=1).rows) == 1
