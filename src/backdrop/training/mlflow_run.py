"""The training run's MLflow record: name, params, tags, description and dataset input.

Kept out of the loop so that editing what is logged never invalidates a checkpoint (the fingerprint
hashes only the code that changes what is learned: `training.checkpoint.MATH_SOURCES`).
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from pathlib import Path

from backdrop.config import Params, resolve

log = logging.getLogger(__name__)


def start_run(stack: contextlib.ExitStack, params: Params, run_id: str | None, extra: dict) -> str:
    import mlflow
    from mlflow.exceptions import MlflowException

    from backdrop import tracking

    experiment_id = tracking.setup(params)
    if run_id:
        try:
            return stack.enter_context(mlflow.start_run(run_id=run_id, log_system_metrics=False)).info.run_id
        except MlflowException as exc:
            log.warning("MLflow run %s of the checkpoint is gone (%s); logging to a new run", run_id, exc)
    tp = params.train
    lineage = tracking.dvc_lineage()
    prepared = str(params.prepare.out_dir)
    data = tracking.data_version(lineage, prepared)
    recipe = (f"{tp.model} from {tp.init} weights, {tp.epochs} epochs ({tp.low_res_epochs} at {tp.low_res_size} px) "
              f"at {params.prepare.size} px, batch {tp.batch_size} × {extra.get('world_size', 1)} process(es), "
              f"{extra.get('autocast', tp.precision)}")
    run = stack.enter_context(mlflow.start_run(experiment_id=experiment_id, run_name=tracking.run_name(),
                                               log_system_metrics=False))
    mlflow.log_params({f"train.{k}": v for k, v in tp.model_dump().items() if k != "out_dir"}
                      | {"prepare.size": params.prepare.size, "cluster.k": params.cluster.k} | extra)
    mlflow.set_tags({"git_commit": tracking.git_commit(), "stage": "train", "data_version": data, **lineage,
                     "mlflow.note.content": f"**data** `{prepared}` md5 `{data}` — {extra.get('n_train')} train / "
                                            f"{extra.get('n_val')} val pairs\n\n**recipe** {recipe}"})
    log_dataset(mlflow, resolve(params.prepare.out_dir), prepared, data)
    for path in (resolve(params.cluster.out_dir) / "montage.png",
                 resolve(params.validate_.out_dir) / "report.html"):
        if path.exists():
            mlflow.log_artifact(str(path), artifact_path="data")
    return run.info.run_id


def log_dataset(mlflow, prepared_dir: Path, name: str, digest: str) -> None:
    """The prepared index as the run's dataset input, its digest the DVC data version (UI: Datasets)."""
    import pandas as pd

    index = prepared_dir / "index.csv"
    if not index.exists():
        return
    frame = pd.read_csv(index, dtype=str)  # ids and paths: no numeric schema to infer
    with warnings.catch_warnings():  # MLflow registers the local-file source twice and says so
        warnings.simplefilter("ignore", UserWarning)
        dataset = mlflow.data.from_pandas(frame, source=str(index), name=name, digest=digest[:36])
    mlflow.log_input(dataset, context="training")
