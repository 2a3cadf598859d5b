"""validate: per-item statistics checked by a Great Expectations suite; failures are quarantined.

One row of statistics per current pair (the latest version of each name) and per file that ingest
could not pair, computed one file at a time (memory stays flat, one decoded image at a time). The
suite in `src/backdrop/expectations/pairs_suite.json` decides which rows fail and why: each
expectation carries one reason of the fixed vocabulary `REASONS` in its meta. A statistic whose
prerequisite failed is left empty (GE skips nulls), so every item gets its root cause only: a mask
that does not decode is `corrupt_file`, not also "empty" and "wrong size".

Failing items get a folder `data/quarantine/<id>/` holding only `reason.json`, which references
the item's files in the content-addressed raw store (`raw_paths`, with their sha256) instead of a
second copy of the bytes; they are listed in `quarantine.csv` and in the HTML report. The stage fails only when the bad share exceeds
`validate.max_bad_share`.
"""

from __future__ import annotations

import html
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backdrop.config import IngestParams, ValidateParams, resolve
from backdrop.io import (
    BadImageError,
    decoded_image,
    hamming,
    hash_words,
    mask_rule,
    measure_mask,
    perceptual_hash,
    read_csv,
    write_csv,
    write_json,
)

log = logging.getLogger(__name__)

# The fixed vocabulary of quarantine reasons (reason.json, quarantine.csv, summary.json, report).
REASONS: dict[str, str] = {
    "unpaired": "a photo or mask whose partner is not in the drop (or whose name is ambiguous)",
    "not_an_image": "not a JPEG/PNG/WebP/TIFF/BMP image (a text file named .jpg, a PDF, ...)",
    "empty_file": "the file has 0 bytes",
    "corrupt_file": "the image is truncated or corrupt: it does not decode completely",
    "unsupported_mode": "the pixels cannot be decoded faithfully to 8-bit RGB/grey (LAB/HSV modes, "
                        "negative, NaN or out-of-range 32-bit values)",
    "too_large": "the header claims more than validate.max_pixels pixels (decompression bomb); "
                 "rejected from the header without decoding",
    "missing_file": "the stored file is missing from the raw store",
    "unsafe_path": "a zip member with an absolute or ../ name, or a symbolic link",
    "resolution_too_low": "the photo's shorter side is below validate.min_side",
    "mask_size_mismatch": "mask and photo differ in width or height",
    "mask_not_grayscale_or_alpha": "the mask is a colour image without an alpha outline (an alpha that "
                                   "is constant is ignored and the picture itself is read)",
    "mask_not_binary": "more than validate.max_gray_share of the mask is grey (a mask is black/white "
                       "with soft edges only)",
    "mask_empty": "the mask has no foreground pixel",
    "coverage_out_of_bounds": "the foreground share is outside [validate.min_coverage, validate.max_coverage]",
    "duplicate_image": "the same photo bytes as an earlier pair",
    "near_duplicate": "the photo is a re-encoded/resized copy of an earlier pair's photo "
                      "(perceptual hashes within validate.near_dup_distance bits)",
    "manifest_corrupt": "the manifest row does not carry a valid sha256",
}

STAT_FIELDS = [
    "item_id", "kind", "sha256", "mask_sha256", "safe_path", "paired", "image_status", "mask_status",
    "width", "height", "min_side", "mask_width", "mask_height", "mask_mode", "size_match",
    "mask_single_channel", "mask_has_foreground", "coverage", "gray_share", "is_duplicate",
    "duplicate_of", "near_distance", "near_duplicate_of", "phash", "notes",
]


class ValidationFailed(RuntimeError):
    """Too many items failed the suite: the data drop needs a human look before training."""


@dataclass(frozen=True)
class ValidateResult:
    total: int                # current pairs + unpaired files checked
    good: int
    quarantined: int
    reasons: dict[str, int]
    report: Path
    superseded: int = 0       # older versions of pairs, replaced by a newer drop (not checked)
    bad_share: float = 0.0


# ------------------------------------------------------------------------------------------- statistics

def photo_stats(path: Path, max_pixels: int) -> dict[str, Any]:
    """Decode the photo once: status, size and perceptual hash."""
    stats: dict[str, Any] = {"notes": []}
    try:
        with decoded_image(path, max_pixels=max_pixels) as image:
            stats.update(image_status="ok", width=image.width, height=image.height,
                         min_side=min(image.size), phash=perceptual_hash(image))
            orientation = image.info.get("exif_orientation", 1)
            if orientation in (5, 6, 7, 8):  # the decoder turned it upright; the mask must match that
                stats["notes"].append(f"photo: EXIF orientation {orientation} (stored rotated by 90°, "
                                      "checked and prepared upright)")
    except BadImageError as exc:
        stats.update(image_status=exc.reason)
        stats["notes"].append(f"photo: {exc}")
    return stats


def mask_stats(path: Path, max_pixels: int) -> dict[str, Any]:
    """Decode the mask once: status, size, mode, whether it is a mask at all, coverage, grey share."""
    stats: dict[str, Any] = {"notes": []}
    try:
        with decoded_image(path, max_pixels=max_pixels) as mask:
            stats.update(mask_status="ok", mask_width=mask.width, mask_height=mask.height,
                         mask_mode=mask.info.get("stored_mode", mask.mode))
            channel, why_not = mask_rule(mask)  # the rule corrections apply too
            m = measure_mask(channel) if channel is not None else None
    except BadImageError as exc:
        stats.update(mask_status=exc.reason)
        stats["notes"].append(f"mask: {exc}")
        return stats
    stats["mask_single_channel"] = m is not None
    if m is None:
        stats["notes"].append(f"mask: {why_not}")
        return stats
    stats.update(mask_has_foreground=m.foreground > 0, gray_share=m.gray_share,
                 coverage=m.coverage if m.foreground else None)
    if m.label_map:
        stats["notes"].append("mask: values are 0/1 only - a label map? masks are 0 (background) / 255")
    return stats


def pair_stats(image_path: Path, mask_path: Path, max_pixels: int) -> dict[str, Any]:
    """Statistics of one pair; unreadable files yield a status and a note, never an exception."""
    photo, mask = photo_stats(image_path, max_pixels), mask_stats(mask_path, max_pixels)
    stats = {**photo, **mask, "notes": photo["notes"] + mask["notes"]}
    if photo["image_status"] == "ok" and mask["mask_status"] == "ok":
        stats["size_match"] = (photo["width"], photo["height"]) == (mask["mask_width"], mask["mask_height"])
    return stats


def file_stats(path: Path, role: str, max_pixels: int) -> dict[str, Any]:
    """Statistics of a file ingest could not pair: is it an image at all, and does it decode?"""
    stats = photo_stats(path, max_pixels)
    status = stats.pop("image_status")
    stats = {"notes": stats["notes"]}
    stats["mask_status" if role == "mask" else "image_status"] = status
    # "unpaired" only means something for an image; a text file is simply not an image.
    stats["paired"] = None if status in ("not_an_image", "empty_file", "missing_file") else False
    return stats


class _HashIndex:
    """Perceptual hashes seen so far, for vectorised nearest-Hamming lookups (grows by doubling)."""

    def __init__(self) -> None:
        import numpy as np

        self.words = np.zeros((64, 4), dtype=np.uint64)
        self.ids: list[str] = []

    def nearest(self, words) -> tuple[int, str] | None:
        if not self.ids:
            return None
        dist = hamming(words, self.words[: len(self.ids)])
        j = int(dist.argmin())
        return int(dist[j]), self.ids[j]

    def add(self, item_id: str, words) -> None:
        import numpy as np

        if len(self.ids) == len(self.words):
            self.words = np.concatenate([self.words, np.zeros_like(self.words)])
        self.words[len(self.ids)] = words
        self.ids.append(item_id)


def collect_stats(raw: Path, pairs: list[dict[str, str]], files: list[dict[str, str]],
                  max_pixels: int) -> list[dict[str, Any]]:
    """The statistics table: one row per current pair (manifest order), then per unpaired file."""
    from backdrop.progress import progress

    rows: list[dict[str, Any]] = []
    first_by_sha: dict[str, str] = {}
    index = _HashIndex()
    for row in progress(pairs, desc="validate", unit="pair"):
        stats = pair_stats(raw / row["image_path"], raw / row["mask_path"], max_pixels)
        item_id = row["pair_id"]
        stats.update(item_id=item_id, kind="pair", sha256=row["image_sha256"],
                     mask_sha256=row["mask_sha256"], safe_path=True, paired=True)
        if stats["image_status"] == "ok":
            first = first_by_sha.setdefault(row["image_sha256"], item_id)
            stats["is_duplicate"] = first != item_id
            if stats["is_duplicate"]:
                stats["duplicate_of"] = first
            else:  # exact copies are duplicates already; only distinct bytes are compared by look
                words = hash_words(stats["phash"])
                if (hit := index.nearest(words)) is not None:
                    stats["near_distance"], stats["near_duplicate_of"] = hit
                index.add(item_id, words)
        rows.append(stats)
    for row in progress(files, desc="validate unpaired", unit="file"):
        stats = file_stats(raw / row["path"], row["role"], max_pixels)
        stats.update(item_id=row["file_id"], kind="file", sha256=row["sha256"],
                     safe_path=str(row["unsafe"]) != "True")
        if not stats["safe_path"]:
            stats["paired"] = None  # an unsafe member is never paired: that is its one reason
        stats["notes"].insert(0, f"{row['source_path']}: {row['note']}")
        rows.append(stats)
    return rows


# ------------------------------------------------------------------------------------ Great Expectations

def gx_context():
    """An in-memory GE context without progress bars or analytics: nothing is written or sent."""
    ge_log = logging.getLogger("great_expectations")
    if ge_log.level == logging.NOTSET:  # its INFO chatter ("Loading 'datasources'...") is not ours to show
        ge_log.setLevel(logging.WARNING)
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
        progress_bars=ProgressBarsConfig(globally=False, metric_calculations=False),
        analytics_enabled=False)
    return gx.get_context(mode="ephemeral", project_config=config)


def load_suite(path: Path, params: ValidateParams):
    """The suite from the repo; thresholds are GE suite parameters (`{"$PARAMETER": key}`), each a key
    of params.yaml `validate:` (checked here, given their values by `run_suite`).

    Every expectation must name its quarantine reason (meta.reason, one of `REASONS`).
    Needs an active GE context (`gx_context()`) first.
    """
    import great_expectations as gx

    spec = json.loads(path.read_text())
    suite = gx.ExpectationSuite(name=spec["name"])
    for item in spec["expectations"]:
        reason = item.get("meta", {}).get("reason")
        if reason not in REASONS:
            raise ValueError(f"{path}: expectation {item['type']} on {item['kwargs'].get('column')} "
                             f"has reason {reason!r}, not one of {sorted(REASONS)}")
        for value in item["kwargs"].values():
            if isinstance(value, dict) and not hasattr(params, value.get("$PARAMETER", "")):
                raise ValueError(f"{path}: unknown parameter validate.{value.get('$PARAMETER')}")
        expectation_cls = getattr(gx.expectations, _camel(item["type"]))
        suite.add_expectation(expectation_cls(**item["kwargs"], meta=item["meta"]))
    return suite


def suite_path(params: ValidateParams) -> Path:
    """validate.suite against the project root; the copy shipped in the package if that is missing
    and the default is configured (a run outside the repo checkout, e.g. an installed worker)."""
    path = resolve(params.suite)
    packaged = Path(__file__).resolve().parents[1] / "expectations" / "pairs_suite.json"
    if not path.exists() and params.suite == ValidateParams().suite and packaged.exists():
        log.info("%s not found; using the suite shipped with backdrop (%s)", path, packaged)
        return packaged
    return path


def _camel(snake: str) -> str:
    return "".join(part.capitalize() for part in snake.split("_"))


def run_suite(rows: list[dict[str, Any]], suite, context, params: ValidateParams) -> dict[str, list[str]]:
    """Validate the stats table with GE (suite parameters from `params`); map each failing item_id to
    its reasons (suite order)."""
    import pandas as pd

    frame = pd.DataFrame([{k: r.get(k) for k in STAT_FIELDS if k != "notes"} for r in rows],
                         columns=[k for k in STAT_FIELDS if k != "notes"])
    asset = context.data_sources.add_pandas("items").add_dataframe_asset("item_stats")
    batch = asset.add_batch_definition_whole_dataframe("all").get_batch(
        batch_parameters={"dataframe": frame})
    result = batch.validate(suite, result_format={
        "result_format": "COMPLETE", "unexpected_index_column_names": ["item_id"]},
        expectation_parameters=params.model_dump(mode="json"))
    failures: dict[str, list[str]] = {}
    for res in result.results:
        hits = res.result.get("unexpected_index_list") or []
        error = _exception_message(res.exception_info)
        if error or (not res.success and not hits):
            # A metric GE could not compute fails the expectation with no rows: never read that as "all good".
            raise RuntimeError(f"Great Expectations could not evaluate {res.expectation_config.type} "
                               f"{dict(res.expectation_config.kwargs)}: {error or 'no failing rows reported'}")
        reason = res.expectation_config.meta["reason"]
        for hit in hits:
            found = failures.setdefault(hit["item_id"], [])
            if reason not in found:
                found.append(reason)
    return failures


def _exception_message(info: Any) -> str:
    """GE's exception_info is flat ({raised_exception, exception_message}) or keyed by metric id."""
    if not isinstance(info, dict):
        return ""
    if info.get("raised_exception"):
        return str(info.get("exception_message") or "exception")
    return "; ".join(m for v in info.values() if isinstance(v, dict) and (m := _exception_message(v)))


# ----------------------------------------------------------------------------------------------- stage

def validate(params: ValidateParams, ingest_params: IngestParams) -> ValidateResult:
    raw = resolve(ingest_params.raw_dir)
    manifest = read_csv(raw / "manifest.csv")
    loose = read_csv(raw / "unpaired.csv")
    pairs = [r for r in manifest if not r.get("superseded_by")]
    files = [r for r in loose if not r.get("resolved_by")]
    if not pairs and not files:
        raise FileNotFoundError(f"{raw / 'manifest.csv'}: no ingested pairs (run `backdrop ingest`)")

    stats_rows = collect_stats(raw, pairs, files, params.max_pixels)
    context = gx_context()  # before load_suite: GE suites need an active context
    failures = run_suite(stats_rows, load_suite(suite_path(params), params), context, params)

    out_dir, quarantine_dir = resolve(params.out_dir), resolve(params.quarantine_dir)
    sources = {r["pair_id"]: r for r in pairs} | {r["file_id"]: r for r in loose}
    good_rows, bad_rows, reasons = [], [], {}
    for stats in stats_rows:
        item_id = stats["item_id"]
        why = failures.get(item_id)
        if not why:
            if stats["kind"] == "pair":
                good_rows.append(sources[item_id])
            continue
        for r in why:
            reasons[r] = reasons.get(r, 0) + 1
        problems = [_explain(r, stats, params) for r in why] + stats["notes"]
        bad_rows.append(_quarantine(raw, quarantine_dir, sources[item_id], stats, why, problems,
                                    raw_label=ingest_params.raw_dir))
    _drop_stale(quarantine_dir, {b["item_id"] for b in bad_rows})

    from backdrop.data.manifest import MANIFEST_FIELDS

    fields = list(manifest[0].keys()) if manifest else MANIFEST_FIELDS
    write_csv(out_dir / "manifest.csv", good_rows, fields)
    write_csv(out_dir / "pair_stats.csv",
              [{**s, "notes": "; ".join(s["notes"])} for s in stats_rows], STAT_FIELDS)
    write_csv(quarantine_dir / "quarantine.csv", bad_rows, QUARANTINE_FIELDS)
    total = len(stats_rows)
    summary = {"total": total, "pairs": len(pairs), "unpaired_files": len(files),
               "good": len(good_rows), "quarantined": len(bad_rows),
               "superseded": len(manifest) - len(pairs), "bad_share": len(bad_rows) / total,
               "max_bad_share": params.max_bad_share, "reasons": reasons}
    write_json(out_dir / "summary.json", summary)
    report = out_dir / "report.html"
    report.write_text(_html_report(summary, bad_rows))
    log.info("validate: %d good, %d quarantined (%s)", len(good_rows), len(bad_rows), reasons or "none")
    if summary["bad_share"] > params.max_bad_share:
        raise ValidationFailed(
            f"{len(bad_rows)}/{total} items failed validation "
            f"({summary['bad_share']:.0%} > validate.max_bad_share={params.max_bad_share:.0%}); "
            f"see {report} and {quarantine_dir / 'quarantine.csv'}")
    return ValidateResult(total, len(good_rows), len(bad_rows), reasons, report,
                          summary["superseded"], summary["bad_share"])


def _explain(reason: str, s: dict[str, Any], p: ValidateParams) -> str:
    """One human line per reason, with the numbers behind it."""
    details = {
        "resolution_too_low": lambda: f"shorter side {s.get('min_side')}px < {p.min_side}px",
        "mask_size_mismatch": lambda: (f"mask {s.get('mask_width')}x{s.get('mask_height')} vs photo "
                                       f"{s.get('width')}x{s.get('height')}"),
        "mask_not_binary": lambda: f"{s.get('gray_share', 0):.1%} of the mask is grey (max {p.max_gray_share:.0%})",
        "coverage_out_of_bounds": lambda: (f"foreground {s.get('coverage', 0):.1%} outside "
                                           f"[{p.min_coverage:.0%}, {p.max_coverage:.0%}]"),
        "duplicate_image": lambda: f"same photo bytes as pair {s.get('duplicate_of')}",
        "near_duplicate": lambda: (f"looks like pair {s.get('near_duplicate_of')}: {s.get('near_distance')} "
                                   f"of 255 hash bits differ (<= {p.near_dup_distance})"),
    }
    return f"{reason}: " + (details[reason]() if reason in details else REASONS[reason])


QUARANTINE_FIELDS = ["item_id", "kind", "reasons", "problems", "source_drop", "source_image",
                     "source_mask", "source_path", "sha256", "mask_sha256", "raw_paths", "vendor",
                     "received_at"]


def _quarantine(raw: Path, quarantine_dir: Path, row: dict[str, str], stats: dict[str, Any],
                reasons: list[str], problems: list[str], raw_label: Path | None = None) -> dict[str, Any]:
    """Set a failing item aside with a machine-readable reason; its quarantine.csv row.

    The folder holds `reason.json` only: `raw_paths` references the item's content-addressed files in
    the raw store (`raw_label`/…, as configured: ingest.raw_dir), whose names are their sha256. No
    second copy of the bytes is written (a bomb-sized drop would otherwise be stored twice), and any
    copies an earlier version wrote here are removed; the raw store keeps the files.
    """
    item_id = stats["item_id"]
    dest = quarantine_dir / item_id
    dest.mkdir(parents=True, exist_ok=True)
    label = Path(raw_label) if raw_label is not None else raw

    def ref(rel: str) -> str:
        return (label / rel).as_posix()

    if stats["kind"] == "pair":
        refs = {"image": ref(row["image_path"]), "mask": ref(row["mask_path"])}
        source = {"source_image": row["source_image"], "source_mask": row["source_mask"],
                  "sha256": row["image_sha256"], "mask_sha256": row["mask_sha256"]}
    else:
        refs = {"file": ref(row["path"])}
        source = {"source_path": row["source_path"], "sha256": row["sha256"]}
    for old in dest.iterdir():  # copies made by earlier versions of this stage
        if old.name != "reason.json" and (old.is_file() or old.is_symlink()):
            old.unlink()
    record = {"item_id": item_id, "kind": stats["kind"], "reasons": reasons, "problems": problems,
              "source_drop": row["source_drop"], "vendor": row["vendor"],
              "received_at": row["received_at"], **source, "raw_paths": refs,
              "stats": {k: stats.get(k) for k in STAT_FIELDS if k not in ("notes", "phash")
                        and stats.get(k) is not None}}
    write_json(dest / "reason.json", record)
    return {**record, "reasons": ";".join(reasons), "problems": " | ".join(problems),
            "raw_paths": ";".join(refs.values())}


def _drop_stale(quarantine_dir: Path, current: set[str]) -> None:
    """Remove quarantine folders of earlier runs whose items are no longer failing (or superseded)."""
    if not quarantine_dir.is_dir():
        return
    for folder in quarantine_dir.iterdir():
        if folder.is_dir() and folder.name not in current and (folder / "reason.json").is_file():
            shutil.rmtree(folder)


def _html_report(summary: dict, bad_rows: list[dict]) -> str:
    esc = html.escape
    reason_rows = "".join(
        f"<tr><td><code>{esc(r)}</code></td><td>{summary['reasons'].get(r, 0)}</td><td>{esc(text)}</td></tr>"
        for r, text in REASONS.items())
    cells = "".join(
        f"<tr><td><code>{esc(r['item_id'])}</code></td><td>{esc(r['kind'])}</td>"
        f"<td>{esc(r.get('source_drop', ''))}</td>"
        f"<td>{esc(r.get('source_image') or r.get('source_path') or '')}</td>"
        f"<td>{esc(r.get('source_mask') or '')}</td><td><b>{esc(r['reasons'])}</b></td>"
        f"<td>{esc(r['problems'])}</td></tr>" for r in bad_rows)
    status = "FAILED" if summary["bad_share"] > summary["max_bad_share"] else "passed"
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>backdrop validation</title>"
        "<style>body{font-family:sans-serif}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px;vertical-align:top}</style></head><body>"
        f"<h1>Validation {status}: {summary['good']} good pairs, {summary['quarantined']} quarantined "
        f"of {summary['total']} items</h1>"
        f"<p>{summary['pairs']} current pairs, {summary['unpaired_files']} unpaired files, "
        f"{summary['superseded']} superseded versions (not checked). Bad share "
        f"{summary['bad_share']:.1%} (limit {summary['max_bad_share']:.0%}).</p>"
        "<h2>Reasons</h2><table><tr><th>reason</th><th>items</th><th>meaning</th></tr>"
        f"{reason_rows}</table><h2>Quarantined</h2>"
        "<table><tr><th>id</th><th>kind</th><th>drop</th><th>photo / file</th><th>mask</th>"
        f"<th>reasons</th><th>problems</th></tr>{cells}</table></body></html>")
