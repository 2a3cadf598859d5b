"""What every CLI module shares: the one `--params` option, loading it, and how errors end a command.

Expected errors — a user's mistake or a refusal, not a bug — end every command the same way, in one
place (`BackdropGroup`, the root command group): ONE line on stderr naming the problem, exit status 2
for a bad params file and 1 otherwise; the traceback only with `backdrop -v`. Anything else is a bug
and propagates with its full traceback. Everything printed goes through `backdrop.config.redact`.
"""

from __future__ import annotations

import logging
import sys
import traceback
from pathlib import Path
from typing import Annotated

import click
import typer
from typer.core import TyperGroup

ParamsOpt = Annotated[Path | None, typer.Option(
    "--params", help="params.yaml to use (default: ./params.yaml or $BACKDROP_PARAMS)")]

# Expected errors raised by stages and helpers. Classes are named by module so that nothing heavy is
# imported to check them: an exception of a class whose module was never imported cannot occur.
EXPECTED_BUILTINS: tuple[type[BaseException], ...] = (
    ValueError,          # ConfigError, DropRefused, BadImageError, CorrectionError, ProfileError, bad values
    FileNotFoundError,   # a missing input (drop folder, manifest, model, photo)
    NotADirectoryError,
    IsADirectoryError,
    PermissionError,     # an output folder this user may not write
)
EXPECTED_BY_NAME = (
    "backdrop.stages.validate:ValidationFailed",
    "backdrop.serving.specs:NoModelError",
    "backdrop.distributed:DistributedError",
    "backdrop.monitoring.alerts:AlertDeliveryError",
)


def expected_errors() -> tuple[type[BaseException], ...]:
    """The exception types that end a command with one line (those of modules loaded so far)."""
    found = list(EXPECTED_BUILTINS)
    for spec in EXPECTED_BY_NAME:
        module, name = spec.split(":")
        cls = getattr(sys.modules.get(module), name, None)
        if isinstance(cls, type) and issubclass(cls, BaseException):
            found.append(cls)
    return tuple(found)


def exit_status(exc: BaseException) -> int:
    from backdrop.config import ConfigError

    return 2 if isinstance(exc, ConfigError) else 1


def one_line(exc: BaseException) -> str:
    """The error's message on one line (a multi-line message's lines joined with '; '), redacted."""
    from backdrop.config import redact

    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    text = lines[0] if len(lines) == 1 else lines[0].rstrip(":") + ": " + "; ".join(lines[1:])
    return redact(text)


def _verbose(ctx: click.Context) -> bool:
    return bool(ctx.find_root().params.get("verbose"))


class BackdropGroup(TyperGroup):
    """The root `backdrop` group: turns an expected error from any command into one line + exit status."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except expected_errors() as exc:
            from backdrop.config import redact

            if _verbose(ctx):
                click.echo(redact("".join(traceback.format_exception(exc))).rstrip(), err=True)
            typer.secho(f"error: {one_line(exc)}", fg="red", err=True)
            raise typer.Exit(exit_status(exc)) from None


class RedactingFilter(logging.Filter):
    """Log records pass through `redact` (installed on the CLI's log handler)."""

    def filter(self, record: logging.LogRecord) -> bool:
        from backdrop.config import redact

        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and record.exc_info[0] is not None:  # a traceback quotes exception texts too
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True


def load(path: Path | str | None):
    """The typed params of `path` (default location when None). A ConfigError (bad or empty file)
    ends the command through BackdropGroup: one line, exit status 2."""
    from backdrop.config import load_params

    return load_params(path)
