"""`backdrop data fashion-mnist`: real Zalando products from the Debian package, as a vendor drop.

Reads the real idx files of `dataset-fashion-mnist` (installed by scripts/install.sh).
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image, ImageFilter
from typer.testing import CliRunner

from backdrop.cli import app
from backdrop.data.fashion_mnist import (
    CLASSES,
    THRESHOLD,
    idx_path,
    load_split,
    read_idx,
    render_drop,
    select,
)
from backdrop.stages.ingest import DropRefused, ingest
from backdrop.stages.validate import validate

SMALL = {"min_side": 256, "max_side": 320}


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_idx_files_read_gzipped_or_plain_and_match_the_published_dataset(source, tmp_path):
    labels_gz = idx_path(source, "train", "labels")
    labels = read_idx(labels_gz)
    assert labels.shape == (60000,) and np.bincount(labels).tolist() == [6000] * 10  # balanced classes
    images = read_idx(idx_path(source, "test", "images"))
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    assert images[:, 0, 0].max() < 60 and images.mean() > 50  # dark border, bright (negated) products
    plain = tmp_path / "train-labels-idx1-ubyte"
    plain.write_bytes(gzip.decompress(labels_gz.read_bytes()) if labels_gz.suffix == ".gz"
                      else labels_gz.read_bytes())
    assert np.array_equal(read_idx(plain), labels)
    assert idx_path(tmp_path, "train", "labels") == plain  # a folder with unzipped files works too
    bad = tmp_path / "bad"
    bad.write_bytes(plain.read_bytes()[:-3])
    with pytest.raises(ValueError, match="header says"):
        read_idx(bad)
    with pytest.raises(ValueError, match="split must be"):
        idx_path(source, "validation", "labels")


def test_selection_is_seeded_and_a_larger_n_extends_a_smaller_one():
    a, b = select(60000, 50, 3), select(60000, 80, 3)
    assert np.array_equal(a, b[:50]) and len(set(b.tolist())) == 80
    assert not np.array_equal(a, select(60000, 50, 4)[:50])


@pytest.fixture(scope="module")
def train_drop(tmp_path_factory, source):
    out = tmp_path_factory.mktemp("fmnist") / "drop"
    items = render_drop(out, "train", 24, 5, progress=False, source_dir=source, **SMALL)
    return out, items


def test_train_drop_is_a_vendor_drop_with_exact_masks_of_the_real_products(train_drop, source):
    out, items = train_drop
    images, labels, _ = load_split("train", source)
    assert len(items) == 24 and len({it.stem for it in items}) == 24
    rows = _rows(out / "labels.csv")
    assert [r["stem"] for r in rows] == [it.stem for it in items]
    assert sorted(p.name for p in out.iterdir()) == ["drop.json", "images", "labels.csv", "masks"]
    for it in items:
        assert it.split == "train" and it.class_name == CLASSES[labels[it.source_index]]
        with Image.open(out / "images" / f"{it.stem}.jpg") as photo, \
                Image.open(out / "masks" / f"{it.stem}.png") as mask_img:
            assert photo.format == "JPEG" and photo.size == mask_img.size == (it.width, it.height)
            assert min(photo.size) >= SMALL["min_side"] and mask_img.mode == "L"
            mask = np.asarray(mask_img)
            rgb = np.asarray(photo.convert("RGB"), np.float32)
        assert set(np.unique(mask).tolist()) == {0, 255}  # exactly binary, never empty
        square = np.zeros_like(mask, bool)
        square[it.y0:it.y0 + it.side, it.x0:it.x0 + it.side] = True
        assert not mask[~square].any()  # nothing outside the product's square
        # the mask is the real product's silhouette: back at 28x28 it matches the idx pixels
        crop = Image.fromarray(mask[square].reshape(it.side, it.side)).resize((28, 28), Image.Resampling.BOX)
        ours, theirs = np.asarray(crop) > 127, images[it.source_index] > THRESHOLD * 255
        assert (ours & theirs).sum() / (ours | theirs).sum() > 0.85, it.stem
        # and the product is where the mask says: away from the edge, product and studio differ
        if it.style != "white_on_white":
            inner = np.asarray(Image.fromarray(mask).filter(ImageFilter.MinFilter(9))) > 0
            outer = np.asarray(Image.fromarray(mask).filter(ImageFilter.MaxFilter(9))) == 0
            gap = np.abs(rgb[inner].mean(0) - np.median(rgb[outer & square], 0)).max()
            assert gap > 8, (it.stem, gap)
    desc = json.loads((out / "drop.json").read_text())
    assert desc["training"] is True and desc["split"] == "train" and desc["metadata"] == ["labels.csv"]
    for name, digest in desc["idx_sha256"].items():  # provenance: the exact source files
        assert hashlib.sha256((source / name).read_bytes()).hexdigest() == digest


def test_rendering_is_deterministic(train_drop, tmp_path, source):
    out, items = train_drop
    again = render_drop(tmp_path, "train", 6, 5, progress=False, source_dir=source, **SMALL)
    assert again == items[:6]
    for it in again:
        for rel in (f"images/{it.stem}.jpg", f"masks/{it.stem}.png"):
            assert (tmp_path / rel).read_bytes() == (out / rel).read_bytes()


def test_train_drop_ingests_and_validates_clean(train_drop, project):
    from tests.data.conftest import make_stage

    out, items = train_drop
    stage = make_stage(project)
    result = ingest(stage.ingest, out)
    assert (result.added, result.orphans) == (len(items), [])
    assert sorted(result.metadata) == ["drop.json", "labels.csv"]
    checked = validate(stage.validate, stage.ingest)
    assert (checked.good, checked.quarantined) == (len(items), 0)  # binary, sized, no near duplicates


def test_test_split_is_evaluation_only(tmp_path, source, project):
    from tests.data.conftest import make_stage

    training_drop = tmp_path / "data" / "drop"
    with pytest.raises(ValueError, match="evaluation only"):
        render_drop(training_drop / "sub", "test", 3, 1, progress=False, source_dir=source,
                    training_drop=training_drop, **SMALL)
    assert not training_drop.exists()
    eval_dir = tmp_path / "eval"
    items = render_drop(eval_dir, "test", 3, 1, progress=False, source_dir=source,
                        training_drop=training_drop, **SMALL)
    assert [it.split for it in items] == ["test"] * 3 and items[0].stem.startswith("fmnist-test-")
    assert json.loads((eval_dir / "drop.json").read_text())["training"] is False
    stage = make_stage(project)
    with pytest.raises(DropRefused, match="split=test"):  # ingest will not put it in the training store
        ingest(stage.ingest, eval_dir)


def test_cli_writes_train_to_the_drop_and_refuses_test_there(tmp_path, source, monkeypatch):
    monkeypatch.setenv("BACKDROP_PROJECT_DIR", str(tmp_path))
    params = yaml.safe_load((Path(__file__).resolve().parents[2] / "params.yaml").read_text())
    params["fashion_mnist"].update({"source_dir": str(source), **SMALL})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    runner = CliRunner()
    opts = ["--params", str(tmp_path / "params.yaml")]

    ok = runner.invoke(app, ["data", "fashion-mnist", "--split", "train", "--n", "3", *opts])
    assert ok.exit_code == 0, ok.output
    assert len(list((tmp_path / "data/drop/images").glob("fmnist-train-*.jpg"))) == 3

    refused = runner.invoke(app, ["data", "fashion-mnist", "--split", "test", "--n", "2",
                                  "--out", str(tmp_path / "data/drop"), *opts])
    assert refused.exit_code == 2 and not list((tmp_path / "data/drop/images").glob("fmnist-test-*"))

    test = runner.invoke(app, ["data", "fashion-mnist", "--split", "test", "--n", "2", *opts])
    assert test.exit_code == 0 and "evaluation only" in test.output
    assert len(list((tmp_path / "data/eval/fashion-mnist-test/images").glob("fmnist-test-*.jpg"))) == 2
