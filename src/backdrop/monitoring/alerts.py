"""On-call alerting: one alert per incident, one resolved notice on recovery, DAG failures too.

Channels (either or both):
- webhook: POST of a Slack-compatible JSON body (`text` + `blocks`, the structured facts under
  Slack's `metadata.event_payload`). A Slack webhook URL is a secret, so it never lives in params: it
  comes from the Airflow connection `monitoring.webhook_conn_id` (default `backdrop_alert_webhook`),
  else from the environment variable named by `monitoring.webhook_url_env`;
- email over SMTP: `monitoring.smtp` (host, port, STARTTLS, sender, recipients); the user and password
  come from the Airflow connection `monitoring.smtp_conn_id` (default `backdrop_smtp`, whose host and
  port, when set, win over params too), else from the environment variables `monitoring.smtp` names.

Airflow connections are looked up through the Airflow SDK: inside Airflow (a task or a callback, where
the SDK is already loaded) that covers `AIRFLOW_CONN_<ID>` variables, a configured secrets backend and
connections stored in the metadata DB; outside Airflow (the CLI) the SDK is imported only when
`AIRFLOW_CONN_<ID>` is set, so `backdrop monitor ...` never needs Airflow installed or running.
The webhook connection may be a URI (`AIRFLOW_CONN_BACKDROP_ALERT_WEBHOOK=https://hooks.slack.com/services/T/B/X`),
a Slack-webhook style connection (host `https://hooks.slack.com/services`, password `T/B/X`) or carry
the whole URL in its extra (`{"webhook_url": "..."}`).

The state machine (table `alert_state`, one row per rule) makes an incident fire once: a breach while
ok opens an incident and notifies; further breaches while firing stay quiet; a window with enough
samples and no breach closes it with one resolved notice. A window with too few samples changes
nothing. If every configured channel fails, the state is not changed and AlertDeliveryError is
raised (the DAG task fails, so the next run tries again and the failure callback fires).

Secrets never surface: a channel's error (urllib quotes a malformed URL, or just its password) is
recorded and logged through `backdrop.config.redact` with the webhook URL's parts and the SMTP password
as known secrets, and what is posted and stored (`alert_events`) is redacted as well.
"""

from __future__ import annotations

import json
import logging
import os
import smtplib
import sys
import urllib.request
from dataclasses import dataclass
from email.message import EmailMessage

from backdrop.config import MonitoringParams, Params, redact, url_secrets
from backdrop.data.predlog import AlertEvent, AlertState, sessions, utcnow
from backdrop.monitoring.drift import WindowMetrics

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


def airflow_connection(conn_id: str):
    """The Airflow connection `conn_id` (an `airflow.sdk.Connection`), or None when it is not defined.

    Never imports Airflow for a plain CLI run: outside Airflow the SDK is loaded only when
    `AIRFLOW_CONN_<ID>` is set. A lookup that fails for another reason (Execution API unreachable...)
    is logged and treated as "not defined", so the environment fallback still delivers the alert.
    """
    if not conn_id:
        return None
    if "airflow.sdk" not in sys.modules and f"AIRFLOW_CONN_{conn_id.upper()}" not in os.environ:
        return None
    try:
        from airflow.sdk import Connection
        from airflow.sdk.exceptions import AirflowNotFoundException
    except ImportError:
        log.warning("$AIRFLOW_CONN_%s is set but Airflow is not installed: connection ignored", conn_id.upper())
        return None
    try:
        return Connection.get(conn_id)
    except AirflowNotFoundException:
        return None
    except Exception as exc:  # a broken secrets lookup must not silence the on-call channel
        uri = os.environ.get(f"AIRFLOW_CONN_{conn_id.upper()}", "")
        log.warning("Airflow connection %s could not be read (%s); falling back to the environment", conn_id,
                    redact(str(exc), [uri, *url_secrets(uri)]))
        return None


def _connection_url(conn) -> str | None:
    """A webhook URL from a connection: extra `webhook_url`/`url`, Slack-webhook style, or a URI's parts."""
    extra = conn.extra_dejson
    for key in ("webhook_url", "url"):
        if extra.get(key):
            return str(extra[key])
    host = (conn.host or "").strip()
    if not host:
        return None
    if "://" in host:  # Slack webhook connection: host https://hooks.slack.com/services, password T…/B…/X…
        url = host
    else:  # AIRFLOW_CONN_X=https://host:port/path parses into conn_type, host, port, schema (= the path)
        scheme = conn.conn_type if conn.conn_type in ("http", "https") else "https"
        url = f"{scheme}://{host}" + (f":{conn.port}" if conn.port else "")
        if conn.schema:
            url += "/" + conn.schema.lstrip("/")
    if conn.password:
        url = url.rstrip("/") + "/" + conn.password.lstrip("/")
    return url


@dataclass(frozen=True)
class Channels:
    """Where notifications go, secrets resolved (never logged): webhook URL and SMTP server/credentials."""

    webhook_url: str | None
    smtp_host: str
    smtp_port: int
    smtp_user: str | None
    smtp_password: str | None
    webhook_source: str = ""  # connection:<id> | env:<VAR> (for logs; never the URL itself)
    smtp_source: str = ""

    @property
    def names(self) -> list[str]:
        return [name for name, on in (("webhook", self.webhook_url), ("email", self.smtp_host)) if on]

    def scrub(self, text: str) -> str:
        """`text` (an error message) without the webhook URL's secrets or the SMTP password."""
        return redact(text, [*url_secrets(self.webhook_url), self.smtp_password])


def resolve_channels(mp: MonitoringParams) -> Channels:
    """Airflow connections first (`webhook_conn_id`, `smtp_conn_id`), then the environment variables."""
    url, url_source = None, ""
    conn = airflow_connection(mp.webhook_conn_id)
    if conn is not None:
        url = _connection_url(conn)
        url_source = f"connection:{mp.webhook_conn_id}" if url else ""
    if not url and os.environ.get(mp.webhook_url_env):
        url, url_source = os.environ[mp.webhook_url_env], f"env:{mp.webhook_url_env}"

    smtp = mp.smtp
    host, port = smtp.host, smtp.port
    user, password = os.environ.get(smtp.username_env), os.environ.get(smtp.password_env)
    smtp_source = f"env:{smtp.username_env}" if user and password else ""
    conn = airflow_connection(mp.smtp_conn_id)
    if conn is not None:
        host, port = conn.host or host, conn.port or port
        if conn.login and conn.password:
            user, password, smtp_source = conn.login, conn.password, f"connection:{mp.smtp_conn_id}"
    if not smtp.recipients:
        host = ""  # nobody to write to: no email channel
    return Channels(url or None, host, int(port), user, password, url_source, smtp_source)


def configured_channels(mp: MonitoringParams) -> list[str]:
    return resolve_channels(mp).names


def _post_webhook(url: str, body: dict, timeout: float) -> None:
    req = urllib.request.Request(url, data=json.dumps(body, default=str).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 (URL from the operator's env)
        if resp.status >= 300:
            raise RuntimeError(f"webhook answered HTTP {resp.status}")


def _send_email(mp: MonitoringParams, channels: Channels, msg: EmailMessage) -> None:
    smtp = mp.smtp
    with smtplib.SMTP(channels.smtp_host, channels.smtp_port, timeout=smtp.timeout_s) as client:
        if smtp.starttls:
            client.starttls()
        if channels.smtp_user and channels.smtp_password:
            client.login(channels.smtp_user, channels.smtp_password)
        client.send_message(msg)


def _redacted(value):
    """A JSON-able value with every string passed through `redact` (keys and structure unchanged)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: _redacted(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redacted(v) for v in value]
    return value


def send(mp: MonitoringParams, note: Notification, incident_id: str | None = None) -> list[str]:
    """Deliver to every configured channel and record the event; returns the channels that worked."""
    delivered, errors = [], []
    resolved = resolve_channels(mp)
    channels = resolved.names
    note = Notification(note.kind, redact(note.title), [redact(line) for line in note.lines],
                        _redacted(note.payload))
    body = note.slack_body()
    for channel in channels:
        try:
            if channel == "webhook":
                _post_webhook(resolved.webhook_url, body, mp.webhook_timeout_s)
            else:
                _send_email(mp, resolved, note.email(mp.smtp.sender, mp.smtp.recipients))
            delivered.append(channel)
        except Exception as exc:  # one broken channel must not silence the other
            reason = resolved.scrub(str(exc) or type(exc).__name__)
            log.error("alert via %s failed: %s", channel, reason)
            errors.append(f"{channel}: {reason}")
    if not channels:
        log.warning("no alert channel configured (Airflow connection %s or $%s; monitoring.smtp); %s: %s",
                    mp.webhook_conn_id, mp.webhook_url_env, note.kind, note.title)
    else:
        log.info("%s via %s (webhook from %s, smtp credentials from %s)", note.kind, channels,
                 resolved.webhook_source or "-", resolved.smtp_source or "-")
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
        lines.append(f"*overall*: IoU {overall['iou_mean']:.4f} over {overall['n']} image(s) of the alert sample "
                     f"(audit, not routed; upper bound {overall.get('ci_high', overall['iou_mean']):.4f}), "
                     f"{overall['share_ge_threshold']:.0%} at or above the threshold")
    if wm.routing.get("routed_decided"):
        r = wm.routing
        recall = "n/a" if r["routing_recall"] is None else f"{r['routing_recall']:.0%}"
        lines.append(f"*routed* (reported, not alerted on): {r['routed_needed_fix']}/{r['routed_decided']} "
                     f"needed a fix; routing caught ~{recall} of bad cut-outs")
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
               "breaches": wm.breaches, "worst_examples": wm.worst, "links": links, "routing": wm.routing}
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


def notify_dag_failure(context: dict, mp: MonitoringParams) -> None:
    """Airflow `on_failure_callback` (the DAG passes its params): tell the same on-call channel that a
    DAG run failed."""
    ti = context.get("task_instance") or context.get("ti")
    dag_run = context.get("dag_run")
    dag_id = getattr(dag_run, "dag_id", None) or getattr(ti, "dag_id", "?")
    run_id = getattr(dag_run, "run_id", "?")
    task_id = getattr(ti, "task_id", None)
    exc = context.get("exception")
    error = redact(repr(exc)) if exc else None  # a task's error may quote a DB URL with its password
    title = f"DAG {dag_id} failed" + (f" at task {task_id}" if task_id else "")
    lines = [f"*run*: {run_id}", f"*error*: {error}" if exc else "*error*: see the task log"]
    log_url = getattr(ti, "log_url", None)
    if log_url:
        lines.append(f"*log*: {log_url}")
    payload = {"kind": "dag_failure", "dag_id": dag_id, "run_id": run_id, "task_id": task_id,
               "error": error}
    try:
        send(mp, Notification("dag_failure", title, lines, payload))
    except AlertDeliveryError as err:  # a callback must not raise; the log keeps the trace
        log.error("failure alert not delivered: %s", err)
