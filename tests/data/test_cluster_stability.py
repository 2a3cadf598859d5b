"""Cluster ids stay put when the data grows: 100 real synth packshots, then 10 % more, full stage chain."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from backdrop.config import ClusterParams, PrepareParams
from backdrop.data.clusters import assign
from backdrop.data.synth import synthesize
from backdrop.stages.cluster import cluster, match_ids
from backdrop.stages.ingest import ingest
from backdrop.stages.prepare import prepare
from backdrop.stages.validate import validate
from tests.data.conftest import make_stage

FIRST, GROWN = 100, 110
SMALL = {"min_side": 300, "max_side": 420}


def _assignments(root: Path) -> dict[str, int]:
    with open(root / "data/clusters/assignments.csv", newline="") as fh:
        return {r["pair_id"]: int(r["cluster"]) for r in csv.DictReader(fh)}


@pytest.fixture(scope="module")
def grown(tmp_path_factory):
    root = tmp_path_factory.mktemp("stability")
    cp = ClusterParams(k=6, pca_components=16, feature_size=32, seed=0,
                       overrides=Path("data/cluster_overrides.csv"), out_dir=Path("data/clusters"))
    pp = PrepareParams(size=64, val_share=0.15, test_share=0.15, seed=13, out_dir=Path("data/prepared"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BACKDROP_PROJECT_DIR", str(root))
        stage = make_stage(root)

        def run_chain(n: int) -> dict[str, int]:
            synthesize(root / "drop", n, 21, progress=False, **SMALL)  # n=110 extends n=100
            ingest(stage.ingest)
            validate(stage.validate, stage.ingest)
            prepare(pp, stage.validate, stage.ingest)
            cluster(cp, pp)
            return _assignments(root)

        first = run_chain(FIRST)
        model_bytes = (root / "data/clusters/model.joblib").read_bytes()
        rerun = run_chain(FIRST)
        after = run_chain(GROWN)
        summary = json.loads((root / "data/clusters/summary.json").read_text())
    return {"root": root, "first": first, "rerun": rerun, "after": after, "summary": summary,
            "model_bytes": model_bytes}


def test_rerun_on_the_same_data_gives_the_same_ids(grown):
    assert len(grown["first"]) >= 0.9 * FIRST  # validate let (nearly) all packshots through
    assert grown["rerun"] == grown["first"]
    assert len(set(grown["first"].values())) == 6  # all six clusters are used


def test_adding_ten_percent_keeps_at_least_95_percent_of_old_assignments(grown):
    first, after = grown["first"], grown["after"]
    assert set(first) < set(after) and len(after) - len(first) >= 0.08 * len(first)  # ~10 % new pairs
    kept = sum(after[pid] == cid for pid, cid in first.items()) / len(first)
    print(f"kept {kept:.1%} of {len(first)} assignments after adding {len(after) - len(first)} pairs")
    assert kept >= 0.95
    stability = grown["summary"]["stability"]  # the stage reports the same figure itself
    assert stability["previous_model"] is True and stability["compared_pairs"] == len(first)
    assert stability["kept_share"] == pytest.approx(kept)


def test_saved_model_assigns_like_the_stage(grown):
    from PIL import Image

    prepared = grown["root"] / "data/prepared"
    model = grown["root"] / "data/clusters/model.joblib"
    for pid, cid in list(grown["after"].items())[:8]:
        with Image.open(prepared / "images" / f"{pid}.png") as p, Image.open(prepared / "masks" / f"{pid}.png") as m:
            assert assign(model, p, m)[0] == cid


def test_hungarian_matching_recovers_permuted_centroids():
    rng = np.random.default_rng(0)
    previous = rng.normal(size=(6, 40))
    perm = rng.permutation(6)
    moved = previous[perm] + rng.normal(scale=0.05, size=(6, 40))  # new fit: shuffled labels, moved a bit
    mapping = match_ids(previous, moved)
    assert mapping == {j: int(perm[j]) for j in range(6)}  # new label j was previous cluster perm[j]
