"""`backdrop data ...`: synthesize demo drops, import Fashion-MNIST, list dataset versions."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from backdrop.cli.common import ParamsOpt
from backdrop.cli.common import load as _params

data_app = typer.Typer(help="Datasets: synthesize demo drops, import Fashion-MNIST, mix a training drop, build the "
                            "out-of-distribution benchmark, list dataset versions.", no_args_is_help=True)

VarietyOpt = Annotated[str | None, typer.Option(help="classic (one studio) | broad (per-item studio, light, camera, "
                                                     "framing, product extras); default from params")]


def _variety(value: str | None, default: str) -> str:
    from backdrop.data.synth.variety import VARIETIES

    chosen = value or default
    if chosen not in VARIETIES:
        raise typer.BadParameter(f"--variety must be one of {', '.join(VARIETIES)}, got {chosen!r}")
    return chosen


@data_app.command("synth")
def data_synth(
    out: Annotated[Path | None, typer.Option(help="drop folder to write (default: ingest.drop_dir)")] = None,
    n: Annotated[int | None, typer.Option(help="number of pairs (default: synth.n)")] = None,
    seed: Annotated[int | None, typer.Option(help="random seed (default: synth.seed)")] = None,
    variety: VarietyOpt = None,
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
                       black_share=s.black_share, variety=_variety(variety, s.variety))
    typer.echo(f"wrote {len(items)} pairs to {dest}")


@data_app.command("fashion-mnist")
def data_fashion_mnist(
    split: Annotated[str, typer.Option(help="train (the only split for training) | test (evaluation only)")] = "train",
    n: Annotated[int | None, typer.Option(help="number of products (default: fashion_mnist.n)")] = None,
    out: Annotated[Path | None, typer.Option(help="drop folder (default: ingest.drop_dir for train, "
                                                  "fashion_mnist.eval_dir for test)")] = None,
    seed: Annotated[int | None, typer.Option(help="random seed (default: fashion_mnist.seed)")] = None,
    variety: VarietyOpt = None,
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
                            training_drop=resolve(p.ingest.drop_dir), variety=_variety(variety, f.variety))
    except (FileNotFoundError, ValueError) as exc:
        typer.secho(str(exc), fg="red", err=True)
        raise typer.Exit(2) from None
    note = "" if split == "train" else " (evaluation only: drop.json says training=false, ingest refuses it)"
    typer.echo(f"wrote {len(items)} Fashion-MNIST {split} products to {dest}{note}")


@data_app.command("drop")
def data_drop(
    out: Annotated[Path | None, typer.Option(help="drop folder to write (default: ingest.drop_dir)")] = None,
    n: Annotated[int | None, typer.Option(help="number of pairs (default: drop.n)")] = None,
    variety: VarietyOpt = None,
    clean: Annotated[bool, typer.Option("--clean", help="remove photos/masks in the folder that are not part "
                                                        "of this mix (they would skew its shares)")] = False,
    params: ParamsOpt = None,
) -> None:
    """Write one training drop mixing the sources by drop.shares (synth + Fashion-MNIST train split)."""
    from backdrop.config import resolve
    from backdrop.data.drop_mix import write_mix

    p = _params(params)
    dest = out or resolve(p.ingest.drop_dir)
    try:
        counts = write_mix(dest, n if n is not None else p.drop.n, dict(p.drop.shares),
                           _variety(variety, p.drop.variety), p.synth, p.fashion_mnist, clean=clean)
    except (FileNotFoundError, ValueError) as exc:
        typer.secho(str(exc), fg="red", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"wrote {sum(counts.values())} pairs to {dest}: "
               + ", ".join(f"{k} {v}" for k, v in counts.items()))


@data_app.command("benchmark")
def data_benchmark(
    out: Annotated[Path | None, typer.Option(help="benchmark folder (default: benchmark.out_dir)")] = None,
    n: Annotated[int | None, typer.Option(help="photos per style (default: benchmark.n)")] = None,
    seed: Annotated[int | None, typer.Option(help="random seed (default: benchmark.seed)")] = None,
    params: ParamsOpt = None,
) -> None:
    """Build the out-of-distribution benchmark (Fashion-MNIST test products, own studio and props renderer)."""
    from backdrop.config import resolve
    from backdrop.data.benchmark_build import STYLES
    from backdrop.stages.benchmark import benchmark

    p = _params(params)
    dest = out or resolve(p.benchmark.out_dir)
    try:
        rows = benchmark(p, out=dest, n=n, seed=seed)
    except (FileNotFoundError, ValueError) as exc:
        typer.secho(str(exc), fg="red", err=True)
        raise typer.Exit(2) from None
    per = ", ".join(f"{s} {sum(r['style'] == s for r in rows)}" for s in STYLES)
    val = sum(r["part"] == "val" for r in rows)
    typer.echo(f"wrote {len(rows)} benchmark photos to {dest} ({per}; val {val}, test {len(rows) - val})")


@data_app.command("benchmark-score")
def data_benchmark_score(
    model: Annotated[str, typer.Option(help="model spec, as `backdrop remove --model` (champion, "
                                            "official:u2netp, PATH/model.pt, ...)")] = "official:u2netp",
    part: Annotated[str, typer.Option(help="val | test")] = "test",
    bench: Annotated[Path | None, typer.Option(help="benchmark folder (default: benchmark.out_dir)")] = None,
    limit: Annotated[int, typer.Option(help="score only the first N photos (0 = all)")] = 0,
    out: Annotated[Path | None, typer.Option(help="also write the metrics and per-photo rows as JSON")] = None,
    params: ParamsOpt = None,
) -> None:
    """Score a model on the out-of-distribution benchmark through the served path (`backdrop remove`'s
    engine, precision, zoom and refinement), at each photo's own size: ood_iou_mean, ood_share_ge_099,
    and the IoU lost at edges, in see-through gaps, outside and inside the product (ood_lost_*)."""
    import json

    from backdrop.config import resolve
    from backdrop.data.benchmark import BenchmarkError, load_benchmark
    from backdrop.serving.scoring import benchmark_photos, ood_metrics, score_benchmark, served_segmenter

    p = _params(params)
    try:
        b = load_benchmark(bench or resolve(p.benchmark.out_dir), part)
    except (BenchmarkError, ValueError) as exc:
        typer.secho(f"{exc} (build it with `backdrop data benchmark`)", fg="red", err=True)
        raise typer.Exit(2) from None
    photos = benchmark_photos(b, b.rows[:limit] if limit else b.rows)
    rows = score_benchmark({model: served_segmenter(model, p)}, photos, p, desc=f"{b.name} {part}")[model]
    metrics = ood_metrics(rows)
    for key, value in metrics.items():
        typer.echo(f"{key:28s} {value:.4f}" if isinstance(value, float) else f"{key:28s} {value}")
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"model": model, "part": part, "benchmark": str(b.root), "metrics": metrics,
                                   "rows": rows}, indent=2, default=str))


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
