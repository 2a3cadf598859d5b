"""`backdrop` command line: one module per group of commands, all registered here.

Imports are lazy (each command imports what it needs when it runs), so `backdrop --help` stays fast
and a DAG or test can import this cheaply.
"""

from __future__ import annotations

import logging
import sys
from typing import Annotated

import typer

from backdrop.cli.data import data_app
from backdrop.cli.doctor import app as doctor_app
from backdrop.cli.monitoring import corrections_app, monitor_app
from backdrop.cli.pipeline import pipeline_app
from backdrop.cli.serving import serving_app

app = typer.Typer(help="backdrop: background removal for product photos — pipeline and tools.",
                  no_args_is_help=True, pretty_exceptions_enable=False)


@app.callback()
def main(verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)


app.add_typer(serving_app)    # remove, serve, watch, export-onnx
app.add_typer(pipeline_app)   # ingest, validate, prepare, cluster, train, evaluate, register, summary
app.add_typer(data_app, name="data")
app.add_typer(corrections_app, name="corrections")
app.add_typer(monitor_app, name="monitor")
app.add_typer(doctor_app, name="doctor")


if __name__ == "__main__":  # pragma: no cover
    app()
