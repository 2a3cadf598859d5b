"""Three nights of the retraining loop, with the real Airflow scheduler, on tiny data and the demo overlay.

Airflow runs as deployed: an API server (the Task Execution API) and a scheduler with the
LocalExecutor on the project's SQLite metadata DB. Nights 1 and 2 are runs of `backdrop_training`
triggered with `run_kind: nightly` (what the cron's runs are named; a scheduler that creates no runs
of its own runs them, so the real cron never fires mid-test); night 3 is the asset-triggered run
the monitoring DAG's drift alert requests.

1. first training: promoted (no champion yet), `@champion` → v1;
2. a new vendor drop and a deliberately worse recipe (from scratch): refused on the same photos,
   `@champion` stays v1, the decision report says why and lists the photos that got worse;
3. reviewers' corrections of a drifted batch, exported by `backdrop_monitoring`'s alert, trigger the
   retrain (the demo recipe again): promoted exactly when the same-photo comparison says so.

No run rewrites params.yaml (the recipe is configuration). At the end the MLflow UI compares the
runs in headless Chromium (bench/mlflow_compare.py); with BACKDROP_DOCS_SCREENSHOTS=1 the pictures
go to docs/img/ (the README's), else to the test's tmp folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import timedelta

import pytest
import yaml

from tests.conftest import BIN, REPO, make_project, project_env, run
from tests.monitoring.conftest import monitoring_params, webhook  # noqa: F401 (fixture)
from tests.prod.conftest import Processes, free_port, wait_http

pytestmark = pytest.mark.slow

NIGHT_PARAMS = {
    "synth": {"n": 30, "seed": 3, "min_side": 300, "max_side": 480},
    "prepare": {"size": 64},
    "train": {"epochs": 1, "batch_size": 8},
    "airflow": {"retries": 0},
}
RUN_TIMEOUT = 900  # one night takes ~1–2 min on an idle 2-core box; shared cores are slower
SHIFTED = 7


def _champion(project) -> str:
    import mlflow

    from backdrop import tracking
    from backdrop.config import load_params

    tracking.setup(load_params(project / "params.yaml"))
    return str(mlflow.MlflowClient().get_model_version_by_alias("backdrop-u2net", "champion").version)


def _run_name(project, run_id: str) -> str:
    with sqlite3.connect(project / "mlflow" / "mlflow.db") as con:
        return con.execute("SELECT name FROM runs WHERE run_uuid = ?", (run_id,)).fetchone()[0]


def _consistent(reg: dict, params) -> bool:
    """What the gate must have decided from the same-photo numbers it reported."""
    rp = params.register_
    means = reg["means"]
    if "stock" in means and means["challenger"] < means["stock"] - rp.stock_margin:
        return False
    if any(g["stock"] - g["challenger"] > rp.stock_margin for name, g in reg["groups"].items()
           if "/" in name and g.get("stock") is not None):  # benchmark groups are <set>/<style>
        return False  # below stock in a benchmark style
    if reg["gain_lower"] is None:
        return True
    drops = [g["champion"] - g["challenger"] for g in reg["groups"].values()]
    return reg["gain_lower"] > rp.min_improvement and max(drops) <= rp.max_cluster_drop


def test_three_nights(tmp_path, webhook, monkeypatch):  # noqa: F811 (the imported fixture)
    from backdrop.config import load_params
    from backdrop.data.predlog import utcnow
    from backdrop.stages.simulate import simulate_batch

    url, hooks = webhook
    project = make_project(tmp_path / "project", NIGHT_PARAMS)
    monkeypatch.chdir(project)
    monkeypatch.setenv("BACKDROP_PROJECT_DIR", str(project))
    for var in ("BACKDROP_MONITORING_DB", "BACKDROP_ALERT_WEBHOOK_URL", "MLFLOW_TRACKING_URI", "BACKDROP_PARAMS"):
        monkeypatch.delenv(var, raising=False)
    run([str(BIN / "backdrop"), "data", "synth"], project)
    run([str(BIN / "airflow"), "db", "migrate"], project)

    api_port = free_port()
    env = {**project_env(project),
           "AIRFLOW_CONN_BACKDROP_ALERT_WEBHOOK": url,
           "AIRFLOW__API__HOST": "127.0.0.1", "AIRFLOW__API__PORT": str(api_port),
           "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{api_port}/execution/",
           "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
           "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
           "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
           "AIRFLOW__CORE__PARALLELISM": "1",
           "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "1"}
    airflow = str(BIN / "airflow")

    def sh(*args, timeout=600, env_=None):
        proc = subprocess.run([airflow, *args], cwd=project, env=env_ or env, capture_output=True, text=True,
                              timeout=timeout)
        assert proc.returncode == 0, f"airflow {' '.join(args)}: {proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        return proc

    def db():
        return sqlite3.connect(project / ".airflow" / "airflow.db", timeout=30)

    procs = Processes(tmp_path / "proc-logs")

    def start_scheduler(name: str):
        procs.start(name, [airflow, "scheduler"], {**env, "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False"}, project)

    def stop(name: str):
        proc = procs.procs.pop(name)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def wait_run(run_type: str, seen: int) -> tuple[str, str]:
        """(run_id, state) of the (seen+1)-th training run of this type, once it finished."""
        deadline = time.monotonic() + RUN_TIMEOUT
        while time.monotonic() < deadline:
            procs.assert_alive()
            with db() as con:
                runs = con.execute("SELECT run_id, state FROM dag_run WHERE dag_id = 'backdrop_training' AND "
                                   "run_type = ? ORDER BY id", (run_type,)).fetchall()
            if len(runs) > seen and runs[seen][1] in ("success", "failed"):
                return runs[seen]
            time.sleep(3)
        logs = "\n".join(f"--- {n} ---\n{procs.log(n)[-3000:]}" for n in procs.procs)
        raise AssertionError(f"no finished {run_type} run #{seen + 1} in {RUN_TIMEOUT} s\n{logs}")

    def night(run_type: str, seen: int) -> dict:
        params_text = (project / "params.yaml").read_text()
        run_id, state = wait_run(run_type, seen)
        with db() as con:
            tis = dict(con.execute("SELECT task_id, state FROM task_instance WHERE run_id = ? AND "
                                   "dag_id = 'backdrop_training'", (run_id,)).fetchall())
        assert state == "success", f"{run_id}: {tis}\n{procs.log('scheduler')[-3000:]}"
        assert (project / "params.yaml").read_text() == params_text  # no run rewrites the recipe
        reg = json.loads((project / "metrics/register.json").read_text())
        reg["report"] = (project / "metrics/gate/report.md").read_text()
        reg["run_name"] = _run_name(project, reg["run_id"])
        return reg

    try:
        sh("dags", "reserialize")
        sh("dags", "pause", "-y", "--treat-dag-id-as-regex", "^backdrop_(monitoring|inference)$")
        sh("dags", "unpause", "backdrop_training")
        procs.start("api-server", [airflow, "api-server", "-H", "127.0.0.1", "-p", str(api_port), "-w", "1"],
                    env, project)
        wait_http(f"http://127.0.0.1:{api_port}/api/v2/monitor/health", 180, procs, "airflow api-server")
        start_scheduler("scheduler")

        # night 1: the first training is promoted
        sh("dags", "trigger", "backdrop_training", "--conf", json.dumps({"run_kind": "nightly"}))
        one = night("manual", 0)
        assert one["promoted"] and "no champion yet" in one["reason"], one["reason"]
        assert _champion(project) == one["version"] == "1"
        assert one["run_name"].startswith("nightly-") and "v1 promoted" in one["report"]
        assert set(one["means"]) == {"challenger", "stock"}  # the stock U²-NetP scored on the same photos

        # night 2: a new vendor drop and a deliberately worse recipe (no official weights) are refused
        run([str(BIN / "backdrop"), "data", "synth", "--n", "20", "--seed", "5"], project)
        raw = yaml.safe_load((project / "params.yaml").read_text())
        raw["train"]["init"] = "scratch"
        (project / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
        sh("dags", "trigger", "backdrop_training", "--conf", json.dumps({"run_kind": "nightly"}))
        two = night("manual", 1)
        assert not two["promoted"] and two["champion_before"] == "1", two["reason"]
        assert _champion(project) == "1"
        assert two["gain_mean"] < 0 and "lower bound" in two["reason"] and "does not exceed" in two["reason"]
        assert two["compared_photos"] > one["compared_photos"]  # today's split: the new drop's photos too
        assert "v2 not promoted" in two["report"] and two["reason"] in two["report"] and two["worse"]
        assert "got worse" in two["report"] and (project / "metrics/gate/worse.png").stat().st_size > 1000
        assert two["means"]["champion"] > two["means"]["challenger"]

        # night 3: the drift alert's corrections trigger a retrain with the recipe as shipped (demo overlay)
        raw["train"]["init"] = "official"
        (project / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
        mon = tmp_path / "mon"
        mon.mkdir()
        mparams = monitoring_params(project, mon, window_hours=24.0, export_dir=str(project / "data/drop"),
                                    simulate_shift_white_share=1.0, simulate_shift_black_share=0.0)
        batch = simulate_batch(mparams, SHIFTED, 102, shift=True, at=utcnow() - timedelta(minutes=10),
                               review_tolerance=0.5)
        assert batch.fixed >= SHIFTED - 1, batch.items
        stop("scheduler")
        sh("dags", "test", "backdrop_monitoring", env_={**env, "BACKDROP_PARAMS": str(mon / "params.yaml")})
        assert len(hooks) == 1 and hooks[0]["metadata"]["event_type"] == "backdrop_alert"
        assert len(list((project / "data/drop").glob("monitoring-*"))) == 1
        sh("scheduler", "--num-runs", "1")  # turns the queued asset event into the asset-triggered run
        start_scheduler("scheduler-3")
        three = night("asset_triggered", 0)
        assert three["run_name"].startswith("drift-retrain-") and three["champion_before"] == "1"
        assert three["compared_photos"] >= two["compared_photos"]
        assert three["promoted"] == _consistent(three, load_params(project / "params.yaml")), three
        assert _champion(project) == ("3" if three["promoted"] else "1")
        assert ("v3 promoted" if three["promoted"] else "v3 not promoted") in three["report"]
    finally:
        procs.stop()
    with db() as con:
        made = [r for r in con.execute("SELECT dag_id, run_type FROM dag_run ORDER BY id") if r[1] != "manual"]
    assert made == [("backdrop_training", "asset_triggered")], made  # the cron never fired mid-test

    # the MLflow UI comparing night 1 and night 2, per-cluster IoU side by side (a real server and browser)
    sys.path.insert(0, str(REPO / "bench"))
    from mlflow_compare import capture

    out = REPO / "docs/img" if os.environ.get("BACKDROP_DOCS_SCREENSHOTS") == "1" else tmp_path / "img"
    shots = capture(project, out, [one["run_id"], two["run_id"]])
    assert [p.name for p in shots] == ["mlflow-compare.png", "mlflow-compare-metrics.png"]
    assert all(p.stat().st_size > 20_000 for p in shots)
