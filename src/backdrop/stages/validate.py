"""validate: per-pair statistics checked by a Great Expectations suite; failures are quarantined.

Statistics are computed one pair at a time (memory stays flat); the suite in
`src/backdrop/expectations/pairs_suite.json` decides which rows fail and why. Failing pairs are
copied to `data/quarantine/<pair_id>/` with `reason.json`, listed in `quarantine.csv` and in an
HTML report. The stage fails only when the bad share exceeds `validate.max_bad_share`.
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
from backdrop.io import BadImageError, open_image, read_csv, write_csv, write_json

log = logging.getLogger(__name__)

STAT_FIELDS = [
    "pair_id", "image_sha256", "image_readable", "mask_readable", "mask_is_single_channel",
    "size_match", "width", "height", "mask_width", "mask_height", "min_side", "coverage",
    "gray_share", "is_duplicate", "problems",
]


class ValidationFailed(RuntimeError):
    """Too many pairs failed the suite: the data drop needs a human look before training."""


@dataclass(frozen=True)
class ValidateResult:
    total: int
    good: int
    quarantined: int
    reasons: dict[str, int]
    report: Path


def pair_stats(image_path: Path, mask_path: Path, max_pixels: int) -> dict[str, Any]:
    """Statistics of one pair; unreadable files yield flags plus a message, never an exception."""
    import numpy as np

    stats: dict[str, Any] = {"image_readable": False, "mask_readable": False,
                             "mask_is_single_channel": False, "size_match": False, "problems": []}
    try:
        image = open_image(image_path, max_pixels=max_pixels)
        stats.update(image_readable=True, width=image.width, height=image.height,
                     min_side=min(image.size))
    except BadImageError as exc:
        stats["problems"].append(f"image: {exc}")
        image = None
    try:
        mask = open_image(mask_path, max_pixels=max_pixels)
        stats.update(mask_readable=True, mask_width=mask.width, mask_height=mask.height)
    except BadImageError as exc:
        stats["problems"].append(f"mask: {exc}")
        mask = None
    if mask is not None:
        alpha = None
        if mask.mode in ("L", "1", "I;16", "I", "LA"):
            alpha = mask.getchannel(0) if mask.mode == "LA" else mask.convert("L")
        elif mask.mode == "RGBA":
            alpha = mask.getchannel("A")
        elif mask.mode in ("RGB", "P"):
            rgb = np.asarray(mask.convert("RGB"), dtype=np.int16)
            # A greyscale image saved as RGB is still a mask; a colour photo is not.
            if np.abs(rgb - rgb[..., :1]).max() <= 2:
                alpha = mask.convert("L")
        if alpha is None:
            stats["problems"].append(f"mask: {mask_path} has mode {mask.mode} with colour, not a mask")
        else:
            values = np.asarray(alpha, dtype=np.uint8)
            stats.update(
                mask_is_single_channel=True,
                coverage=float((values > 127).mean()),
                gray_share=float(((values > 15) & (values < 240)).mean()),
            )
    if image is not None and mask is not None:
        stats["size_match"] = image.size == mask.size
        if not stats["size_match"]:
            stats["problems"].append(f"mask {mask.size} differs from image {image.size}")
    return stats


def gx_context():
    """An in-memory GE context: nothing is written outside the stage's outputs."""
    import great_expectations as gx

    return gx.get_context(mode="ephemeral")


def load_suite(path: Path, params: ValidateParams):
    """The suite from the repo with `{"$param": key}` placeholders filled from params.

    Needs an active GE context (`gx_context()`) first.
    """
    import great_expectations as gx

    def fill(value: Any) -> Any:
        if isinstance(value, dict) and set(value) == {"$param"}:
            return getattr(params, value["$param"])
        if isinstance(value, dict):
            return {k: fill(v) for k, v in value.items()}
        if isinstance(value, list):
            return [fill(v) for v in value]
        return value

    spec = json.loads(path.read_text())
    suite = gx.ExpectationSuite(name=spec["name"])
    for item in spec["expectations"]:
        expectation_cls = getattr(gx.expectations, _camel(item["type"]))
        suite.add_expectation(expectation_cls(**fill(item["kwargs"]), meta=item.get("meta", {})))
    return suite


def _camel(snake: str) -> str:
    return "".join(part.capitalize() for part in snake.split("_"))


def run_suite(rows: list[dict[str, Any]], suite, context) -> dict[str, list[str]]:
    """Validate the stats table with GE; map each failing pair_id to its reasons."""
    import pandas as pd

    frame = pd.DataFrame(rows, columns=STAT_FIELDS)
    asset = context.data_sources.add_pandas("pairs").add_dataframe_asset("pair_stats")
    batch = asset.add_batch_definition_whole_dataframe("all").get_batch(
        batch_parameters={"dataframe": frame})
    result = batch.validate(suite, result_format={
        "result_format": "COMPLETE", "unexpected_index_column_names": ["pair_id"]})
    failures: dict[str, list[str]] = {}
    for res in result.results:
        if res.success:
            continue
        reason = res.expectation_config.meta.get("reason", res.expectation_config.type)
        for hit in res.result.get("unexpected_index_list") or []:
            failures.setdefault(hit["pair_id"], []).append(reason)
    return failures


def validate(params: ValidateParams, ingest_params: IngestParams) -> ValidateResult:
    from tqdm import tqdm

    raw = resolve(ingest_params.raw_dir)
    manifest = read_csv(raw / "manifest.csv")
    if not manifest:
        raise FileNotFoundError(f"{raw / 'manifest.csv'}: no ingested pairs (run `backdrop ingest`)")
    seen: dict[str, str] = {}
    stats_rows = []
    for row in tqdm(manifest, desc="validate", unit="pair", disable=None):
        stats = pair_stats(raw / row["image_path"], raw / row["mask_path"], params.max_pixels)
        first = seen.setdefault(row["image_sha256"], row["pair_id"])
        stats["is_duplicate"] = first != row["pair_id"]
        if stats["is_duplicate"]:
            stats["problems"].append(f"same photo as pair {first}")
        stats_rows.append({"pair_id": row["pair_id"], "image_sha256": row["image_sha256"], **stats,
                           "problems": "; ".join(stats["problems"])})

    context = gx_context()
    failures = run_suite(stats_rows, load_suite(resolve(params.suite), params), context)

    out_dir, quarantine_dir = resolve(params.out_dir), resolve(params.quarantine_dir)
    good_rows, bad_rows, reasons = [], [], {}
    stats_by_id = {s["pair_id"]: s for s in stats_rows}
    for row in manifest:
        why = failures.get(row["pair_id"])
        if not why:
            good_rows.append(row)
            continue
        for r in why:
            reasons[r] = reasons.get(r, 0) + 1
        problems = stats_by_id[row["pair_id"]]["problems"]
        bad_rows.append({**row, "reasons": ";".join(why), "problems": problems})
        _quarantine(raw, quarantine_dir / row["pair_id"], row, why, problems)

    write_csv(out_dir / "manifest.csv", good_rows, list(manifest[0].keys()))
    write_csv(out_dir / "pair_stats.csv", stats_rows, STAT_FIELDS)
    write_csv(quarantine_dir / "quarantine.csv", bad_rows,
              [*manifest[0].keys(), "reasons", "problems"])
    summary = {"total": len(manifest), "good": len(good_rows), "quarantined": len(bad_rows),
               "bad_share": len(bad_rows) / len(manifest), "reasons": reasons}
    write_json(out_dir / "summary.json", summary)
    report = out_dir / "report.html"
    report.write_text(_html_report(summary, bad_rows))
    log.info("validate: %d good, %d quarantined (%s)", len(good_rows), len(bad_rows), reasons or "none")
    if summary["bad_share"] > params.max_bad_share:
        raise ValidationFailed(
            f"{len(bad_rows)}/{len(manifest)} pairs failed validation "
            f"({summary['bad_share']:.0%} > validate.max_bad_share={params.max_bad_share:.0%}); "
            f"see {report} and {quarantine_dir / 'quarantine.csv'}")
    return ValidateResult(len(manifest), len(good_rows), len(bad_rows), reasons, report)


def _quarantine(raw: Path, dest: Path, row: dict, reasons: list[str], problems: str) -> None:
    """Copy (never move) a failing pair aside with a machine-readable reason."""
    dest.mkdir(parents=True, exist_ok=True)
    for key in ("image_path", "mask_path"):
        src = raw / row[key]
        if src.exists():
            shutil.copyfile(src, dest / f"{key.split('_')[0]}{src.suffix}")
    write_json(dest / "reason.json", {"pair_id": row["pair_id"], "reasons": reasons,
                                      "problems": problems, "source_image": row["source_image"],
                                      "source_mask": row["source_mask"]})


def _html_report(summary: dict, bad_rows: list[dict]) -> str:
    cells = "".join(
        f"<tr><td>{html.escape(r['pair_id'])}</td><td>{html.escape(r['source_image'])}</td>"
        f"<td>{html.escape(r['source_mask'])}</td><td>{html.escape(r['reasons'])}</td>"
        f"<td>{html.escape(r['problems'])}</td></tr>" for r in bad_rows)
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>backdrop validation</title>"
        "<style>body{font-family:sans-serif}td,th{border:1px solid #ccc;padding:4px}</style></head>"
        f"<body><h1>Validation: {summary['good']} good, {summary['quarantined']} quarantined "
        f"of {summary['total']}</h1><p>Reasons: {html.escape(json.dumps(summary['reasons']))}</p>"
        "<table><tr><th>pair</th><th>photo</th><th>mask</th><th>reasons</th><th>problems</th></tr>"
        f"{cells}</table></body></html>")
