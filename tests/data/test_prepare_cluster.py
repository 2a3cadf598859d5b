"""prepare + cluster on real ingested/validated packshots: fixed sizes, stable splits, stable clusters."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from backdrop.config import ClusterParams, PrepareParams
from backdrop.data.clusters import assign
from backdrop.stages.cluster import cluster
from backdrop.stages.ingest import ingest
from backdrop.stages.prepare import prepare, split_of
from backdrop.stages.validate import validate
from tests.data.conftest import Stage, make_stage, write_tree_drop

FIRST, LATER = range(24), range(24, 32)
SIZE = 64


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@dataclass
class Prepared:
    stage: Stage
    prepare: PrepareParams
    first_index: list[dict[str, str]]
    index: list[dict[str, str]]
    counts: dict[str, int]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, synth) -> Prepared:
    """24 pairs ingested, validated and prepared; then 8 more pairs arrive and everything reruns."""
    root = tmp_path_factory.mktemp("prepare")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BACKDROP_PROJECT_DIR", str(root))
        stage = make_stage(root)
        params = PrepareParams(size=SIZE, val_share=0.2, test_share=0.2, seed=13, out_dir=Path("data/prepared"))
        write_tree_drop(root / "drop", synth, FIRST)
        ingest(stage.ingest)
        validate(stage.validate, stage.ingest)
        prepare(params, stage.validate, stage.ingest)
        first_index = _rows(root / "data/prepared/index.csv")
        write_tree_drop(root / "drop2", synth, LATER)
        ingest(stage.ingest, root / "drop2")
        validate(stage.validate, stage.ingest)
        result = prepare(params, stage.validate, stage.ingest)
    return Prepared(stage, params, first_index, _rows(result.index), result.counts)


def test_prepare_writes_fixed_size_photos_and_soft_edged_masks(prepared):
    out = prepared.stage.root / "data/prepared"
    assert len(prepared.index) == len(FIRST) + len(LATER)
    for row in prepared.index:
        with Image.open(out / row["image"]) as photo, Image.open(out / row["mask"]) as mask:
            assert photo.size == mask.size == (SIZE, SIZE)
            assert photo.mode == "RGB" and mask.mode == "L"
            values = np.asarray(mask)
        assert (values == 255).any() and (values == 0).any(), row["pair_id"]  # not empty, not full
        grey = (values > 0) & (values < 255)
        # soft masks: only edge pixels are partial (their foreground share), and some are
        assert 0 < grey.mean() < 0.1, row["pair_id"]
        assert int(row["orig_width"]) >= 300 and int(row["orig_height"]) >= 300  # the originals' size


def test_object_crops_cut_each_pair_to_its_mask_box(prepared):
    """crops/ holds the view serving's zoom pass gives the network: the pair cut to its mask's box
    (widened by crop_margin), resized like the whole frame."""
    from backdrop.io import mask_channel, read_csv
    from backdrop.zoom import object_box

    root, out = prepared.stage.root, prepared.stage.root / "data/prepared"
    raw = root / prepared.stage.ingest.raw_dir
    manifest = {r["pair_id"]: r for r in read_csv(root / prepared.stage.validate.out_dir / "manifest.csv")}
    zoomed_in = 0
    for row in prepared.index:
        with Image.open(raw / manifest[row["pair_id"]]["mask_path"]) as m:
            vendor = np.asarray(mask_channel(m))
        box = tuple(map(int, row["crop_box"].split()))
        assert box == object_box(vendor, prepared.prepare.crop_margin)
        outside = vendor.copy()
        outside[box[1]:box[3], box[0]:box[2]] = 0
        assert not (outside > 127).any(), row["pair_id"]  # the whole product is inside the crop
        with Image.open(out / row["crop_image"]) as photo, Image.open(out / row["crop_mask"]) as mask:
            assert photo.size == mask.size == (SIZE, SIZE) and photo.mode == "RGB"
            crop_fg = (np.asarray(mask) > 127).mean()
        with Image.open(out / row["mask"]) as mask:
            frame_fg = (np.asarray(mask) > 127).mean()
        assert crop_fg >= frame_fg - 0.02, row["pair_id"]
        zoomed_in += crop_fg > frame_fg + 0.05
    assert zoomed_in >= len(prepared.index) // 2  # most products fill more of their crop than of the frame


def test_split_is_deterministic_and_old_pairs_do_not_move(prepared):
    before = {r["pair_id"]: r["split"] for r in prepared.first_index}
    after = {r["pair_id"]: r["split"] for r in prepared.index}
    assert set(before) < set(after)
    assert {pid: after[pid] for pid in before} == before  # adding 8 pairs moved no old pair
    p = prepared.prepare
    for pid, split in after.items():  # a pure function of (seed, pair_id): order does not matter
        assert split_of(pid, p.seed, p.val_share, p.test_share) == split
    assert sum(prepared.counts.values()) == len(after) and min(prepared.counts.values()) > 0
    reseeded = {pid: split_of(pid, p.seed + 1, p.val_share, p.test_share) for pid in after}
    assert reseeded != after  # the seed matters


@pytest.fixture(scope="module")
def clustered(prepared):
    root = prepared.stage.root
    params = ClusterParams(k=3, pca_components=4, feature_size=16, seed=0,
                           overrides=Path("data/cluster_overrides.csv"), out_dir=Path("data/clusters"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BACKDROP_PROJECT_DIR", str(root))
        first = cluster(params, prepared.prepare)
        first_rows = _rows(first.assignments)
        rerun = cluster(params, prepared.prepare)
        rerun_rows = _rows(rerun.assignments)
        # a curator moves one pair to another cluster
        moved = first_rows[0]["pair_id"]
        target = (int(first_rows[0]["cluster"]) + 1) % params.k
        (root / "data/cluster_overrides.csv").write_text(f"pair_id,cluster,note\n{moved},{target},curated\n")
        overridden = cluster(params, prepared.prepare)
        overridden_rows = _rows(overridden.assignments)
    return {"params": params, "first": first, "first_rows": first_rows, "rerun_rows": rerun_rows,
            "moved": moved, "target": target, "overridden_rows": overridden_rows,
            "model": root / "data/clusters/model.joblib", "root": root}


def test_cluster_ids_are_the_same_on_a_rerun(clustered, prepared):
    rows = clustered["first_rows"]
    assert [r["pair_id"] for r in rows] == [r["pair_id"] for r in prepared.index]
    assert {int(r["cluster"]) for r in rows} <= set(range(clustered["params"].k))
    assert clustered["rerun_rows"] == rows
    assert sum(clustered["first"].sizes.values()) == len(rows)
    assert all(r["overridden"] == "False" for r in rows)


def test_manual_override_from_csv_is_applied(clustered):
    before = {r["pair_id"]: r for r in clustered["first_rows"]}
    after = {r["pair_id"]: r for r in clustered["overridden_rows"]}
    moved = after[clustered["moved"]]
    assert int(moved["cluster"]) == clustered["target"] != int(before[clustered["moved"]]["cluster"])
    assert moved["overridden"] == "True"
    others = {pid: r["cluster"] for pid, r in after.items() if pid != clustered["moved"]}
    assert others == {pid: r["cluster"] for pid, r in before.items() if pid != clustered["moved"]}


def test_assign_gives_a_cluster_for_a_new_image(clustered, prepared, synth):
    names = {int(k): v for k, v in clustered["first"].names.items()}
    photo, mask = synth.photo(40), synth.mask(40)  # never ingested
    cid, name = assign(clustered["model"], photo.resize((SIZE, SIZE)), mask.resize((SIZE, SIZE)))
    assert 0 <= cid < clustered["params"].k and name == names[cid]
    # an image cluster() has seen gets the cluster cluster() gave it
    out = clustered["root"] / "data/prepared"
    for row in clustered["first_rows"][:6]:
        with Image.open(out / "images" / f"{row['pair_id']}.png") as p, \
                Image.open(out / "masks" / f"{row['pair_id']}.png") as m:
            assert assign(clustered["model"], p, m)[0] == int(row["cluster"])


def test_resize_pair_keeps_edge_coverage_or_rebinarises():
    """A 3-px-wide box in a 12-px mask, shrunk 4×, covers 3/4 of one target column: soft masks keep
    that share (191), binary ones round it up; the photo is resized the same way either way."""
    from backdrop.io import resize_pair

    mask = np.zeros((12, 12), np.uint8)
    mask[:, 1:4] = 255
    photo = Image.new("RGB", (12, 12), "white")
    _, soft = resize_pair(photo, Image.fromarray(mask), 3)
    _, hard = resize_pair(photo, Image.fromarray(mask), 3, soft=False)
    assert np.asarray(soft)[:, 0].tolist() == [191, 191, 191]
    assert np.asarray(hard)[:, 0].tolist() == [255, 255, 255]
    assert np.asarray(soft)[:, 1:].max() == 0 and np.asarray(hard)[:, 1:].max() == 0


def test_cluster_names_are_unique_even_when_descriptions_repeat(clustered):
    from backdrop.stages.cluster import unique_names

    names = unique_names({0: "tall slim, mid-tone", 1: "tall slim, mid-tone", 2: "wide full, dark",
                          3: "square slim, light", 4: "square slim, light"},
                         {0: 0.18, 1: 0.26, 2: 0.5, 3: 0.2, 4: 0.2})
    assert names == {0: "tall slim, mid-tone, 18% of frame", 1: "tall slim, mid-tone, 26% of frame",
                     2: "wide full, dark", 3: "square slim, light, 20% of frame (c3)",
                     4: "square slim, light, 20% of frame (c4)"}
    assert len(set(clustered["first"].names.values())) == len(clustered["first"].names)  # the stage's own
