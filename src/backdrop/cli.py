"""`backdrop` command line: each command is the stage function with params.yaml behind it.

Imports are lazy so `backdrop --help` stays fast and a DAG or test can import this cheaply.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(help="backdrop: background removal for product photos — pipeline and tools.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
data_app = typer.Typer(help="Datasets: synthesize demo drops, import Fashion-MNIST, list dataset versions.",
                       no_args_is_help=True)
app.add_typer(data_app, name="data")
# Sub-command groups defined in their own modules register here (one line each):
app.add_typer(__import__("backdrop.doctor", fromlist=["app"]).app, name="doctor")
from backdrop.monitoring.cli import corrections_app, monitor_app  # noqa: E402  (typer only)

app.add_typer(corrections_app, name="corrections")
app.add_typer(monitor_app, name="monitor")
__import__("backdrop.serving.cli", fromlist=["register"]).register(app)  # serve, watch, export-onnx
# -- sub-apps --

ParamsOpt = Annotated[Path | None, typer.Option("--params", help="params.yaml to use (default: ./params.yaml or $BACKDROP_PARAMS)")]


def _params(path: Path | None):
    from backdrop.config import ConfigError, load_params

    try:
        return load_params(path)
    except ConfigError as exc:
        typer.secho(str(exc), fg="red", err=True)
        raise typer.Exit(2) from None


@app.callback()
def main(verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)


@data_app.command("synth")
def data_synth(
    out: Annotated[Path | None, typer.Option(help="drop folder to write (default: ingest.drop_dir)")] = None,
    n: Annotated[int | None, typer.Option(help="number of pairs (default: synth.n)")] = None,
    seed: Annotated[int | None, typer.Option(help="random seed (default: synth.seed)")] = None,
    params: ParamsOpt = None,
) -> None:
    """Render apparel product photos with exact masks, laid out like a vendor drop."""
    from backdrop.config import resolve
    from backdrop.data.synth import synthesize

    p = _params(params)
    s = p.synth
    dest = out or resolve(p.ingest.drop_dir)
    items = synthesize(dest, n if n is not None else s.n, seed if seed is not None else s.seed,
                       min_side=s.min_side, max_side=s.max_side, white_share=s.white_share,
                       black_share=s.black_share)
    typer.echo(f"wrote {len(items)} pairs to {dest}")


@data_app.command("fashion-mnist")
def data_fashion_mnist(
    split: Annotated[str, typer.Option(help="train (the only split for training) | test (evaluation only)")] = "train",
    n: Annotated[int | None, typer.Option(help="number of products (default: fashion_mnist.n)")] = None,
    out: Annotated[Path | None, typer.Option(help="drop folder (default: ingest.drop_dir for train, "
                                                  "fashion_mnist.eval_dir for test)")] = None,
    seed: Annotated[int | None, typer.Option(help="random seed (default: fashion_mnist.seed)")] = None,
    params: ParamsOpt = None,
) -> None:
    """Render real Fashion-MNIST products (Zalando) onto studio backgrounds with exact masks, as a vendor drop."""
    from backdrop.config import resolve
    from backdrop.data.fashion_mnist import SPLITS, render_drop

    if split not in SPLITS:
        raise typer.BadParameter(f"--split must be one of {', '.join(SPLITS)}")
    p = _params(params)
    f = p.fashion_mnist
    dest = out or resolve(p.ingest.drop_dir if split == "train" else f.eval_dir)
    try:
        items = render_drop(dest, split, n if n is not None else f.n, seed if seed is not None else f.seed,
                            min_side=f.min_side, max_side=f.max_side, white_share=f.white_share,
                            black_share=f.black_share, source_dir=f.source_dir,
                            training_drop=resolve(p.ingest.drop_dir))
    except (FileNotFoundError, ValueError) as exc:
        typer.secho(str(exc), fg="red", err=True)
        raise typer.Exit(2) from None
    note = "" if split == "train" else " (evaluation only: drop.json says training=false, ingest refuses it)"
    typer.echo(f"wrote {len(items)} Fashion-MNIST {split} products to {dest}{note}")


@data_app.command("versions")
def data_versions(
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
    run: Annotated[str | None, typer.Option("--run", help="MLflow run id: show the data version it trained on")] = None,
    params: ParamsOpt = None,
) -> None:
    """List dataset versions (git history of dvc.lock) with pair counts per cluster; trace a run to its data."""
    import json

    from backdrop.config import project_dir, tracking_uri
    from backdrop.data.versions import format_table, lineage_outs, list_versions, run_tags, trace_run

    root = project_dir()
    versions = list_versions(root)
    if run is None:
        typer.echo(json.dumps([v.as_dict() for v in versions], indent=2) if as_json else format_table(versions))
        return
    tags = run_tags(run, tracking_uri(_params(params)))
    found = trace_run(tags, versions)
    if as_json:
        typer.echo(json.dumps({"run": run, "git_commit": tags.get("git_commit"), "data": lineage_outs(tags),
                               "version": found.as_dict() if found else None}, indent=2))
    elif found is None:
        typer.echo(f"run {run}: data outputs {lineage_outs(tags) or '(none tagged)'} match no version in "
                   "dvc.lock history (was dvc.lock committed after the run?)")
    else:
        commit = found.commits[-1]["commit"]
        restore = ("only in the uncommitted dvc.lock: commit it to keep this version restorable"
                   if commit == "workspace" else
                   f"restore it: git checkout {commit} && dvc checkout   (dvc pull if the cache lacks it)")
        typer.echo(f"run {run} trained on data version {found.version} (raw {found.raw_md5}), "
                   f"first recorded in {commit}\n" + format_table([found]).split("\n", 1)[1] + f"\n{restore}")
    if found is None:
        raise typer.Exit(1)


@app.command()
def ingest(drop: Annotated[Path | None, typer.Argument(help="drop folder (default: ingest.drop_dir)")] = None,
           params: ParamsOpt = None) -> None:
    """Copy a vendor drop into the raw store and record it in the manifest."""
    from backdrop.stages.ingest import ingest as run

    r = run(_params(params).ingest, drop)
    typer.echo(f"ingest: {r.added} new, {r.already_present} already present, "
               f"{len(r.orphans)} unpaired file(s); manifest {r.manifest}")


@app.command()
def validate(params: ParamsOpt = None) -> None:
    """Check every pair with the Great Expectations suite; quarantine the failures."""
    from backdrop.stages.validate import ValidationFailed
    from backdrop.stages.validate import validate as run

    p = _params(params)
    try:
        r = run(p.validate_, p.ingest)
    except ValidationFailed as exc:
        typer.secho(str(exc), fg="red", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"validate: {r.good} good, {r.quarantined} quarantined {r.reasons or ''}; report {r.report}")


@app.command()
def prepare(params: ParamsOpt = None) -> None:
    """Resize validated pairs to the training size and split train/val/test."""
    from backdrop.stages.prepare import prepare as run

    p = _params(params)
    r = run(p.prepare, p.validate_, p.ingest)
    typer.echo(f"prepare: {r.counts}")


@app.command()
def cluster(params: ParamsOpt = None) -> None:
    """Group products into clusters with PCA + k-means (plus manual overrides)."""
    from backdrop.stages.cluster import cluster as run

    p = _params(params)
    r = run(p.cluster, p.prepare)
    typer.echo(f"cluster: sizes {r.sizes}")
    for cid, name in sorted(r.names.items()):
        typer.echo(f"  c{cid}: {name}")


@app.command()
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
    from backdrop.config import ConfigError, TrainParams
    from backdrop.distributed import DistributedError
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
    try:
        r = run(p, resume=resume, hosts=hosts)
    except (DistributedError, ConfigError) as exc:
        typer.secho(str(exc), fg="red", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"train: best val IoU {r.best_val_iou:.4f} after {r.epochs_run} epoch(s); "
               f"{r.model_path}; MLflow run {r.run_id}")


@app.command()
def evaluate(params: ParamsOpt = None) -> None:
    """IoU on the test split, overall and per cluster (DVC metrics + MLflow)."""
    from backdrop.stages.evaluate import evaluate as run

    m = run(_params(params)).metrics
    per = ", ".join(f"c{k.rsplit('_', 1)[1]} {v:.4f}" for k, v in m.items() if k.startswith("iou_cluster_"))
    typer.echo(f"evaluate: test IoU {m['iou_mean']:.4f} (n={m['n']}); {per}")


@app.command()
def register(params: ParamsOpt = None) -> None:
    """Register the model in MLflow; move the champion alias only if it wins the gate."""
    from backdrop.stages.register import register as run

    r = run(_params(params))
    verdict = "promoted to champion" if r.promoted else "not promoted"
    typer.echo(f"register: {r.uri} {verdict} — {r.reason}")


@app.command()
def remove(
    inputs: Annotated[list[Path], typer.Argument(help="image files or directories")],
    out: Annotated[Path, typer.Option("--out", "-o", help="output directory")] = Path("cutouts"),
    model: Annotated[str, typer.Option(help="champion | PATH/model.pt | models:/name/version")] = "champion",
    fmt: Annotated[str | None, typer.Option("--format", help="rgba | white | mask (default: remove.format)")] = None,
    params: ParamsOpt = None,
) -> None:
    """Cut out product photos: writes OUT/<stem>.png at each input's original size."""
    from backdrop.inference import NoModelError
    from backdrop.inference import remove as run

    p = _params(params)
    try:
        written = run(inputs, out, model=model, fmt=fmt or p.remove.format)
    except (NoModelError, FileNotFoundError, ValueError) as exc:
        typer.secho(str(exc), fg="red", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"remove: wrote {len(written)} file(s) to {out}")


@app.command()
def summary(params: ParamsOpt = None) -> None:
    """What the last pipeline run produced: test IoU per cluster, registry decision, where to look."""
    import json

    from rich.console import Console
    from rich.table import Table

    from backdrop.config import resolve, tracking_uri

    p = _params(params)
    metrics_dir = resolve(p.evaluate.out_dir)
    try:
        metrics = json.loads((metrics_dir / "eval.json").read_text())
        reg = json.loads((metrics_dir / "register.json").read_text())
        names = json.loads((resolve(p.cluster.out_dir) / "summary.json").read_text())
    except FileNotFoundError as exc:
        typer.secho(f"{exc.filename}: missing — run the pipeline first (make demo or dvc repro)",
                    fg="red", err=True)
        raise typer.Exit(1) from None
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
    console.print(f"MLflow run {reg['run_id']} in {tracking_uri(p)} — browse with `make mlflow-ui` "
                  "(http://127.0.0.1:5000)")
    console.print(f"metrics: {metrics_dir}/eval.json, plots: {metrics_dir}/plots/, "
                  f"quarantine: {resolve(p.validate_.quarantine_dir)}")
    out = resolve("demo-output")
    if out.exists():
        console.print(f"cut-outs: {out}/ ({len(list(out.glob('*.png')))} PNG)")


if __name__ == "__main__":  # pragma: no cover
    app()
