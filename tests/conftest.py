"""Shared fixtures: a throw-away copy of the project, and one real pipeline run on tiny data.

Every project trains the demo recipe (params.demo.yaml written over the production params.yaml, as
`make demo` does), then the test's own tiny overrides: never the 2-hour production recipe.

The pipeline fixture runs the real `airflow dags test backdrop_training` (every stage through
`dvc repro`, MLflow on SQLite) once per session; DAG, registry and CLI tests all read its results.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PROJECT_FILES = ["dvc.yaml", "params.yaml", "params.demo.yaml", "dags", "src", ".dvc/config", ".dvc/.gitignore",
                 "data/cluster_overrides.csv", ".gitignore"]

TINY_PARAMS = {
    "synth": {"n": 30, "seed": 3, "min_side": 300, "max_side": 480},
    "prepare": {"size": 64},
    "train": {"epochs": 1, "batch_size": 8},
}


def make_project(dest: Path, overrides: dict | None = None) -> Path:
    """Copy the files a pipeline run needs into `dest` (a git repo of its own): params.yaml with the
    demo overlay (params.demo.yaml) applied, then `overrides`."""
    from backdrop.config import apply_overlay

    for rel in PROJECT_FILES:
        src, dst = REPO / rel, dest / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(src, dst)
    apply_overlay(dest / "params.yaml", dest / "params.demo.yaml")
    params = yaml.safe_load((dest / "params.yaml").read_text())
    # Test projects only: a 1-epoch 64 px model is far below the stock U²-NetP, and the floor would refuse
    # it, leaving no champion for the registry, serving and monitoring tests to work on. The floor itself is
    # tested in tests/code/test_gate.py; the demo and production keep it (register.stock_margin: 0).
    params["register"]["stock_margin"] = 1.0
    for section, values in (overrides or {}).items():
        params.setdefault(section, {}).update(values)
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    subprocess.run(["git", "init", "-q", str(dest)], check=True)
    return dest


def project_env(project: Path) -> dict[str, str]:
    """Environment that points Airflow, DVC and backdrop at `project` and nothing else."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "MLFLOW", "BACKDROP"))}
    env.update({
        "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}",
        "BACKDROP_PROJECT_DIR": str(project),
        "AIRFLOW_HOME": str(project / ".airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(project / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "PYTHONUNBUFFERED": "1",
        "TQDM_DISABLE": "1",
    })
    return env


def run(cmd: list[str], project: Path, timeout: int = 900, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=project, env=project_env(project), capture_output=True, text=True,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n"
                             f"{proc.stderr[-4000:]}")
    return proc


@pytest.fixture(scope="session")
def pipeline_run(tmp_path_factory) -> dict:
    """One real end-to-end run of the training DAG on 30 tiny synthetic pairs."""
    project = make_project(tmp_path_factory.mktemp("project"), TINY_PARAMS)
    run([str(BIN / "backdrop"), "data", "synth"], project)
    run([str(BIN / "airflow"), "db", "migrate"], project)
    params_before = (project / "params.yaml").read_text()
    dag_test = run([str(BIN / "airflow"), "dags", "test", "backdrop_training"], project, check=False)
    return {"project": project, "dag_test": dag_test, "params_before": params_before}


@pytest.fixture()
def project_cwd(pipeline_run, monkeypatch) -> Path:
    """Run in-process code against the pipeline project (params, MLflow store, outputs)."""
    project = pipeline_run["project"]
    monkeypatch.chdir(project)
    monkeypatch.setenv("BACKDROP_PROJECT_DIR", str(project))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return project
