"""`backdrop data ...`: synthesize demo drops, import Fashion-MNIST, list dataset versions."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from backdrop.cli.common import ParamsOpt
from backdrop.cli.common import load as _params

data_app = typer.Typer(help="Datasets: synthesize demo drops, import Fashion-MNIST, list dataset versions.",
                       no_args_is_help=True)


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
