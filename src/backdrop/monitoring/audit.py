"""Review items (routed and audit) in the prediction log, and the unbiased quality signal they give.

Two kinds of photo reach a reviewer (`serve.review_dir/queue.csv`, reason column):

* `routed` — low confidence, held back instead of published. These are the worst few percent by
  construction: their IoU says how good routing is, never what customers see.
* `audit`  — a `serve.audit_share` of the *published* cut-outs, picked by photo hash. A uniform
  sample of what customers got, so its mean IoU is an unbiased estimate of the published quality.

Every decision (approve, reject, fix) is a row of `review_items` in the monitoring database, linked
to the prediction and, for approve and fix, to the correction it produced (approve = the prediction
itself as the correction, so an approved audit item counts as IoU 1, not as missing).

The alert (`drift.window_metrics`) uses the alert sample: every scored correction except those of
routed items, i.e. audit items plus corrections that came in outside the queue (`corrections add`,
the inbox, a full QA pass such as `monitor simulate`). `upper_bound` gives its one-sided confidence
bound; a scope breaches only when that bound is below the threshold, from `min_samples` images on.
The finite-population correction makes a census (every published cut-out reviewed) exact.
Routed items are reported beside it (`routing_report`): the share of routed photos that really
needed a fix, and the share of bad cut-outs routing caught, with the misses estimated from the audit.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import DateTime, Float, Integer, String, Text, UniqueConstraint, func, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from backdrop.config import MonitoringParams, Params
from backdrop.data.predlog import Base, Correction, Prediction, db_url, engine_for, sessions

ROUTED, AUDIT = "routed", "audit"
WAITING, APPROVED, REJECTED, FIXED = "waiting", "approved", "rejected", "fixed"


class ReviewItem(Base):
    """One photo in the review queue (routed or audit) and what the reviewer decided."""

    __tablename__ = "review_items"
    __table_args__ = (UniqueConstraint("sha256", "kind", name="uq_review_item"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    image_id: Mapped[str] = mapped_column(String(64), index=True)
    kind: Mapped[str] = mapped_column(String(16), index=True)  # routed | audit
    prediction_id: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)
    name: Mapped[str] = mapped_column(Text)
    photo: Mapped[str] = mapped_column(Text)  # review_dir-relative
    cutout: Mapped[str] = mapped_column(Text)  # review_dir-relative: what routing held back / what was published
    confidence: Mapped[float] = mapped_column(Float)
    model: Mapped[str] = mapped_column(Text)
    queued_at: Mapped[datetime] = mapped_column(DateTime, index=True)
    status: Mapped[str] = mapped_column(String(16), index=True, default=WAITING)
    reason: Mapped[str] = mapped_column(Text, default="")  # reject reason
    reviewer: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    decided_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True, index=True)
    correction_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    published: Mapped[str | None] = mapped_column(Text, nullable=True)  # where the approved/fixed cut-out went


def ensure(mp: MonitoringParams) -> None:
    """Create `review_items` in a log whose engine was made before this module was imported."""
    Base.metadata.create_all(engine_for(db_url(mp)), tables=[ReviewItem.__table__])


def sample_kinds(session: Session, prediction_ids: Iterable[int]) -> dict[int, str]:
    """prediction id → `routed` | `audit` for the queued ones (others are not in the dict)."""
    ids = list(set(prediction_ids))
    out: dict[int, str] = {}
    for start in range(0, len(ids), 500):
        for pid, kind in session.execute(select(ReviewItem.prediction_id, ReviewItem.kind)
                                         .where(ReviewItem.prediction_id.in_(ids[start:start + 500]))):
            if out.get(pid) != AUDIT:  # audit wins: it was published and sampled
                out[pid] = kind
    return out


def upper_bound(values: list[float], population: int, confidence: float) -> tuple[float, float]:
    """(lower, upper) two one-sided `confidence` bounds on the mean IoU of a population of `population`
    cut-outs, from a simple random sample `values` (Student t, finite-population correction).

    A census (sample = population) is exact: both bounds are the mean. One sampled image out of
    many says nothing about the spread: the bounds are then (0, 1).
    """
    n = len(values)
    mean = sum(values) / n
    population = max(population, n)
    fpc = math.sqrt((population - n) / (population - 1)) if population > 1 else 0.0
    if fpc == 0.0:
        return mean, mean
    if n < 2:
        return 0.0, 1.0
    from scipy.stats import t

    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = float(t.ppf(confidence, n - 1)) * sd / math.sqrt(n) * fpc
    return max(0.0, mean - half), min(1.0, mean + half)


def published_counts(params: Params, start: datetime, end: datetime) -> dict[tuple[str, str], int]:
    """Predictions created in [start, end) that were published (not routed), per scope key."""
    mp = params.monitoring
    ensure(mp)
    routed = select(ReviewItem.prediction_id).where(ReviewItem.kind == ROUTED, ReviewItem.prediction_id.is_not(None))
    counts: dict[tuple[str, str], int] = {}
    with sessions(mp)() as s:
        rows = s.execute(select(Prediction.cluster, Prediction.model_version, func.count())
                         .where(Prediction.created_at >= start, Prediction.created_at < end,
                                Prediction.id.not_in(routed))
                         .group_by(Prediction.cluster, Prediction.model_version)).all()
    for cluster, version, n in rows:
        for key in (("overall", "all"), ("cluster", "none" if cluster is None else str(cluster)),
                    ("model", version)):
            counts[key] = counts.get(key, 0) + n
    return counts


def routing_report(params: Params, start: datetime, end: datetime) -> dict:
    """Routed items beside the alert: how often routing was right, how much of the bad it caught.

    * `routed_needed_fix` — of the routed items decided in the window, the share that was fixed
      with a mask below the threshold or rejected (approved ones were false alarms);
    * `audit_bad_share` — of the audit items decided, the share whose correction is below the threshold;
    * `routing_recall` — bad cut-outs caught by routing / (caught + bad ones published), the
      published bad ones estimated as `audit_bad_share` × cut-outs published in the window.
    """
    mp = params.monitoring
    ensure(mp)
    with sessions(mp)() as s:
        rows = s.execute(select(ReviewItem.kind, ReviewItem.status, Correction.iou)
                         .outerjoin(Correction, Correction.id == ReviewItem.correction_id)
                         .where(ReviewItem.decided_at >= start, ReviewItem.decided_at < end)).all()
    routed = [(st, iou) for kind, st, iou in rows if kind == ROUTED]
    audit = [(st, iou) for kind, st, iou in rows if kind == AUDIT and st != REJECTED]

    def bad(status: str, iou: float | None) -> bool:
        return status == REJECTED or (status == FIXED and (iou is None or iou < mp.threshold))

    caught = sum(bad(st, iou) for st, iou in routed)
    audit_bad = sum(bad(st, iou) for st, iou in audit)
    published = published_counts(params, start, end).get(("overall", "all"), 0)
    audit_share = audit_bad / len(audit) if audit else None
    missed = audit_share * published if audit_share is not None else None
    recall = caught / (caught + missed) if missed is not None and caught + missed > 0 else None
    return {"routed_decided": len(routed), "routed_needed_fix": caught,
            "routed_needed_fix_share": caught / len(routed) if routed else None,
            "audit_decided": len(audit), "audit_bad": audit_bad, "audit_bad_share": audit_share,
            "published": published, "published_bad_estimate": missed, "routing_recall": recall}
