"""`backdrop_training` end to end in the production profile, on real services.

Airflow's metadata DB is a fresh PostgreSQL database (`airflow db migrate`); an API server, a
scheduler, a DAG processor and an `airflow celery worker` run as separate processes; the run is
started with `airflow dags trigger`, so every task goes scheduler → CeleryExecutor → Redis → Celery
worker → Task Execution API. MLflow is the tracking server on PostgreSQL (artifacts in S3) and the DVC
remote is an S3 bucket — the object store here is moto's S3 server, standing in for MinIO.
"""

from __future__ import annotations

import json
import subprocess
import time

import pytest
import sqlalchemy as sa

from backdrop.profiles import configure_dvc_remote, ensure_mlflow_experiment
from tests.conftest import BIN, TINY_PARAMS, make_project, project_env
from tests.prod.conftest import Processes, free_port, random_queue, run, wait_http

pytestmark = pytest.mark.slow
STAGES = ["ingest", "validate", "prepare", "cluster", "benchmark", "train", "evaluate", "register", "dvc_push"]
RUN_TIMEOUT = 900  # a DAG run took 395 s with the 2 cores at load 8–13 (other jobs); far less when idle


def _env(project, airflow_db, services, mlflow_server, s3_store, secrets, api_port, queue):
    from backdrop.profiles import production_env

    env = project_env(project)
    env.update(production_env(
        airflow_db_url=airflow_db, redis_url=services["redis"], mlflow_url=mlflow_server["url"],
        dvc_remote_url=f"s3://{s3_store['bucket']}/dvc", dvc_endpoint_url=s3_store["endpoint"],
        execution_api_url=f"http://127.0.0.1:{api_port}/execution/", secret_values=secrets, queue=queue))
    env.update(s3_store["env"])
    env.update({
        "AIRFLOW__API__PORT": str(api_port),
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW__CORE__PARALLELISM": "2",
        "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": "2",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__CELERY__WORKER_CONCURRENCY": "1",
        "AIRFLOW__CELERY__WORKER_ENABLE_REMOTE_CONTROL": "False",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "60",
        "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "1",
        # only the run this test triggers: no cron runs of this or any other DAG in the folder
        "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
    })
    return env


@pytest.fixture(scope="module")
def celery_run(services, make_database, mlflow_server, s3_store, prod_secrets, tmp_path_factory):
    """One triggered run of backdrop_training through Celery; yields what the tests inspect."""
    project = make_project(tmp_path_factory.mktemp("prod-project"),
                           {**TINY_PARAMS, "airflow": {"retries": 0}, "profile": {"name": "production"}})
    airflow_db = make_database("airflow")
    api_port, queue = free_port(), random_queue()
    env = _env(project, airflow_db, services, mlflow_server, s3_store, prod_secrets, api_port, queue)

    def sh(*cmd: str, timeout: int = 300):
        return run(list(cmd), project, timeout=timeout, env=env)

    timings: dict[str, float] = {}
    t0 = time.monotonic()
    # independent setup steps side by side: synthetic drop, Airflow migration, production bootstrap
    synth = subprocess.Popen([str(BIN / "backdrop"), "data", "synth"], cwd=project, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    sh(str(BIN / "airflow"), "db", "migrate")
    timings["db_migrate"] = time.monotonic() - t0
    # what `backdrop doctor bootstrap` does (the CLI itself runs in compose's airflow-init and below in
    # the doctor test): S3 DVC remote in .dvc/config.local, MLflow experiment with the server's artifact root
    configure_dvc_remote(project, env["BACKDROP_DVC_REMOTE_URL"], env["BACKDROP_DVC_ENDPOINT_URL"],
                         dvc=str(BIN / "dvc"))
    ensure_mlflow_experiment(mlflow_server["url"], "backdrop")
    out, _ = synth.communicate(timeout=300)
    assert synth.returncode == 0, out[-3000:]
    timings["setup"] = time.monotonic() - t0

    procs = Processes(project / "proc-logs")
    airflow = str(BIN / "airflow")
    try:
        procs.start("api-server", [airflow, "api-server", "-H", "127.0.0.1", "-p", str(api_port), "-w", "1"],
                    env, project)
        procs.start("worker", [airflow, "celery", "worker", "--queues", queue, "--concurrency", "1",
                               "--skip-serve-logs", "--without-mingle", "--without-gossip"], env, project)
        procs.start("dag-processor", [airflow, "dag-processor"], env, project)
        # workers report to the Task Execution API: it must answer before anything is scheduled
        wait_http(f"http://127.0.0.1:{api_port}/api/v2/monitor/health", 180, procs, "airflow api-server")
        procs.start("scheduler", [airflow, "scheduler"], env, project)
        engine = sa.create_engine(airflow_db)
        _wait_for_dag(engine, procs)  # parsed into the DB by the dag-processor
        timings["services_up"] = time.monotonic() - t0
        run_id = f"prod_test_{queue}"
        sh(airflow, "dags", "trigger", "backdrop_training", "--run-id", run_id)

        state, deadline = None, time.monotonic() + RUN_TIMEOUT
        while time.monotonic() < deadline:
            procs.assert_alive()
            with engine.connect() as conn:
                state = conn.execute(sa.text("SELECT state FROM dag_run WHERE run_id = :r"), {"r": run_id}).scalar()
            if state in ("success", "failed"):
                break
            time.sleep(3)
        with engine.connect() as conn:
            tis = {r.task_id: r for r in conn.execute(sa.text(
                "SELECT task_id, state, queue, hostname, executor FROM task_instance WHERE run_id = :r"),
                {"r": run_id})}
        # the DAG run is marked done through the Execution API a moment before the Celery task records its
        # own result: give the last row a few seconds to leave STARTED
        for _ in range(30):
            with engine.connect() as conn:
                celery_results = conn.execute(sa.text(
                    "SELECT status, count(*) FROM celery_taskmeta GROUP BY status")).all()
            if "STARTED" not in dict(celery_results):
                break
            time.sleep(2)
        engine.dispose()
        timings["dag_run_done"] = time.monotonic() - t0
        (project / "timings.json").write_text(json.dumps(timings, indent=1))
        yield {"timings": timings, "project": project, "env": env, "state": state, "tis": tis, "queue": queue,
               "celery_results": dict(celery_results), "procs": procs, "mlflow": mlflow_server, "s3": s3_store}
    finally:
        procs.stop()


def _wait_for_dag(engine, procs, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        procs.assert_alive()
        with engine.connect() as conn:
            if conn.execute(sa.text("SELECT 1 FROM serialized_dag WHERE dag_id = 'backdrop_training'")).first():
                return
        time.sleep(2)
    raise AssertionError(f"backdrop_training not parsed by the dag-processor in {timeout:.0f} s:\n"
                         + procs.log("dag-processor")[-3000:])


def _diagnose(r) -> str:
    return f"timings {r['timings']}\n" + "\n".join(f"--- {name} ---\n{r['procs'].log(name)[-3000:]}" for name in r["procs"].procs)


def test_dag_run_succeeds_through_celery(celery_run):
    r = celery_run
    assert r["state"] == "success", f"dag_run {r['state']}; tasks { {k: v.state for k, v in r['tis'].items()} }\n" + _diagnose(r)
    assert sorted(r["tis"]) == sorted(STAGES)
    for task_id, ti in r["tis"].items():
        assert ti.state == "success", task_id
        assert ti.queue == r["queue"], (task_id, ti.queue)  # routed to the Celery queue only our worker serves
    # every task went through Celery: one result row per task in the PostgreSQL result backend
    assert r["celery_results"].get("SUCCESS", 0) >= len(STAGES), r["celery_results"]
    worker_log = r["procs"].log("worker")
    assert "celery@" in worker_log and "execute_workload" in worker_log, worker_log[-3000:]


def test_model_registered_on_the_tracking_server(celery_run):
    import requests

    r = celery_run
    reg = json.loads((r["project"] / "metrics/register.json").read_text())
    got = requests.get(r["mlflow"]["url"] + "/api/2.0/mlflow/registered-models/alias",
                       params={"name": "backdrop-u2net", "alias": "champion"}, timeout=10)
    assert got.status_code == 200, got.text
    assert got.json()["model_version"]["version"] == str(reg["version"])
    assert got.json()["model_version"]["run_id"] == reg["run_id"]


def test_data_pushed_to_the_s3_dvc_remote(celery_run):
    r = celery_run
    status = run([str(BIN / "dvc"), "status", "--cloud"], r["project"], env=r["env"])
    assert "Cache and remote 'production' are in sync" in status.stdout, status.stdout
    import boto3

    s3 = boto3.client("s3", endpoint_url=r["s3"]["endpoint"], region_name="us-east-1",
                      aws_access_key_id=r["s3"]["env"]["AWS_ACCESS_KEY_ID"],
                      aws_secret_access_key=r["s3"]["env"]["AWS_SECRET_ACCESS_KEY"])
    listed = s3.list_objects_v2(Bucket=r["s3"]["bucket"], Prefix="dvc/")
    assert listed.get("KeyCount", 0) > 0


def test_doctor_passes_on_the_running_production_stack(celery_run):
    r = celery_run
    proc = run([str(BIN / "backdrop"), "doctor", "--json"], r["project"], env=r["env"], check=False)
    report = json.loads(proc.stdout)  # only the report on stdout (logs go to stderr)
    failed = [c for c in report["checks"] if c["status"] == "FAIL"]
    assert proc.returncode == 0 and not failed, json.dumps(failed, indent=1)
    assert report["profile"] == "production"
    areas = {c["area"] for c in report["checks"] if c["status"] == "OK"}
    assert {"airflow.executor", "airflow.metadata_db", "airflow.broker", "mlflow.tracking",
            "mlflow.registry", "dvc.remote"} <= areas
