"""ingest: a vendor drop (folder or .zip) → content-addressed raw store + manifests.

Photos are paired with masks by name: `images/` + `masks/` trees (any nesting), or mask suffixes
(`a.jpg` + `a_mask.png`, `a-alpha.png`, `a.matte.png`...). Each pair's files are copied into
`data/raw/images|masks/<sha256>.<ext>` and one manifest row records both hashes, sizes, the source
drop, the receive time, vendor and license.

Nothing is silently dropped: a file without a partner, an ambiguous name or a non-image file is
copied to `data/raw/unpaired/<sha256>.<ext>` with a row in `unpaired.csv`, and `validate`
quarantines it. Only OS clutter (dot-files, `__MACOSX/`, `Thumbs.db`) and symbolic links are skipped,
and those are listed in `orphans.json` and logged.

Idempotent: files are known by content, so the same drop twice adds nothing. A pair whose name was
seen before but whose bytes changed is stored as a new version and supersedes the old row
(`version`, `superseded_by`). A photo that arrives without its mask waits in `unpaired/` and is
paired when the mask arrives in a later drop (and vice versa).

Drop-level metadata: a drop may describe itself in a top-level `drop.json` (source, split, license,
`"training": true|false`, and `"metadata": ["labels.csv", ...]`, the files that describe the drop
rather than being photos or masks). `drop.json` and the non-image files it declares are stored by
content in `data/raw/metadata/<sha256>.<ext>` with a row in `metadata.csv`, so they are kept but not
quarantined as stray files; anything undeclared stays an unpaired file as before. A drop whose
`drop.json` says `"training": false` (e.g. the Fashion-MNIST test split, which must never be
trained on) is refused before anything is stored.

Zip drops are read member by member straight from the archive: member names are never used as
file-system paths (no path traversal), members named like `../x` or symbolic links are kept but
flagged unsafe. An archive is refused, naming it and the member, before a single byte is stored,
when a member compresses more than `MAX_RATIO`:1 (a zip bomb: deflate reaches ~1000:1 on zeros),
when one member unpacks to more than `MAX_MEMBER_BYTES`, or when all together claim more than
`ingest.max_unpacked_bytes`. The sizes checked are the headers' (zipfile never reads a member past
its declared size, and its CRC check fails if the data differ).
Files are streamed (hash, then copy + verify), so memory stays flat whatever the drop's size.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import stat
import zipfile
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from backdrop.config import IngestParams, resolve
from backdrop.data.manifest import MANIFEST_FIELDS
from backdrop.io import IMAGE_SUFFIXES, atomic_path, read_csv, write_csv, write_json

log = logging.getLogger(__name__)

MASK_SUFFIXES = ("_mask", "-mask", ".mask", " mask", "_alpha", "-alpha", ".alpha",
                 "_matte", "-matte", ".matte")
MASK_DIRS = {"masks", "mask", "alpha", "alphas", "mattes", "matte"}
IMAGE_DIRS = {"images", "image", "photos", "photo", "img", "imgs"}
SYSTEM_NAMES = {"__macosx", "thumbs.db", "desktop.ini"}
CHUNK = 1 << 20
# Zip members. TODO(config): ingest.max_ratio / ingest.max_member_bytes would make these settings.
MAX_RATIO = 100                 # unpacked:packed bytes of one member; photos/masks are already compressed
# ...except uncompressed formats: a 2000² binary mask saved as BMP/TIFF deflates ~250-280:1 (measured);
# deflate itself tops out near 1030:1, so a bomb named .bmp still stays within half of that
UNCOMPRESSED_SUFFIXES, MAX_RATIO_UNCOMPRESSED = frozenset({".bmp", ".tif", ".tiff"}), 500
RATIO_MIN_BYTES = 1 << 20       # members smaller than this cannot hurt whatever their ratio (a tiny PNG)
MAX_MEMBER_BYTES = 512 << 20    # one member unpacked; a 64-Mpixel 16-bit RGBA TIFF is 512 MB

METADATA_FIELDS = [
    "file_id", "path", "sha256", "bytes", "source_drop", "source_path", "received_at", "vendor",
    "license",
]
DESCRIPTOR = "drop.json"   # top-level drop descriptor: {"metadata": [...], "training": bool, ...}
UNPAIRED_FIELDS = [
    "file_id", "path", "sha256", "bytes", "role", "key", "note", "unsafe", "source_drop",
    "source_path", "received_at", "vendor", "license", "resolved_by",
]


@dataclass(frozen=True)
class IngestResult:
    added: int                 # new pairs (or new versions of known pairs)
    already_present: int       # pairs of this drop already in the store (same bytes)
    orphans: list[str]         # files of this drop that are not in a pair (kept in raw/unpaired/)
    manifest: Path
    unpaired_added: int = 0    # of `orphans`, how many were new to the store
    skipped: list[str] = field(default_factory=list)  # OS clutter and symlinks, listed, not stored
    metadata: list[str] = field(default_factory=list)  # drop.json and the files it declares (raw/metadata/)


class ArchiveRefused(ValueError):
    """A zip drop that would unpack to too much: a zip bomb, a huge member, or too much in total."""


@dataclass(frozen=True)
class Entry:
    """One file of a drop: where it sits in the drop and how to read it (folder or zip member)."""

    rel: str                         # POSIX path inside the drop, as recorded in the manifests
    size: int
    open: Callable[[], BinaryIO]
    unsafe: str = ""                 # why the entry cannot be trusted as a normal file ("" = fine)

    @property
    def suffix(self) -> str:
        return PurePosixPath(self.rel).suffix.lower()


@dataclass
class _Lone:
    entry: Entry
    role: str                        # image | mask | other
    key: str
    note: str


# ---------------------------------------------------------------------------------------------- listing

def _is_system(name: str) -> bool:
    """Dot-files, `__MACOSX`, `Thumbs.db`...: OS clutter (`.` and `..` are path parts, not files)."""
    return (name.startswith(".") and name not in (".", "..")) or name.lower() in SYSTEM_NAMES


def _folder_entries(drop: Path, stack: ExitStack, budget: list[int],
                    skipped: list[str]) -> list[Entry]:
    entries: list[Entry] = []
    for dirpath, dirnames, filenames in os.walk(drop):  # never follows symlinked folders
        here = Path(dirpath)
        rel_dir = PurePosixPath(here.relative_to(drop).as_posix())
        keep = []
        for name in sorted(dirnames):
            rel = str(rel_dir / name)
            if _is_system(name):
                skipped.append(f"{rel}/ (system folder)")
            elif (here / name).is_symlink():
                skipped.append(f"{rel}/ (symbolic link, not followed)")
            else:
                keep.append(name)
        dirnames[:] = keep
        for name in sorted(filenames):
            full, rel = here / name, str(rel_dir / name)
            if _is_system(name):
                skipped.append(f"{rel} (system file)")
            elif full.is_symlink():
                skipped.append(f"{rel} (symbolic link, not followed)")
            elif not full.is_file():
                skipped.append(f"{rel} (not a regular file)")
            elif name.lower().endswith(".zip") and zipfile.is_zipfile(full):
                archive = stack.enter_context(zipfile.ZipFile(full))
                entries.extend(_zip_entries(archive, rel, rel[: -len(".zip")], budget, skipped))
            else:
                entries.append(Entry(rel, full.stat().st_size, partial(open, full, "rb")))
    return entries


def _zip_entries(archive: zipfile.ZipFile, label: str, prefix: str, budget: list[int],
                 skipped: list[str]) -> list[Entry]:
    """Members of a zip as entries read straight from the archive (never extracted by name)."""
    members = []
    for info in archive.infolist():
        if info.is_dir():
            continue
        name = info.filename.replace("\\", "/")
        if any(_is_system(part) for part in name.split("/") if part):
            skipped.append(f"{label}:{info.filename} (system file)")
            continue
        if info.flag_bits & 0x1:
            raise ValueError(f"{label}: member {info.filename!r} is encrypted; decrypt the drop first")
        _check_member(label, info)
        budget[0] -= info.file_size
        if budget[0] < 0:
            raise ArchiveRefused(f"{label}: unpacks to more than ingest.max_unpacked_bytes "
                                 f"(at member {info.filename!r}; zip bomb?); split the drop or raise the limit")
        members.append((info, name))
    # One folder wrapping everything ("drop-2024-05/images/...") is packaging, not part of the names.
    tops = {name.split("/", 1)[0] for _, name in members}
    wrapped = len(tops) == 1 and all("/" in name for _, name in members)
    entries = []
    for index, (info, name) in enumerate(members):
        parts = name.split("/")
        unsafe = ""
        if name.startswith("/") or re.match(r"[A-Za-z]:", name) or ".." in parts:
            unsafe = f"unsafe member name {info.filename!r} in {label} (absolute or path traversal)"
        elif stat.S_ISLNK(info.external_attr >> 16):
            unsafe = f"symbolic link {info.filename!r} in {label}"
        clean = [p for p in parts if p not in ("", ".", "..") and not re.fullmatch(r"[A-Za-z]:", p)]
        if wrapped and not unsafe and len(clean) > 1:
            clean = clean[1:]
        rel = "/".join(p for p in (prefix, *clean) if p) or f"{label}-member-{index}"
        entries.append(Entry(rel, info.file_size, partial(archive.open, info), unsafe))
    return entries


def _check_member(label: str, info: zipfile.ZipInfo) -> None:
    """Refuse a member by its header, before anything is read: too big, or compressed like a bomb."""
    mb = info.file_size / 1e6
    if info.file_size > MAX_MEMBER_BYTES:
        raise ArchiveRefused(f"{label}: member {info.filename!r} unpacks to {mb:,.0f} MB, more than the "
                             f"{MAX_MEMBER_BYTES / 1e6:,.0f} MB a photo or mask may have; archive refused, "
                             "nothing stored")
    limit = MAX_RATIO_UNCOMPRESSED if Path(info.filename).suffix.lower() in UNCOMPRESSED_SUFFIXES else MAX_RATIO
    if info.file_size >= RATIO_MIN_BYTES and info.file_size > limit * max(info.compress_size, 1):
        ratio = info.file_size / max(info.compress_size, 1)
        raise ArchiveRefused(f"{label}: member {info.filename!r} has a compression ratio of {ratio:,.0f}:1 "
                             f"({info.compress_size:,} bytes unpack to {mb:,.1f} MB; more than {limit}:1 "
                             "is a zip bomb, not a photo); archive refused, nothing stored")


def list_drop(drop: Path, stack: ExitStack, max_unpacked_bytes: int) -> tuple[list[Entry], list[str]]:
    """Every file of a drop folder or .zip (zips inside a folder are read as sub-folders)."""
    skipped: list[str] = []
    budget = [max_unpacked_bytes]
    if drop.is_dir():
        entries = _folder_entries(drop, stack, budget, skipped)
    elif drop.is_file() and zipfile.is_zipfile(drop):
        entries = _zip_entries(stack.enter_context(zipfile.ZipFile(drop)), drop.name, "", budget, skipped)
    elif drop.exists():
        raise ValueError(f"{drop}: a drop is a folder or a .zip archive")
    else:
        raise FileNotFoundError(f"{drop}: drop folder not found (make one with `backdrop data synth`)")
    return entries, skipped


# ---------------------------------------------------------------------------------------------- pairing

def _candidates(rel: str) -> tuple[str, list[str]]:
    """Role and the pairing keys a file may go by, preferred first.

    The folder decides first: anything under images/ is a photo (`images/no-mask.jpg` keeps its
    name), anything under masks/ is a mask that pairs with the photo of its own name or of its name
    without mask suffix. In other folders a mask suffix makes a mask. Sub-folders other than
    images/ and masks/ are part of the key, so nested drops pair up.
    """
    path = PurePosixPath(rel)
    dirs = [d.lower() for d in path.parent.parts]
    folders = [d for d in path.parent.parts if d.lower() not in MASK_DIRS | IMAGE_DIRS]
    stem = path.stem
    full = "/".join([*folders, stem])
    stripped = next(("/".join([*folders, stem[: -len(s)]]) for s in MASK_SUFFIXES
                     if stem.lower().endswith(s) and len(stem) > len(s)), None)
    if any(d in MASK_DIRS for d in dirs):
        return "mask", [full, stripped] if stripped else [full]
    if any(d in IMAGE_DIRS for d in dirs):
        return "image", [full]
    return ("mask", [stripped]) if stripped else ("image", [full])


def role_and_key(rel: str) -> tuple[str, str]:
    """("image" | "mask", pairing key): `shoes/images/a.jpg` and `shoes/masks/a_mask.png` share `shoes/a`."""
    role, keys = _candidates(rel)
    return role, keys[-1]


def pair_entries(entries: list[Entry]) -> tuple[list[tuple[str, Entry, Entry]], list[_Lone]]:
    """Pairs (key, photo, mask) and the entries left alone, each with the reason why."""
    images: dict[str, list[tuple[str, Entry]]] = {}
    masks: list[tuple[list[str], Entry]] = []
    lone: list[_Lone] = []
    for entry in entries:
        role, keys = _candidates(entry.rel)
        if entry.unsafe:
            lone.append(_Lone(entry, role, keys[-1], entry.unsafe))
        elif entry.suffix not in IMAGE_SUFFIXES:
            lone.append(_Lone(entry, "other", keys[-1],
                              f"not an image file type ({entry.suffix or 'no suffix'})"))
        elif role == "image":
            images.setdefault(keys[0].casefold(), []).append((keys[0], entry))
        else:
            masks.append((keys, entry))
    groups: dict[str, dict[str, list[tuple[str, Entry]]]] = {
        k: {"image": v, "mask": []} for k, v in images.items()}
    for keys, entry in masks:
        key = next((k for k in keys if k.casefold() in images), keys[-1])
        groups.setdefault(key.casefold(), {"image": [], "mask": []})["mask"].append((key, entry))
    pairs = []
    for group in groups.values():
        photos, found = group["image"], group["mask"]
        if len(photos) == 1 and len(found) == 1:
            pairs.append((photos[0][0], photos[0][1], found[0][1]))
            continue
        if not found:
            note = "no mask for this photo"
        elif not photos:
            note = "no photo for this mask"
        else:
            note = f"ambiguous: {len(photos)} photo(s) and {len(found)} mask(s) share this name"
        lone.extend(_Lone(e, role, key, note)
                    for role, items in (("image", photos), ("mask", found)) for key, e in items)
    pairs.sort(key=lambda p: p[1].rel)
    lone.sort(key=lambda item: item.entry.rel)
    return pairs, lone


# ---------------------------------------------------------------------------------------------- metadata

class DropRefused(ValueError):
    """The drop describes itself as not for training (drop.json `"training": false`)."""


def split_metadata(entries: list[Entry], label: str) -> tuple[list[Entry], list[Entry], dict]:
    """(other entries, metadata entries, the descriptor) — metadata = drop.json + what it declares.

    Only a top-level, readable JSON-object `drop.json` counts; a broken one stays a normal (unpaired)
    file, so validate quarantines it. Declared files must be top-level non-image files: a photo cannot
    be hidden from validation by calling it metadata.
    """
    import json

    by_rel = {e.rel: e for e in entries}
    desc_entry = by_rel.get(DESCRIPTOR)
    if desc_entry is None or desc_entry.unsafe or desc_entry.size > CHUNK:
        return entries, [], {}
    try:
        with desc_entry.open() as fh:
            descriptor = json.loads(fh.read(CHUNK + 1).decode("utf-8"))
        if not isinstance(descriptor, dict):
            raise ValueError("not a JSON object")
    except (ValueError, UnicodeDecodeError) as exc:
        log.warning("%s: %s is not a valid drop descriptor (%s); kept as an unpaired file", label,
                    DESCRIPTOR, exc)
        return entries, [], {}
    declared = descriptor.get("metadata") or []
    names = {DESCRIPTOR} | {str(n) for n in declared if isinstance(n, str)}
    meta = [e for rel, e in by_rel.items() if rel in names and "/" not in rel and not e.unsafe
            and e.suffix not in IMAGE_SUFFIXES]
    for name in sorted(names - {e.rel for e in meta}):
        log.warning("%s: %s declares metadata file %r, which is not a top-level non-image file of "
                    "the drop", label, DESCRIPTOR, name)
    keep = {id(e) for e in meta}
    return [e for e in entries if id(e) not in keep], meta, descriptor


def refuse_if_not_for_training(descriptor: dict, label: str) -> None:
    if descriptor.get("training") is False:
        what = ", ".join(f"{k}={descriptor[k]}" for k in ("source", "split") if k in descriptor)
        raise DropRefused(f"{label}: {DESCRIPTOR} marks this drop as not for training ({what or 'no reason given'}); "
                          "evaluation-only data must never reach the training store")


# ---------------------------------------------------------------------------------------------- storing

def _sha256(entry: Entry) -> str:
    with entry.open() as fh:  # a file or a zip member
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _store(entry: Entry, dest: Path, sha: str) -> None:
    """Copy into the content-addressed store, verifying the bytes are still those hashed."""
    if dest.exists() and dest.stat().st_size == entry.size:
        return
    digest = hashlib.sha256()
    with atomic_path(dest) as tmp:
        with entry.open() as src, open(tmp, "wb") as out:
            while block := src.read(CHUNK):
                digest.update(block)
                out.write(block)
        if digest.hexdigest() != sha:
            raise RuntimeError(f"{entry.rel}: file changed while it was being ingested; ingest again")


def _safe_suffix(entry: Entry) -> str:
    suffix = entry.suffix
    return suffix if re.fullmatch(r"\.[a-z0-9]{1,10}", suffix) else ".bin"


def _pair_id(image_sha: str, mask_sha: str) -> str:
    return hashlib.sha256(f"{image_sha}:{mask_sha}".encode()).hexdigest()[:16]


def _stored_entry(raw: Path, row: dict[str, str]) -> Entry:
    path = raw / row["path"]
    return Entry(f"{row['source_drop']}:{row['source_path']}", int(row["bytes"]),
                 partial(open, path, "rb"))


def ingest(params: IngestParams, drop_dir: Path | None = None) -> IngestResult:
    """Copy every new pair (and every file that is not in a pair) of a drop into the raw store."""
    from tqdm import tqdm

    drop = resolve(drop_dir or params.drop_dir)
    raw = resolve(params.raw_dir)
    if drop.is_dir() and (raw.is_relative_to(drop) or drop.is_relative_to(raw)):
        raise ValueError(f"drop {drop} and raw store {raw} overlap: the store would ingest itself")
    manifest_path, unpaired_path = raw / "manifest.csv", raw / "unpaired.csv"
    metadata_path = raw / "metadata.csv"
    rows = read_csv(manifest_path)
    loose = read_csv(unpaired_path)
    meta_rows = read_csv(metadata_path)
    received_at = datetime.now(UTC).isoformat(timespec="seconds")
    known_pairs = {(r["image_sha256"], r["mask_sha256"]) for r in rows}
    paired_shas = {sha for r in rows for sha in (r["image_sha256"], r["mask_sha256"])}
    known_loose = {r["sha256"] for r in loose}

    versions: dict[tuple[str, str], list[dict]] = {}  # (vendor, name) → its rows, oldest first
    for r in rows:
        versions.setdefault((r["vendor"], r["stem"].casefold()), []).append(r)

    def add_pair(key: str, image: Entry, mask: Entry, image_sha: str, mask_sha: str,
                 source_image: str, source_mask: str) -> str:
        image_dest = raw / "images" / f"{image_sha}{image.suffix}"
        mask_dest = raw / "masks" / f"{mask_sha}{mask.suffix}"
        _store(image, image_dest, image_sha)
        _store(mask, mask_dest, mask_sha)
        pair_id = _pair_id(image_sha, mask_sha)
        older = versions.setdefault((params.vendor, key.casefold()), [])
        for r in older:
            if not r.get("superseded_by"):
                r["superseded_by"] = pair_id
        row = {
            "pair_id": pair_id, "stem": key,
            "image_path": image_dest.relative_to(raw).as_posix(),
            "mask_path": mask_dest.relative_to(raw).as_posix(),
            "image_sha256": image_sha, "mask_sha256": mask_sha,
            "image_bytes": image.size, "mask_bytes": mask.size,
            "source_drop": drop.name, "source_image": source_image, "source_mask": source_mask,
            "received_at": received_at, "vendor": params.vendor, "license": params.license,
            "version": 1 + max((int(r.get("version") or 1) for r in older), default=0),
            "superseded_by": "",
        }
        rows.append(row)
        older.append(row)
        known_pairs.add((image_sha, mask_sha))
        paired_shas.update((image_sha, mask_sha))
        return pair_id

    added = present = loose_added = 0
    with ExitStack() as stack:
        entries, skipped = list_drop(drop, stack, params.max_unpacked_bytes)
        entries, meta_entries, descriptor = split_metadata(entries, drop.name)
        refuse_if_not_for_training(descriptor, drop.name)
        known_meta = {(r["sha256"], r["source_drop"], r["source_path"]) for r in meta_rows}
        for entry in meta_entries:  # kept by content, listed per drop and name
            sha = _sha256(entry)
            if (sha, drop.name, entry.rel) in known_meta:
                continue
            dest = raw / "metadata" / f"{sha}{_safe_suffix(entry)}"
            _store(entry, dest, sha)
            meta_rows.append({
                "file_id": f"m-{sha[:14]}", "path": dest.relative_to(raw).as_posix(), "sha256": sha,
                "bytes": entry.size, "source_drop": drop.name, "source_path": entry.rel,
                "received_at": received_at, "vendor": params.vendor, "license": params.license,
            })
        pairs, lone = pair_entries(entries)
        for key, image, mask in tqdm(pairs, desc="ingest", unit="pair", disable=None):
            image_sha, mask_sha = _sha256(image), _sha256(mask)
            if (image_sha, mask_sha) in known_pairs:
                present += 1
                continue
            add_pair(key, image, mask, image_sha, mask_sha, image.rel, mask.rel)
            added += 1

        for item in tqdm(lone, desc="ingest unpaired", unit="file", disable=None):
            entry = item.entry
            sha = _sha256(entry)
            if sha in paired_shas:
                log.info("%s: no partner in this drop, but its bytes are already stored in a pair", entry.rel)
                continue
            partner = _waiting_partner(loose, item, params.vendor)
            if partner is not None:  # the other half arrived in an earlier drop: pair them now
                stored = _stored_entry(raw, partner)
                if item.role == "image":
                    image, mask, image_sha, mask_sha = entry, stored, sha, partner["sha256"]
                else:
                    image, mask, image_sha, mask_sha = stored, entry, partner["sha256"], sha
                if (image_sha, mask_sha) in known_pairs:
                    present += 1
                else:
                    added += 1
                    partner["resolved_by"] = add_pair(item.key, image, mask, image_sha, mask_sha,
                                                      image.rel, mask.rel)
                continue
            if sha in known_loose:
                continue
            dest = raw / "unpaired" / f"{sha}{_safe_suffix(entry)}"
            _store(entry, dest, sha)
            loose.append({
                "file_id": f"u-{sha[:14]}", "path": dest.relative_to(raw).as_posix(), "sha256": sha,
                "bytes": entry.size, "role": item.role, "key": item.key, "note": item.note,
                "unsafe": bool(entry.unsafe), "source_drop": drop.name, "source_path": entry.rel,
                "received_at": received_at, "vendor": params.vendor, "license": params.license,
                "resolved_by": "",
            })
            known_loose.add(sha)
            loose_added += 1

    write_csv(manifest_path, rows, MANIFEST_FIELDS)
    write_csv(unpaired_path, loose, UNPAIRED_FIELDS)
    if meta_rows:
        write_csv(metadata_path, meta_rows, METADATA_FIELDS)
    orphan_names = [item.entry.rel for item in lone]
    write_json(raw / "orphans.json", {
        "drop": drop.name, "received_at": received_at,
        "metadata": [e.rel for e in meta_entries],
        "files_without_partner": {item.entry.rel: item.note for item in lone},
        "skipped": skipped})
    if orphan_names:
        log.warning("%d file(s) of %s are not in a pair; kept in %s and listed in %s (validate "
                    "quarantines them)", len(orphan_names), drop.name, raw / "unpaired", unpaired_path)
    if skipped:
        log.warning("%d system file(s)/link(s) of %s skipped: %s", len(skipped), drop.name,
                    ", ".join(skipped[:5]) + (" ..." if len(skipped) > 5 else ""))
    log.info("ingest: %d new pair(s), %d already present, %d new unpaired file(s), %d pairs in store",
             added, present, loose_added, len(rows))
    return IngestResult(added, present, orphan_names, manifest_path, loose_added, skipped,
                        [e.rel for e in meta_entries])


def _waiting_partner(loose: list[dict[str, str]], item: _Lone, vendor: str) -> dict[str, str] | None:
    """The stored, still unpaired other half of `item` (same vendor and name), if exactly one waits."""
    if item.role not in ("image", "mask") or item.entry.unsafe or item.note.startswith("ambiguous"):
        return None
    want = "mask" if item.role == "image" else "image"
    found = [r for r in loose if r["role"] == want and not r.get("resolved_by") and r["vendor"] == vendor
             and r["key"].casefold() == item.key.casefold() and str(r["unsafe"]) != "True"
             and not r["note"].startswith("ambiguous")]
    return found[0] if len(found) == 1 else None

