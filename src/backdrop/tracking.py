"""MLflow wiring: one place that knows the tracking URI, experiment and lineage tags."""

from __future__ import annotations

import os
import subprocess
from datetime import UTC, datetime
from pathlib import Path

from backdrop.config import Params, project_dir, resolve, tracking_uri


def setup(params: Params) -> str:
    """Point MLflow at the project's store; create the experiment with its artifact root. Returns its id."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri(params))
    client = mlflow.MlflowClient()
    exp = client.get_experiment_by_name(params.mlflow.experiment)
    if exp is None:
        return client.create_experiment(params.mlflow.experiment, tags={EXPERIMENT_KIND: MODEL_TRAINING},
                                        artifact_location=artifact_location(params, params.mlflow.experiment))
    if exp.tags.get(EXPERIMENT_KIND) != MODEL_TRAINING:  # an experiment made before the tag existed
        client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND, MODEL_TRAINING)
    return exp.experiment_id


# MLflow 3's UI opens an experiment on its GenAI pages (traces) unless it is marked for model training.
EXPERIMENT_KIND, MODEL_TRAINING = "mlflow.experimentKind", "custom_model_development"
RUN_KIND_ENV = "BACKDROP_RUN_KIND"  # nightly | drift-retrain | train-full | manual (set by the DAG / scripts)


def run_name(now: datetime | None = None) -> str:
    """`nightly-2026-12-03`: what started the run and when, so runs read apart in the MLflow UI."""
    kind = os.environ.get(RUN_KIND_ENV) or "manual"
    return f"{kind}-{(now or datetime.now(UTC)):%Y-%m-%d-%H%M}"


def data_version(lineage: dict[str, str], out: str) -> str:
    """The md5 DVC recorded for a stage output (`data/prepared`), or `untracked` outside `dvc repro`."""
    return next((md5 for key, md5 in lineage.items() if key.endswith("." + out) and md5), "untracked")


def artifact_location(params: Params, experiment: str) -> str:
    """Where an experiment's artifacts go: `<artifact_root>/<experiment>`, a URI (s3://…) or a file URI."""
    root = params.mlflow.artifact_root
    if "://" in root:
        return f"{root.rstrip('/')}/{experiment}"
    return (resolve(root) / experiment).as_uri()


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=project_dir(), capture_output=True,
                             text=True, check=True)
        return out.stdout.strip()
    except (subprocess.CalledProcessError, FileNotFoundError):
        return "unknown"


def dvc_lineage(lock_path: Path | None = None) -> dict[str, str]:
    """`data.<path>` → md5 of every stage output recorded in dvc.lock, to trace a run to its data."""
    import yaml

    lock_path = lock_path or project_dir() / "dvc.lock"
    if not lock_path.exists():
        return {}
    lock = yaml.safe_load(lock_path.read_text()) or {}
    tags = {}
    for stage, spec in (lock.get("stages") or {}).items():
        for out in spec.get("outs") or []:
            tags[f"dvc.{stage}.{out['path']}"] = out.get("md5", "")
    return tags
