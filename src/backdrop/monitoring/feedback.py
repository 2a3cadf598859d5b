"""Retraining feedback: corrected pairs become a new vendor drop for the normal ingest path.

Every image whose newest correction has not been exported yet is written as
`monitoring.export_dir/monitoring-<UTC stamp>/images/<stem>-<image id>.<ext>` + `masks/<same>.png`
(the layout `backdrop ingest` pairs by name). With `export_dir` = `ingest.drop_dir` the next
`backdrop_training` run ingests, validates (Great Expectations) and versions them with DVC like any
other drop. Exported corrections are stamped (`exported_at`, `export_drop`) so nothing goes twice;
a JSON manifest of each export sits beside the reports (not in the drop, where it would be an
unpaired file).
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select

from backdrop.config import Params, resolve
from backdrop.data.predlog import Correction, Prediction, Store, sessions, utcnow
from backdrop.io import atomic_path, write_json

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExportResult:
    drop: Path | None
    pairs: int
    manifest: Path | None


def export_corrections(params: Params) -> ExportResult:
    mp = params.monitoring
    store = Store.from_params(mp)
    with sessions(mp)() as s, s.begin():
        rows = s.execute(select(Correction, Prediction).join(Prediction, Correction.prediction_id == Prediction.id)
                         .where(Correction.exported_at.is_(None))
                         .order_by(Correction.received_at, Correction.id)).all()
        if not rows:
            return ExportResult(None, 0, None)
        newest: dict[int, tuple[Correction, Prediction]] = {}
        for corr, pred in rows:
            newest[pred.id] = (corr, pred)
        now = utcnow()
        name = f"monitoring-{now:%Y%m%dT%H%M%S}"
        drop = resolve(mp.export_dir) / name
        listing = []
        for corr, pred in newest.values():
            stem = f"{pred.stem}-{pred.image_id}"
            photo_src = store.path(pred.image_path)
            with atomic_path(drop / "images" / f"{stem}{photo_src.suffix}") as tmp:
                shutil.copyfile(photo_src, tmp)
            with atomic_path(drop / "masks" / f"{stem}.png") as tmp:
                shutil.copyfile(store.path(corr.mask_path), tmp)
            listing.append({"stem": stem, "image_id": pred.image_id, "image_sha256": pred.image_sha256,
                            "correction_id": corr.id, "mask_sha256": corr.mask_sha256, "iou": corr.iou,
                            "model_version": pred.model_version, "cluster": pred.cluster})
        for corr, _ in rows:  # superseded older corrections of the same images are covered too
            corr.exported_at, corr.export_drop = now, name
    manifest = resolve(mp.reports_dir) / "exports" / f"{name}.json"
    write_json(manifest, {"drop": str(drop), "created_at": now.isoformat(), "pairs": listing})
    log.info("exported %d corrected pair(s) to %s", len(listing), drop)
    return ExportResult(drop, len(listing), manifest)
