"""On-call alerting: one alert per incident, one resolved notice on recovery, DAG failures too.

Channels (either or both):
- webhook: POST of a Slack-compatible JSON body (`text` + `blocks`, the structured facts under
  Slack's `metadata.event_payload`) to the URL in the environment variable named by
  `monitoring.webhook_url_env` (a Slack webhook URL is a secret, so it never lives in params);
- email over SMTP: `monitoring.smtp` (host, port, STARTTLS, sender, recipients); the user and password
  only from the environment variables it names.

The state machine (table `alert_state`, one row per rule) makes an incident fire once: a breach while
ok opens an incident and notifies; further breaches while firing stay quiet; a window with enough
samples and no breach closes it with one resolved notice. A window with too few samples changes
nothing. If every configured channel fails, the state is not changed and AlertDeliveryError is
raised (the DAG task fails, so the next run tries again and the failure callback fires).
"""

from __future__ import annotations

import json
import logging
import os
import smtplib
import urllib.request
from dataclasses import dataclass
from email.message import EmailMessage

from backdrop.config import MonitoringParams, Params
from backdrop.monitoring.drift import WindowMetrics
from backdrop.monitoring.predlog import AlertEvent, AlertState, sessions, utcnow

log = logging.getLogger(__name__)

RULE = "iou_below_threshold"


class AlertDeliveryError(RuntimeError):
    """No configured channel accepted the notification."""


@dataclass(frozen=True)
class Notification:
    kind: str  # alert | resolved | dag_failure
    title: str
    lines: list[str]
    payload: dict  # structured facts (metric, window, clusters, worst examples, links)

    def slack_body(self) -> dict:
        emoji = {"alert": ":rotating_light:", "resolved": ":white_check_mark:", "dag_failure": ":x:"}[self.kind]
        return {
            "text": f"{emoji} {self.title}",
            "blocks": [
                {"type": "header", "text": {"type": "plain_text", "text": self.title[:150]}},
                {"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(self.lines)[:2900]}},
            ],
            "metadata": {"event_type": f"backdrop_{self.kind}", "event_payload": self.payload},
        }

    def email(self, sender: str, recipients: list[str]) -> EmailMessage:
        msg = EmailMessage()
        msg["Subject"] = f"[backdrop] {self.title}"
        msg["From"] = sender
        msg["To"] = ", ".join(recipients)
        msg.set_content("\n".join(self.lines) + "\n\n" + json.dumps(self.payload, indent=2, default=str) + "\n")
        return msg


def configured_channels(mp: MonitoringParams) -> list[str]:
    channels = []
    if os.environ.get(mp.webhook_url_env):
        channels.append("webhook")
    if mp.smtp.host and mp.smtp.recipients:
        channels.append("email")
    return channels


def _post_webhook(url: str, body: dict, timeout: float) -> None:
    req = urllib.request.Request(url, data=json.dumps(body, default=str).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 (URL from the operator's env)
        if resp.status >= 300:
            raise RuntimeError(f"webhook answered HTTP {resp.status}")


def _send_email(mp: MonitoringParams, msg: EmailMessage) -> None:
    smtp = mp.smtp
    with smtplib.SMTP(smtp.host, smtp.port, timeout=smtp.timeout_s) as client:
        if smtp.starttls:
            client.starttls()
        user, password = os.environ.get(smtp.username_env), os.environ.get(smtp.password_env)
        if user and password:
            client.login(user, password)
        client.send_message(msg)


def send(mp: MonitoringParams, note: Notification, incident_id: str | None = None) -> list[str]:
    """Deliver to every configured channel and record the event; returns the channels that worked."""
    delivered, errors = [], []
    channels = configured_channels(mp)
    body = note.slack_body()
    for channel in channels:
        try:
            if channel == "webhook":
                _post_webhook(os.environ[mp.webhook_url_env], body, mp.webhook_timeout_s)
            else:
                _send_email(mp, note.email(mp.smtp.sender, mp.smtp.recipients))
            delivered.append(channel)
        except Exception as exc:  # one broken channel must not silence the other
            log.error("alert via %s failed: %s", channel, exc)
            errors.append(f"{channel}: {exc}")
    if not channels:
        log.warning("no alert channel configured (set $%s and/or monitoring.smtp); %s: %s",
                    mp.webhook_url_env, note.kind, note.title)
    with sessions(mp)() as s, s.begin():
        s.add(AlertEvent(incident_id=incident_id, kind=note.kind, at=utcnow(), channels=",".join(delivered),
                         errors="; ".join(errors), summary=note.title, body=json.dumps(body, default=str)))
    if channels and not delivered:
        raise AlertDeliveryError(f"{note.kind} not delivered: {'; '.join(errors)}")
    return delivered


def _scope_label(point: dict) -> str:
    if point["scope"] == "overall":
        return "overall"
    name = point.get("name")
    return f"cluster c{point['key']}" + (f" ({name})" if name else "")


def _describe(wm: WindowMetrics, links: dict[str, str]) -> tuple[list[str], dict]:
    breached_clusters = sorted((p["key"] for p in wm.breaches if p["scope"] == "cluster"), key=str)
    overall = next((p for p in wm.points if p["scope"] == "overall"), None)
    lines = [f"*metric*: rolling mean IoU of predictions vs hand corrections, threshold {wm.threshold:.4f}, "
             f"min samples {wm.min_samples}",
             f"*window*: {wm.window_start:%Y-%m-%d %H:%M} → {wm.at:%Y-%m-%d %H:%M} UTC ({wm.window_hours:g} h)"]
    if overall:
        lines.append(f"*overall*: IoU {overall['iou_mean']:.4f} over {overall['n']} image(s), "
                     f"{overall['share_ge_threshold']:.0%} at or above the threshold")
    for p in wm.breaches:
        if p["scope"] == "cluster":
            lines.append(f"• {_scope_label(p)}: IoU {p['iou_mean']:.4f} (n={p['n']}, worst {p['iou_min']:.4f})")
    if wm.worst:
        lines.append("*worst examples*: " + ", ".join(
            f"{w['stem']} [{w['image_id']}] c{w['cluster']} IoU {w['iou']:.3f}" for w in wm.worst))
    for name, url in links.items():
        lines.append(f"*{name}*: {url}")
    payload = {"rule": RULE, "metric": "iou_mean", "threshold": wm.threshold, "min_samples": wm.min_samples,
               "window_start": wm.window_start.isoformat(), "window_end": wm.at.isoformat(),
               "window_hours": wm.window_hours, "overall": overall, "clusters": breached_clusters,
               "breaches": wm.breaches, "worst_examples": wm.worst, "links": links}
    return lines, payload


@dataclass(frozen=True)
class AlertOutcome:
    action: str  # alert | resolved | none
    incident_id: str | None
    firing: bool
    channels: tuple[str, ...] = ()


def evaluate(params: Params, wm: WindowMetrics, links: dict[str, str] | None = None) -> AlertOutcome:
    """Apply the incident state machine to one window; notify on open and on resolve only."""
    mp = params.monitoring
    links = links or {}
    with sessions(mp)() as s:
        state = s.get(AlertState, RULE)
        firing = bool(state and state.firing)
        incident = state.incident_id if state else None
    breached = bool(wm.breaches)
    if not wm.enough_data and not breached:
        log.info("alert: %d sample(s) < %d, nothing decided", sum(p["n"] for p in wm.points if p["scope"] == "overall"),
                 mp.min_samples)
        return AlertOutcome("none", incident, firing)
    if breached == firing:
        return AlertOutcome("none", incident, firing)
    lines, payload = _describe(wm, links)
    if breached:
        incident = f"iou-{wm.at:%Y%m%dT%H%M%S}"
        scopes = ", ".join(_scope_label(p) for p in wm.breaches)
        worst = min(p["iou_mean"] for p in wm.breaches)
        title = f"ALERT monitored IoU {worst:.4f} < {wm.threshold:.2f}: {scopes}"
    else:
        overall = next(p for p in wm.points if p["scope"] == "overall")
        title = f"RESOLVED monitored IoU back to {overall['iou_mean']:.4f} (>= {wm.threshold:.2f}) — {incident}"
    payload["incident_id"] = incident
    payload["kind"] = "alert" if breached else "resolved"
    note = Notification(payload["kind"], title, [f"*incident*: {incident}", *lines], payload)
    delivered = send(mp, note, incident)
    with sessions(mp)() as s, s.begin():
        state = s.get(AlertState, RULE) or AlertState(rule=RULE)
        state.firing = breached
        state.incident_id = incident
        state.opened_at = wm.at if breached else state.opened_at
        state.scopes = ",".join(f"{p['scope']}:{p['key']}" for p in wm.breaches)
        state.updated_at = utcnow()
        s.merge(state)
    log.warning("%s", title)
    return AlertOutcome(payload["kind"], incident, breached, tuple(delivered))


def notify_dag_failure(context: dict) -> None:
    """Airflow `on_failure_callback`: tell the same on-call channel that a DAG run failed."""
    from backdrop.config import load_params

    mp = load_params().monitoring
    ti = context.get("task_instance") or context.get("ti")
    dag_run = context.get("dag_run")
    dag_id = getattr(dag_run, "dag_id", None) or getattr(ti, "dag_id", "?")
    run_id = getattr(dag_run, "run_id", "?")
    task_id = getattr(ti, "task_id", None)
    exc = context.get("exception")
    title = f"DAG {dag_id} failed" + (f" at task {task_id}" if task_id else "")
    lines = [f"*run*: {run_id}", f"*error*: {exc!r}" if exc else "*error*: see the task log"]
    log_url = getattr(ti, "log_url", None)
    if log_url:
        lines.append(f"*log*: {log_url}")
    payload = {"kind": "dag_failure", "dag_id": dag_id, "run_id": run_id, "task_id": task_id,
               "error": repr(exc) if exc else None}
    try:
        send(mp, Notification("dag_failure", title, lines, payload))
    except AlertDeliveryError as err:  # a callback must not raise; the log keeps the trace
        log.error("failure alert not delivered: %s", err)
