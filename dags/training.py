"""backdrop_training: nightly (and on demand) retraining, one Airflow task per DVC stage.

Each task runs `dvc repro --single-item <stage>`, so DVC decides what is stale and records
lineage in dvc.lock; Airflow adds the schedule, retries, and the UI. Parsing this file imports
nothing heavy: the stdlib, the Airflow SDK and `backdrop.config` (pydantic, which Airflow loads anyway,
and a YAML 1.2 reader), so params.yaml is read exactly as DVC and the CLI read it, errors naming the key.
"""

from __future__ import annotations

import os
import sys
from datetime import timedelta
from pathlib import Path

import pendulum
from airflow.sdk import Asset, AssetOrTimeSchedule, CronTriggerTimetable, dag, task

from backdrop.config import load_params

PROJECT_DIR = Path(os.environ.get("BACKDROP_PROJECT_DIR") or Path(__file__).resolve().parents[1])
VENV_BIN = Path(sys.executable).parent  # dvc and backdrop live beside the interpreter running Airflow
STAGES = ("ingest", "validate", "prepare", "cluster", "benchmark", "train", "evaluate", "register")


_cfg = load_params(os.environ.get("BACKDROP_PARAMS") or PROJECT_DIR / "params.yaml").airflow
_env = {
    "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
    "BACKDROP_PROJECT_DIR": str(PROJECT_DIR),
    "PYTHONUNBUFFERED": "1",
    # names the MLflow run (`nightly-2026-12-03-0200`): the cron, the monitoring DAG's retrain request,
    # or a run someone started (`-c '{"run_kind": "train-full"}'` names it explicitly)
    "BACKDROP_RUN_KIND": "{{ (dag_run.conf or {}).get('run_kind') or {'scheduled': 'nightly', "
                         "'asset_triggered': 'drift-retrain'}.get(dag_run.run_type, 'manual') }}",
}


@task.bash(cwd=str(PROJECT_DIR), env=_env, append_env=True)
def dvc_stage(stage: str) -> str:
    """Reproduce one stage; a no-op when its deps and params are unchanged."""
    return f"dvc repro --single-item {stage}"


@task.bash(cwd=str(PROJECT_DIR), env=_env, append_env=True)
def dvc_push() -> str:
    """Send data and model versions to the configured DVC remote."""
    return "dvc push"


@dag(
    dag_id="backdrop_training",
    # nightly cron OR the monitoring DAG's retraining request (an Asset event), whichever comes first
    schedule=AssetOrTimeSchedule(
        timetable=CronTriggerTimetable(_cfg.schedule, timezone="UTC"),
        assets=[Asset("backdrop_retrain_request")],
    ),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": _cfg.retries, "retry_delay": timedelta(minutes=1)},
    tags=["backdrop", "training"],
    doc_md=__doc__,
)
def backdrop_training():
    previous = None
    for stage in STAGES:
        current = dvc_stage.override(task_id=stage)(stage)
        if previous is not None:
            previous >> current
        previous = current
    previous >> dvc_push()


backdrop_training()
