"""The audit sample drives the alert; routed items are reported apart and cannot trigger it alone.

A stream of simulated cut-outs is written to a real prediction log (SQLite) through the recorder the
watcher uses; a hash-picked `serve.audit_share` of the published ones and every low-confidence one
become review items, and reviewers' masks go through the corrections intake. Routed cut-outs are bad
by construction (that is why they were routed), so their corrections are far below the threshold.
"""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest
import yaml
from PIL import Image

REPO = __import__("pathlib").Path(__file__).resolve().parents[2]
N = 200
SHARE = 0.15  # audit share: ~27 of the 180 published cut-outs


def _params(tmp_path, **monitoring):
    from backdrop.config import load_params

    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["monitoring"].update({"db_url": f"sqlite:///{tmp_path / 'mon.db'}", "store_dir": str(tmp_path / "store"),
                              "inbox_dir": str(tmp_path / "inbox"), "min_samples": 10, "window_hours": 0.5,
                              **monitoring})
    raw["serve"].update({"audit_share": SHARE, "review_dir": str(tmp_path / "review"),
                         "out_dir": str(tmp_path / "out")})
    raw["cluster"]["out_dir"] = str(tmp_path / "no-clusters")
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return load_params(path)


def _square(side: int, x0: int, x1: int) -> np.ndarray:
    m = np.zeros((side, side), bool)
    m[x0:x1, x0:x1] = True
    return m


def _stream(params, tmp_path, at, audit_iou_bad: bool, share: float = SHARE):
    """N cut-outs: confidence decides routing (low → routed), the hash decides the audit. Returns
    {kind: [prediction ids]} and writes every reviewer's mask through the intake."""
    from backdrop.data.predlog import PredictionRecorder, sessions
    from backdrop.monitoring.audit import AUDIT, FIXED, ROUTED, ReviewItem, ensure
    from backdrop.monitoring.corrections import add_correction
    from backdrop.serving.review import is_audit

    rng = np.random.default_rng(at.hour * 60 + at.minute)  # new photos per stream
    recorder = PredictionRecorder(params, "official:u2netp")
    ensure(params.monitoring)
    side = 48
    photos, kinds = tmp_path / "photos", {ROUTED: [], AUDIT: []}
    photos.mkdir(exist_ok=True)
    for i in range(N):
        arr = rng.integers(0, 255, (side, side, 3), dtype=np.uint8)
        path = photos / f"p{i:04d}-{at:%H%M}.png"
        Image.fromarray(arr).save(path)
        prob = _square(side, 8, 40).astype(np.float32)
        routed = i % 10 == 0  # 10 % low confidence
        row = recorder.record(path, Image.open(path), prob, at=at)
        kind = ROUTED if routed else (AUDIT if is_audit(row.image_sha256, share) else None)
        if kind is None:
            continue  # published, nobody looks
        kinds[kind].append(row.id)
        bad = routed or audit_iou_bad
        truth = _square(side, 8, 24) if bad else _square(side, 8, 40)  # IoU 16²/32² = 0.25 when bad
        mask = tmp_path / f"{row.image_id}.png"
        Image.fromarray(truth.astype(np.uint8) * 255).save(mask)
        corr = add_correction(params.monitoring, mask, key=row.image_id, source="review", at=at + timedelta(minutes=1))
        with sessions(params.monitoring)() as s, s.begin():
            s.add(ReviewItem(sha256=row.image_sha256, image_id=row.image_id, kind=kind, prediction_id=row.id,
                             name=path.name, photo="", cutout="", confidence=0.5 if routed else 0.99, model="m",
                             queued_at=at, status=FIXED, reviewer="alice", decided_at=at + timedelta(minutes=1),
                             correction_id=corr.id))
    return kinds


def test_alert_uses_only_audit_items_and_routed_items_cannot_trigger_it(tmp_path, monkeypatch):
    from backdrop.data.predlog import utcnow
    from backdrop.monitoring import alerts
    from backdrop.monitoring.audit import AUDIT, ROUTED
    from backdrop.monitoring.drift import score_pending, window_metrics

    for var in ("BACKDROP_MONITORING_DB", "BACKDROP_ALERT_WEBHOOK_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("BACKDROP_PROJECT_DIR", str(tmp_path))
    params = _params(tmp_path)
    t0 = utcnow() - timedelta(hours=6)

    # 1. healthy published cut-outs, terrible routed ones: no alert
    kinds = _stream(params, tmp_path, t0, audit_iou_bad=False)
    n_audit, n_routed = len(kinds[AUDIT]), len(kinds[ROUTED])
    assert n_routed == N // 10 and 15 <= n_audit <= 45, (n_routed, n_audit)  # the hash pick is ~SHARE
    assert score_pending(params) == n_audit + n_routed
    at1 = t0 + timedelta(minutes=30)
    wm = window_metrics(params, at1)
    overall = next(p for p in wm.points if p["scope"] == "overall")
    routed = next(p for p in wm.points if p["scope"] == "routed")
    assert overall["n"] == n_audit and overall["iou_mean"] == pytest.approx(1.0)  # routed items left out
    assert routed["n"] == n_routed and routed["iou_mean"] == pytest.approx(0.25)  # counted, they would breach
    assert wm.breaches == [] and wm.enough_data
    assert alerts.evaluate(params, wm).action == "none"
    r = wm.routing
    assert r["routed_decided"] == n_routed and r["routed_needed_fix_share"] == pytest.approx(1.0)
    assert r["audit_bad_share"] == 0.0 and r["routing_recall"] == pytest.approx(1.0)
    assert r["published"] == N - n_routed

    # 2. a window with routed items only (no audit sample): 20 corrections at IoU 0.25, no alert
    t_routed = t0 + timedelta(hours=1)
    assert _stream(params, tmp_path, t_routed, audit_iou_bad=True, share=0.0)[AUDIT] == []
    score_pending(params)
    only_routed = window_metrics(params, t_routed + timedelta(minutes=30))
    assert {p["scope"] for p in only_routed.points} == {"routed"} and not only_routed.enough_data
    assert only_routed.breaches == [] and alerts.evaluate(params, only_routed).action == "none"

    # 3. published cut-outs go bad too: the audit sample sees it, its upper bound is below 0.99 → alert
    t1 = t0 + timedelta(hours=3)
    kinds2 = _stream(params, tmp_path, t1, audit_iou_bad=True)
    score_pending(params)
    wm2 = window_metrics(params, t1 + timedelta(minutes=30))
    overall2 = next(p for p in wm2.points if p["scope"] == "overall")
    assert overall2["n"] == len(kinds2[AUDIT]) and overall2["iou_mean"] == pytest.approx(0.25)
    assert overall2["ci_high"] < params.monitoring.threshold
    assert any(b["scope"] == "overall" for b in wm2.breaches)
    outcome = alerts.evaluate(params, wm2)
    assert outcome.action == "alert" and outcome.firing
    r2 = wm2.routing
    assert r2["audit_bad_share"] == pytest.approx(1.0) and r2["routing_recall"] < 0.2  # routing missed most


def test_confidence_bound_needs_evidence_and_a_census_is_exact():
    from backdrop.monitoring.audit import upper_bound

    assert upper_bound([0.5, 0.7], population=2, confidence=0.95) == (pytest.approx(0.6), pytest.approx(0.6))
    assert upper_bound([0.2], population=1000, confidence=0.95) == (0.0, 1.0)  # one sample proves nothing
    lo, hi = upper_bound([0.97, 0.99, 1.0, 0.92, 1.0], population=1000, confidence=0.95)
    assert lo < 0.976 < hi and hi <= 1.0  # a spread sample of 5: not sure it is below 0.99
    many = [0.97, 0.99, 1.0, 0.92, 1.0] * 20
    assert upper_bound(many, population=1000, confidence=0.95)[1] < 0.99  # 100 of the same: it is


def test_audit_pick_is_deterministic_and_near_the_share():
    import hashlib

    from backdrop.serving.review import is_audit

    shas = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(20000)]
    picked = [is_audit(s, 0.02) for s in shas]
    assert picked == [is_audit(s, 0.02) for s in shas]  # reruns agree
    assert 0.015 < np.mean(picked) < 0.025
    assert not any(is_audit(s, 0.0) for s in shas[:100]) and all(is_audit(s, 1.0) for s in shas[:100])


def test_the_http_api_also_queues_its_audit_share_of_published_cutouts(tmp_path):
    """`POST /v1/remove` publishes, and with audit_share 1 every published cut-out is also an audit item."""
    import csv
    import io

    from fastapi.testclient import TestClient

    from backdrop.data.synth import render_item
    from backdrop.serving.api import create_app

    params = _params(tmp_path, record_predictions=False)
    params = params.model_copy(update={"serve": params.serve.model_copy(
        update={"audit_share": 1.0, "review_threshold": 0.0, "refresh_s": 0, "token_env": "BACKDROP_TEST_NO_TOKEN"})})
    photo, _mask, _ = render_item(31, 0, min_side=96, max_side=160)
    buf = io.BytesIO()
    photo.save(buf, format="JPEG")
    with TestClient(create_app(params, "official:u2netp")) as client:
        resp = client.post("/v1/remove", files={"file": ("shirt.jpg", buf.getvalue(), "image/jpeg")})
    assert resp.status_code == 200, resp.text[:300]
    assert resp.headers["X-Backdrop-Review"] == "published"
    rows = list(csv.DictReader((tmp_path / "review" / "queue.csv").read_text().splitlines()))
    assert [(r["name"], r["reason"]) for r in rows] == [("shirt.jpg", "audit")]
    assert (tmp_path / "review" / rows[0]["cutout"]).read_bytes() == resp.content
