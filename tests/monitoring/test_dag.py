"""The monitoring DAG for real: a drift in the log → alert → Asset event → a backdrop_training run.

`airflow dags test backdrop_monitoring` runs the three tasks against a prediction log holding a
white-on-white drift; `request_retraining` exports the corrections and emits the
`backdrop_retrain_request` Asset event; one scheduler loop then creates the asset-triggered
`backdrop_training` run (nightly cron or Asset, whichever comes first).
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
from datetime import timedelta

import pytest
import torch

from tests.conftest import BIN, REPO, project_env

from .conftest import monitoring_params


def test_dag_shape_and_schedule():
    from airflow.dag_processing.dagbag import DagBag

    from tests.dags.test_dagbag import DAGS

    bag = DagBag(dag_folder=str(DAGS))
    assert bag.import_errors == {}
    dag = bag.dags["backdrop_monitoring"]
    assert dag.task_ids == ["intake", "evaluate", "request_retraining"]
    assert "evaluate" in dag.get_task("intake").downstream_task_ids
    assert dag.timetable.expression == "0 * * * *"  # params.yaml monitoring.schedule: @hourly
    assert dag.catchup is False and dag.on_failure_callback is not None
    outlets = dag.get_task("request_retraining").outlets
    training_assets = bag.dags["backdrop_training"].timetable.asset_condition.objects
    assert [a.name for a in outlets] == [a.name for a in training_assets] == ["backdrop_retrain_request"]


@pytest.mark.slow
def test_drift_triggers_training_through_the_asset(pipeline_run, tmp_path, webhook, monkeypatch):
    """In a copy of the pipeline project (its Airflow DB knows backdrop_training), so no state leaks."""
    from backdrop.monitoring.predlog import utcnow
    from backdrop.monitoring.simulate import simulate_batch

    torch.set_num_threads(1)
    url, hooks = webhook
    source = pipeline_run["project"]
    project = tmp_path / "project"
    for rel in ("dags", "src", ".airflow", "mlflow", "data/clusters", "params.yaml", "dvc.yaml"):
        (shutil.copytree if (source / rel).is_dir() else shutil.copy2)(source / rel, project / rel)
    shutil.copytree(REPO / "dags", project / "dags", dirs_exist_ok=True)
    cfg = project / ".airflow" / "airflow.cfg"
    if cfg.exists():  # airflow.cfg holds absolute paths (metadata DB, logs): point them at the copy
        cfg.write_text(cfg.read_text().replace(str(source), str(project)))
    monkeypatch.chdir(project)
    monkeypatch.setenv("BACKDROP_PROJECT_DIR", str(project))
    monkeypatch.delenv("BACKDROP_MONITORING_DB", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    mon = tmp_path / "mon"
    mon.mkdir()
    params = monitoring_params(project, mon, window_hours=24.0, simulate_shift_white_share=1.0,
                               simulate_shift_black_share=0.0)
    simulate_batch(params, 6, 102, shift=True, at=utcnow() - timedelta(minutes=10), review_tolerance=0.5)

    env = {**project_env(project), "BACKDROP_PARAMS": str(mon / "params.yaml"), "BACKDROP_ALERT_WEBHOOK_URL": url}
    airflow = str(BIN / "airflow")

    def sh(*args, timeout=600):
        proc = subprocess.run([airflow, *args], cwd=project, env=env, capture_output=True, text=True,
                              timeout=timeout)
        assert proc.returncode == 0, f"airflow {' '.join(args)}: {proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        return proc

    sh("dags", "unpause", "backdrop_training")
    sh("dags", "test", "backdrop_monitoring")
    assert len(hooks) == 1 and hooks[0]["metadata"]["event_type"] == "backdrop_alert"
    assert hooks[0]["metadata"]["event_payload"]["clusters"]
    drops = list((mon / "drop").glob("monitoring-*"))
    assert len(drops) == 1 and len(list((drops[0] / "masks").glob("*.png"))) == 6

    with sqlite3.connect(project / ".airflow" / "airflow.db") as db:
        events = db.execute("SELECT e.extra FROM asset_event e JOIN asset a ON a.id = e.asset_id "
                            "WHERE a.name = 'backdrop_retrain_request'").fetchall()
        assert len(events) == 1 and json.loads(events[0][0])["pairs"] == 6
        assert ("backdrop_training",) in db.execute("SELECT target_dag_id FROM asset_dag_run_queue").fetchall()

    sh("scheduler", "--num-runs", "1")  # one scheduler loop turns the queued event into a DAG run
    with sqlite3.connect(project / ".airflow" / "airflow.db") as db:
        runs = db.execute("SELECT run_type FROM dag_run WHERE dag_id = 'backdrop_training' "
                          "AND run_type = 'asset_triggered'").fetchall()
    assert runs == [("asset_triggered",)], "no asset-triggered backdrop_training run was created"
