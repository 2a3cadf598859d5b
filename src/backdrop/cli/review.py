"""`backdrop review ...`: the review station (web app), password hashes for its users, the audit report.

Only typer is imported here; every command imports what it needs when it runs.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

from backdrop.cli.common import ParamsOpt
from backdrop.cli.common import load as _params

review_app = typer.Typer(help="Review station: reviewers approve, reject or fix queued cut-outs in a browser.",
                         no_args_is_help=True)


@review_app.command("serve")
def review_serve(
    host: Annotated[str | None, typer.Option(help="bind address (default: review.host)")] = None,
    port: Annotated[int | None, typer.Option(help="port (default: review.port)")] = None,
    params: ParamsOpt = None,
) -> None:
    """Serve the review station (queue, review page with the mask editor, dashboard)."""
    import uvicorn

    from backdrop.review.app import create_app

    p = _params(params)
    if not p.review.users:
        typer.secho("review.users is empty: nobody can sign in (add `name: <hash>` from "
                    "`backdrop review hash-password`)", fg="yellow", err=True)
    uvicorn.run(create_app(p), host=host or p.review.host, port=p.review.port if port is None else port,
                log_level="info", proxy_headers=False)


@review_app.command("hash-password")
def hash_password(
    password: Annotated[str, typer.Option(prompt=True, hide_input=True, confirmation_prompt=True,
                                          help="the password (asked for when not given)")],
) -> None:
    """Print the scrypt hash to put under review.users in params.yaml."""
    from backdrop.review.auth import hash_password as make

    typer.echo(make(password))


@review_app.command("report")
def review_report(
    days: Annotated[float, typer.Option(help="look back this many days")] = 7.0,
    params: ParamsOpt = None,
) -> None:
    """Routed vs audit: how often routing was right, and how much of the bad it caught (JSON)."""
    from datetime import timedelta

    from backdrop.data.predlog import utcnow
    from backdrop.monitoring.audit import routing_report
    from backdrop.review.store import ReviewStore

    p = _params(params)
    ReviewStore(p).sync()
    now = utcnow()
    typer.echo(json.dumps(routing_report(p, now - timedelta(days=days), now + timedelta(seconds=1)), indent=2))
