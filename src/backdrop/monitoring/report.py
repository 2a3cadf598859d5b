"""Pictures and reports of the monitoring loop: Evidently drift report, IoU trend plot, MLflow run.

- Evidently 0.7 report: the current window against the reference window before it (the
  `monitoring.reference_hours` preceding the current `window_hours`), over the IoU distribution and
  image statistics (brightness, contrast, foreground coverage, width, height, cluster mix):
  `DataDriftPreset` plus the mean IoU of both windows, saved as HTML.
- Trend PNG: rolling IoU per cluster (and overall) over time from the metric time series, with the
  threshold line.
- Both, with the window's metrics, are logged to the MLflow experiment `monitoring.mlflow_experiment`.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path

from backdrop import tracking
from backdrop.config import Params, redact_url, resolve
from backdrop.monitoring.drift import WindowMetrics, time_series, window_samples

log = logging.getLogger(__name__)

NUMERIC = ["iou", "brightness", "contrast", "coverage", "width", "height", "confidence"]
MIN_ROWS = 5  # fewer rows than this in either window: no drift report


@dataclass
class ReportResult:
    html: Path | None
    trend: Path | None
    mlflow_run_id: str | None
    mlflow_url: str | None
    drift: dict  # column → drift score (p-value / distance) from Evidently; share of drifted columns
    reason: str = ""


def _frame(samples):
    import pandas as pd

    rows = [asdict(s) for s in samples]
    df = pd.DataFrame(rows, columns=[*NUMERIC, "cluster"])
    df["cluster"] = ["none" if c is None else f"c{c}" for c in df["cluster"]]
    return df.astype({c: "float64" for c in NUMERIC})


def evidently_report(params: Params, wm: WindowMetrics, out: Path) -> tuple[Path | None, dict, str]:
    """HTML drift report current vs reference window; (path, drift summary, reason if skipped)."""
    mp = params.monitoring
    ref_start = wm.window_start - timedelta(hours=mp.reference_hours)
    reference = window_samples(params, ref_start, wm.window_start)
    current = window_samples(params, wm.window_start, wm.at + timedelta(microseconds=1))
    if len(reference) < MIN_ROWS or len(current) < MIN_ROWS:
        reason = f"reference {len(reference)} / current {len(current)} rows (< {MIN_ROWS}): no drift report"
        log.info(reason)
        return None, {}, reason
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import MeanValue
    from evidently.presets import DataDriftPreset

    definition = DataDefinition(numerical_columns=NUMERIC, categorical_columns=["cluster"])
    ref = Dataset.from_pandas(_frame(reference), data_definition=definition)
    cur = Dataset.from_pandas(_frame(current), data_definition=definition)
    report = Report([DataDriftPreset(), MeanValue(column="iou")], metadata={"window_end": wm.at.isoformat()})
    with warnings.catch_warnings():  # constant columns (e.g. IoU all 1.0) make scipy warn; the report copes
        warnings.simplefilter("ignore")
        snapshot = report.run(current_data=cur, reference_data=ref)
    out.parent.mkdir(parents=True, exist_ok=True)
    snapshot.save_html(str(out))
    drift: dict = {"reference_n": len(reference), "current_n": len(current)}
    for m in snapshot.dict()["metrics"]:
        name, value = m.get("metric_name", ""), m.get("value")
        if name.startswith("DriftedColumnsCount") and isinstance(value, dict):
            drift["drifted_share"] = float(value.get("share", 0.0))
        elif name.startswith("ValueDrift"):
            column = m.get("config", {}).get("column")
            if column:
                drift[f"drift_{column}"] = float(value)
    return out, drift, ""


def trend_plot(params: Params, path: Path, title: str = "monitored IoU per cluster") -> Path | None:
    """IoU per cluster (thin lines) and overall (thick) over time, with the threshold line."""
    points = time_series(params)
    if not points:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    threshold = params.monitoring.threshold
    series: dict[tuple[str, str], list] = {}
    for p in points:
        if p.scope in ("overall", "cluster"):
            series.setdefault((p.scope, p.key), []).append((p.at, p.iou_mean, p.n))
    fig, ax = plt.subplots(figsize=(9, 4.5))
    low = threshold
    for (scope, key), values in sorted(series.items(), key=lambda kv: (kv[0][0] != "overall", kv[0][1])):
        xs, ys = [v[0] for v in values], [v[1] for v in values]
        low = min(low, *ys)
        if scope == "overall":
            ax.plot(xs, ys, color="0.6", linewidth=5, alpha=0.6, label="overall", zorder=1)
        else:
            ax.plot(xs, ys, linewidth=1.5, marker="o", markersize=5, label=f"c{key}", zorder=2)
    ax.axhline(threshold, color="red", linestyle="--", linewidth=1, label=f"threshold {threshold:.2f}")
    ax.set_ylim(max(0.0, low - 0.05), 1.005)
    ax.set_ylabel(f"rolling mean IoU ({params.monitoring.window_hours:g} h window)")
    ax.set_xlabel("UTC")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8, ncol=4)
    fig.autofmt_xdate()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def build(params: Params, wm: WindowMetrics, log_to_mlflow: bool = True) -> ReportResult:
    """Evidently HTML + trend PNG under reports_dir/<timestamp>/, logged to MLflow with the metrics."""
    out_dir = resolve(params.monitoring.reports_dir) / wm.at.strftime("%Y%m%dT%H%M%S")
    html, drift, reason = evidently_report(params, wm, out_dir / "drift_report.html")
    trend = trend_plot(params, out_dir / "iou_trend.png")
    run_id = url = None
    if log_to_mlflow:
        run_id, url = _log_mlflow(params, wm, html, trend, drift)
    return ReportResult(html, trend, run_id, url, drift, reason)


def _log_mlflow(params: Params, wm: WindowMetrics, html: Path | None, trend: Path | None,
                drift: dict) -> tuple[str, str]:
    import mlflow

    tracking.setup(params)
    mp = params.monitoring
    exp = mlflow.get_experiment_by_name(mp.mlflow_experiment)
    exp_id = exp.experiment_id if exp else mlflow.create_experiment(
        mp.mlflow_experiment, artifact_location=tracking.artifact_location(params, mp.mlflow_experiment))
    metrics = {}
    for p in wm.points:
        key = "overall" if p["scope"] == "overall" else f"{p['scope']}_{p['key']}"
        metrics[f"iou_{key}"] = p["iou_mean"]
        metrics[f"n_{key}"] = p["n"]
    metrics.update({k: v for k, v in drift.items() if isinstance(v, int | float)})
    with mlflow.start_run(experiment_id=exp_id, run_name=f"monitor-{wm.at:%Y%m%dT%H%M%S}") as run:
        mlflow.log_params({"window_hours": wm.window_hours, "threshold": wm.threshold,
                           "min_samples": wm.min_samples, "window_end": wm.at.isoformat()})
        mlflow.set_tags({"breaches": ",".join(f"{p['scope']}:{p['key']}" for p in wm.breaches) or "none"})
        if metrics:
            mlflow.log_metrics({k.replace(":", "_"): float(v) for k, v in metrics.items()})
        for artifact in (html, trend):
            if artifact is not None:
                mlflow.log_artifact(str(artifact), artifact_path="monitoring")
        run_id = run.info.run_id
    url = redact_url(f"{mp.mlflow_ui_url.rstrip('/')}/#/experiments/{exp_id}/runs/{run_id}")
    return run_id, url


def link(params: Params, path: Path | None) -> str | None:
    """A link to a report file: under `monitoring.report_base_url` if set, else a file URI.

    Links go into alerts, the database and MLflow: a base URL's credentials are masked (redact_url).
    """
    if path is None:
        return None
    base = params.monitoring.report_base_url
    if base:
        rel = path.relative_to(resolve(params.monitoring.reports_dir))
        return redact_url(f"{base.rstrip('/')}/{rel.as_posix()}")
    return path.resolve().as_uri()
