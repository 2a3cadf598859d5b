"""The review queue as the station sees it: `queue.csv` rows mirrored into `review_items`, listed,
filtered and decided; decisions go through the corrections intake and publish the cut-out.

Files are only ever read from the review folder (`serve.review_dir`), the published cut-outs
(`serve.out_dir`) and the monitoring store (`monitoring.store_dir`), by item id, never by a path a
client sent (`confined`).
"""

from __future__ import annotations

import csv
import logging
import tempfile
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from backdrop.config import Params, resolve
from backdrop.data.predlog import Correction, Prediction, Store, naive_utc, read_mask, sessions, utcnow
from backdrop.monitoring import audit
from backdrop.monitoring.audit import APPROVED, AUDIT, FIXED, REJECTED, ROUTED, WAITING, ReviewItem

log = logging.getLogger(__name__)

REASON_KIND = {"audit": AUDIT}  # queue.csv reason → kind; everything else was routed


class AlreadyDecided(ValueError):
    """Another reviewer decided this item first."""


def waiting(item: ReviewItem) -> None:
    if item.status != WAITING:
        raise AlreadyDecided(f"already {item.status} by {item.reviewer}")


class OutsideStoreError(PermissionError):
    """A path that resolves outside the stores the station may serve."""


def confined(root: Path, rel: str) -> Path:
    """`root/rel`, refused when it resolves (symlinks followed) outside `root`."""
    base = Path(root).resolve()
    path = (base / rel).resolve()
    if not path.is_relative_to(base):
        raise OutsideStoreError(f"{rel!r} is outside {base}")
    return path


@dataclass
class Row:
    item: ReviewItem
    cluster: int | None
    cluster_name: str | None
    model_version: str | None


class ReviewStore:
    """Everything the pages need, on one params."""

    def __init__(self, params: Params):
        self.params = params
        self.mp = params.monitoring
        self.review_dir = resolve(params.serve.review_dir)
        self.out_dir = resolve(params.serve.out_dir)
        self.store = Store.from_params(self.mp)
        self.sessions = sessions(self.mp)
        audit.ensure(self.mp)
        self._csv_size = -1

    # ------------------------------------------------------------------------------------ intake
    def sync(self) -> int:
        """Mirror new queue.csv rows into review_items and link items to their prediction; returns new rows."""
        path = self.review_dir / "queue.csv"
        size = path.stat().st_size if path.exists() else 0
        added = 0
        if size != self._csv_size:
            rows: list[dict] = []
            if size:
                with open(path, newline="") as fh:
                    rows = list(csv.DictReader(fh))
            try:
                added = self._add_rows(rows)
            except IntegrityError:  # another worker mirrored the same rows at the same moment
                added = self._add_rows(rows)
            self._csv_size = size
        with self.sessions() as s, s.begin():
            unlinked = s.scalars(select(ReviewItem).where(ReviewItem.prediction_id.is_(None))).all()
            if unlinked:
                ids = {i.image_id for i in unlinked}
                newest: dict[str, int] = {}
                for pid, image_id in s.execute(select(Prediction.id, Prediction.image_id)
                                               .where(Prediction.image_id.in_(ids)).order_by(Prediction.id)):
                    newest[image_id] = pid
                for item in unlinked:
                    item.prediction_id = newest.get(item.image_id)
        return added

    def _add_rows(self, rows: list[dict]) -> int:
        added = 0
        with self.sessions() as s, s.begin():
            known = {(sha, kind) for sha, kind in s.execute(select(ReviewItem.sha256, ReviewItem.kind))}
            for r in rows:
                kind = REASON_KIND.get(r.get("reason", ""), ROUTED)
                if (r["sha256"], kind) in known:
                    continue
                known.add((r["sha256"], kind))
                s.add(ReviewItem(sha256=r["sha256"], image_id=r["sha256"][:16], kind=kind, name=r["name"],
                                 photo=r["photo"], cutout=r["cutout"], confidence=float(r["confidence"] or 0),
                                 model=r.get("model", ""), status=WAITING, reason="",
                                 queued_at=naive_utc(datetime.fromisoformat(r["queued_at"]))))
                added += 1
        return added

    # ------------------------------------------------------------------------------------ listing
    def listing(self, *, cluster: str = "", model: str = "", max_age_h: float | None = None, kind: str = "",
                status: str = WAITING, order: str = "confidence", limit: int = 100, offset: int = 0) -> list[Row]:
        stmt = (select(ReviewItem, Prediction.cluster, Prediction.cluster_name, Prediction.model_version)
                .outerjoin(Prediction, Prediction.id == ReviewItem.prediction_id))
        if status:
            stmt = stmt.where(ReviewItem.status == status)
        if kind:
            stmt = stmt.where(ReviewItem.kind == kind)
        if cluster:
            stmt = stmt.where(Prediction.cluster.is_(None) if cluster == "none" else Prediction.cluster == int(cluster))
        if model:
            stmt = stmt.where(Prediction.model_version == model)
        if max_age_h:
            stmt = stmt.where(ReviewItem.queued_at >= utcnow() - timedelta(hours=max_age_h))
        stmt = stmt.order_by(*((ReviewItem.confidence, ReviewItem.id) if order == "confidence"
                               else (ReviewItem.queued_at.desc(), ReviewItem.id.desc())))
        with self.sessions() as s:
            return [Row(*r) for r in s.execute(stmt.limit(limit).offset(offset)).all()]

    def facets(self) -> tuple[list[str], list[str]]:
        """Clusters and model versions present among queued items (for the filter menus)."""
        with self.sessions() as s:
            rows = s.execute(select(Prediction.cluster, Prediction.model_version).distinct()
                             .join(ReviewItem, ReviewItem.prediction_id == Prediction.id)).all()
        clusters = sorted({"none" if c is None else str(c) for c, _ in rows}, key=lambda x: (x == "none", x.zfill(4)))
        return clusters, sorted({m for _, m in rows if m})

    def counts(self) -> dict:
        today = utcnow().replace(hour=0, minute=0, second=0, microsecond=0)
        day_ago = utcnow() - timedelta(hours=24)
        with self.sessions() as s:
            waiting = s.scalar(select(func.count()).select_from(ReviewItem).where(ReviewItem.status == WAITING))
            done = s.scalar(select(func.count()).select_from(ReviewItem).where(ReviewItem.decided_at >= today))
            routed = s.scalar(select(func.count()).select_from(ReviewItem)
                              .where(ReviewItem.kind == ROUTED, ReviewItem.queued_at >= day_ago))
            predicted = s.scalar(select(func.count()).select_from(Prediction).where(Prediction.created_at >= day_ago))
        return {"waiting": waiting, "done_today": done, "routed_24h": routed, "predicted_24h": predicted,
                "share_routed": routed / predicted if predicted else None}

    def get(self, item_id: int) -> Row | None:
        with self.sessions() as s:
            r = s.execute(select(ReviewItem, Prediction.cluster, Prediction.cluster_name, Prediction.model_version)
                          .outerjoin(Prediction, Prediction.id == ReviewItem.prediction_id)
                          .where(ReviewItem.id == item_id)).first()
        return Row(*r) if r else None

    def next_waiting(self, after: int | None = None) -> int | None:
        """The next waiting item (least confident first), skipping `after`."""
        with self.sessions() as s:
            stmt = select(ReviewItem.id).where(ReviewItem.status == WAITING)
            if after is not None:
                stmt = stmt.where(ReviewItem.id != after)
            return s.scalar(stmt.order_by(ReviewItem.confidence, ReviewItem.id).limit(1))

    # ------------------------------------------------------------------------------------ files
    def photo_path(self, item: ReviewItem) -> Path:
        return confined(self.review_dir, item.photo)

    def cutout_path(self, item: ReviewItem) -> Path:
        return confined(self.review_dir, item.cutout)

    def published_path(self, item: ReviewItem) -> Path | None:
        return confined(self.out_dir, item.published) if item.published else None

    def predicted_mask(self, item: ReviewItem) -> np.ndarray:
        """The binary mask routing held back, at the photo's size: the logged prediction at the
        evaluation threshold, else the cut-out's alpha."""
        from PIL import Image

        from backdrop.data.predlog import binary

        if item.prediction_id is not None:
            with self.sessions() as s:
                pred = s.get(Prediction, item.prediction_id)
            confined(self.store.root, pred.mask_path)
            return binary(read_mask(self.store, pred.mask_path), self.params.evaluate.threshold)
        with Image.open(self.cutout_path(item)) as img:
            alpha = np.asarray(img.getchannel("A") if "A" in img.getbands() else img.convert("L"))
        return alpha >= 128

    def correction_mask(self, item: ReviewItem) -> np.ndarray | None:
        if item.correction_id is None:
            return None
        with self.sessions() as s:
            corr = s.get(Correction, item.correction_id)
        return read_mask(self.store, corr.mask_path) >= 128

    # ------------------------------------------------------------------------------------ decisions
    def _decide(self, item_id: int, status: str, reviewer: str, **values) -> ReviewItem:
        with self.sessions() as s, s.begin():
            item = s.get(ReviewItem, item_id)
            waiting(item)  # a second reviewer was quicker: the first decision stands
            item.status, item.reviewer, item.decided_at = status, reviewer, utcnow()
            for key, value in values.items():
                setattr(item, key, value)
        log.info("review item %d (%s %s): %s by %s", item.id, item.kind, item.image_id, status, reviewer)
        return item

    def _intake(self, item: ReviewItem, mask_file: Path, reviewer: str):
        """The corrections intake of `backdrop corrections add` (same validation, same history),
        then IoU for it at once, so monitoring sees it before the next DAG run."""
        from backdrop.monitoring.corrections import add_correction
        from backdrop.monitoring.drift import score_pending

        corr = add_correction(self.mp, mask_file, key=item.image_id, source="review", at=utcnow())
        score_pending(self.params)
        return corr

    def approve(self, item_id: int, reviewer: str) -> ReviewItem:
        """The cut-out is right: publish it (routed) and record the prediction as its own correction."""
        from PIL import Image

        from backdrop.monitoring.corrections import CorrectionError

        item = self.get(item_id).item
        waiting(item)
        corr_id = None
        if item.prediction_id is not None:
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / f"{item.image_id}.png"
                Image.fromarray(self.predicted_mask(item).astype(np.uint8) * 255, mode="L").save(path)
                try:
                    corr_id = self._intake(item, path, reviewer).id
                except CorrectionError as exc:  # an empty prediction approved: nothing to measure
                    log.warning("approval of %s not recorded as a correction: %s", item.image_id, exc)
        published = self._publish(item, self.cutout_path(item).read_bytes()) if item.kind == ROUTED else None
        return self._decide(item_id, APPROVED, reviewer, correction_id=corr_id,
                            published=published or item.published)

    def reject(self, item_id: int, reviewer: str, reason: str) -> ReviewItem:
        reason = " ".join(reason.split())[:500]
        if not reason:
            raise ValueError("a rejection needs a reason")
        return self._decide(item_id, REJECTED, reviewer, reason=reason)

    def fix(self, item_id: int, reviewer: str, data: bytes, original_name: str = "mask.png") -> ReviewItem:
        """A corrected mask (painted in the editor or uploaded): intake, then the corrected cut-out is
        published in place of the routed one. CorrectionError when the intake refuses it."""
        from backdrop.io import open_image
        from backdrop.serving.outputs import OutputOptions, compose
        from backdrop.serving.watch import EXT, encode_tagged

        item = self.get(item_id).item
        waiting(item)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"{item.image_id}.png"
            path.write_bytes(data)
            corr = self._intake(item, path, reviewer)
        mask = read_mask(self.store, corr.mask_path) >= 128
        fmt = self.params.serve.format
        photo = open_image(self.photo_path(item), max_pixels=self.params.serve.max_pixels)
        out = compose(photo, mask.astype(np.float32), fmt, OutputOptions.from_params(self.params.serve))
        body = encode_tagged(out, fmt, item.sha256)
        published = self._publish(item, body, EXT[fmt])
        log.info("fix of %s (%s) published as %s", item.image_id, original_name, published)
        return self._decide(item_id, FIXED, reviewer, correction_id=corr.id, published=published)

    def _publish(self, item: ReviewItem, body: bytes, ext: str | None = None) -> str:
        """Write the cut-out into serve.out_dir under the watcher's naming, replacing only this photo's own
        earlier output (same embedded sha256); returns its out_dir-relative name."""
        from backdrop.io import atomic_path
        from backdrop.serving.names import sanitize_filename
        from backdrop.serving.watch import embedded_sha

        ext = ext or Path(item.cutout).suffix
        name = Path(sanitize_filename(item.name))
        candidates = [f"{name.stem}{ext}", f"{name.name}{ext}", f"{name.stem}-{item.sha256[:8]}{ext}"]
        dest = None
        for cand in candidates:
            path = confined(self.out_dir, cand)
            if not path.exists() or embedded_sha(path) == item.sha256:
                dest = path
                break
        dest = dest or confined(self.out_dir, f"{name.stem}-{item.sha256}{ext}")
        dest.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(dest) as tmp:
            tmp.write_bytes(body)
        return dest.name

    # ------------------------------------------------------------------------------------ reporting
    def throughput(self, days: int = 7) -> list[tuple[str, str, int]]:
        """(day, reviewer, decisions) for the last `days` days."""
        since = utcnow() - timedelta(days=days)
        with self.sessions() as s:
            rows = s.execute(select(ReviewItem.decided_at, ReviewItem.reviewer)
                             .where(ReviewItem.decided_at >= since)).all()
        counts: dict[tuple[str, str], int] = {}
        for at, who in rows:
            key = (at.strftime("%Y-%m-%d"), who or "?")
            counts[key] = counts.get(key, 0) + 1
        return sorted(((d, w, n) for (d, w), n in counts.items()), reverse=True)
