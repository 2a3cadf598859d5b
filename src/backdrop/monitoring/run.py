"""One monitoring pass, in the steps the DAG runs as tasks (and `backdrop monitor run` runs in one go).

1. intake: corrections inbox → validated corrections (history kept);
2. score: IoU for the corrections that arrived since the last pass;
3. evaluate: rolling-window metrics (stored as a time series), Evidently report + trend PNG logged to
   MLflow, alert state machine (alert once, resolve once);
4. feedback: when an incident opens, corrected pairs are exported as a new vendor drop — the DAG then
   emits the retraining Asset event.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from backdrop.config import Params

log = logging.getLogger(__name__)


def intake(params: Params) -> dict:
    from backdrop.monitoring.corrections import ingest_inbox
    from backdrop.monitoring.drift import score_pending

    inbox = ingest_inbox(params.monitoring)
    scored = score_pending(params)
    return {"accepted": len(inbox.accepted), "rejected": inbox.rejected, "scored": scored}


@dataclass
class Evaluation:
    at: str
    action: str  # alert | resolved | none
    incident_id: str | None
    firing: bool
    breaches: list[dict]
    overall: dict | None
    report_html: str | None
    trend_png: str | None
    mlflow_run_id: str | None
    links: dict
    routing: dict | None = None  # routed items, reported apart from the alert (monitoring/audit.py)

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def evaluate(params: Params, at: datetime | None = None, report: bool = True) -> Evaluation:
    from backdrop.monitoring import alerts
    from backdrop.monitoring import report as reporting
    from backdrop.monitoring.drift import window_metrics

    wm = window_metrics(params, at)
    links: dict[str, str] = {}
    html = trend = run_id = None
    if report and wm.points:
        rr = reporting.build(params, wm)
        html, trend, run_id = rr.html, rr.trend, rr.mlflow_run_id
        for name, value in (("drift report", reporting.link(params, rr.html)),
                            ("trend plot", reporting.link(params, rr.trend)), ("MLflow run", rr.mlflow_url)):
            if value:
                links[name] = value
    outcome = alerts.evaluate(params, wm, links)
    overall = next((p for p in wm.points if p["scope"] == "overall"), None)
    return Evaluation(wm.at.isoformat(), outcome.action, outcome.incident_id, outcome.firing, wm.breaches,
                      overall, str(html) if html else None, str(trend) if trend else None, run_id, links,
                      wm.routing or None)


def feedback(params: Params, evaluation: dict) -> dict:
    """Export corrected pairs when an incident just opened; returns what the retraining event carries."""
    from backdrop.monitoring.feedback import export_corrections

    if evaluation.get("action") != "alert" or not params.monitoring.retrain_on_alert:
        return {"retrain": False}
    exported = export_corrections(params)
    return {"retrain": exported.pairs > 0, "drop": str(exported.drop) if exported.drop else None,
            "pairs": exported.pairs, "incident_id": evaluation.get("incident_id")}


def check(params: Params, at: datetime | None = None, report: bool = True) -> tuple[dict, Evaluation, dict]:
    got = intake(params)
    ev = evaluate(params, at, report)
    fb = feedback(params, ev.as_dict())
    return got, ev, fb
