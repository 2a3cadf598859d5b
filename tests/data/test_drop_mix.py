"""Breadth in the training drop (issue 19): broad variety per seed, classic bytes unchanged, the mix.

The classic digests below were computed with the renderers as they were before `variety` existed:
the demo and every existing drop rely on those bytes.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from backdrop.cli import app
from backdrop.config import FashionMnistParams, SynthParams
from backdrop.data.drop_mix import split_counts, write_mix
from backdrop.data.fashion_mnist import render_product
from backdrop.data.synth import render_item
from backdrop.data.synth.variety import (
    BACKGROUNDS,
    EXTRAS,
    FRAMINGS,
    LIGHTS,
    SCENE_SHARE,
    STRAPS_SHARE,
    add_household,
    cut_strap_gaps,
    draw_look,
    tabletop,
)
from backdrop.stages.ingest import ingest
from backdrop.stages.validate import validate

TINY = {"min_side": 256, "max_side": 320}
_YY, _XX = np.mgrid[:28, :28]
ELLIPSE = ((((_XX - 14) / 7) ** 2 + ((_YY - 14) / 10) ** 2) < 1).astype(np.uint8) * 200


def _digest(photo, mask) -> str:
    return hashlib.sha256(photo.tobytes() + mask.tobytes()).hexdigest()[:16]


def _files(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


# ----------------------------------------------------------------------------------- renderers

def test_classic_variety_keeps_the_bytes_of_before():
    synth = [_digest(*render_item(7, i, min_side=160, max_side=240)[:2]) for i in range(3)]
    assert synth == ["e02ca0d5c98780e8", "842ea6e0559332d9", "2af3368b1b7fd4a5"]
    assert synth[0] == _digest(*render_item(7, 0, min_side=160, max_side=240, variety="classic")[:2])
    fm = [_digest(*render_product(ELLIPSE, 3, "train", 100 + i, 11, min_side=128, max_side=160)[:2])
          for i in range(2)]
    assert fm == ["b9ea260b0885d017", "3945de3c3d80aa0f"]
    assert SynthParams().variety == FashionMnistParams().variety == "classic"


@pytest.mark.parametrize("render", ["synth", "fashion_mnist"])
def test_broad_renderers_are_deterministic_per_seed(render):
    def one(seed: int, index: int):
        if render == "synth":
            photo, mask, _ = render_item(seed, index, variety="broad", **TINY)
        else:
            photo, mask, _ = render_product(ELLIPSE, 3, "train", index, seed, variety="broad", **TINY)
        return _digest(photo, mask), photo, mask

    first = [one(5, i) for i in range(4)]
    assert [d for d, *_ in first] == [one(5, i)[0] for i in range(4)]  # same seed → same bytes
    assert len({d for d, *_ in first}) == 4                          # items differ
    assert {d for d, *_ in first}.isdisjoint(one(6, i)[0] for i in range(4))  # another seed differs
    classic = render_item(5, 0, **TINY) if render == "synth" else render_product(ELLIPSE, 3, "train", 0, 5, **TINY)
    assert _digest(*classic[:2]) != first[0][0]                      # broad is not the classic look
    for _, photo, mask in first:
        m = np.asarray(mask)
        assert mask.size == photo.size and set(np.unique(m)) <= {0, 255} and 0.01 < (m > 0).mean() < 0.95


def test_broad_looks_cover_every_studio_light_framing_camera_and_extra():
    looks = [draw_look(3, i) for i in range(300)]
    assert {lk.background for lk in looks} == set(BACKGROUNDS)
    assert {lk.light for lk in looks} == set(LIGHTS)
    assert {lk.framing for lk in looks} == set(FRAMINGS)
    assert {e for lk in looks for e in lk.extras} == set(EXTRAS)
    assert {lk.subsampling for lk in looks} == {0, 1, 2}
    assert {lk.blur for lk in looks} == {"none", "defocus", "motion"}
    qualities = [lk.jpeg_quality for lk in looks]
    assert 60 <= min(qualities) <= 65 and 93 <= max(qualities) <= 98
    assert any(lk.perspective for lk in looks) and any(lk.rescale < 1 for lk in looks)
    assert {lk.clutter for lk in looks} == {0, 1, 2, 3, 4}  # distractors that are background
    assert draw_look(3, 7) == looks[7]


def test_a_share_of_the_looks_are_tabletop_scenes_with_room_for_their_objects(monkeypatch):
    from dataclasses import replace

    from backdrop.data.synth import variety

    looks = [draw_look(3, i) for i in range(2000)]
    scenes = [lk for lk in looks if lk.household]
    assert abs(len(scenes) / len(looks) - SCENE_SHARE) < 0.03
    assert {lk.household for lk in scenes} == {2, 3, 4, 5, 6}
    assert {lk.framing for lk in scenes} <= {"small", "off_centre"}  # never a product that fills the frame
    # scenes draw from their own generator: without them every other field is drawn as before
    monkeypatch.setattr(variety, "SCENE_SHARE", 0.0)
    without = [draw_look(3, i) for i in range(2000)]
    assert all(w.household == 0 for w in without)
    assert all(replace(lk, framing=w.framing, household=0) == w for lk, w in zip(looks, without, strict=True))
    assert all(lk == w for lk, w in zip(looks, without, strict=True) if not lk.household)


def test_household_objects_are_drawn_on_the_table_and_stay_off_most_of_the_product():
    from dataclasses import replace

    height, width = 240, 320
    coverage = np.zeros((height, width), np.float32)
    coverage[80:160, 120:200] = 1.0
    table = tabletop(np.random.default_rng(1), width, height)
    assert table.shape == (height, width, 3) and table.std() > 1  # a textured, lit table, not a flat fill
    look = replace(draw_look(3, 0), household=5)
    out = add_household(np.random.default_rng(2), look, table, coverage)
    again = add_household(np.random.default_rng(2), look, table, coverage)
    assert np.array_equal(out, again)                       # deterministic per generator
    changed = np.abs(out - table).max(axis=2) > 8
    assert changed[coverage == 0].mean() > 0.02             # objects and their shadows on the table
    assert changed[coverage > 0].mean() < 0.5               # most of the product's place stays clear
    assert add_household(np.random.default_rng(2), replace(look, household=0), table, coverage) is table


@pytest.mark.parametrize("render", ["synth", "fashion_mnist"])
def test_a_scene_item_masks_only_the_product(render):
    """A tabletop item's mask is its product alone: the objects around it are background, so the
    mask of the scene item covers no more than the product's share of a normal shot."""
    i = next(i for i in range(200) if draw_look(5, i).household >= 4)
    if render == "synth":
        photo, mask, _ = render_item(5, i, variety="broad", **TINY)
    else:
        photo, mask, _ = render_product(ELLIPSE, 3, "train", i, 5, variety="broad", **TINY)
    m = np.asarray(mask) > 0
    from scipy import ndimage

    assert ndimage.label(m)[1] <= 3 and 0.01 < m.mean() < 0.4  # one product (small framing), no objects


def _enclosed_background(mask: np.ndarray) -> int:
    """Background pixels not connected to the frame: holes where the background shows through."""
    from scipy import ndimage

    labels, _ = ndimage.label(mask == 0)
    border = set(np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])))
    return int(np.isin(labels, [k for k in range(1, labels.max() + 1) if k not in border]).sum())


def test_broad_holes_let_the_background_through_and_framing_can_cut_the_product():
    """A top with holes has background inside its silhouette (the classic one has none); a cut
    framing leaves part of the product outside the frame."""
    def holed_top(i: int) -> bool:
        look = draw_look(9, i)
        return ("holes" in look.extras and look.framing in ("normal", "large")
                and render_item(9, i, **TINY)[2].category in ("tee", "longsleeve"))

    i = next(i for i in range(300) if holed_top(i))
    assert _enclosed_background(np.asarray(render_item(9, i, **TINY)[1])) == 0
    assert _enclosed_background(np.asarray(render_item(9, i, variety="broad", **TINY)[1])) > 20
    cut = next(i for i in range(300) if draw_look(9, i).framing == "cut")
    c = np.asarray(render_item(9, cut, variety="broad", **TINY)[1]) > 0
    assert c[0].any() or c[-1].any() or c[:, 0].any() or c[:, -1].any()


def _gaps_across(mask: np.ndarray) -> int:
    """Most background runs strictly inside the product along any row or column: see-through gaps."""
    def runs(line: np.ndarray) -> int:
        on = np.nonzero(line)[0]
        if on.size < 2:
            return 0
        inner = line[on[0]:on[-1] + 1]
        return int(((inner[1:] == 0) & (inner[:-1] != 0)).sum())
    return max(max(runs(r) for r in mask), max(runs(c) for c in mask.T))


def test_strap_gaps_cut_see_through_gaps_deterministically():
    """A solid disc comes out with 2-5 background gaps across it, the same ones for the same seed;
    a product too small to cut is left whole."""
    yy, xx = np.mgrid[:400, :400]
    disc = Image.fromarray(((((xx - 200) / 150) ** 2 + ((yy - 200) / 150) ** 2 < 1) * 255).astype(np.uint8), "L")
    area = np.asarray(disc) > 127
    outs = [np.asarray(cut_strap_gaps(np.random.default_rng(s), disc, 2)) for s in range(12)]
    for s, out in enumerate(outs):
        assert np.array_equal(out, np.asarray(cut_strap_gaps(np.random.default_rng(s), disc, 2)))
        kept = (out > 127) & area
        assert not ((out > 127) & ~area).any()                 # only removes product, adds nothing
        assert 0.6 <= kept.sum() / area.sum() < 1.0
        assert _gaps_across(out > 127) >= 1                   # background between straps
    assert len({out.tobytes() for out in outs}) == len(outs)   # angle, widths and layout vary per draw
    assert max(_gaps_across(out > 127) for out in outs) >= 3
    speck = Image.fromarray(((np.abs(yy - 200) < 6) & (np.abs(xx - 200) < 6)).astype(np.uint8) * 255, "L")
    assert all(cut_strap_gaps(np.random.default_rng(s), speck, 2) is speck for s in range(5))


def test_broad_straps_are_their_own_draw_and_show_the_background_between_straps():
    """About STRAPS_SHARE of the looks carry straps; a rendered item with them has background
    runs inside its silhouette."""
    looks = [draw_look(3, i) for i in range(400)]
    share = sum("straps" in lk.extras for lk in looks) / len(looks)
    assert abs(share - STRAPS_SHARE) < 0.06
    i = next(i for i in range(300) if draw_look(9, i).extras == ("straps",) and draw_look(9, i).framing == "normal"
             and not draw_look(9, i).household)
    photo, mask, _ = render_item(9, i, variety="broad", min_side=400, max_side=480)
    assert _gaps_across(np.asarray(mask) > 0) >= 2


# ----------------------------------------------------------------------------------- the mix

@pytest.mark.parametrize(("n", "shares", "expected"), [
    (1200, {"synth": 0.5, "fashion_mnist": 0.5}, {"synth": 600, "fashion_mnist": 600}),
    (7, {"synth": 0.5, "fashion_mnist": 0.5}, {"synth": 4, "fashion_mnist": 3}),
    (10, {"synth": 0.3, "fashion_mnist": 0.7}, {"synth": 3, "fashion_mnist": 7}),
    (100, {"synth": 1 / 3, "fashion_mnist": 2 / 3}, {"synth": 33, "fashion_mnist": 67}),
    (5, {"fashion_mnist": 1.0}, {"fashion_mnist": 5}),
])
def test_split_counts_follow_the_shares_and_add_up(n, shares, expected):
    counts = split_counts(n, shares)
    assert counts == expected and sum(counts.values()) == n
    for name, share in shares.items():
        assert abs(counts[name] - n * share) < 1


def test_split_counts_refuse_bad_shares():
    with pytest.raises(ValueError, match="sum to 1"):
        split_counts(10, {"synth": 0.5, "fashion_mnist": 0.6})
    with pytest.raises(ValueError, match="unknown source"):
        split_counts(10, {"synth": 0.5, "laion": 0.5})


@pytest.fixture(scope="module")
def mix(tmp_path_factory, source):
    out = tmp_path_factory.mktemp("mix") / "drop"
    synth = SynthParams(seed=4, **TINY)
    fashion = FashionMnistParams(source_dir=source, seed=8, **TINY)
    counts = write_mix(out, 10, {"synth": 0.3, "fashion_mnist": 0.7}, "broad", synth, fashion, progress=False)
    return out, counts, synth, fashion


def test_mix_follows_its_shares_and_describes_itself(mix):
    out, counts, *_ = mix
    assert counts == {"synth": 3, "fashion_mnist": 7}
    with open(out / "labels.csv", newline="") as fh:
        labels = list(csv.DictReader(fh))
    assert Counter(r["source"] for r in labels) == counts
    stems = sorted(p.stem for p in (out / "images").glob("*.jpg"))
    assert stems == sorted(p.stem for p in (out / "masks").glob("*.png")) == sorted(r["stem"] for r in labels)
    assert sum(s.startswith("synth-4-") for s in stems) == 3
    assert sum(s.startswith("fmnist-train-") for s in stems) == 7  # the train split only
    desc = json.loads((out / "drop.json").read_text())
    assert desc["training"] is True and desc["counts"] == counts and desc["variety"] == "broad"
    assert desc["metadata"] == ["labels.csv", "looks.csv"]


def test_mix_rerun_is_idempotent_and_stale_files_are_refused_or_cleaned(mix, tmp_path):
    out, counts, synth, fashion = mix
    before = _files(out)
    write_mix(out, 10, {"synth": 0.3, "fashion_mnist": 0.7}, "broad", synth, fashion, progress=False)
    assert _files(out) == before
    with pytest.raises(ValueError, match="--clean"):  # a smaller mix over a bigger one would skew its shares
        write_mix(out, 4, {"synth": 0.5, "fashion_mnist": 0.5}, "broad", synth, fashion, progress=False)
    assert _files(out) == before  # refused before writing anything
    copy = tmp_path / "drop"
    for rel in before:
        (copy / rel).parent.mkdir(parents=True, exist_ok=True)
        (copy / rel).write_bytes((out / rel).read_bytes())
    counts = write_mix(copy, 4, {"synth": 0.5, "fashion_mnist": 0.5}, "broad", synth, fashion, clean=True,
                       progress=False)
    assert len(list((copy / "images").iterdir())) == len(list((copy / "masks").iterdir())) == 4 == sum(
        counts.values())


def test_broad_mix_ingests_and_validates_clean(mix, project):
    from tests.data.conftest import make_stage

    out, counts, *_ = mix
    stage = make_stage(project)
    result = ingest(stage.ingest, out)
    assert (result.added, result.orphans) == (sum(counts.values()), [])
    checked = validate(stage.validate, stage.ingest)
    assert (checked.good, checked.quarantined) == (sum(counts.values()), 0)


def test_cli_drop_writes_the_mix_into_the_drop_dir(tmp_path, source, monkeypatch):
    monkeypatch.setenv("BACKDROP_PROJECT_DIR", str(tmp_path))
    params = yaml.safe_load((Path(__file__).resolve().parents[2] / "params.yaml").read_text())
    params["fashion_mnist"].update({"source_dir": str(source), **TINY})
    params["synth"].update(TINY)
    params["drop"].update({"n": 4, "shares": {"synth": 0.25, "fashion_mnist": 0.75}})
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    result = CliRunner().invoke(app, ["data", "drop", "--params", str(path)])
    assert result.exit_code == 0, result.output
    assert "synth 1, fashion_mnist 3" in result.output
    drop = tmp_path / params["ingest"]["drop_dir"]
    assert json.loads((drop / "drop.json").read_text())["counts"] == {"synth": 1, "fashion_mnist": 3}
    bad = CliRunner().invoke(app, ["data", "drop", "--params", str(path), "--variety", "fancy"])
    assert bad.exit_code != 0 and "variety" in bad.output
