"""The monitoring DAG for real: a drift in the log → alert → Asset event → a backdrop_training run
that versions the corrected pairs as new training data.

`airflow dags test backdrop_monitoring` runs the three tasks against a prediction log holding a
white-on-white drift; the alert reaches the webhook receiver through the Airflow connection
`backdrop_alert_webhook` (an `AIRFLOW_CONN_*` variable, looked up by the task through the Task SDK);
`request_retraining` exports the corrections into the project's vendor drop folder and emits the
`backdrop_retrain_request` Asset event. Then Airflow runs as in production: an API server (the Task
Execution API) and a scheduler with the LocalExecutor, on the project's SQLite metadata DB. The
scheduler turns the event into an asset-triggered `backdrop_training` run and runs every stage
(`dvc repro` + `dvc push`); the new DVC data version must hold exactly the corrected pairs.
"""

from __future__ import annotations

import csv
import json
import secrets
import sqlite3
import subprocess
import time
from datetime import timedelta

import pytest
import torch
import yaml

from backdrop.io import sha256_file
from tests.conftest import BIN, REPO, project_env
from tests.prod.conftest import Processes, free_port, wait_http

from .conftest import copy_project, monitoring_params

TRAINING_TASKS = ["ingest", "validate", "prepare", "cluster", "benchmark", "train", "evaluate", "register", "dvc_push"]
SHIFTED = 7  # white-on-white photos in the drifted batch
RUN_TIMEOUT = 900  # the run takes ~1–2 min on an idle 2-core box; shared CI cores can be much slower


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
def test_drift_retrains_through_the_asset_with_the_corrections(pipeline_run, tmp_path, webhook, monkeypatch):
    """In a full copy of the pipeline project (DVC, Airflow and MLflow state), so no state leaks."""
    from backdrop.data.predlog import utcnow
    from backdrop.stages.simulate import simulate_batch

    torch.set_num_threads(1)
    url, hooks = webhook
    project = copy_project(pipeline_run["project"], tmp_path / "project")
    for dag_file in (REPO / "dags").glob("*.py"):  # the DAG files as they are now
        (project / "dags" / dag_file.name).write_bytes(dag_file.read_bytes())
    lock_before = yaml.safe_load((project / "dvc.lock").read_text())["stages"]
    monkeypatch.chdir(project)
    monkeypatch.setenv("BACKDROP_PROJECT_DIR", str(project))
    for var in ("BACKDROP_MONITORING_DB", "BACKDROP_ALERT_WEBHOOK_URL", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(var, raising=False)
    mon = tmp_path / "mon"
    mon.mkdir()
    drop_dir = project / "data" / "drop"  # = ingest.drop_dir: the next training run ingests the export
    params = monitoring_params(project, mon, window_hours=24.0, export_dir=str(drop_dir),
                               simulate_shift_white_share=1.0, simulate_shift_black_share=0.0)
    # 7 > k = 6 clusters: one cluster gets at least min_samples (2) of them (tests/monitoring/conftest.py)
    batch = simulate_batch(params, SHIFTED, 102, shift=True, at=utcnow() - timedelta(minutes=10), review_tolerance=0.5)
    assert batch.fixed >= SHIFTED - 1, batch.items

    api_port = free_port()
    env = {**project_env(project),
           "BACKDROP_PARAMS": str(mon / "params.yaml"),  # the monitoring DAG's params (log and reports in mon/)
           "AIRFLOW_CONN_BACKDROP_ALERT_WEBHOOK": url,  # the only way the alert can reach the receiver
           "AIRFLOW__API__HOST": "127.0.0.1", "AIRFLOW__API__PORT": str(api_port),
           "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{api_port}/execution/",
           "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),  # scheduler signs, API server checks
           "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
           "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
           "AIRFLOW__CORE__PARALLELISM": "1",  # the stages run one after the other anyway
           "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "1"}
    airflow = str(BIN / "airflow")

    def sh(*args, timeout=600, env_=None):
        proc = subprocess.run([airflow, *args], cwd=project, env=env_ or env, capture_output=True,
                              text=True, timeout=timeout)
        assert proc.returncode == 0, f"airflow {' '.join(args)}: {proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        return proc

    def db():
        return sqlite3.connect(project / ".airflow" / "airflow.db", timeout=30)

    procs = Processes(tmp_path / "proc-logs")
    try:
        # the API server starts while the monitoring DAG runs (it only reads the DB until tasks report)
        procs.start("api-server", [airflow, "api-server", "-H", "127.0.0.1", "-p", str(api_port), "-w", "1"],
                    env, project)
        sh("dags", "test", "backdrop_monitoring")

        # 1. the alert went out through the Airflow connection; the corrections became a vendor drop
        assert len(hooks) == 1 and hooks[0]["metadata"]["event_type"] == "backdrop_alert"
        assert hooks[0]["metadata"]["event_payload"]["clusters"]
        drops = sorted(drop_dir.glob("monitoring-*"))
        assert len(drops) == 1
        export = json.loads((mon / "reports" / "exports" / f"{drops[0].name}.json").read_text())
        pairs = {p["stem"]: p for p in export["pairs"]}
        assert len(pairs) == batch.fixed and sorted(f.stem for f in (drops[0] / "masks").glob("*.png")) == sorted(pairs)
        for stem, pair in pairs.items():  # the drop holds the reviewers' masks, byte for byte
            assert sha256_file(drops[0] / "masks" / f"{stem}.png") == pair["mask_sha256"]
        with db() as con:
            events = con.execute("SELECT e.id, e.extra FROM asset_event e JOIN asset a ON a.id = e.asset_id "
                                 "WHERE a.name = 'backdrop_retrain_request'").fetchall()
            assert len(events) == 1 and json.loads(events[0][1])["pairs"] == batch.fixed
            assert json.loads(events[0][1])["drop"] == str(drops[0])
            assert con.execute("SELECT target_dag_id FROM asset_dag_run_queue").fetchall() == [("backdrop_training",)]

        # 2. Airflow as deployed. Only backdrop_training may run; one scheduler loop turns the queued event
        # into the asset-triggered run (asset-triggered DAGs are skipped for cron runs in that loop), then a
        # scheduler that creates no runs of its own (use_job_schedule off: no nightly run of the training
        # DAG, no hourly monitoring run) drives it to the end through the LocalExecutor.
        sh("dags", "pause", "-y", "--treat-dag-id-as-regex", "^backdrop_(monitoring|inference)$")
        sh("dags", "unpause", "backdrop_training")
        wait_http(f"http://127.0.0.1:{api_port}/api/v2/monitor/health", 180, procs, "airflow api-server")
        train_env = {k: v for k, v in env.items() if k != "BACKDROP_PARAMS"}  # training reads params.yaml
        sh("scheduler", "--num-runs", "1", env_=train_env)
        with db() as con:
            created = con.execute("SELECT dag_id, run_type FROM dag_run WHERE run_type != 'manual'").fetchall()
        assert created == [("backdrop_training", "asset_triggered")], created
        procs.start("scheduler", [airflow, "scheduler"],
                    {**train_env, "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False"}, project)
        deadline, run = time.monotonic() + RUN_TIMEOUT, None
        while time.monotonic() < deadline:
            procs.assert_alive()
            with db() as con:
                run = con.execute("SELECT id, run_id, state FROM dag_run WHERE dag_id = 'backdrop_training' "
                                  "AND run_type = 'asset_triggered'").fetchall()
            if run and run[0][2] in ("success", "failed"):
                break
            time.sleep(3)
        with db() as con:
            tis = dict(con.execute("SELECT task_id, state FROM task_instance WHERE run_id = ?", (run[0][1],))
                       .fetchall()) if run else {}
            consumed = con.execute("SELECT event_id FROM dagrun_asset_event WHERE dag_run_id = ?",
                                   (run[0][0],)).fetchall() if run else []
            runs = con.execute("SELECT dag_id, run_type FROM dag_run ORDER BY id").fetchall()
    finally:
        procs.stop()
    logs = "\n".join(f"--- {n} ---\n{procs.log(n)[-3000:]}" for n in procs.procs)
    assert run and len(run) == 1 and run[0][2] == "success", f"asset-triggered run: {run}, tasks {tis}\n{logs}"
    assert tis == dict.fromkeys(TRAINING_TASKS, "success"), tis
    assert consumed == [(events[0][0],)]  # the run was triggered by the monitoring DAG's event
    # besides the manual runs of `airflow dags test`, Airflow made exactly this one run
    assert [r for r in runs if r[1] != "manual"] == [("backdrop_training", "asset_triggered")], runs

    # 3. the new DVC data version holds the corrected pairs: raw store → validated → prepared split
    def outs(stages):
        return {o["path"]: o["md5"] for stage in ("ingest", "validate", "prepare") for o in stages[stage]["outs"]}

    before, after = outs(lock_before), outs(yaml.safe_load((project / "dvc.lock").read_text())["stages"])
    for path in ("data/raw", "data/validated", "data/prepared"):
        assert after[path] != before[path], f"{path}: no new version"
    with open(project / "data/raw/manifest.csv", newline="") as fh:
        raw = {r["stem"]: r for r in csv.DictReader(fh)}
    with open(project / "data/validated/manifest.csv", newline="") as fh:
        validated = {r["pair_id"] for r in csv.DictReader(fh)}
    with open(project / "data/prepared/index.csv", newline="") as fh:
        prepared = {r["pair_id"] for r in csv.DictReader(fh)}
    for stem, pair in pairs.items():
        row = raw[f"{drops[0].name}/{stem}"]  # ingest names a pair by its path in the drop
        assert (row["image_sha256"], row["mask_sha256"]) == (pair["image_sha256"], pair["mask_sha256"])
        assert sha256_file(project / "data/raw" / row["mask_path"]) == pair["mask_sha256"]
        assert row["pair_id"] in validated and row["pair_id"] in prepared, stem
    # the retrained model's MLflow run names that data version; the DVC remote holds it
    with sqlite3.connect(project / "mlflow" / "mlflow.db") as con:
        lineage = con.execute("SELECT count(*) FROM tags WHERE key = 'dvc.ingest.data/raw' AND value = ?",
                              (after["data/raw"],)).fetchone()[0]
    assert lineage == 1
    status = subprocess.run([str(BIN / "dvc"), "status", "--cloud"], cwd=project, env=train_env,
                            capture_output=True, text=True, timeout=300)
    assert status.returncode == 0 and "in sync" in status.stdout, status.stdout + status.stderr
