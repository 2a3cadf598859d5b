"""`backdrop` command line: one module per group of commands, all registered here.

Imports are lazy (each command imports what it needs when it runs), so `backdrop --help` stays fast
and a DAG or test can import this cheaply. The root group (`common.BackdropGroup`) ends every command's
expected errors with one line on stderr; `-v` adds the traceback and debug logging. Log lines are redacted.
"""

from __future__ import annotations

import logging
import sys
from typing import Annotated

import typer

from backdrop.cli.common import BackdropGroup, RedactingFilter
from backdrop.cli.data import data_app
from backdrop.cli.doctor import app as doctor_app
from backdrop.cli.monitoring import corrections_app, monitor_app
from backdrop.cli.pipeline import pipeline_app
from backdrop.cli.review import review_app
from backdrop.cli.serving import serving_app

app = typer.Typer(cls=BackdropGroup, help="backdrop: background removal for product photos — pipeline and tools.",
                  no_args_is_help=True, pretty_exceptions_enable=False)


@app.callback()
def main(verbose: Annotated[bool, typer.Option(
        "--verbose", "-v", help="debug logging, and the traceback of an error")] = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RedactingFilter())  # no credential in a URL reaches the log
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=[handler])


app.add_typer(serving_app)    # remove, serve, watch, export-onnx
app.add_typer(pipeline_app)   # ingest, validate, prepare, cluster, train, evaluate, register, summary
app.add_typer(data_app, name="data")
app.add_typer(corrections_app, name="corrections")
app.add_typer(monitor_app, name="monitor")
app.add_typer(doctor_app, name="doctor")
app.add_typer(review_app, name="review")


if __name__ == "__main__":  # pragma: no cover
    app()
