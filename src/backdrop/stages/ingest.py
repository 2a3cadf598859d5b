"""ingest: a vendor drop folder → content-addressed raw store + manifest.

Pairs photos with masks by stem (`images/` + `masks/` trees or `_mask`/`-alpha` suffixes),
copies both files into `data/raw` under their sha256 and appends a manifest row per new pair.
Idempotent: a pair already stored (same bytes) is not added again; a changed file is a new version.
Unpaired files are listed in the manifest's orphan report, never silently ignored.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from backdrop.config import IngestParams, resolve
from backdrop.io import IMAGE_SUFFIXES, read_csv, sha256_file, write_csv, write_json

log = logging.getLogger(__name__)

MASK_SUFFIXES = ("_mask", "-mask", ".mask", "_alpha", "-alpha", "_matte")
MANIFEST_FIELDS = [
    "pair_id", "stem", "image_path", "mask_path", "image_sha256", "mask_sha256",
    "image_bytes", "mask_bytes", "source_drop", "source_image", "source_mask",
    "received_at", "vendor", "license",
]


@dataclass(frozen=True)
class IngestResult:
    added: int
    already_present: int
    orphans: list[str]
    manifest: Path


def _is_mask(path: Path) -> bool:
    stem = path.stem.lower()
    in_masks_dir = any(part.lower() in {"masks", "mask", "alpha", "mattes"} for part in path.parent.parts)
    return in_masks_dir or stem.endswith(MASK_SUFFIXES)


def _pair_key(path: Path, drop: Path) -> str:
    """Stem without mask suffix, plus the sub-folder below images/ or masks/, so nested drops pair up."""
    stem = path.stem
    for suffix in MASK_SUFFIXES:
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    rel_parent = [p for p in path.relative_to(drop).parent.parts
                  if p.lower() not in {"images", "image", "photos", "masks", "mask", "alpha", "mattes"}]
    return "/".join([*rel_parent, stem])


def pair_files(drop: Path) -> tuple[list[tuple[str, Path, Path]], list[Path]]:
    """Pairs (key, image, mask) found in a drop and the files that have no partner."""
    images: dict[str, list[Path]] = {}
    masks: dict[str, list[Path]] = {}
    other: list[Path] = []
    for path in sorted(p for p in drop.rglob("*") if p.is_file() and not p.name.startswith(".")):
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            if path.suffix.lower() not in {".csv", ".json", ".txt", ".md"}:
                other.append(path)
            continue
        (masks if _is_mask(path) else images).setdefault(_pair_key(path, drop), []).append(path)
    pairs, orphans = [], list(other)
    for key in sorted(images.keys() | masks.keys()):
        imgs, msks = images.get(key, []), masks.get(key, [])
        if len(imgs) == 1 and len(msks) == 1:
            pairs.append((key, imgs[0], msks[0]))
        else:
            orphans.extend(imgs + msks)
    return pairs, orphans


def ingest(params: IngestParams, drop_dir: Path | None = None) -> IngestResult:
    """Copy every new pair of the drop into the raw store and record it in the manifest."""
    from tqdm import tqdm

    drop = resolve(drop_dir or params.drop_dir)
    if not drop.is_dir():
        raise FileNotFoundError(f"{drop}: drop folder not found (make one with `backdrop data synth`)")
    raw = resolve(params.raw_dir)
    manifest_path = raw / "manifest.csv"
    rows = read_csv(manifest_path)
    known = {(r["image_sha256"], r["mask_sha256"]) for r in rows}
    pairs, orphans = pair_files(drop)
    received_at = datetime.now(UTC).isoformat(timespec="seconds")
    added = present = 0
    for key, image, mask in tqdm(pairs, desc="ingest", unit="pair", disable=None):
        image_sha, mask_sha = sha256_file(image), sha256_file(mask)
        if (image_sha, mask_sha) in known:
            present += 1
            continue
        image_dest = raw / "images" / f"{image_sha}{image.suffix.lower()}"
        mask_dest = raw / "masks" / f"{mask_sha}{mask.suffix.lower()}"
        for src, dest in ((image, image_dest), (mask, mask_dest)):
            if not dest.exists():
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, dest)
        rows.append({
            "pair_id": f"{image_sha[:12]}{mask_sha[:4]}",
            "stem": key,
            "image_path": str(image_dest.relative_to(raw)),
            "mask_path": str(mask_dest.relative_to(raw)),
            "image_sha256": image_sha,
            "mask_sha256": mask_sha,
            "image_bytes": image.stat().st_size,
            "mask_bytes": mask.stat().st_size,
            "source_drop": drop.name,
            "source_image": str(image.relative_to(drop)),
            "source_mask": str(mask.relative_to(drop)),
            "received_at": received_at,
            "vendor": params.vendor,
            "license": params.license,
        })
        known.add((image_sha, mask_sha))
        added += 1
    write_csv(manifest_path, rows, MANIFEST_FIELDS)
    orphan_names = [str(p.relative_to(drop)) for p in orphans]
    write_json(raw / "orphans.json", {"drop": drop.name, "files_without_partner": orphan_names})
    if orphan_names:
        log.warning("%d file(s) in %s have no partner; listed in %s", len(orphan_names), drop,
                    raw / "orphans.json")
    log.info("ingest: %d new pair(s), %d already present, %d total", added, present, len(rows))
    return IngestResult(added, present, orphan_names, manifest_path)
