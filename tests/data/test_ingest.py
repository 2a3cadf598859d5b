"""ingest: vendor drops (folders, suffix pairs, zips) → content-addressed raw store; nothing is lost."""

from __future__ import annotations

import csv
import io
import stat
import tracemalloc
import zipfile
from datetime import datetime
from pathlib import Path

import pytest
from PIL import Image

from backdrop.data.manifest import MANIFEST_FIELDS
from backdrop.stages.ingest import UNPAIRED_FIELDS, ingest, role_and_key
from tests.data.conftest import png_bytes, sha256, write, write_tree_drop


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _store_files(raw: Path) -> set[str]:
    return {p.relative_to(raw).as_posix() for p in raw.rglob("*") if p.is_file()}


def _encoded(image: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    return buf.getvalue()


def test_tree_drop_is_stored_by_content_with_a_full_manifest_row(stage, synth):
    drop = stage.root / "drop"
    write_tree_drop(drop, synth, range(3))
    before = datetime.now().astimezone().replace(microsecond=0)  # received_at has whole seconds

    result = ingest(stage.ingest)
    after = datetime.now().astimezone()

    assert (result.added, result.already_present, result.orphans) == (3, 0, [])
    rows = _rows(stage.raw / "manifest.csv")
    assert list(rows[0]) == MANIFEST_FIELDS
    by_stem = {r["stem"]: r for r in rows}
    assert set(by_stem) == {synth.stem(i) for i in range(3)}
    for i in range(3):
        row = by_stem[synth.stem(i)]
        photo, mask = synth.photo_jpeg(i), synth.mask_png(i)
        assert row["image_sha256"] == sha256(photo) and row["mask_sha256"] == sha256(mask)
        assert (stage.raw / row["image_path"]).read_bytes() == photo  # stored under its own hash
        assert row["image_path"] == f"images/{sha256(photo)}.jpg"
        assert row["mask_path"] == f"masks/{sha256(mask)}.png"
        assert (int(row["image_bytes"]), int(row["mask_bytes"])) == (len(photo), len(mask))
        assert row["source_drop"] == "drop"
        assert row["source_image"] == f"images/{synth.stem(i)}.jpg"
        assert row["source_mask"] == f"masks/{synth.stem(i)}.png"
        assert (row["vendor"], row["license"]) == ("acme-studio", "cc-by-4.0")
        assert before <= datetime.fromisoformat(row["received_at"]) <= after  # stamped during this ingest
        assert (row["version"], row["superseded_by"]) == ("1", "")
        assert len(row["pair_id"]) == 16
    assert len({r["pair_id"] for r in rows}) == 3


def test_reingesting_the_same_drop_adds_nothing(stage, synth):
    drop = stage.root / "drop"
    write_tree_drop(drop, synth, range(3))
    write(drop, "images/lonely.jpg", synth.photo_jpeg(3))
    write(drop, "readme.txt", b"delivery 42\n")
    ingest(stage.ingest)
    manifest = (stage.raw / "manifest.csv").read_bytes()
    unpaired = (stage.raw / "unpaired.csv").read_bytes()
    files = _store_files(stage.raw)

    again = ingest(stage.ingest)

    assert (again.added, again.already_present, again.unpaired_added) == (0, 3, 0)
    assert (stage.raw / "manifest.csv").read_bytes() == manifest
    assert (stage.raw / "unpaired.csv").read_bytes() == unpaired
    assert _store_files(stage.raw) == files
    # the same bytes under another name are stored once too
    other = stage.root / "drop2"
    write(other, "photos/renamed.jpg", synth.photo_jpeg(0))
    write(other, "masks/renamed.png", synth.mask_png(0))
    third = ingest(stage.ingest, other)
    assert (third.added, third.already_present) == (0, 1)
    assert _store_files(stage.raw) == files


def test_changed_file_is_a_new_version_that_supersedes_the_old(stage, synth):
    write_tree_drop(stage.root / "drop", synth, range(2))
    ingest(stage.ingest)
    fixed = stage.root / "drop-fix"
    stem = synth.stem(0)
    write(fixed, f"images/{stem}.jpg", synth.photo_jpeg(0))  # same photo
    write(fixed, f"masks/{stem}.png", png_bytes(synth.mask(0).convert("1")))  # corrected mask: new bytes

    result = ingest(stage.ingest, fixed)

    assert (result.added, result.already_present) == (1, 0)
    rows = [r for r in _rows(stage.raw / "manifest.csv") if r["stem"] == stem]
    assert [r["version"] for r in rows] == ["1", "2"]
    assert rows[0]["superseded_by"] == rows[1]["pair_id"] and rows[1]["superseded_by"] == ""
    assert rows[1]["source_drop"] == "drop-fix"
    assert rows[0]["image_sha256"] == rows[1]["image_sha256"]  # the photo is stored once
    assert len(list((stage.raw / "images").iterdir())) == 2


@pytest.mark.parametrize(("rel", "role", "key"), [
    ("images/a.jpg", "image", "a"),
    ("masks/a.png", "mask", "a"),
    ("masks/a_mask.png", "mask", "a"),
    ("a_mask.png", "mask", "a"),
    ("a-alpha.png", "mask", "a"),
    ("a.matte.png", "mask", "a"),
    ("A_MASK.PNG", "mask", "A"),
    ("shoes/images/a.jpg", "image", "shoes/a"),
    ("Images/shoes/a.jpg", "image", "shoes/a"),
    ("masks/shoes/a.png", "mask", "shoes/a"),
    ("_mask.png", "image", "_mask"),  # nothing left of the name: not a suffix
    ("images/no-mask.jpg", "image", "no-mask"),  # the folder decides before the suffix
    ("photos/a-alpha.tif", "image", "a-alpha"),
])
def test_role_and_key(rel, role, key):
    assert role_and_key(rel) == (role, key)


def test_suffix_pairs_in_a_flat_folder_in_any_photo_format(stage, synth):
    drop = stage.root / "drop"
    cases = {  # photo name, mask name, how the photo is encoded
        "a": ("a.jpg", "a_mask.png", "JPEG"),
        "b": ("b.jpeg", "b-alpha.png", "JPEG"),
        "c": ("C.JPG", "c_Mask.PNG", "JPEG"),
        "d": ("d.webp", "d.matte.png", "WEBP"),
        "e": ("e.tif", "e-mask.png", "TIFF"),
        "f": ("f.png", "f_alpha.png", "PNG"),
    }
    for i, (photo, mask, fmt) in enumerate(cases.values()):
        write(drop, photo, _encoded(synth.photo(i), fmt))
        write(drop, mask, synth.mask_png(i))
    write(drop, "shoes/images/g.jpg", synth.photo_jpeg(6))  # a nested tree beside the flat pairs
    write(drop, "shoes/masks/g.png", synth.mask_png(6))

    result = ingest(stage.ingest)

    assert result.orphans == [] and result.added == len(cases) + 1
    pairs = {r["source_image"]: r["source_mask"] for r in _rows(stage.raw / "manifest.csv")}
    assert pairs == {**{p: m for p, m, _ in cases.values()}, "shoes/images/g.jpg": "shoes/masks/g.png"}
    suffixes = {Path(r["image_path"]).suffix for r in _rows(stage.raw / "manifest.csv")}
    assert suffixes == {".jpg", ".jpeg", ".webp", ".tif", ".png"}


def test_files_without_partner_and_non_images_are_kept_not_dropped(stage, synth):
    drop = stage.root / "drop"
    write_tree_drop(drop, synth, range(2))
    extra = {
        "images/no-mask.jpg": synth.photo_jpeg(2),
        "masks/no-photo.png": synth.mask_png(3),
        "images/twin.jpg": synth.photo_jpeg(4),  # two photos, one mask: ambiguous
        "images/twin.png": png_bytes(synth.photo(4)),
        "masks/twin.png": synth.mask_png(4),
        "contract.pdf": b"%PDF-1.4 not really\n",
        "labels.csv": b"stem,category\n",
    }
    for rel, data in extra.items():
        write(drop, rel, data)
    write(drop, ".DS_Store", b"\0\0\0\1Bud1")
    write(drop, "__MACOSX/images/._no-mask.jpg", b"\0\5\26\7")

    result = ingest(stage.ingest)

    assert result.added == 2
    assert sorted(result.orphans) == sorted(extra)
    assert result.unpaired_added == len(extra)
    rows = {r["source_path"]: r for r in _rows(stage.raw / "unpaired.csv")}
    assert list(next(iter(rows.values()))) == UNPAIRED_FIELDS
    assert set(rows) == set(extra)
    for rel, data in extra.items():  # every byte of every file is in the store
        assert (stage.raw / rows[rel]["path"]).read_bytes() == data
        assert rows[rel]["sha256"] == sha256(data) and rows[rel]["path"].startswith("unpaired/")
    assert rows["images/no-mask.jpg"]["note"] == "no mask for this photo"
    assert rows["masks/no-photo.png"]["note"] == "no photo for this mask"
    assert rows["images/twin.jpg"]["note"].startswith("ambiguous")
    assert rows["contract.pdf"]["role"] == "other" and "not an image" in rows["contract.pdf"]["note"]
    # OS clutter is not stored, but it is listed, not silently ignored
    assert ".DS_Store (system file)" in result.skipped
    assert any(s.startswith("__MACOSX/") for s in result.skipped)


def test_a_photo_waits_in_unpaired_until_its_mask_arrives_in_a_later_drop(stage, synth):
    write(stage.root / "drop", f"images/{synth.stem(0)}.jpg", synth.photo_jpeg(0))
    first = ingest(stage.ingest)
    assert first.added == 0 and first.unpaired_added == 1

    later = stage.root / "masks-delivery"
    write(later, f"masks/{synth.stem(0)}.png", synth.mask_png(0))
    second = ingest(stage.ingest, later)

    assert second.added == 1 and second.unpaired_added == 0
    (row,) = _rows(stage.raw / "manifest.csv")
    assert row["image_sha256"] == sha256(synth.photo_jpeg(0))
    assert row["mask_sha256"] == sha256(synth.mask_png(0))
    assert row["source_image"] == f"drop:images/{synth.stem(0)}.jpg"  # where the photo came from
    (waiting,) = _rows(stage.raw / "unpaired.csv")
    assert waiting["resolved_by"] == row["pair_id"]  # no longer an orphan
    assert (stage.raw / row["image_path"]).read_bytes() == synth.photo_jpeg(0)


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def test_zip_drop_ingests_like_the_folder(stage, synth):
    members = {}
    for i in range(3):
        members[f"acme-2024-05/images/{synth.stem(i)}.jpg"] = synth.photo_jpeg(i)
        members[f"acme-2024-05/masks/{synth.stem(i)}.png"] = synth.mask_png(i)
    members["acme-2024-05/images/no-mask.jpg"] = synth.photo_jpeg(3)
    archive = _zip(stage.root / "acme-2024-05.zip", members)

    result = ingest(stage.ingest, archive)

    assert result.added == 3 and result.orphans == ["images/no-mask.jpg"]
    rows = _rows(stage.raw / "manifest.csv")
    assert {r["stem"] for r in rows} == {synth.stem(i) for i in range(3)}  # wrapping folder dropped
    assert {r["source_drop"] for r in rows} == {"acme-2024-05.zip"}
    for r in rows:
        assert (stage.raw / r["image_path"]).read_bytes() == members[f"acme-2024-05/{r['source_image']}"]
    # the same pairs as a folder, or as a zip inside a folder, are already there
    folder = stage.root / "drop"
    write_tree_drop(folder, synth, range(3))
    as_folder = ingest(stage.ingest, folder)
    assert (as_folder.added, as_folder.already_present) == (0, 3)
    nested = stage.root / "drop-nested"
    nested.mkdir()
    _zip(nested / "part1.zip", members)
    again = ingest(stage.ingest, nested)
    assert (again.added, again.already_present) == (0, 3)
    assert again.orphans == ["part1/images/no-mask.jpg"]


def test_zip_member_names_never_become_paths(stage, synth):
    archive = stage.root / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("../../escaped.jpg", synth.photo_jpeg(0))
        zf.writestr("/abs/escaped.png", synth.mask_png(0))
        link = zipfile.ZipInfo("images/link.jpg")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(link, "/etc/passwd")
        zf.writestr("images/ok.jpg", synth.photo_jpeg(1))
        zf.writestr("masks/ok.png", synth.mask_png(1))

    result = ingest(stage.ingest, archive)

    assert result.added == 1  # the well-named pair
    escaped = [p for p in stage.root.parent.rglob("escaped*") if "unpaired" not in p.parts]
    assert escaped == []  # nothing was written by member name, anywhere
    rows = {r["source_path"]: r for r in _rows(stage.raw / "unpaired.csv")}
    assert set(rows) == {"escaped.jpg", "abs/escaped.png", "images/link.jpg"}
    assert all(r["unsafe"] == "True" for r in rows.values())
    assert "path traversal" in rows["escaped.jpg"]["note"]
    assert "symbolic link" in rows["images/link.jpg"]["note"]
    assert (stage.raw / rows["images/link.jpg"]["path"]).read_bytes() == b"/etc/passwd"  # content, not target


def test_zip_that_unpacks_beyond_the_limit_is_refused(stage, synth):
    archive = _zip(stage.root / "big.zip", {"images/a.jpg": b"\0" * 5000, "masks/a.png": b"\0" * 5000})
    small = stage.ingest.model_copy(update={"max_unpacked_bytes": 8000})
    with pytest.raises(ValueError, match="max_unpacked_bytes"):
        ingest(small, archive)
    assert not (stage.raw / "manifest.csv").exists()


def test_missing_drop_says_how_to_make_one(stage):
    with pytest.raises(FileNotFoundError, match="backdrop data synth"):
        ingest(stage.ingest)


def test_memory_stays_flat_on_large_files(stage, synth):
    """Files are hashed and copied in 1 MiB blocks: a 48 MiB photo never sits in memory."""
    drop = stage.root / "drop"
    big = 48 << 20
    with open(write(drop, "images/huge.tif", b""), "wb") as fh:
        for _ in range(big >> 20):
            fh.write(b"\x5a" * (1 << 20))
    write(drop, "masks/huge.png", synth.mask_png(0))

    tracemalloc.start()
    try:
        result = ingest(stage.ingest)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert result.added == 1
    (row,) = _rows(stage.raw / "manifest.csv")
    assert (stage.raw / row["image_path"]).stat().st_size == big
    assert peak < 8 << 20, f"peak {peak >> 20} MiB while ingesting a {big >> 20} MiB file"


def test_a_drop_that_contains_the_store_is_refused(stage, synth):
    write_tree_drop(stage.root / "data", synth, range(1))  # drop "data/" would hold data/raw
    with pytest.raises(ValueError, match="overlap"):
        ingest(stage.ingest, stage.root / "data")
    assert not stage.raw.exists()


def test_synth_drop_metadata_is_kept_as_metadata_not_quarantined(stage):
    from backdrop.data.synth import synthesize

    drop = stage.root / "drop"
    items = synthesize(drop, 3, 5, progress=False, min_side=300, max_side=400)

    result = ingest(stage.ingest)

    assert (result.added, result.orphans) == (3, [])  # labels.csv is no stray file any more
    assert sorted(result.metadata) == ["drop.json", "labels.csv"]
    assert _rows(stage.raw / "unpaired.csv") == []   # so validate has nothing to quarantine
    meta = {r["source_path"]: r for r in _rows(stage.raw / "metadata.csv")}
    assert set(meta) == {"drop.json", "labels.csv"}
    for rel, row in meta.items():  # nothing lost: the bytes are in the store under their hash
        data = (drop / rel).read_bytes()
        assert row["sha256"] == sha256(data) and (stage.raw / row["path"]).read_bytes() == data
        assert row["path"].startswith("metadata/") and row["source_drop"] == "drop"
    labels = _rows(stage.raw / meta["labels.csv"]["path"])
    assert [r["stem"] for r in labels] == [it.stem for it in items]
    files = _store_files(stage.raw)
    again = ingest(stage.ingest)  # idempotent for metadata too
    assert (again.added, again.already_present) == (0, 3)
    assert _store_files(stage.raw) == files and len(_rows(stage.raw / "metadata.csv")) == 2


def test_undeclared_or_image_metadata_stays_an_unpaired_file(stage, synth):
    drop = stage.root / "drop"
    write_tree_drop(drop, synth, range(1))
    # a descriptor cannot hide a photo from validation, and only names it declares are metadata
    write(drop, "drop.json", b'{"metadata": ["labels.csv", "sneaky.jpg"]}')
    write(drop, "labels.csv", b"stem,category\n")
    write(drop, "notes.txt", b"undeclared\n")
    write(drop, "sneaky.jpg", synth.photo_jpeg(1))

    result = ingest(stage.ingest)

    assert sorted(result.metadata) == ["drop.json", "labels.csv"]
    assert sorted(result.orphans) == ["notes.txt", "sneaky.jpg"]


def test_broken_descriptor_is_an_unpaired_file(stage, synth):
    drop = stage.root / "drop"
    write_tree_drop(drop, synth, range(1))
    write(drop, "drop.json", b"{not json")
    result = ingest(stage.ingest)
    assert result.metadata == [] and result.orphans == ["drop.json"]


def test_drop_marked_not_for_training_is_refused_before_anything_is_stored(stage, synth):
    from backdrop.stages.ingest import DropRefused

    drop = stage.root / "drop"
    write_tree_drop(drop, synth, range(2))
    write(drop, "drop.json", b'{"source": "fashion-mnist", "split": "test", "training": false}')
    with pytest.raises(DropRefused, match="split=test"):
        ingest(stage.ingest)
    assert not stage.raw.exists() or _store_files(stage.raw) == set()
