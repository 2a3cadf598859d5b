"""`backdrop remove`, `backdrop serve`, `backdrop watch DIR`, `backdrop export-onnx`.

Module level imports only typer; each command imports what it needs when it runs.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
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


@serving_app.command()
def remove(
    inputs: Annotated[list[Path], typer.Argument(help="image files or directories")],
    out: Annotated[Path, typer.Option("--out", "-o", help="output directory")] = Path("cutouts"),
    model: Annotated[str, typer.Option(help="champion | PATH/model.pt | models:/name/version")] = "champion",
    fmt: Annotated[str | None, typer.Option("--format", help="rgba | white | mask (default: remove.format)")] = None,
    params: ParamsOpt = None,
) -> None:
    """Cut out product photos: writes OUT/<stem>.png at each input's original size.

    Sub-folders of a DIR argument are mirrored (DIR/a/x.jpg -> OUT/a/x.png); photos that share a stem
    keep their extension in the name (shirt.jpg.png, shirt.png.png), so no output overwrites another.
    Symbolic links inside a DIR are not followed (reported as failed). A photo that cannot be cut out
    gets one line on stderr (file: reason: message) and the rest are still processed; the exit
    status is 1 when any photo failed.
    """
    from backdrop.serving.remove import remove as run
    from backdrop.serving.specs import NoModelError

    p = _params(params)
    try:
        result = run(inputs, out, params=p, model=model, fmt=fmt or p.remove.format)
    except (NoModelError, FileNotFoundError, ValueError) as exc:
        typer.secho(str(exc), fg="red", err=True)
        raise typer.Exit(1) from None
    for failure in result.failed:
        typer.secho(f"remove: FAILED {failure.line()}", fg="red", err=True)
    summary = f"remove: wrote {len(result.written)} file(s) to {out}"
    if result.failed:
        typer.echo(f"{summary}; {len(result.failed)} failed")
        raise typer.Exit(1)
    typer.echo(summary)


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

    from backdrop.serving.httplimits import uvicorn_options

    sp = _params(params).serve
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
    the params of `$BACKDROP_SERVE_PARAMS` (default: ./params.yaml or $BACKDROP_PARAMS), loaded once
    per worker, and the model of `$BACKDROP_SERVE_MODEL` (default: serve.model)."""
    from backdrop.serving.api import create_app

    return create_app(_params(os.environ.get(PARAMS_ENV) or None), os.environ.get(MODEL_ENV) or None)


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
