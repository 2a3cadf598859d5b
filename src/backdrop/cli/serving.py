"""`backdrop remove`, `backdrop serve`, `backdrop watch DIR`, `backdrop export-onnx`.

Module level imports only typer; each command imports what it needs when it runs.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from backdrop.cli.common import ParamsOpt
from backdrop.cli.common import load as _params

log = logging.getLogger(__name__)

MODEL_ENV = "BACKDROP_SERVE_MODEL"    # `backdrop serve --model` passes its choice to every worker this way
PARAMS_ENV = "BACKDROP_SERVE_PARAMS"  # ...and `--params`: each worker loads that file once (`app_from_env`)

serving_app = typer.Typer()

ModelOpt = Annotated[str | None, typer.Option(
    "--model", help="champion | models:/name/N | PATH/model.pt | PATH/model.onnx | official:u2netp "
                    "(default: serve.model)")]


class OutputFormat(StrEnum):
    rgba = "rgba"
    white = "white"
    mask = "mask"


CUTOUT_MODEL_HELP = ("u2netp (stock, ships with backdrop) | u2net (stock, 176 MB) | champion (the project's "
                     "registered model) | models:/NAME/N | models:/NAME@ALIAS | PATH/model.pt | PATH/model.onnx. "
                     "Default: the project's champion if it has one, else u2netp")
STDIO = "-"
SINGLE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


@serving_app.command()
def remove(
    inputs: Annotated[list[Path], typer.Argument(help="image files or directories; - reads one image from stdin")],
    out: Annotated[Path, typer.Option("--out", "-o", help="output directory; - writes the cut-out of one input "
                                      "to stdout; with one input, a FILE.png is that file")] = Path("cutouts"),
    model: Annotated[str | None, typer.Option("--model", "-m", help=CUTOUT_MODEL_HELP)] = None,
    fmt: Annotated[OutputFormat | None, typer.Option("--format", "-f", case_sensitive=False,
                                                     help="rgba (default: remove.format) | white | mask")] = None,
    alpha_matting: Annotated[bool | None, typer.Option(
        "--alpha-matting/--no-alpha-matting", "-a",
        help="clean edges: the product's own colours in the edge band, no backdrop fringe "
             "(default: serve.clean_edges)")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress, notices or summary; errors only")] = False,
    params: ParamsOpt = None,
) -> None:
    """Cut out product photos: writes OUT/<stem>.png at each input's original size.

    Works from any folder: without a params.yaml the built-in defaults apply and nothing but the
    cut-outs is written. The model is --model, else the project's champion, else the stock u2netp
    (a notice names it). Sub-folders of a DIR argument are mirrored (DIR/a/x.jpg -> OUT/a/x.png);
    photos that share a stem keep their extension in the name (shirt.jpg.png, shirt.png.png), so
    no output overwrites another. Symbolic links inside a DIR are not followed (reported as
    failed). A photo that cannot be cut out gets one line on stderr (file: reason: message) and the
    rest are still processed; the exit status is 1 when any photo failed.
    """
    from backdrop.serving.cutout import context, load, pick_model
    from backdrop.serving.remove import remove as run

    if quiet:
        logging.getLogger("backdrop").setLevel(logging.WARNING)
    stdin = [str(i) for i in inputs] == [STDIO]
    if STDIO in (str(i) for i in inputs) and not stdin:
        raise typer.BadParameter("- (stdin) must be the only input", param_hint="INPUTS")
    single = stdin or str(out) == STDIO or (len(inputs) == 1 and out.suffix.lower() in SINGLE_SUFFIXES
                                            and not inputs[0].is_dir())
    if str(out) == STDIO and (len(inputs) != 1 or inputs[0].is_dir()):
        raise typer.BadParameter("-o - (stdout) takes exactly one image file", param_hint="--out")
    from backdrop.serving.base import lane_count
    from backdrop.serving.outputs import prefetch_filters

    prefetch_filters()
    p, in_project = context(params)
    fmt_name = fmt.value if fmt else p.remove.format
    # a folder runs on single-threaded lanes (`FastSegmenter.stream`): the model's own session is lane 0
    lanes = 1 if single else lane_count(p)
    segmenter, choice = load(pick_model(model, p, in_project), p, threads=1 if lanes > 1 else None)
    if not quiet:
        typer.echo(f"remove: {choice.notice()}", err=True)
    if single:
        _remove_one(inputs[0], out, segmenter, choice, p, fmt_name, alpha_matting, quiet)
        return
    result = run(inputs, out, params=p, model=choice.spec, fmt=fmt_name, segmenter=segmenter,
                 clean_edges=alpha_matting, quiet=quiet)
    for failure in result.failed:
        typer.secho(f"remove: FAILED {failure.line()}", fg="red", err=True)
    summary = f"remove: wrote {len(result.written)} file(s) to {out}"
    if result.failed:
        if not quiet:
            typer.echo(f"{summary}; {len(result.failed)} failed")
        raise typer.Exit(1)
    if not quiet:
        typer.echo(summary)


def _remove_one(src: Path, out: Path, segmenter, choice, params, fmt: str, clean: bool | None,
                quiet: bool) -> None:
    """One image from a file or stdin to stdout, a named file, or OUT/<stem>.png (rembg's `i` mode)."""
    import sys

    from backdrop.io import atomic_path
    from backdrop.serving.cutout import Session

    name = "stdin" if str(src) == STDIO else str(src)
    data = sys.stdin.buffer.read() if str(src) == STDIO else src.read_bytes()
    try:
        encoded = Session(segmenter, choice, params).remove(data, format=fmt, alpha_matting=clean)
    except ValueError as exc:  # BadImageError: empty, not an image, truncated, too large
        raise ValueError(f"{name}: {exc}") from None
    if str(out) == STDIO:
        sys.stdout.buffer.write(encoded)
        sys.stdout.buffer.flush()
        return
    ext = ".jpg" if fmt == "white" else ".png"
    dest = out if out.suffix.lower() in SINGLE_SUFFIXES else out / f"{'stdin' if name == 'stdin' else src.stem}{ext}"
    dest.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(dest) as tmp:
        Path(tmp).write_bytes(encoded)
    if not quiet:
        typer.echo(f"remove: wrote {dest}", err=True)


@serving_app.command()
def serve(
    model: ModelOpt = None,
    host: Annotated[str | None, typer.Option(help="bind address (default: serve.host)")] = None,
    port: Annotated[int | None, typer.Option(help="port, 0 = any free one (default: serve.port)")] = None,
    workers: Annotated[int | None, typer.Option(help="uvicorn worker processes (default: serve.workers)")] = None,
    params: ParamsOpt = None,
) -> None:
    """HTTP API: POST /v1/remove, /v1/remove/batch; GET /healthz, /metrics, /docs."""
    import uvicorn

    from backdrop.serving.cutout import context
    from backdrop.serving.httplimits import uvicorn_options

    sp = context(params)[0].serve  # works anywhere: the built-in defaults without a params.yaml
    if model:
        os.environ[MODEL_ENV] = model  # every worker process reads it (also with --workers > 1)
    if params:
        os.environ[PARAMS_ENV] = str(params.resolve())
    uvicorn.run("backdrop.cli.serving:app_from_env", factory=True, host=host or sp.host,
                port=sp.port if port is None else port, workers=workers or sp.workers,
                log_level="info", timeout_graceful_shutdown=10,
                **uvicorn_options())  # h11 with a header cap: 431 past api.MAX_HEADER_BYTES


def app_from_env():
    """uvicorn factory (`backdrop serve` runs `uvicorn --factory backdrop.cli.serving:app_from_env`):
    the params of `$BACKDROP_SERVE_PARAMS` (default: ./params.yaml or $BACKDROP_PARAMS, else the
    built-in defaults), loaded once per worker, and the model of `$BACKDROP_SERVE_MODEL` (default:
    serve.model; when that is the champion alias and the registry has none, the stock u2netp)."""
    from backdrop.serving.api import create_app
    from backdrop.serving.cutout import context, pick_model

    p, in_project = context(os.environ.get(PARAMS_ENV) or None)
    model = os.environ.get(MODEL_ENV) or None
    if not model and p.serve.model == p.register_.alias:
        choice = pick_model(None, p, in_project)
        log.info("serve: %s", choice.notice())
        model = choice.spec
    return create_app(p, model)


@serving_app.command()
def watch(
    directory: Annotated[Path | None, typer.Argument(help="upload folder (default: serve.upload_dir)")] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="published cut-outs (default: serve.out_dir)")] = None,
    review_dir: Annotated[Path | None, typer.Option(help="review queue (default: serve.review_dir)")] = None,
    model: ModelOpt = None,
    fmt: Annotated[str | None, typer.Option("--format", help="rgba | white | mask (default: serve.format)")] = None,
    size: Annotated[int | None, typer.Option(help="model input size override (multiple of 32)")] = None,
    once: Annotated[bool, typer.Option("--once", help="process what is there now, then exit")] = False,
    retry_failed: Annotated[bool, typer.Option(
        "--retry-failed", help="first move every photo in DIRECTORY/failed/ back into DIRECTORY and clear its "
                               "ledger state, so it is processed again (with a fresh retry budget)")] = False,
    record: Annotated[bool | None, typer.Option("--record/--no-record",
                                                help="prediction log (default: monitoring.record_predictions)")] = None,
    params: ParamsOpt = None,
) -> None:
    """Cut out every photo dropped into DIRECTORY, exactly once (restart-safe).

    A photo that still fails after serve.watch_retries attempts moves to DIRECTORY/failed/ with a
    <name>.reason.json. To retry: --retry-failed moves all of them back (and clears their ledger state);
    or move one back into DIRECTORY by hand (mv, not cp: a failed photo counts as a new attempt once
    its copy in failed/ is gone). Symbolic links in DIRECTORY are never followed: they are moved to
    failed/ (reason "symlink").
    """
    import json

    from backdrop.serving.watch import from_params, summary

    p = _params(params)
    if fmt and fmt not in ("rgba", "white", "mask"):
        raise typer.BadParameter(f"--format {fmt!r}: rgba | white | mask")
    proc = from_params(p, directory, out, review_dir, model, fmt, size, record)
    try:
        if retry_failed:
            typer.echo(f"watch: moved {proc.retry_failed()} failed photo(s) back for a new attempt", err=True)
        if once:
            stats = proc.run_once()
            typer.echo(json.dumps({"run": stats.as_dict(), "ledger": summary(proc.upload_dir)}))
        else:
            proc.watch(_stop_on_signals(proc))
            typer.echo(json.dumps({"run": proc.stats.as_dict(), "ledger": summary(proc.upload_dir)}), err=True)
    except RuntimeError as exc:  # another process holds the folder
        typer.secho(str(exc), fg="red", err=True)
        raise typer.Exit(1) from None


def _stop_on_signals(proc) -> threading.Event:
    """SIGTERM (systemd, docker stop, Airflow) and SIGINT finish the photo batch in hand, then stop.

    Installed explicitly: a process started from a non-interactive shell in the background inherits
    SIGINT as ignored, and Python then never raises KeyboardInterrupt.
    """
    stop = threading.Event()

    def handler(signum, _frame) -> None:
        log.info("%s: finishing the current batch, then stopping", signal.Signals(signum).name)
        stop.set()
        proc.wake_up()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, handler)
    return stop


@serving_app.command("export-onnx")
def export_onnx(
    model: ModelOpt = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="where to write the .onnx")] = None,
    params: ParamsOpt = None,
) -> None:
    """Export a model to ONNX (the fast path's format) and print where it went."""
    from backdrop.serving.segmenter import load_segmenter

    p = _params(params)
    seg = load_segmenter(model or p.serve.model, "onnx", "fp32", params=p)  # the dynamic-size fp32 graph
    if out:
        import shutil

        shutil.copyfile(seg.onnx_file, out)
    typer.echo(str(out or seg.onnx_file))
