"""The monitoring loop end to end on a simulated stream, with a real webhook receiver and SMTP server.

The stream is produced by the pipeline's champion (a tiny 1-epoch model at 64 px, so its cut-outs are
rough): reviewers approve a cut-out when its IoU with the true mask is at least REVIEW_TOLERANCE and
hand-fix it otherwise. Healthy batches are normal products (all approved, monitored IoU 1.0); the
shifted batch is white-on-white products, which this model gets badly wrong (true IoU about 0.2–0.5),
so reviewers fix them and monitored IoU really drops below 0.99.

healthy → no notification; drift → exactly one alert naming the breached clusters (the same alert is
not repeated while the incident lasts); recovery → exactly one resolved notice. The drop also exports
the corrected pairs as a vendor drop that `ingest` takes, and writes the Evidently report and trend PNG.
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import torch
from sqlalchemy import select

from .conftest import monitoring_params

pytestmark = pytest.mark.slow

REVIEW_TOLERANCE = 0.5
HEALTHY_SEED, SHIFT_SEED, RECOVERY_SEED = 204, 102, 209  # disjoint from the training drop (seed 3)
N = 6
N_SHIFT = 7  # > k = 6 clusters: at least one cluster gets min_samples (2) of the shifted images


def _with_shift(params, white: float, black: float):
    mon = params.monitoring.model_copy(update={"simulate_shift_white_share": white,
                                               "simulate_shift_black_share": black})
    return params.model_copy(update={"monitoring": mon})


def _expected_breaches(params, at) -> set[str]:
    """Breached clusters recomputed straight from the log (newest correction per image in the window)."""
    from backdrop.data.predlog import Correction, Prediction, sessions

    start = at - timedelta(hours=params.monitoring.window_hours)
    newest: dict[int, tuple] = {}
    with sessions(params.monitoring)() as s:
        for corr, pred in s.execute(select(Correction, Prediction)
                                    .join(Prediction, Correction.prediction_id == Prediction.id)
                                    .where(Correction.received_at <= at).order_by(Correction.received_at)):
            newest[pred.id] = (corr, pred)
    per: dict[str, list[float]] = {}
    for corr, pred in newest.values():
        if corr.received_at >= start:
            per.setdefault(str(pred.cluster), []).append(corr.iou)
    return {k for k, v in per.items() if len(v) >= params.monitoring.min_samples and np.mean(v) < 0.99}


def test_drift_alerts_once_resolves_once_and_feeds_retraining(project_cwd, tmp_path, webhook, smtp, monkeypatch):
    from backdrop.config import IngestParams
    from backdrop.data.predlog import AlertEvent, sessions, utcnow
    from backdrop.monitoring import run
    from backdrop.monitoring.alerts import notify_dag_failure
    from backdrop.stages.ingest import ingest
    from backdrop.stages.simulate import simulate_batch

    torch.set_num_threads(1)  # two shared cores: one inference thread is faster than two fighting
    url, hooks = webhook
    (host, port), mails = smtp
    monkeypatch.delenv("BACKDROP_MONITORING_DB", raising=False)
    monkeypatch.setenv("BACKDROP_ALERT_WEBHOOK_URL", url)
    params = monitoring_params(project_cwd, tmp_path, smtp={
        "host": host, "port": port, "sender": "backdrop@test", "recipients": ["oncall@test"], "timeout_s": 5})
    monkeypatch.setenv("BACKDROP_PARAMS", str(tmp_path / "params.yaml"))  # for the failure callback
    normal, shifted = _with_shift(params, 0.0, 0.0), _with_shift(params, 1.0, 0.0)
    t0 = utcnow() - timedelta(hours=3)

    # 1. healthy: normal products, all cut-outs approved → no notification at all
    healthy = simulate_batch(normal, N, HEALTHY_SEED, shift=True, at=t0, review_tolerance=REVIEW_TOLERANCE)
    assert healthy.styles == {"normal": N} and healthy.fixed == 0, healthy.items
    _, ev, fb = run.check(params, t0 + timedelta(minutes=5), report=False)
    assert ev.overall["iou_mean"] >= 0.99 and ev.breaches == [] and ev.action == "none"
    assert hooks == [] and mails == [] and fb == {"retrain": False}

    # 2. drift: white-on-white products → reviewers fix most → IoU drops → exactly one alert
    t1 = t0 + timedelta(hours=1, minutes=10)
    drift = simulate_batch(shifted, N_SHIFT, SHIFT_SEED, shift=True, at=t1, review_tolerance=REVIEW_TOLERANCE)
    assert drift.styles == {"white_on_white": N_SHIFT} and drift.fixed >= N_SHIFT - 1, drift.items
    at1 = t1 + timedelta(minutes=5)
    _, ev, fb = run.check(params, at1, report=True)
    assert ev.action == "alert" and ev.firing and ev.overall["iou_mean"] < 0.99
    expected = _expected_breaches(params, at1)
    assert expected, ("the shifted batch must push at least one cluster with enough samples below 0.99: "
                      f"{[(i['cluster'], i.get('iou'), i['fixed']) for i in drift.items]}")
    assert len(hooks) == 1 and len(mails) == 1
    payload = hooks[0]["metadata"]["event_payload"]
    assert hooks[0]["metadata"]["event_type"] == "backdrop_alert" and hooks[0]["text"] and hooks[0]["blocks"]
    assert set(payload["clusters"]) == expected
    assert {b["key"] for b in payload["breaches"] if b["scope"] == "cluster"} == expected
    assert payload["threshold"] == 0.99 and payload["window_hours"] == 1.0
    shifted_ids = {i["image_id"] for i in drift.items if i["fixed"]}
    assert {w["image_id"] for w in payload["worst_examples"]} <= shifted_ids | {i["image_id"] for i in drift.items}
    assert payload["worst_examples"][0]["image_id"] in shifted_ids
    assert mails[0]["subject"].startswith("[backdrop] ALERT") and mails[0]["to"] == ["oncall@test"]
    for c in expected:
        assert f"cluster c{c}" in mails[0]["body"]
    # links: the Evidently report and the trend PNG exist, the MLflow run holds them
    assert set(payload["links"]) == {"drift report", "trend plot", "MLflow run"}
    html, png = ev.report_html, ev.trend_png
    assert html and png and payload["links"]["drift report"].endswith("drift_report.html")
    text = Path(html).read_text(encoding="utf-8")
    assert "<html" in text.lower() and "iou" in text and "brightness" in text and "cluster" in text
    assert Path(png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import mlflow

    run_ = mlflow.get_run(ev.mlflow_run_id)
    assert run_.data.metrics["iou_overall"] == pytest.approx(ev.overall["iou_mean"])
    arts = {a.path for a in mlflow.MlflowClient().list_artifacts(ev.mlflow_run_id, "monitoring")}
    assert arts == {"monitoring/drift_report.html", "monitoring/iou_trend.png"}
    # retraining feedback: every corrected image exported as a vendor drop that ingest pairs up
    assert fb["retrain"] and fb["pairs"] == healthy.n + drift.n
    result = ingest(IngestParams(raw_dir=tmp_path / "raw"), tmp_path / "drop")
    assert result.added == fb["pairs"] and result.orphans == []

    # 3. the incident goes on: no repeated alert
    _, ev, fb = run.check(params, at1 + timedelta(minutes=20), report=False)
    assert ev.action == "none" and ev.firing and len(hooks) == 1 and len(mails) == 1 and not fb["retrain"]

    # 4. recovery: normal products again, the drifted batch leaves the 1 h window → one resolved notice
    t2 = t1 + timedelta(hours=1, minutes=10)
    recovery = simulate_batch(normal, N, RECOVERY_SEED, shift=True, at=t2, review_tolerance=REVIEW_TOLERANCE)
    assert recovery.fixed == 0, recovery.items
    _, ev, _ = run.check(params, t2 + timedelta(minutes=5), report=False)
    assert ev.action == "resolved" and not ev.firing
    assert len(hooks) == 2 and len(mails) == 2
    resolved = hooks[1]["metadata"]["event_payload"]
    assert resolved["kind"] == "resolved" and resolved["incident_id"] == payload["incident_id"]
    assert mails[1]["subject"].startswith("[backdrop] RESOLVED")
    _, ev, _ = run.check(params, t2 + timedelta(minutes=30), report=False)
    assert ev.action == "none" and len(hooks) == 2 and len(mails) == 2

    # 5. a failing DAG run reaches the same channel (Airflow passes the callback its context)
    notify_dag_failure({"dag_run": type("Run", (), {"dag_id": "backdrop_monitoring", "run_id": "manual__x"})(),
                        "exception": RuntimeError("database is locked")}, params.monitoring)
    assert len(hooks) == 3 and len(mails) == 3
    assert hooks[2]["metadata"]["event_payload"]["dag_id"] == "backdrop_monitoring"
    assert "database is locked" in json.dumps(hooks[2])
    with sessions(params.monitoring)() as s:
        kinds = [e.kind for e in s.scalars(select(AlertEvent).order_by(AlertEvent.id))]
        assert kinds == ["alert", "resolved", "dag_failure"]
