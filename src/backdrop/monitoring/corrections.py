"""Corrections intake: reviewers' masks, validated, matched to their prediction, kept with history.

A correction arrives as `<image-id or stem>.png` in the inbox (`monitoring.inbox_dir`) or through
`backdrop corrections add FILE --image-id ID`. It must be the original photo's size and pass the
mask rules validate applies to training masks (`backdrop.io.mask_rule` / `measure_mask`, one rule,
no copy): an alpha that varies is the mask; a constant alpha (a mask painted on an opaque canvas) is
ignored and the grey picture is read; colour is no mask (`mask_not_grayscale_or_alpha`); at most
`monitoring.max_gray_share` grey pixels (`mask_not_binary`); at least one foreground pixel
(`mask_empty`) and at most `MAX_COVERAGE` foreground (`coverage_out_of_bounds`). It is matched to
the newest prediction of that image, stored content-addressed as a 0/255 PNG and appended (earlier
corrections stay; the newest one counts). Inbox files are moved to `processed/` or to `rejected/` with a `.reason.txt`.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
from sqlalchemy import select

from backdrop.config import MonitoringParams, ValidateParams, resolve
from backdrop.data.predlog import Correction, Store, latest_prediction, naive_utc, sessions, utcnow
from backdrop.io import BadImageError, mask_rule, measure_mask, open_image

# A correction covering more than this is no product outline (validate.max_coverage's default, the
# bound training masks pass). TODO(config): a `monitoring.max_coverage` field would make it a setting.
MAX_COVERAGE = ValidateParams.model_fields["max_coverage"].default

log = logging.getLogger(__name__)


class CorrectionError(ValueError):
    """A correction that cannot be accepted; `reason` is machine-readable."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


def mask_from_image(image, max_gray_share: float, name: str = "mask",
                    max_coverage: float = MAX_COVERAGE) -> np.ndarray:
    """bool (H, W) foreground from a reviewer's file, by validate's mask rules; CorrectionError with
    the reason (validate's vocabulary) when it is no usable mask."""
    channel, why = mask_rule(image)
    if channel is None:
        raise CorrectionError(f"{name}: not a mask: {why}", "mask_not_grayscale_or_alpha")
    m = measure_mask(channel)
    if m.gray_share > max_gray_share:
        raise CorrectionError(f"{name}: {m.gray_share:.1%} of pixels are neither black nor white "
                              f"(max {max_gray_share:.1%}); deliver a binary mask or an alpha matte",
                              "mask_not_binary")
    if not m.foreground:
        hint = " (values 0/1 only: a label map? masks are 0/255)" if m.label_map else ""
        raise CorrectionError(f"{name}: the mask has no foreground pixel{hint}", "mask_empty")
    if m.coverage > max_coverage:
        raise CorrectionError(f"{name}: {m.coverage:.1%} of the image is foreground (max {max_coverage:.0%}); "
                              "an all-white mask or an opaque canvas outlines nothing", "coverage_out_of_bounds")
    return np.asarray(channel, np.uint8) >= 128


def add_correction(params: MonitoringParams, file: Path, key: str | None = None, source: str = "cli",
                   at: datetime | None = None) -> Correction:
    """Validate `file`, match it to the newest prediction of `key` (default: the file's stem), store it."""
    from PIL import Image

    key = key or file.stem
    store = Store.from_params(params)
    with sessions(params)() as s, s.begin():
        pred = latest_prediction(s, key)
        if pred is None:
            raise CorrectionError(f"{file.name}: no prediction logged for image {key!r}", "no_prediction")
        try:
            image = open_image(file)
        except BadImageError as exc:
            raise CorrectionError(str(exc), exc.reason) from None
        if image.size != (pred.width, pred.height):
            raise CorrectionError(f"{file.name}: {image.width}x{image.height} but the original photo of "
                                  f"{pred.image_id} is {pred.width}x{pred.height}", "size_mismatch")
        mask = mask_from_image(image, params.max_gray_share, file.name)
        sha, rel = store.put_png(Image.fromarray(mask.astype(np.uint8) * 255, mode="L"))
        same = s.scalars(select(Correction).where(Correction.prediction_id == pred.id,
                                                  Correction.mask_sha256 == sha)).first()
        if same is not None:  # the same mask delivered again: nothing new to learn
            log.info("%s: identical to correction %d of %s, not added again", file.name, same.id, pred.image_id)
            return same
        row = Correction(prediction_id=pred.id, image_id=pred.image_id, mask_sha256=sha, mask_path=rel,
                         source=source, original_name=file.name, coverage=float(mask.mean()),
                         received_at=naive_utc(at))
        s.add(row)
    log.info("correction %s for %s (prediction %d) stored as %s", file.name, row.image_id, row.prediction_id, rel)
    return row


@dataclass
class InboxResult:
    accepted: list[int] = field(default_factory=list)  # correction ids
    rejected: dict[str, str] = field(default_factory=dict)  # file name → reason


def ingest_inbox(params: MonitoringParams, inbox: Path | None = None) -> InboxResult:
    """Take every `<image-id or stem>.png` from the inbox; move it to processed/ or rejected/."""
    inbox = Path(inbox) if inbox else resolve(params.inbox_dir)
    result = InboxResult()
    if not inbox.is_dir():
        return result
    stamp = utcnow().strftime("%Y%m%dT%H%M%S")
    for file in sorted(p for p in inbox.iterdir() if p.is_file() and not p.name.startswith(".")):
        try:
            if file.suffix.lower() != ".png":
                raise CorrectionError(f"{file.name}: corrections are PNG files named <image-id or stem>.png",
                                      "not_png")
            row = add_correction(params, file, source="inbox")
        except CorrectionError as exc:
            dest = inbox / "rejected" / f"{stamp}-{file.name}"
            dest.parent.mkdir(exist_ok=True)
            shutil.move(file, dest)
            dest.with_name(dest.name + ".reason.txt").write_text(f"{exc.reason}: {exc}\n")
            result.rejected[file.name] = exc.reason
            log.warning("inbox: rejected %s (%s)", file.name, exc)
            continue
        dest = inbox / "processed" / f"{stamp}-{file.name}"
        dest.parent.mkdir(exist_ok=True)
        shutil.move(file, dest)
        result.accepted.append(row.id)
    return result
