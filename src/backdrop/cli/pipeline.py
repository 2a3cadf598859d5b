"""The pipeline stages as commands: each is the stage function with params.yaml behind it.

Expected errors (a missing drop, a refused drop, a failed validation, a bad params file) are not caught
here: the root group (`cli.common.BackdropGroup`) ends every command with one line for them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from backdrop.cli.common import ParamsOpt
from backdrop.cli.common import load as _params

pipeline_app = typer.Typer()


@pipeline_app.command()
def ingest(drop: Annotated[Path | None, typer.Argument(help="drop folder (default: ingest.drop_dir)")] = None,
           params: ParamsOpt = None) -> None:
    """Copy a vendor drop into the raw store and record it in the manifest."""
    from backdrop.stages.ingest import ingest as run

    r = run(_params(params).ingest, drop)
    typer.echo(f"ingest: {r.added} new, {r.already_present} already present, "
               f"{len(r.orphans)} unpaired file(s); manifest {r.manifest}")


@pipeline_app.command()
def validate(params: ParamsOpt = None) -> None:
    """Check every pair with the Great Expectations suite; quarantine the failures."""
    from backdrop.stages.validate import validate as run

    p = _params(params)
    r = run(p.validate_, p.ingest)  # ValidationFailed: one line, exit 1 (BackdropGroup)
    typer.echo(f"validate: {r.good} good, {r.quarantined} quarantined {r.reasons or ''}; report {r.report}")


@pipeline_app.command()
def prepare(params: ParamsOpt = None) -> None:
    """Resize validated pairs to the training size and split train/val/test."""
    from backdrop.stages.prepare import prepare as run

    p = _params(params)
    r = run(p.prepare, p.validate_, p.ingest)
    typer.echo(f"prepare: {r.counts}")


@pipeline_app.command()
def cluster(params: ParamsOpt = None) -> None:
    """Group products into clusters with PCA + k-means (plus manual overrides)."""
    from backdrop.stages.cluster import cluster as run

    p = _params(params)
    r = run(p.cluster, p.prepare)
    typer.echo(f"cluster: sizes {r.sizes}")
    for cid, name in sorted(r.names.items()):
        typer.echo(f"  c{cid}: {name}")


@pipeline_app.command()
def train(
    resume: Annotated[bool, typer.Option(help="continue from the last checkpoint if it belongs to this "
                                              "run (same data, params and code), else start fresh")] = False,
    np: Annotated[int | None, typer.Option("--np", min=1, help="processes (default: train.processes)")] = None,
    backend: Annotated[str | None, typer.Option(help="horovod | ddp (default: train.backend)")] = None,
    hosts: Annotated[str | None, typer.Option("--hosts", "-H", help="Horovod hosts, e.g. host1:4,host2:4 "
                                                                    "(default: localhost:NP)")] = None,
    params: ParamsOpt = None,
) -> None:
    """Train U²-Net(P) with deep supervision; logs to MLflow. `--np N` runs N data-parallel workers."""
    from backdrop.config import TrainParams
    from backdrop.stages.train import train as run

    p = _params(params)
    update = {k: v for k, v in {"processes": np, "backend": backend}.items() if v is not None}
    if update:
        try:
            tp = TrainParams.model_validate({**p.train.model_dump(), **update})
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None
        p = p.model_copy(update={"train": tp})
    if hosts and p.train.processes == 1:
        raise typer.BadParameter("--hosts needs --np > 1")
    r = run(p, resume=resume, hosts=hosts)  # DistributedError / ConfigError: one line (BackdropGroup)
    typer.echo(f"train: best val IoU {r.best_val_iou:.4f} after {r.epochs_run} epoch(s); "
               f"{r.model_path}; MLflow run {r.run_id}")


@pipeline_app.command()
def evaluate(params: ParamsOpt = None) -> None:
    """IoU on the test split, overall and per cluster (DVC metrics + MLflow)."""
    from backdrop.stages.evaluate import evaluate as run

    m = run(_params(params)).metrics
    per = ", ".join(f"c{k.rsplit('_', 1)[1]} {v:.4f}" for k, v in m.items() if k.startswith("iou_cluster_"))
    typer.echo(f"evaluate: test IoU {m['iou_mean']:.4f} (n={m['n']}); {per}")


@pipeline_app.command()
def register(params: ParamsOpt = None) -> None:
    """Register the model in MLflow; move the champion alias only if it wins the gate."""
    from backdrop.stages.register import register as run

    r = run(_params(params))
    verdict = "promoted to champion" if r.promoted else "not promoted"
    typer.echo(f"register: {r.uri} {verdict} — {r.reason}")


@pipeline_app.command()
def summary(params: ParamsOpt = None) -> None:
    """What the last pipeline run produced: test IoU per cluster, registry decision, where to look."""
    import json

    from rich.console import Console
    from rich.table import Table

    from backdrop.config import redact_url, resolve, tracking_uri

    p = _params(params)
    metrics_dir = resolve(p.evaluate.out_dir)
    try:
        metrics = json.loads((metrics_dir / "eval.json").read_text())
        reg = json.loads((metrics_dir / "register.json").read_text())
        names = json.loads((resolve(p.cluster.out_dir) / "summary.json").read_text())
    except FileNotFoundError as exc:  # said with the way out; one line, exit 1 (BackdropGroup)
        raise FileNotFoundError(f"{exc.filename}: missing — run the pipeline first (make demo or dvc repro)") from None
    table = Table(title=f"test IoU per cluster ({metrics['n']} held-out images)")
    for col in ("cluster", "name", "images", "IoU"):
        table.add_column(col)
    for cid, size in names["sizes"].items():
        value = metrics.get(f"iou_cluster_{cid}")
        table.add_row(f"c{cid}", names["names"][cid], str(size), "-" if value is None else f"{value:.4f}")
    table.add_row("all", "", "", f"{metrics['iou_mean']:.4f}", style="bold")
    console = Console()
    console.print(table)
    verdict = "now @" + p.register_.alias if reg["promoted"] else "not promoted"
    console.print(f"model: {p.register_.model_name} v{reg['version']} ({verdict}: {reg['reason']})")
    console.print(f"MLflow run {reg['run_id']} in {redact_url(tracking_uri(p))} — browse with `make mlflow-ui` "
                  "(http://127.0.0.1:5000)")
    console.print(f"metrics: {metrics_dir}/eval.json, plots: {metrics_dir}/plots/, "
                  f"quarantine: {resolve(p.validate_.quarantine_dir)}")
    out = resolve("demo-output")
    if out.exists():
        console.print(f"cut-outs: {out}/ ({len(list(out.glob('*.png')))} PNG)")
