"""evaluate: IoU of what `backdrop remove` would publish with the trained model, on held-out photos.

The trained `model.pt` is loaded the way serving loads it (`serving.scoring.served_segmenter`:
`remove.engine`, `serve.precision`, the zoom pass) and scored by `serving.scoring.score` on the test
split's original photos plus the test part of every `evaluate.benchmarks` set, with `serve.refine`
applied — the same function `bench/quality_bench.py` reports, so both give the same mean IoU.

Writes DVC metrics (`metrics/eval.json`: test mean, per cluster, per benchmark set), per-photo rows
(`metrics/per_image.csv`, which register's gate reads to score the champion on the same photos), a
per-cluster bar chart and the worst cut-outs, and logs them to the training run in MLflow.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

from backdrop.config import Params, resolve
from backdrop.io import write_csv, write_json

log = logging.getLogger(__name__)

PER_IMAGE_FIELDS = ["set", "id", "group", "cluster", "iou", "mae", "tp", "fp", "fn"]


@dataclass(frozen=True)
class EvaluateResult:
    metrics: dict[str, float]


def evaluate(params: Params) -> EvaluateResult:
    import mlflow
    import numpy as np

    from backdrop import tracking
    from backdrop.models.trained import load_trained
    from backdrop.serving.scoring import eval_photos, score, served_segmenter, summarize_rows, thumbnails
    from backdrop.viz import cluster_bars, overlay_grid

    train_out = resolve(params.train.out_dir)
    _, meta = load_trained(train_out / "model.pt")
    photos = eval_photos(params)
    if not photos:
        raise ValueError(f"{resolve(params.prepare.out_dir) / 'index.csv'}: the test split is empty")
    segmenter = served_segmenter(str(train_out / "model.pt"), params)
    rows = score({"model": segmenter}, photos, params, desc="evaluate (served path)")["model"]
    metrics = summarize_rows(rows, params.cluster.k)
    metrics["model_epoch"] = meta["epoch"]

    out = resolve(params.evaluate.out_dir)
    write_json(out / "eval.json", metrics)
    write_csv(out / "per_image.csv", rows, PER_IMAGE_FIELDS)
    names = json.loads((resolve(params.cluster.out_dir) / "summary.json").read_text())["names"]
    per_cluster = {k.rsplit("_", 1)[1]: v for k, v in metrics.items() if k.startswith("iou_cluster_")}
    bars = cluster_bars(per_cluster, names, out / "plots" / "cluster_iou.png",
                        f"test IoU per cluster, served path (mean {metrics['iou_mean']:.4f})")
    ious = [r["iou"] for r in rows]
    worst = [int(i) for i in np.argsort(ious, kind="stable")[:8]]
    ims, truths, probs = thumbnails(segmenter, [photos[i] for i in worst], params)
    grid = overlay_grid(ims, truths, probs, out / "plots" / "worst.png",
                        titles=[f"{rows[i]['group']} {ious[i]:.3f}" for i in worst])

    tracking.setup(params)
    run_id = json.loads((train_out / "run.json").read_text())["run_id"]
    with mlflow.start_run(run_id=run_id):
        mlflow.log_metrics({f"test_{k}": v for k, v in metrics.items() if k not in ("n", "n_all")})
        mlflow.set_tags({"evaluate.engine": params.remove.engine, "evaluate.precision": segmenter.precision,
                         "evaluate.zoom_margin": getattr(segmenter, "zoom_margin", 0.0),
                         "evaluate.refine": params.serve.refine})  # tags: a rerun may change them
        mlflow.log_artifact(str(bars), artifact_path="evaluation")
        mlflow.log_artifact(str(grid), artifact_path="evaluation")
        mlflow.log_artifact(str(out / "per_image.csv"), artifact_path="evaluation")
    log.info("evaluate: served-path test IoU %.4f over %d photos (%s, %s); %d photos in all",
             metrics["iou_mean"], metrics["n"], segmenter.source, segmenter.precision, len(rows))
    return EvaluateResult(metrics)
