"""evaluate: IoU of the trained model on the held-out test split, overall and per cluster.

Writes DVC metrics (`metrics/eval.json`), a per-image table, a per-cluster bar chart and an
overlay of the worst cut-outs, and logs them to the training run in MLflow.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

from backdrop.config import Params, resolve
from backdrop.io import write_csv, write_json

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvaluateResult:
    metrics: dict[str, float]


def evaluate(params: Params) -> EvaluateResult:
    import mlflow
    import numpy as np

    from backdrop import tracking
    from backdrop.data.splits import load_arrays, split_rows
    from backdrop.metrics import confusion, iou, mae, summarize
    from backdrop.models.trained import load_trained, predict_probs
    from backdrop.viz import cluster_bars, overlay_grid

    train_out = resolve(params.train.out_dir)
    net, meta = load_trained(train_out / "model.pt")
    rows = split_rows(params)["test"]
    photos, truths = load_arrays(resolve(params.prepare.out_dir), rows)
    probs = predict_probs(net, photos)
    per_image, ious = [], []
    for row, prob, truth in zip(rows, probs, truths, strict=True):
        stats = confusion(prob > params.evaluate.threshold, truth > 0.5)
        ious.append(iou(stats))
        per_image.append({"pair_id": row["pair_id"], "cluster": row["cluster"], "iou": ious[-1],
                          "mae": mae(prob, truth), "tp": stats.tp, "fp": stats.fp, "fn": stats.fn})
    clusters = [r["cluster"] for r in rows]
    metrics = summarize(ious, clusters, params.cluster.k)
    metrics["mae"] = float(np.mean([r["mae"] for r in per_image]))
    metrics["model_epoch"] = meta["epoch"]

    out = resolve(params.evaluate.out_dir)
    write_json(out / "eval.json", metrics)
    write_csv(out / "per_image.csv", per_image, list(per_image[0]))
    names = json.loads((resolve(params.cluster.out_dir) / "summary.json").read_text())["names"]
    per_cluster = {k.rsplit("_", 1)[1]: v for k, v in metrics.items() if k.startswith("iou_cluster_")}
    bars = cluster_bars(per_cluster, names, out / "plots" / "cluster_iou.png",
                        f"test IoU per cluster (mean {metrics['iou_mean']:.4f})")
    worst = np.argsort(ious)[:8]
    grid = overlay_grid(photos[worst], truths[worst], probs[worst], out / "plots" / "worst.png",
                        titles=[f"c{clusters[i]} {ious[i]:.3f}" for i in worst])

    tracking.setup(params)
    run_id = json.loads((train_out / "run.json").read_text())["run_id"]
    with mlflow.start_run(run_id=run_id):
        mlflow.log_metrics({f"test_{k}": v for k, v in metrics.items() if k != "n"})
        mlflow.log_artifact(str(bars), artifact_path="evaluation")
        mlflow.log_artifact(str(grid), artifact_path="evaluation")
        mlflow.log_artifact(str(out / "per_image.csv"), artifact_path="evaluation")
    log.info("evaluate: test IoU %.4f over %d images", metrics["iou_mean"], metrics["n"])
    return EvaluateResult(metrics)
