"""validate: the Great Expectations suite decides; every bad item is quarantined with its reason.

The acceptance test builds one vendor drop of 20 good packshots and 16 bad items of 15 kinds,
ingests it, validates it and checks that each bad item is quarantined with exactly the right
reason, that nothing is lost, and that ingesting the drop again adds nothing.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter

from backdrop.io import hamming, hash_words, perceptual_hash
from backdrop.stages.ingest import IngestResult, ingest
from backdrop.stages.validate import (
    REASONS,
    ValidateResult,
    ValidationFailed,
    file_stats,
    gx_context,
    load_suite,
    pair_stats,
    photo_stats,
    run_suite,
    validate,
)
from tests.data.conftest import (
    SUITE,
    Stage,
    bomb_png,
    jpeg_bytes,
    make_stage,
    png_bytes,
    sha256,
    write,
    write_tree_drop,
)

GOOD = range(20)


def _bad_items(synth) -> dict[str, tuple[dict[str, bytes], list[str]]]:
    """name → (files of the drop, the reasons it must be quarantined with)."""
    def pair(name: str, photo: bytes, mask: bytes, photo_ext: str = "jpg") -> dict[str, bytes]:
        return {f"images/{name}.{photo_ext}": photo, f"masks/{name}.png": mask}

    def shrunk(index: int, factor: float) -> tuple[Image.Image, Image.Image]:
        photo, mask = synth.photo(index), synth.mask(index)
        size = (round(photo.width * factor), round(photo.height * factor))
        return photo.resize(size, Image.Resampling.LANCZOS), mask.resize(size, Image.Resampling.NEAREST)

    near_photo, near_mask = shrunk(1, 0.7)     # a re-encoded, resized copy of good pair 1
    low_photo, low_mask = shrunk(27, 0.5)      # 150-250 px: below validate.min_side=256
    truncated = synth.photo_jpeg(20)
    mask_png = synth.mask_png(33)
    size = synth.photo(22).size
    return {
        "truncated-jpeg": (pair("truncated", truncated[: len(truncated) * 6 // 10], synth.mask_png(20)),
                           ["corrupt_file"]),
        "truncated-mask": (pair("broken-mask", synth.photo_jpeg(33), mask_png[: len(mask_png) // 2]),
                           ["corrupt_file"]),
        "mask-of-another-size": (pair("wrong-size", synth.photo_jpeg(21),
                                      png_bytes(synth.mask(21).resize((200, 300)))), ["mask_size_mismatch"]),
        "all-black-mask": (pair("black-mask", synth.photo_jpeg(22), png_bytes(Image.new("L", size, 0))),
                           ["mask_empty"]),
        "all-white-mask": (pair("white-mask", synth.photo_jpeg(30),
                                png_bytes(Image.new("L", synth.photo(30).size, 255))),
                           ["coverage_out_of_bounds"]),
        "colour-photo-as-mask": (pair("colour-mask", synth.photo_jpeg(28), png_bytes(synth.photo(28))),
                                 ["mask_not_grayscale_or_alpha"]),
        "blurred-grey-mask": (pair("grey-mask", synth.photo_jpeg(29),
                                   png_bytes(synth.mask(29).filter(ImageFilter.GaussianBlur(25)))),
                              ["mask_not_binary"]),
        # same photo bytes as good pair 0 with a mask in other bytes (1-bit): a new pair, a duplicate
        "duplicate-photo": (pair("x-duplicate", synth.photo_jpeg(0), png_bytes(synth.mask(0).convert("1"))),
                            ["duplicate_image"]),
        "near-duplicate": (pair("x-near-duplicate", jpeg_bytes(near_photo, quality=70), png_bytes(near_mask)),
                           ["near_duplicate"]),
        "zero-byte-photo": (pair("zero-bytes", b"", synth.mask_png(24)), ["empty_file"]),
        "text-named-jpg": (pair("text", b"Hello, this is the price list, not a photo.\n", synth.mask_png(25)),
                           ["not_an_image"]),
        "huge-png-header": (pair("bomb", bomb_png(20000, 20000), synth.mask_png(26), "png"), ["too_large"]),
        "low-resolution": (pair("low-res", jpeg_bytes(low_photo), png_bytes(low_mask)), ["resolution_too_low"]),
        "photo-without-mask": ({"images/lonely.jpg": synth.photo_jpeg(31)}, ["unpaired"]),
        "mask-without-photo": ({"masks/orphan.png": synth.mask_png(32)}, ["unpaired"]),
        "delivery-note": ({"delivery-note.txt": b"48 photos, 48 masks\n"}, ["not_an_image"]),
    }


@dataclass
class Accepted:
    stage: Stage
    drop: Path
    bad: dict[str, tuple[dict[str, bytes], list[str]]]
    first: IngestResult
    result: ValidateResult
    again: IngestResult
    manifest_before: bytes
    manifest_after: bytes
    decoded: list[Path]        # every file validate decoded, in order
    most_decoded_at_once: int  # decoded images held open at the same time, at most
    suite_runs: list[int]      # rows of each Great Expectations run


@pytest.fixture(scope="module")
def accepted(tmp_path_factory, synth) -> Accepted:
    root = tmp_path_factory.mktemp("acceptance")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BACKDROP_PROJECT_DIR", str(root))
        stage = make_stage(root, max_bad_share=0.5)
        drop = root / "drop"
        write_tree_drop(drop, synth, GOOD)
        bad = _bad_items(synth)
        for files, _ in bad.values():
            for rel, data in files.items():
                write(drop, rel, data)
        # spy on the expensive steps: decoding an image, and running the GE suite
        module = sys.modules[validate.__module__]
        decode, suite = module.decoded_image, module.run_suite
        decoded: list[Path] = []
        open_now = [0, 0]  # now, at most

        @contextlib.contextmanager
        def counting_decode(path, *args, **kwargs):
            decoded.append(Path(path))
            with decode(path, *args, **kwargs) as image:
                open_now[0] += 1
                open_now[1] = max(open_now)
                try:
                    yield image
                finally:
                    open_now[0] -= 1

        suite_runs: list[int] = []

        def counting_suite(rows, *args, **kwargs):
            suite_runs.append(len(rows))
            return suite(rows, *args, **kwargs)

        mp.setattr(module, "decoded_image", counting_decode)
        mp.setattr(module, "run_suite", counting_suite)
        first = ingest(stage.ingest)
        result = validate(stage.validate, stage.ingest)
        manifest_before = (stage.raw / "manifest.csv").read_bytes()
        again = ingest(stage.ingest)
        manifest_after = (stage.raw / "manifest.csv").read_bytes()
    return Accepted(stage, drop, bad, first, result, again, manifest_before, manifest_after, decoded,
                    open_now[1], suite_runs)


def _reason_files(quarantine: Path) -> dict[str, dict]:
    """source file (photo, or the lone file) → reason.json"""
    out = {}
    for path in quarantine.glob("*/reason.json"):
        record = json.loads(path.read_text())
        out[record.get("source_image") or record["source_path"]] = record
    return out


def test_acceptance_drop_quarantines_each_bad_pair_with_its_reason(accepted, synth):
    by_source = _reason_files(accepted.stage.quarantine)
    for kind, (files, reasons) in accepted.bad.items():
        source = next(iter(files))  # the photo (or the lone file)
        assert source in by_source, f"{kind}: {source} not quarantined"
        assert by_source[source]["reasons"] == reasons, f"{kind}: {by_source[source]['problems']}"
    assert len(by_source) == len(accepted.bad)  # and nothing else: no good pair was quarantined

    with open(accepted.stage.validated / "manifest.csv", newline="") as fh:
        good = list(csv.DictReader(fh))
    assert sorted(r["stem"] for r in good) == sorted(synth.stem(i) for i in GOOD)
    r = accepted.result
    assert (r.total, r.good, r.quarantined) == (20 + len(accepted.bad), 20, len(accepted.bad))
    assert r.reasons["corrupt_file"] == 2 and r.reasons["not_an_image"] == 2 and r.reasons["unpaired"] == 2
    assert set(r.reasons) <= set(REASONS)
    # one streaming pass: each pair's photo and mask and each unpaired file decoded exactly once (the
    # duplicate photo shares its stored file with good pair 0), one image at a time, and one suite
    # run over the whole table
    raw = accepted.stage.raw
    with open(raw / "manifest.csv", newline="") as fh:
        stored = [raw / row[k] for row in csv.DictReader(fh) for k in ("image_path", "mask_path")]
    with open(raw / "unpaired.csv", newline="") as fh:
        stored += [raw / row["path"] for row in csv.DictReader(fh)]
    assert len(stored) == 2 * accepted.first.added + len(accepted.first.orphans)
    assert sorted(accepted.decoded) == sorted(stored)
    assert accepted.most_decoded_at_once == 1
    assert accepted.suite_runs == [r.total]


def test_acceptance_drop_loses_nothing(accepted):
    """Every file of the drop is in the validated manifest or in quarantine (compared by content: the
    quarantine references each item's file in the raw store)."""
    with open(accepted.stage.validated / "manifest.csv", newline="") as fh:
        validated = {sha for row in csv.DictReader(fh) for sha in (row["image_sha256"], row["mask_sha256"])}
    quarantined = {sha256((accepted.stage.root / ref).read_bytes())
                   for p in accepted.stage.quarantine.glob("*/reason.json")
                   for ref in json.loads(p.read_text())["raw_paths"].values()}
    inputs = [p for p in accepted.drop.rglob("*") if p.is_file()]
    assert len(inputs) == 2 * 20 + sum(len(files) for files, _ in accepted.bad.values())
    lost = [str(p.relative_to(accepted.drop)) for p in inputs
            if sha256(p.read_bytes()) not in validated | quarantined]
    assert lost == []


def test_reingesting_the_acceptance_drop_adds_nothing(accepted):
    assert accepted.first.added == 20 + 13 and len(accepted.first.orphans) == 3
    assert (accepted.again.added, accepted.again.already_present, accepted.again.unpaired_added) == (0, 33, 0)
    assert accepted.manifest_after == accepted.manifest_before


def test_quarantine_holds_references_and_machine_readable_reasons(accepted):
    raw_files = {p.name for p in accepted.stage.raw.rglob("*") if p.is_file()}
    for folder in (p for p in accepted.stage.quarantine.iterdir() if p.is_dir()):
        record = json.loads((folder / "reason.json").read_text())
        assert record["item_id"] == folder.name
        assert record["reasons"] and set(record["reasons"]) <= set(REASONS)
        assert all(isinstance(p, str) and p for p in record["problems"])
        assert record["kind"] in ("pair", "file") and record["vendor"] == "acme-studio"
        # no second copy of the bytes: reason.json references the content-addressed raw file(s)
        assert [p.name for p in folder.iterdir()] == ["reason.json"]
        refs = record["raw_paths"]
        if record["kind"] == "pair":
            assert sorted(refs) == ["image", "mask"]
            assert record["mask_sha256"] == sha256((accepted.stage.root / refs["mask"]).read_bytes())
        else:
            assert sorted(refs) == ["file"]
        (first, *_) = refs.values()
        assert record["sha256"] == sha256((accepted.stage.root / first).read_bytes())
        assert all((accepted.stage.root / r).is_relative_to(accepted.stage.raw) for r in refs.values())
    assert len(raw_files) > 60  # the raw store still holds everything: quarantine references, never moves


def test_report_and_quarantine_csv_list_every_bad_item(accepted):
    report = accepted.result.report.read_text()
    with open(accepted.stage.quarantine / "quarantine.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(accepted.bad)
    for row in rows:
        assert row["item_id"] in report
        assert f"<b>{row['reasons']}</b>" in report
        assert set(row["reasons"].split(";")) <= set(REASONS)
    assert "text.jpg" in report and "delivery-note.txt" in report
    summary = json.loads((accepted.stage.validated / "summary.json").read_text())
    assert summary["quarantined"] == len(accepted.bad) and summary["good"] == 20
    assert summary["bad_share"] == pytest.approx(len(accepted.bad) / (20 + len(accepted.bad)))


def test_stage_fails_only_when_bad_share_exceeds_the_limit(accepted, monkeypatch):
    monkeypatch.setenv("BACKDROP_PROJECT_DIR", str(accepted.stage.root))
    strict = make_stage(accepted.stage.root, max_bad_share=0.2)  # 16/36 = 44% bad > 20%
    accepted.result.report.unlink()
    with pytest.raises(ValidationFailed, match=r"16/36 items failed validation \(44% > validate.max_bad_share=20%\)"):
        validate(strict.validate, strict.ingest)
    assert "FAILED" in accepted.result.report.read_text()  # the report is written before failing
    lenient = make_stage(accepted.stage.root, max_bad_share=0.45)
    assert validate(lenient.validate, lenient.ingest).quarantined == 16


def test_ge_suite_rejects_a_corrupt_pair(project, synth):
    ok_photo = write(project, "ok.jpg", synth.photo_jpeg(0))
    ok_mask = write(project, "ok.png", synth.mask_png(0))
    cut = synth.photo_jpeg(1)
    corrupt_photo = write(project, "corrupt.jpg", cut[: len(cut) // 2])
    corrupt_mask = write(project, "corrupt.png", synth.mask_png(1))
    rows = []
    for item_id, photo, mask in (("good", ok_photo, ok_mask), ("corrupt", corrupt_photo, corrupt_mask)):
        stats = pair_stats(photo, mask, max_pixels=64_000_000)
        stats.update(item_id=item_id, kind="pair", sha256="0" * 64, mask_sha256="1" * 64,
                     safe_path=True, paired=True)
        rows.append(stats)
    assert rows[1]["image_status"] == "corrupt_file" and rows[1]["mask_status"] == "ok"
    assert rows[1].get("size_match") is None  # not judged: its photo has no size

    context = gx_context()
    params = make_stage(project).validate
    assert run_suite(rows, load_suite(SUITE, params), context, params) == {"corrupt": ["corrupt_file"]}
    # the thresholds live in the suite (filled from params): a stricter coverage bound fails the good pair
    assert 0.1 < rows[0]["coverage"] < 0.5
    strict = params.model_copy(update={"max_coverage": 0.1})
    context = gx_context()
    failures = run_suite(rows, load_suite(SUITE, strict), context, strict)
    # (the corrupt pair's mask decodes fine, so its coverage is judged too)
    assert failures == {"corrupt": ["corrupt_file", "coverage_out_of_bounds"], "good": ["coverage_out_of_bounds"]}
    # an expectation GE cannot evaluate (min > max) fails loudly instead of passing every row
    broken = params.model_copy(update={"min_coverage": 0.99, "max_coverage": 0.5})
    context = gx_context()
    with pytest.raises(RuntimeError, match="min_value cannot be greater than max_value"):
        run_suite(rows, load_suite(SUITE, broken), context, broken)


def test_suite_speaks_the_fixed_reason_vocabulary(tmp_path):
    spec = json.loads(SUITE.read_text())
    used = [e["meta"]["reason"] for e in spec["expectations"]]
    assert set(used) == set(REASONS)  # every reason has an expectation, and no expectation invents one
    invented = {**spec, "expectations": [{**spec["expectations"][0], "meta": {"reason": "looks_odd"}}]}
    path = tmp_path / "suite.json"
    path.write_text(json.dumps(invented))
    gx_context()
    with pytest.raises(ValueError, match="looks_odd"):
        load_suite(path, make_stage(tmp_path).validate)


def test_decompression_bomb_is_rejected_from_its_header_without_decoding(project, monkeypatch):
    # Its pixel data is 4 rows of 20000: decoding would fail as corrupt_file (or allocate 400 MB);
    # "too_large" proves the header alone decided.
    from PIL import ImageFile

    decodes = []  # (width, height) of every image whose pixels PIL decoded
    load = ImageFile.ImageFile.load

    def counting_load(image):
        decodes.append(image.size)
        return load(image)

    monkeypatch.setattr(ImageFile.ImageFile, "load", counting_load)
    bomb = write(project, "bomb.png", bomb_png(20000, 20000))
    stats = photo_stats(bomb, max_pixels=64_000_000)
    assert stats["image_status"] == "too_large"
    assert decodes == []  # not a single row decoded
    # below PIL's own bomb limit, above ours: validate.max_pixels decides
    big = write(project, "big.png", bomb_png(9000, 9000))
    assert photo_stats(big, max_pixels=64_000_000)["image_status"] == "too_large"
    assert decodes == []
    assert photo_stats(big, max_pixels=100_000_000)["image_status"] != "too_large"  # now it is decoded
    assert decodes and set(decodes) == {(9000, 9000)}
    lone = file_stats(bomb, "image", 64_000_000)  # the same check for a file without partner
    assert (lone["image_status"], lone["paired"]) == ("too_large", False)


def test_near_duplicate_threshold_separates_copies_from_other_photos(synth):
    threshold = make_stage(Path(".")).validate.near_dup_distance
    hashes = [hash_words(perceptual_hash(synth.photo(i))) for i in GOOD]
    for i, words in enumerate(hashes):  # 20 different packshots on similar studio backgrounds
        others = np.stack([h for j, h in enumerate(hashes) if j != i])
        assert hamming(words, others).min() > threshold, synth.stem(i)
    for i in range(5):  # re-encoded, resized, grey copies
        photo = synth.photo(i)
        for factor, quality in ((0.7, 70), (0.5, 60), (1.5, 90)):
            size = (round(photo.width * factor), round(photo.height * factor))
            copy = Image.open(io.BytesIO(jpeg_bytes(photo.resize(size), quality)))
            assert hamming(hash_words(perceptual_hash(copy)), hashes[i][None])[0] <= threshold
        grey = hash_words(perceptual_hash(photo.convert("L")))
        assert hamming(grey, hashes[i][None])[0] <= threshold


def test_alpha_and_one_bit_masks_with_suffix_names_are_accepted(stage, synth, capfd):
    drop = stage.root / "drop"
    cutout = synth.photo(0).convert("RGBA")
    cutout.putalpha(synth.mask(0))  # a cut-out PNG: the product with a transparent background
    write(drop, "jacket.jpg", synth.photo_jpeg(0))
    write(drop, "jacket-alpha.png", png_bytes(cutout))
    write(drop, "tee.jpg", synth.photo_jpeg(2))
    write(drop, "tee_mask.png", png_bytes(synth.mask(2).convert("1")))
    write(drop, "dress.png", png_bytes(synth.photo(3)))
    write(drop, "dress_mask.png", synth.mask_png(3))

    assert ingest(stage.ingest).added == 3
    result = validate(stage.validate, stage.ingest)

    assert (result.good, result.quarantined) == (3, 0)
    with open(stage.raw / "manifest.csv", newline="") as fh:
        assert {r["source_mask"] for r in csv.DictReader(fh)} == {
            "jacket-alpha.png", "tee_mask.png", "dress_mask.png"}
    with open(stage.validated / "pair_stats.csv", newline="") as fh:
        modes = {r["mask_mode"] for r in csv.DictReader(fh)}
    assert modes == {"RGBA", "1", "L"}
    captured = capfd.readouterr()
    assert "Calculating Metrics" not in captured.err + captured.out  # GE progress bars are off


def test_an_opaque_rgba_mask_is_not_an_alpha(project, synth):
    opaque = synth.photo(0).convert("RGBA")  # alpha 255 everywhere: says nothing about the product
    photo = write(project, "a.jpg", synth.photo_jpeg(0))
    mask = write(project, "a.png", png_bytes(opaque))
    stats = pair_stats(photo, mask, 64_000_000)
    assert stats["mask_single_channel"] is False and "constant alpha" in " ".join(stats["notes"])


def test_new_version_replaces_a_quarantined_pair(stage, synth):
    stem = synth.stem(5)
    write_tree_drop(stage.root / "drop", synth, range(5))
    write(stage.root / "drop", f"images/{stem}.jpg", synth.photo_jpeg(5))
    write(stage.root / "drop", f"masks/{stem}.png", png_bytes(Image.new("L", synth.photo(5).size, 0)))
    ingest(stage.ingest)
    first = validate(stage.validate, stage.ingest)
    assert first.quarantined == 1 and first.reasons == {"mask_empty": 1}

    fix = stage.root / "fix"
    write(fix, f"images/{stem}.jpg", synth.photo_jpeg(5))  # same photo, corrected mask
    write(fix, f"masks/{stem}.png", synth.mask_png(5))
    assert ingest(stage.ingest, fix).added == 1
    second = validate(stage.validate, stage.ingest)

    # the old version is superseded (not checked), the new one is no "duplicate" of it
    assert (second.total, second.good, second.quarantined, second.superseded) == (6, 6, 0, 1)
    assert [p for p in stage.quarantine.iterdir() if p.is_dir()] == []  # stale quarantine removed


def test_unsafe_zip_members_are_quarantined(stage, synth):
    archive = stage.root / "drop.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for i in range(3):
            zf.writestr(f"images/{synth.stem(i)}.jpg", synth.photo_jpeg(i))
            zf.writestr(f"masks/{synth.stem(i)}.png", synth.mask_png(i))
        zf.writestr("../../../tmp/evil.jpg", synth.photo_jpeg(3))
    assert ingest(stage.ingest, archive).added == 3
    result = validate(stage.validate.model_copy(update={"max_bad_share": 0.3}), stage.ingest)
    assert (result.good, result.quarantined, result.reasons) == (3, 1, {"unsafe_path": 1})
    (record,) = _reason_files(stage.quarantine).values()
    assert record["source_path"] == "tmp/evil.jpg" and "path traversal" in " ".join(record["problems"])


def test_a_0_1_label_map_is_an_empty_mask_with_a_hint(project, synth):
    photo = write(project, "a.jpg", synth.photo_jpeg(0))
    labels = synth.mask(0).point(lambda v: 1 if v else 0)  # 0/1 instead of 0/255
    stats = pair_stats(photo, write(project, "a.png", png_bytes(labels)), 64_000_000)
    assert stats["mask_has_foreground"] is False and stats.get("coverage") is None
    assert any("label map" in note for note in stats["notes"])
