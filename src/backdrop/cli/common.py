"""What every CLI module shares: the one `--params` option and loading it with a clear error."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

ParamsOpt = Annotated[Path | None, typer.Option(
    "--params", help="params.yaml to use (default: ./params.yaml or $BACKDROP_PARAMS)")]


def load(path: Path | None):
    """The typed params of `path` (default location when None); a config error exits 2 with its message."""
    from backdrop.config import ConfigError, load_params

    try:
        return load_params(path)
    except ConfigError as exc:
        typer.secho(str(exc), fg="red", err=True)
        raise typer.Exit(2) from None
