"""`backdrop corrections ...` and `backdrop monitor ...`: the monitoring loop from the command line.

Only typer is imported here; every command imports what it needs when it runs.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer

from backdrop.cli.common import ParamsOpt
from backdrop.cli.common import load as _params

corrections_app = typer.Typer(help="Reviewers' corrected masks: add one, or take the inbox.", no_args_is_help=True)
monitor_app = typer.Typer(help="Monitoring: IoU drift on corrected masks, reports, alerts, simulation.",
                          no_args_is_help=True)

AtOpt = Annotated[datetime | None, typer.Option(help="evaluate the window ending at this UTC time (default: now)")]


@corrections_app.command("add")
def corrections_add(
    file: Annotated[Path, typer.Argument(help="corrected mask (binary PNG or image with alpha)")],
    image_id: Annotated[str | None, typer.Option("--image-id", help="image id, sha256 or stem (default: file stem)")] = None,
    params: ParamsOpt = None,
) -> None:
    """Validate a corrected mask, match it to its prediction and store it (earlier ones are kept)."""
    from backdrop.monitoring.corrections import CorrectionError, add_correction

    try:
        row = add_correction(_params(params).monitoring, file, image_id, source="cli")
    except CorrectionError as exc:
        typer.secho(f"rejected ({exc.reason}): {exc}", fg="red", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"correction {row.id} for image {row.image_id} (prediction {row.prediction_id}) stored")


@corrections_app.command("ingest")
def corrections_ingest(
    inbox: Annotated[Path | None, typer.Argument(help="inbox folder (default: monitoring.inbox_dir)")] = None,
    params: ParamsOpt = None,
) -> None:
    """Take every <image-id or stem>.png from the inbox (moved to processed/ or rejected/)."""
    from backdrop.monitoring.corrections import ingest_inbox

    r = ingest_inbox(_params(params).monitoring, inbox)
    typer.echo(f"corrections: {len(r.accepted)} accepted, {len(r.rejected)} rejected {r.rejected or ''}")


@monitor_app.command("run")
def monitor_run(at: AtOpt = None,
                report: Annotated[bool, typer.Option(help="Evidently report, trend PNG, MLflow run")] = True,
                params: ParamsOpt = None) -> None:
    """One monitoring pass: inbox → IoU → window metrics → report → alert → retraining export."""
    from backdrop.monitoring.run import check

    got, ev, fb = check(_params(params), at, report)
    overall = ev.overall
    typer.echo(f"intake: {got['accepted']} accepted, {len(got['rejected'])} rejected, {got['scored']} scored")
    if overall:
        typer.echo(f"window IoU {overall['iou_mean']:.4f} over {overall['n']} image(s); breaches: "
                   f"{[(b['scope'], b['key'], round(b['iou_mean'], 4)) for b in ev.breaches] or 'none'}")
    else:
        typer.echo("window: no scored corrections")
    typer.echo(f"alert: {ev.action} (incident {ev.incident_id}, firing {ev.firing})")
    for name, url in ev.links.items():
        typer.echo(f"{name}: {url}")
    if fb.get("retrain"):
        typer.echo(f"retraining: {fb['pairs']} corrected pair(s) exported to {fb['drop']}")


@monitor_app.command("simulate")
def monitor_simulate(
    n: Annotated[int, typer.Option(help="images per batch")] = 40,
    batches: Annotated[int, typer.Option(help="number of batches, one per step")] = 1,
    shift: Annotated[bool, typer.Option(help="shift incoming data to white-on-white / black-on-black")] = False,
    seed: Annotated[int, typer.Option(help="synthetic seed (keep it away from the training drop's)")] = 1000,
    start_index: Annotated[int, typer.Option(help="first item index (continue an earlier stream)")] = 0,
    start: Annotated[datetime | None, typer.Option(help="UTC time of the first batch (default: now - (batches-1) steps)")] = None,
    step_hours: Annotated[float, typer.Option(help="hours between batches")] = 1.0,
    review_tolerance: Annotated[float, typer.Option(help="reviewers approve cut-outs with true IoU >= this")] = 0.9,
    check: Annotated[bool, typer.Option(help="run the monitoring check after every batch")] = True,
    report: Annotated[bool, typer.Option(help="Evidently report + MLflow after the last batch")] = True,
    via_inbox: Annotated[bool, typer.Option(help="deliver corrections through the inbox instead")] = False,
    model: Annotated[str, typer.Option(help="champion | PATH/model.pt | models:/name/version")] = "champion",
    params: ParamsOpt = None,
) -> None:
    """Predict new synthetic images with the model and deliver reviewers' corrections."""
    from datetime import timedelta

    from backdrop.data.predlog import naive_utc, utcnow
    from backdrop.monitoring.run import check as run_check
    from backdrop.stages.simulate import simulate_batch

    p = _params(params)
    first = naive_utc(start) if start else utcnow() - timedelta(hours=step_hours * (batches - 1))
    for b in range(batches):
        at = first + timedelta(hours=step_hours * b)
        batch = simulate_batch(p, n, seed, start_index + b * n, shift=shift, at=at, model=model,
                               review_tolerance=review_tolerance, via_inbox=via_inbox)
        typer.echo(f"batch {b + 1}/{batches}: {batch.summary()}")
        if check:
            _, ev, fb = run_check(p, at + timedelta(minutes=2), report=report and b == batches - 1)
            iou = ev.overall["iou_mean"] if ev.overall else float("nan")
            typer.echo(f"  check: window IoU {iou:.4f}, breaches "
                       f"{[(x['scope'], x['key']) for x in ev.breaches] or 'none'}, alert {ev.action}"
                       + (f", {fb['pairs']} pair(s) exported for retraining" if fb.get("retrain") else ""))
            for name, url in ev.links.items():
                typer.echo(f"  {name}: {url}")


@monitor_app.command("status")
def monitor_status(last: Annotated[int, typer.Option(help="metric points to show")] = 10,
                   params: ParamsOpt = None) -> None:
    """Alert state, the latest metric points and notifications."""
    from sqlalchemy import select

    from backdrop.config import redact_url
    from backdrop.data.predlog import AlertEvent, AlertState, MetricPoint, db_url, sessions

    mp = _params(params).monitoring
    typer.echo(f"log: {redact_url(db_url(mp))}")
    with sessions(mp)() as s:
        for st in s.scalars(select(AlertState)):
            typer.echo(f"rule {st.rule}: {'FIRING' if st.firing else 'ok'} incident {st.incident_id} {st.scopes}")
        ats = list(s.scalars(select(MetricPoint.at).distinct().order_by(MetricPoint.at.desc()).limit(last)))
        for at in reversed(ats):
            pts = s.scalars(select(MetricPoint).where(MetricPoint.at == at, MetricPoint.scope != "model")).all()
            typer.echo(f"{at:%Y-%m-%d %H:%M}  " + "  ".join(
                f"{'all' if p.scope == 'overall' else 'c' + p.key}={p.iou_mean:.4f}(n={p.n})" for p in pts))
        for ev in s.scalars(select(AlertEvent).order_by(AlertEvent.id.desc()).limit(5)):
            typer.echo(f"{ev.at:%Y-%m-%d %H:%M} {ev.kind} via [{ev.channels}] {ev.summary}")


@monitor_app.command("export")
def monitor_export(params: ParamsOpt = None) -> None:
    """Write corrected pairs not exported yet as a new vendor drop (for `backdrop ingest`)."""
    from backdrop.monitoring.feedback import export_corrections

    r = export_corrections(_params(params))
    typer.echo(f"exported {r.pairs} pair(s)" + (f" to {r.drop}" if r.drop else ""))
