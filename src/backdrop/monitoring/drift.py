"""IoU of predictions against their corrections, and rolling-window metrics stored as a time series.

`score_pending` computes IoU(prediction, newest correction) for corrections not scored yet (the
ones that arrived since the last run). `window_metrics` takes every scored image whose newest
correction arrived within `monitoring.window_hours` before `at` and stores one `MetricPoint` per
scope: overall, per cluster, per model version. A scope *breaches* when it has at least
`monitoring.min_samples` images and the one-sided `monitoring.alert_confidence` upper bound of its
mean IoU below `monitoring.threshold` (overall and clusters only; model versions are reported, the
alert is about what customers see).

Only the alert sample counts (`audit.py`): corrections of routed (low-confidence) photos are left out
of those scopes and reported as scope `routed` (never a breach), with `WindowMetrics.routing`.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta

import numpy as np
from sqlalchemy import delete, select

from backdrop.config import Params
from backdrop.data.predlog import (
    Correction,
    MetricPoint,
    Prediction,
    Store,
    binary,
    naive_utc,
    read_mask,
    sessions,
    utcnow,
)
from backdrop.metrics import mask_iou
from backdrop.monitoring import audit

log = logging.getLogger(__name__)


def score_pending(params: Params) -> int:
    """IoU for every correction without one yet; returns how many were scored."""
    mp = params.monitoring
    store = Store.from_params(mp)
    n = 0
    with sessions(mp)() as s, s.begin():
        rows = s.execute(select(Correction, Prediction).join(Prediction, Correction.prediction_id == Prediction.id)
                         .where(Correction.iou.is_(None))).all()
        now = utcnow()
        for corr, pred in rows:
            predicted = binary(read_mask(store, pred.mask_path), params.evaluate.threshold)
            truth = read_mask(store, corr.mask_path) >= 128
            corr.iou = mask_iou(predicted, truth)
            corr.scored_at = now
            n += 1
    log.info("scored %d new correction(s)", n)
    return n


@dataclass
class Sample:
    correction_id: int
    prediction_id: int
    image_id: str
    stem: str
    cluster: int | None
    cluster_name: str | None
    model_version: str
    iou: float
    received_at: datetime
    brightness: float
    contrast: float
    coverage: float
    width: int
    height: int
    confidence: float


def window_samples(params: Params, start: datetime, end: datetime) -> list[Sample]:
    """Scored images whose newest correction (as of `end`) arrived in [start, end)."""
    with sessions(params.monitoring)() as s:
        rows = s.execute(select(Correction, Prediction).join(Prediction, Correction.prediction_id == Prediction.id)
                         .where(Correction.iou.is_not(None), Correction.received_at < end)
                         .order_by(Correction.received_at, Correction.id)).all()
    newest: dict[int, tuple[Correction, Prediction]] = {}
    for corr, pred in rows:  # ascending: later corrections of the same prediction replace earlier ones
        newest[pred.id] = (corr, pred)
    return [Sample(c.id, p.id, p.image_id, p.stem, p.cluster, p.cluster_name, p.model_version, float(c.iou),
                   c.received_at, p.brightness, p.contrast, p.coverage, p.width, p.height, p.confidence)
            for c, p in newest.values() if c.received_at >= start]


def _point(values: list[float], threshold: float) -> dict:
    arr = np.asarray(values, dtype=np.float64)
    return {"n": len(arr), "iou_mean": float(arr.mean()), "iou_min": float(arr.min()),
            "iou_p10": float(np.quantile(arr, 0.1)), "share_ge_threshold": float((arr >= threshold).mean())}


@dataclass
class WindowMetrics:
    at: datetime
    window_start: datetime
    window_hours: float
    threshold: float
    min_samples: int
    points: list[dict] = field(default_factory=list)  # {scope, key, n, iou_mean, ...}
    breaches: list[dict] = field(default_factory=list)  # points of breaching scopes
    worst: list[dict] = field(default_factory=list)  # the lowest-IoU images of the window
    enough_data: bool = False  # overall n >= min_samples
    routing: dict = field(default_factory=dict)  # audit.routing_report: routed items, reported apart

    def to_dict(self) -> dict:
        d = asdict(self)
        d["at"], d["window_start"] = self.at.isoformat(), self.window_start.isoformat()
        for w in d["worst"]:
            w["received_at"] = str(w["received_at"])
        return d


def window_metrics(params: Params, at: datetime | None = None, store: bool = True) -> WindowMetrics:
    """Rolling-window IoU overall / per cluster / per model version at `at`; stored as a time series."""
    mp = params.monitoring
    at = naive_utc(at)
    start = at - timedelta(hours=mp.window_hours)
    end = at + timedelta(microseconds=1)
    everything = window_samples(params, start, end)
    with sessions(mp)() as s:
        kinds = audit.sample_kinds(s, [smp.prediction_id for smp in everything]) if everything else {}
    samples = [smp for smp in everything if kinds.get(smp.prediction_id) != audit.ROUTED]
    routed = [smp.iou for smp in everything if kinds.get(smp.prediction_id) == audit.ROUTED]
    wm = WindowMetrics(at, start, mp.window_hours, mp.threshold, mp.min_samples)
    if samples:
        population = audit.published_counts(params, start, end)
        groups: dict[tuple[str, str], list[float]] = {("overall", "all"): [s.iou for s in samples]}
        for smp in samples:
            groups.setdefault(("cluster", "none" if smp.cluster is None else str(smp.cluster)), []).append(smp.iou)
            groups.setdefault(("model", smp.model_version), []).append(smp.iou)
        names = {str(smp.cluster): smp.cluster_name for smp in samples if smp.cluster is not None}
        for (scope, key), values in sorted(groups.items()):
            low, high = audit.upper_bound(values, population.get((scope, key), 0), mp.alert_confidence)
            point = {"scope": scope, "key": key, **_point(values, mp.threshold), "ci_low": low, "ci_high": high}
            if scope == "cluster":
                point["name"] = names.get(key, "")
            wm.points.append(point)
        wm.enough_data = len(samples) >= mp.min_samples
        wm.breaches = [p for p in wm.points if p["scope"] in ("overall", "cluster")
                       and p["n"] >= mp.min_samples and p["ci_high"] < mp.threshold]
        wm.worst = [asdict(smp) for smp in sorted(samples, key=lambda x: x.iou)[: mp.worst_examples]]
    if routed:
        wm.points.append({"scope": "routed", "key": "all", **_point(routed, mp.threshold)})
    if everything:
        wm.routing = audit.routing_report(params, start, end)
    columns = set(MetricPoint.__table__.columns.keys())
    if store and wm.points:
        with sessions(mp)() as s, s.begin():
            s.execute(delete(MetricPoint).where(MetricPoint.at == at))
            s.add_all(MetricPoint(at=at, window_hours=mp.window_hours,
                                  **{k: v for k, v in p.items() if k in columns}) for p in wm.points)
    log.info("window ending %s: %s; breaches %s", at, [(p["scope"], p["key"], p["n"], round(p["iou_mean"], 4))
                                                      for p in wm.points], [p["key"] for p in wm.breaches])
    return wm


def time_series(params: Params, since: datetime | None = None) -> list[MetricPoint]:
    with sessions(params.monitoring)() as s:
        stmt = select(MetricPoint).order_by(MetricPoint.at, MetricPoint.scope, MetricPoint.key)
        if since is not None:
            stmt = stmt.where(MetricPoint.at >= naive_utc(since))
        return list(s.scalars(stmt))
