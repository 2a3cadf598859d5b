"""backdrop_monitoring: IoU drift on hand-corrected masks, alerts, and the retraining trigger.

Hourly (`monitoring.schedule` in params.yaml) and on demand:

1. `intake`   — corrections inbox → validated corrections; IoU for those that arrived since the last run;
2. `evaluate` — rolling-window IoU overall / per cluster / per model version (stored as a time series),
   Evidently report + trend PNG logged to MLflow, on-call alert once per incident (resolved notice on
   recovery). The alert uses the audit sample (`serve.audit_share` of published cut-outs reviewed at
   random) with a one-sided confidence bound and `monitoring.min_samples`; routed (low-confidence)
   photos are reported apart in the result's `routing` (monitoring/audit.py), never alerted on;
3. `request_retraining` — when an incident opens, the corrected pairs are exported as a new vendor
   drop and this task emits the `backdrop_retrain_request` Asset event; `backdrop_training` is
   scheduled on that Asset as well as on its nightly cron. Skipped (no event) otherwise.

A failing run alerts the same on-call channel (on_failure_callback). The channel's secrets come from
the Airflow connections `backdrop_alert_webhook` (the webhook URL) and `backdrop_smtp` (SMTP login and
password), read through the Task SDK when the task runs (an `AIRFLOW_CONN_*` variable, a secrets
backend or the metadata DB), else from the environment variables named in params. Parsing imports only
the stdlib, the Airflow SDK and `backdrop.config` (params.yaml read as the CLI reads it); each task
imports the rest of backdrop when it runs.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import pendulum
from airflow.sdk import Asset, dag, get_current_context, task

from backdrop.config import load_params

PROJECT_DIR = Path(os.environ.get("BACKDROP_PROJECT_DIR") or Path(__file__).resolve().parents[1])
RETRAIN_REQUEST = Asset("backdrop_retrain_request")  # backdrop_training is scheduled on this Asset


PARAMS_FILE = Path(os.environ.get("BACKDROP_PARAMS") or PROJECT_DIR / "params.yaml")
_cfg = load_params(PARAMS_FILE).monitoring


def _params():
    """The whole params, for a task at run time (parsed once per process)."""
    os.environ.setdefault("BACKDROP_PROJECT_DIR", str(PROJECT_DIR))
    return load_params(PARAMS_FILE)


def alert_on_failure(context) -> None:
    """DAG failure → the on-call channel of the monitoring alerts."""
    os.environ.setdefault("BACKDROP_PROJECT_DIR", str(PROJECT_DIR))
    from backdrop.monitoring.alerts import notify_dag_failure

    notify_dag_failure(context, _params().monitoring)


@task
def intake() -> dict:
    """Take the corrections inbox and score new corrections."""
    from backdrop.monitoring.run import intake as run

    return run(_params())


@task
def evaluate(intake_result: dict) -> dict:
    """Window metrics, Evidently report, trend plot, MLflow run, alert state machine."""
    from backdrop.monitoring.run import evaluate as run

    return run(_params()).as_dict()


@task(outlets=[RETRAIN_REQUEST])
def request_retraining(evaluation: dict) -> dict:
    """On a new incident: export corrected pairs as a vendor drop and emit the retraining event."""
    from airflow.sdk.exceptions import AirflowSkipException

    from backdrop.monitoring.run import feedback

    result = feedback(_params(), evaluation)
    if not result["retrain"]:
        raise AirflowSkipException("no new incident with corrected pairs: no retraining request")
    get_current_context()["outlet_events"][RETRAIN_REQUEST].extra = {
        k: v for k, v in result.items() if k in ("drop", "pairs", "incident_id")}
    return result


@dag(
    dag_id="backdrop_monitoring",
    schedule=_cfg.schedule,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 0, "retry_delay": timedelta(minutes=1)},
    on_failure_callback=alert_on_failure,
    tags=["backdrop", "monitoring"],
    doc_md=__doc__,
)
def backdrop_monitoring():
    request_retraining(evaluate(intake()))


backdrop_monitoring()
