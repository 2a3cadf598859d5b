"""MLflow wiring: one place that knows the tracking URI, experiment and lineage tags."""

from __future__ import annotations

import subprocess
from pathlib import Path

from backdrop.config import Params, project_dir, resolve, tracking_uri


def setup(params: Params) -> str:
    """Point MLflow at the project's store; create the experiment with its artifact root. Returns its id."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri(params))
    client = mlflow.MlflowClient()
    exp = client.get_experiment_by_name(params.mlflow.experiment)
    if exp is not None:
        return exp.experiment_id
    return client.create_experiment(params.mlflow.experiment,
                                    artifact_location=artifact_location(params, params.mlflow.experiment))


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
