"""evaluate: IoU of what `backdrop remove` would publish with the trained model, on held-out photos.

The trained `model.pt` is loaded the way serving loads it (`serving.scoring.served_segmenter`:
`remove.engine`, `serve.precision`, the zoom pass) and scored by `serving.scoring.score` on the test
split's original photos plus the test part of every `evaluate.benchmarks` set, with `serve.refine`
applied — the same function `bench/quality_bench.py` reports, so both give the same mean IoU.

On the benchmark sets (out-of-distribution photos) it also scores the stock model
(`register.stock_model`) through the same path, and reports both as issue 19 names them:
`ood_iou_mean`, `ood_share_ge_099`, per style and per product cluster (each benchmark photo assigned by
its true mask with the cluster model), and the IoU lost at edges, in see-through gaps, outside and inside
the product (`ood_lost_<region>`); the stock model's as `stock_ood_*`.

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
    from backdrop.serving.scoring import (
        TEST,
        benchmark_clusters,
        eval_photos,
        ood_metrics,
        ood_rows,
        score,
        served_segmenter,
        summarize_rows,
        thumbnails,
    )
    from backdrop.viz import cluster_bars, overlay_grid

    train_out = resolve(params.train.out_dir)
    _, meta = load_trained(train_out / "model.pt")
    photos = eval_photos(params)
    if not photos:
        raise ValueError(f"{resolve(params.prepare.out_dir) / 'index.csv'}: the test split is empty")
    segmenter = served_segmenter(str(train_out / "model.pt"), params)
    rows = score({"model": segmenter}, photos, params, desc="evaluate (served path)", regions=True)["model"]
    metrics = summarize_rows(rows, params.cluster.k)
    metrics["model_epoch"] = meta["epoch"]
    bench_photos = [p for p in photos if p.set != TEST]
    if bench_photos:  # the out-of-distribution benchmark: this model and the stock floor, same photos, same path
        clusters = benchmark_clusters(params, bench_photos)
        metrics.update(ood_metrics(ood_rows(rows, clusters)))
        if params.register_.stock_model:
            stock = served_segmenter(params.register_.stock_model, params)
            stock_rows = score({"stock": stock}, bench_photos, params, desc="evaluate (stock, benchmark)",
                               regions=True)["stock"]
            metrics.update({f"stock_{k}": v for k, v in ood_metrics(ood_rows(stock_rows, clusters)).items()})

    out = resolve(params.evaluate.out_dir)
    write_json(out / "eval.json", metrics)
    write_csv(out / "per_image.csv", rows, PER_IMAGE_FIELDS)
    names = json.loads((resolve(params.cluster.out_dir) / "summary.json").read_text())["names"]
    per_cluster = {k.rsplit("_", 1)[1]: v for k, v in metrics.items() if k.startswith("iou_cluster_")}
    bars = cluster_bars(per_cluster, names, out / "plots" / "cluster_iou.png",
                        f"test IoU per cluster, served path (mean {metrics['iou_mean']:.4f})")
    ood_per_cluster = {k.rsplit("_", 1)[1]: v for k, v in metrics.items() if k.startswith("ood_iou_cluster_")}
    ood_bars = None
    if ood_per_cluster:
        stock_mean = f"; stock {metrics['stock_ood_iou_mean']:.4f}" if "stock_ood_iou_mean" in metrics else ""
        ood_bars = cluster_bars(ood_per_cluster, names, out / "plots" / "ood_cluster_iou.png",
                                f"benchmark IoU per cluster, served path (mean {metrics['ood_iou_mean']:.4f}{stock_mean})")
    ious = [r["iou"] for r in rows]
    worst = [int(i) for i in np.argsort(ious, kind="stable")[:8]]
    ims, truths, probs = thumbnails(segmenter, [photos[i] for i in worst], params)
    grid = overlay_grid(ims, truths, probs, out / "plots" / "worst.png",
                        titles=[f"{rows[i]['group']} {ious[i]:.3f}" for i in worst])

    tracking.setup(params)
    run_id = json.loads((train_out / "run.json").read_text())["run_id"]
    with mlflow.start_run(run_id=run_id):
        counts = {"n", "n_all"} | {k for k in metrics if "ood_n" in k}
        mlflow.log_metrics({(k if "ood_" in k else f"test_{k}"): v for k, v in metrics.items() if k not in counts})
        mlflow.set_tags({"evaluate.engine": params.remove.engine, "evaluate.precision": segmenter.precision,
                         "evaluate.zoom_margin": getattr(segmenter, "zoom_margin", 0.0),
                         "evaluate.refine": params.serve.refine})  # tags: a rerun may change them
        mlflow.log_artifact(str(bars), artifact_path="evaluation")
        if ood_bars:
            mlflow.log_artifact(str(ood_bars), artifact_path="evaluation")
        mlflow.log_artifact(str(grid), artifact_path="evaluation")
        mlflow.log_artifact(str(out / "per_image.csv"), artifact_path="evaluation")
    log.info("evaluate: served-path test IoU %.4f over %d photos (%s, %s); %d photos in all",
             metrics["iou_mean"], metrics["n"], segmenter.source, segmenter.precision, len(rows))
    return EvaluateResult(metrics)
