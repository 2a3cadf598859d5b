"""Profiles switch configuration only: the same DAG file parses to the same DAG under both, and
`backdrop doctor` names what is wrong with a production environment and how to fix it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from backdrop.profiles import (
    PRODUCTION_SETTINGS,
    ProfileError,
    active_profile,
    missing_settings,
    production_env,
)
from tests.conftest import BIN, REPO

DUMMY = dict(airflow_db_url="postgresql+psycopg2://u:p@127.0.0.1:1/airflow", redis_url="redis://127.0.0.1:1/0",
             mlflow_url="http://127.0.0.1:1", dvc_remote_url="s3://bucket/dvc",
             execution_api_url="http://127.0.0.1:1/execution/")

PARSE = """
import json, sys
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=sys.argv[1])
dag = bag.dags["backdrop_training"]
print(json.dumps({
    "errors": {k: str(v) for k, v in bag.import_errors.items()},
    "fileloc": dag.fileloc,
    "tasks": {t.task_id: [sorted(t.downstream_task_ids), str(getattr(t, "bash_command", ""))[:80],
                          str(getattr(t, "python_callable", None) and t.python_callable.__qualname__)]
              for t in dag.tasks},
    "executor": __import__("airflow.configuration", fromlist=["conf"]).conf.get("core", "executor"),
}))
"""


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "MLFLOW", "BACKDROP"))}


def _parse(env: dict[str, str], tmp_path: Path) -> dict:
    env = {**env, "AIRFLOW_HOME": str(tmp_path / "airflow"), "BACKDROP_PROJECT_DIR": str(REPO)}
    out = subprocess.run([sys.executable, "-c", PARSE, str(REPO / "dags")], env=env, capture_output=True,
                         text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow  # two DagBag parses in fresh interpreters
def test_same_dag_file_parses_to_the_same_dag_under_both_profiles(tmp_path):
    local = _parse({**_clean_env(), "BACKDROP_PROFILE": "local"}, tmp_path / "l")
    prod = _parse({**_clean_env(), **production_env(**DUMMY)}, tmp_path / "p")
    assert local["errors"] == {} and prod["errors"] == {}
    assert local["executor"] == "LocalExecutor" and prod["executor"] == "CeleryExecutor"
    assert local["fileloc"] == prod["fileloc"] == str(REPO / "dags" / "training.py")
    assert local["tasks"] == prod["tasks"]  # same tasks, same edges, same commands and callables


def test_profile_comes_from_env_then_params(tmp_path, monkeypatch):
    params = tmp_path / "params.yaml"
    params.write_text("profile:\n  name: production\n")
    monkeypatch.delenv("BACKDROP_PROFILE", raising=False)
    assert active_profile(params) == ("production", "params.yaml profile.name")
    monkeypatch.setenv("BACKDROP_PROFILE", "local")
    assert active_profile(params) == ("local", "env BACKDROP_PROFILE")
    monkeypatch.setenv("BACKDROP_PROFILE", "prod")
    with pytest.raises(ProfileError, match="local, production"):
        active_profile(params)
    monkeypatch.delenv("BACKDROP_PROFILE")
    other = tmp_path / "other.yaml"  # (load_params caches per path)
    other.write_text("remove:\n  format: rgba\n")
    assert active_profile(other) == ("local", "params.yaml profile.name")


def test_production_env_is_complete_and_every_setting_is_checked():
    assert missing_settings(production_env(**DUMMY)) == []
    missing = {s.env for s, why in missing_settings({})}
    assert missing == {s.env for s in PRODUCTION_SETTINGS}
    bad = {**production_env(**DUMMY), "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
           "MLFLOW_TRACKING_URI": "sqlite:///mlflow.db"}
    assert {s.env for s, _ in missing_settings(bad)} == {"AIRFLOW__CORE__EXECUTOR", "MLFLOW_TRACKING_URI"}
    # secrets may come from Airflow's _CMD/_SECRET indirection instead of a value
    env = production_env(**DUMMY)
    env["AIRFLOW__CORE__FERNET_KEY_CMD"] = env.pop("AIRFLOW__CORE__FERNET_KEY")
    assert missing_settings(env) == []


@pytest.mark.slow  # doctor imports Airflow, MLflow and DVC
def test_doctor_names_each_problem_and_its_fix(tmp_path):
    """Production profile pointed at closed ports: every service check fails with a fix, exit 1."""
    env = {**_clean_env(), **production_env(**DUMMY), "AIRFLOW_HOME": str(tmp_path / "airflow"),
           "BACKDROP_PROJECT_DIR": str(REPO)}
    proc = subprocess.run([str(BIN / "backdrop"), "doctor", "--json"], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=240)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    failed = {c["area"]: c for c in report["checks"] if c["status"] == "FAIL"}
    assert {"airflow.metadata_db", "airflow.broker", "mlflow.tracking", "dvc.remote"} <= set(failed), failed
    assert all(c["fix"] for c in failed.values())
    assert "127.0.0.1:1" in failed["airflow.metadata_db"]["detail"]
    assert ":p@" not in proc.stdout  # passwords are redacted


@pytest.mark.slow  # the `backdrop doctor env` CLI in a subprocess
def test_doctor_env_prints_a_complete_production_environment():
    proc = subprocess.run([str(BIN / "backdrop"), "doctor", "env"], capture_output=True, text=True, check=True,
                          env={**_clean_env(), "BACKDROP_PROJECT_DIR": str(REPO)}, timeout=120)
    exported = dict(line.removeprefix("export ").split("=", 1) for line in proc.stdout.splitlines())
    values = {k: v.strip('"') for k, v in exported.items()}
    assert missing_settings(values) == []
    assert values["AIRFLOW__CELERY__RESULT_BACKEND"].startswith("db+postgresql+psycopg2://")
