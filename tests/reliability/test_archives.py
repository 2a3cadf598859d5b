"""Archives cannot fill the disk, and quarantine does not store a second copy (issue 22, class 10).

A 1 MB zip of zeros unpacked to 1 GB in data/raw/unpaired and 1 GB more in quarantine, well under
the 20 GB total cap. Members are now refused by compression ratio and by size, before anything is
stored, naming the archive and the member; quarantine keeps a reference to the raw store file.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from pathlib import Path

import pytest

from backdrop.stages import ingest as ingest_module
from backdrop.stages.ingest import ingest
from backdrop.stages.validate import validate
from tests.data.conftest import Synth, make_stage, png_bytes, write, write_tree_drop

ZEROS = b"\0" * (4 << 20)  # 4 MB of zeros deflate to ~4 KB: ratio ~1000:1


def _zip(path: Path, members: dict[str, bytes], compression=zipfile.ZIP_DEFLATED) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", compression=compression) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def _good(synth: Synth, indices, prefix: str = "") -> dict[str, bytes]:
    out = {}
    for i in indices:
        out[f"{prefix}images/{synth.stem(i)}.jpg"] = synth.photo_jpeg(i)
        out[f"{prefix}masks/{synth.stem(i)}.png"] = synth.mask_png(i)
    return out


def _stored(raw: Path) -> list[Path]:
    return [p for p in raw.rglob("*") if p.is_file()] if raw.exists() else []


@pytest.mark.parametrize("layout", ["zip drop", "zip inside a folder drop", "bomb beside good pairs"])
def test_a_zip_bomb_is_refused_before_anything_is_stored(project, synth, layout):
    stage = make_stage(project)
    if layout == "zip drop":
        drop = _zip(project / "bomb.zip", {"images/a.jpg": ZEROS})
        archive, member = "bomb.zip", "images/a.jpg"
    elif layout == "zip inside a folder drop":
        drop = project / "drop"
        write_tree_drop(drop, synth, range(2))
        _zip(drop / "extra" / "more.zip", {"notes/readme.txt": ZEROS})
        archive, member = "extra/more.zip", "notes/readme.txt"
    else:
        drop = _zip(project / "mixed.zip", {**_good(synth, range(2)), "masks/zz_mask.png": ZEROS})
        archive, member = "mixed.zip", "masks/zz_mask.png"
    with pytest.raises(ValueError, match="compression ratio") as info:
        ingest(stage.ingest, drop)
    assert archive in str(info.value) and member in str(info.value)
    assert _stored(stage.raw) == []  # refused before a single file was extracted


@pytest.mark.parametrize("compression", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2])
def test_a_zip_with_one_huge_member_is_refused(project, monkeypatch, compression):
    monkeypatch.setattr(ingest_module, "MAX_MEMBER_BYTES", 1 << 20)  # 512 MB in production; 1 MB here
    stage = make_stage(project)
    big = os.urandom(3 << 19)  # 1.5 MB that do not compress: the ratio check cannot catch it
    drop = _zip(project / "huge.zip", {"images/small.jpg": b"x" * 100, "images/big.jpg": big}, compression)
    with pytest.raises(ValueError, match="images/big.jpg") as info:
        ingest(stage.ingest, drop)
    assert "huge.zip" in str(info.value) and "MB" in str(info.value)
    assert _stored(stage.raw) == []


@pytest.mark.parametrize("layout", ["wrapped nested folders", "zip inside a folder drop", "small members compressing over 100:1"])
def test_valid_zips_are_accepted(project, synth, layout):
    stage = make_stage(project)
    if layout == "wrapped nested folders":
        drop = _zip(project / "drop.zip", {**_good(synth, range(2), "drop-2026/shoes/"),
                                           **_good(synth, range(2, 4), "drop-2026/bags/")})
        expected = 4
    elif layout == "zip inside a folder drop":
        drop = project / "drop"
        write_tree_drop(drop, synth, range(2))
        _zip(drop / "more.zip", _good(synth, range(2, 5)))
        expected = 5
    else:  # a tiny all-black PNG compresses well above 100:1 but is far too small to matter
        from PIL import Image

        drop = _zip(project / "drop.zip", {**_good(synth, range(2)),
                                           "notes.txt": b"a" * 50_000,
                                           "masks/tiny_mask.png": png_bytes(Image.new("L", (64, 64)))})
        expected = 2
    assert ingest(stage.ingest, drop).added == expected


@pytest.mark.parametrize("fmt, size", [("BMP", 2000), ("TIFF", 2000), ("BMP", 1200)])
def test_uncompressed_masks_that_deflate_well_are_not_bombs(project, synth, fmt, size):
    """A binary mask saved as BMP/TIFF deflates ~250:1: a real vendor drop, accepted (the 100:1 rule is for
    formats that are compressed already)."""
    import io

    from PIL import Image, ImageDraw

    mask = Image.new("L", (size, size))
    ImageDraw.Draw(mask).ellipse((size // 4, size // 8, 3 * size // 4, 7 * size // 8), fill=255)
    photo = Image.new("RGB", (size, size), (200, 200, 200))
    buf_m, buf_p = io.BytesIO(), io.BytesIO()
    mask.save(buf_m, format=fmt)
    photo.save(buf_p, format="JPEG", quality=90)
    ext = ".bmp" if fmt == "BMP" else ".tif"
    members = {"images/shirt.jpg": buf_p.getvalue(), f"masks/shirt{ext}": buf_m.getvalue()}
    drop = _zip(project / "drop.zip", members)
    with zipfile.ZipFile(drop) as zf:
        info = zf.getinfo(f"masks/shirt{ext}")
        assert info.file_size >= ingest_module.RATIO_MIN_BYTES
        assert info.file_size > ingest_module.MAX_RATIO * info.compress_size  # beyond the 100:1 rule
    assert ingest(make_stage(project).ingest, drop).added == 1


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("bad", ["pair with an empty mask", "photo without mask", "text file"])
def test_quarantine_keeps_a_reference_to_the_raw_file_not_a_copy(project, synth, bad):
    from PIL import Image

    stage = make_stage(project, max_bad_share=0.5)
    drop = project / "drop"
    write_tree_drop(drop, synth, range(3))
    if bad == "pair with an empty mask":
        write(drop, f"images/{synth.stem(5)}.jpg", synth.photo_jpeg(5))
        write(drop, f"masks/{synth.stem(5)}.png", png_bytes(Image.new("L", synth.photo(5).size, 0)))
        keys = ["image", "mask"]
    elif bad == "photo without mask":
        write(drop, "images/lonely.jpg", synth.photo_jpeg(6))
        keys = ["file"]
    else:
        write(drop, "delivery-note.txt", b"3 photos\n" * 1000)
        keys = ["file"]
    ingest(stage.ingest)
    # a quarantine folder from an earlier version still holding copies: they are dropped
    result = validate(stage.validate, stage.ingest)
    assert result.quarantined == 1
    (folder,) = [p for p in stage.quarantine.iterdir() if p.is_dir()]
    assert [p.name for p in folder.iterdir()] == ["reason.json"]  # no second copy of the bytes
    record = json.loads((folder / "reason.json").read_text())
    refs = record["raw_paths"]
    assert sorted(refs) == sorted(keys)
    shas = {"image": record["sha256"], "mask": record.get("mask_sha256"), "file": record["sha256"]}
    for key, rel in refs.items():
        path = project / rel
        assert path.is_file() and path.is_relative_to(stage.raw)
        assert _sha(path) == shas[key]  # the reference is the content-addressed raw file
        assert shas[key] in path.name


def test_old_quarantine_copies_are_replaced_by_the_reference(project, synth):
    from PIL import Image

    stage = make_stage(project, max_bad_share=0.5)
    drop = project / "drop"
    write_tree_drop(drop, synth, range(3))
    write(drop, "images/lonely.jpg", synth.photo_jpeg(6))
    ingest(stage.ingest)
    validate(stage.validate, stage.ingest)
    (folder,) = [p for p in stage.quarantine.iterdir() if p.is_dir()]
    (folder / "lonely.jpg").write_bytes(synth.photo_jpeg(6))  # what the old quarantine wrote
    Image.new("L", (4, 4)).save(folder / "image.png")
    validate(stage.validate, stage.ingest)
    assert [p.name for p in folder.iterdir()] == ["reason.json"]
