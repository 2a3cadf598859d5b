"""Review routing: a confidence score per cut-out, and a queue for the ones a person should check.

Confidence is an estimate of how much of the product's outline is in doubt, on the model-size map:

* `uncertain` — pixels with a probability strictly inside (0.1, 0.9), relative to the predicted
  product area (foreground + uncertain pixels). A crisp cut-out has only a thin antialiased rim of
  these; a hesitant one has wide grey bands or grey blobs. Dividing by the area (not the image) is
  what makes the share comparable with an IoU error: a 1-pixel rim matters more on a small product.
* `disagreement` — when the exported graph provides it (`onnx_fast`), the mean absolute difference of
  the three finest side outputs from the fused map, again relative to the product area. Where U²-Net's
  decoder stages disagree, the fused map is unreliable.

    confidence = clip(1 - uncertain - disagreement, 0, 1), and 0 for an empty prediction.

Images below `serve.review_threshold` go to the review queue (`serve.review_dir`): the photo, the
cut-out that would have been published, and one row in `queue.csv` — instead of being published.

Audit sample: `serve.audit_share` of the *published* cut-outs also get a queue row, reason `audit`
(published all the same). The pick is a function of the photo's sha256 (`is_audit`), so a rerun or a
second worker picks the same photos. Routed photos measure the worst few percent; the audit sample is
what the monitoring alert uses, an unbiased estimate of what customers see (monitoring/audit.py).
"""

from __future__ import annotations

import csv
import os
import shutil
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

UNCERTAIN = (0.1, 0.9)
ROUTED, AUDIT = "low_confidence", "audit"  # queue.csv `reason`
QUEUE_FIELDS = ["queued_at", "name", "sha256", "confidence", "uncertain", "disagreement", "photo", "cutout",
                "model", "reason"]


@dataclass(frozen=True)
class Confidence:
    score: float
    uncertain: float
    disagreement: float | None

    def as_dict(self) -> dict:
        return {"confidence": round(self.score, 5), "uncertain": round(self.uncertain, 5),
                "disagreement": None if self.disagreement is None else round(self.disagreement, 5)}


def confidence(prob: np.ndarray, disagreement: float | None = None) -> Confidence:
    """Score one probability map (any size; the model-size map is cheapest)."""
    lo, hi = UNCERTAIN
    unsure = int(np.count_nonzero((prob > lo) & (prob < hi)))
    fg = int(np.count_nonzero(prob >= hi))
    if fg + unsure == 0:
        return Confidence(0.0, 1.0, disagreement)  # nothing found: a person must look
    share = unsure / (fg + unsure)
    score = 1.0 - share - (disagreement or 0.0)
    return Confidence(float(min(1.0, max(0.0, score))), float(share), disagreement)


def is_audit(sha256: str, share: float) -> bool:
    """Deterministic audit pick: the first 52 bits of the photo hash as a uniform number in [0, 1)."""
    if share <= 0:
        return False
    return int(sha256[:13], 16) / float(1 << 52) < share


class ReviewQueue:
    """`review_dir/{photos,cutouts}/` + `review_dir/queue.csv` (append-only, one row per routed image)."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.csv = self.root / "queue.csv"
        self._lock = threading.Lock()

    def add(self, name: str, sha256: str, photo_src: Path | bytes, cutout_bytes: bytes, cutout_ext: str,
            conf: Confidence, model: str, reason: str = ROUTED) -> Path:
        from backdrop.io import atomic_path
        from backdrop.serving.names import display, sanitize_filename

        name = display(name)  # the CSV row: printable text, also for undecodable file names
        safe = Path(sanitize_filename(name))  # client- or uploader-chosen: no NUL, no folders, bounded length
        stem = f"{safe.stem}-{sha256[:12]}" + ("-audit" if reason == AUDIT else "")
        photo_dest = self.root / "photos" / f"{stem}{safe.suffix.lower() or '.img'}"
        cut_dest = self.root / "cutouts" / f"{stem}{cutout_ext}"
        with atomic_path(photo_dest) as tmp:
            if isinstance(photo_src, bytes | bytearray):
                tmp.write_bytes(photo_src)
            else:
                shutil.copyfile(photo_src, tmp)
        with atomic_path(cut_dest) as tmp:
            tmp.write_bytes(cutout_bytes)
        row = {"queued_at": datetime.now(UTC).isoformat(timespec="seconds"), "name": name, "sha256": sha256,
               **conf.as_dict(), "photo": str(photo_dest.relative_to(self.root)),
               "cutout": str(cut_dest.relative_to(self.root)), "model": model, "reason": reason}
        with self._lock:
            self.root.mkdir(parents=True, exist_ok=True)
            new = not self.csv.exists() or self.csv.stat().st_size == 0
            with open(self.csv, "a", newline="") as fh:
                writer = csv.DictWriter(fh, fieldnames=QUEUE_FIELDS)
                if new:
                    writer.writeheader()
                writer.writerow(row)
                fh.flush()
                os.fsync(fh.fileno())
        return cut_dest

    def rows(self) -> list[dict[str, str]]:
        if not self.csv.exists():
            return []
        with open(self.csv, newline="") as fh:
            return list(csv.DictReader(fh))
