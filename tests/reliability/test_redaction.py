"""Class 7: no credential in a URL is ever logged, stored or printed.

One function, `backdrop.config.redact`, masks passwords in URLs (user:***@), secret query values
(?token=***, &key=***), Slack-style webhook path secrets and bearer tokens, plus any secret strings the
caller knows. The tests plant secrets and grep every place they could surface: the alert sender's log
records, exception and `alert_events` rows, the DAG-failure notice, the `backdrop doctor` output (text
and JSON), CLI error lines and the monitoring report links.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from backdrop.config import MonitoringParams, parse_params, redact, redact_url

# (text with secrets, strings that must vanish, strings that must stay)
CASES = [
    ("postgresql+psycopg2://airflow:s3cretPW@db:5432/airflow", ["s3cretPW"], ["airflow:***@db:5432/airflow"]),
    ("http://user:s3cret@bad host/x?token=abc", ["s3cret", "token=abc"], ["user:***@bad", "token=***"]),
    ("https://hooks.slack.com/services/T0AAAA111/B0BBBB222/xoxSECRETxyz123", ["T0AAAA111", "B0BBBB222", "xoxSECRET"],
     ["https://hooks.slack.com/services/***"]),
    ("https://chat.example.com/v1/spaces/AAA/messages?key=AIzaKEY123&token=TOKEN456&threadKey=t1",
     ["AIzaKEY123", "TOKEN456"], ["chat.example.com/v1/spaces/AAA/messages?key=***&token=***"]),
    ("redis://:r3disPass@redis:6379/0", ["r3disPass"], ["redis://:***@redis:6379/0"]),
    ("s3://bucket/model.onnx?X-Amz-Signature=abcdef0123&X-Amz-Credential=AKIAEXAMPLE", ["abcdef0123", "AKIAEXAMPLE"],
     ["s3://bucket/model.onnx?"]),
    ("webhook failed: nonnumeric port: 'pa55word@alerts.example.com' for https://oncall:pa55word@alerts.example.com/h",
     ["pa55word"], ["oncall:***@alerts.example.com"]),
    ("smtp://oncall-bot:s3cr/et@!@mail:25", ["s3cr", "et@!"], ["smtp://oncall-bot:***@mail:25"]),
    ("curl -H 'Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.payload.sig'", ["eyJhbGciOiJIUzI1NiJ9"], ["Bearer ***"]),
]


@pytest.mark.parametrize(("text", "gone", "kept"), CASES, ids=[c[0][:28] for c in CASES])
def test_redact_masks_every_planted_secret(text, gone, kept):
    out = redact(text)
    for secret in gone:
        assert secret not in out, out
    for part in kept:
        assert part in out, out
    assert redact(out) == out  # idempotent: redacting twice changes nothing


@pytest.mark.parametrize("text", [
    "sqlite:////srv/backdrop/mlflow/mlflow.db", "http://127.0.0.1:5000/#/experiments/3/runs/abc",
    "file:///srv/reports/2026/drift_report.html", "postgresql+psycopg2://postgres@127.0.0.1:5432/airflow",
    "http://[::1]:8080/health", "plain words, no URL: monitored IoU 0.9000 < 0.99",
])
def test_redact_leaves_harmless_text_alone(text):
    assert redact(text) == text and redact_url(text) == text


def test_known_secrets_go_even_without_url_context():
    """urllib's "nonnumeric port: 's3cret@host'" quotes a password with no URL around it."""
    out = redact("nonnumeric port: 's3cret@bad host'", secrets=["s3cret"])
    assert "s3cret" not in out and "bad host" in out


# ------------------------------------------------------------------------------------ alert sender

WEBHOOKS = {
    "malformed": ("http://user:s3cret@bad host/x?token=abc", ["s3cret", "token=abc"]),
    "userinfo": ("https://oncall:pa55word@alerts.example.com/hooks/x?token=tok3nSECRET", ["pa55word", "tok3nSECRET"]),
    "slack-no-scheme": ("hooks.slack.com/services/T0AAAA111/B0BBBB222/xoxSECRETxyz123",
                        ["T0AAAA111", "B0BBBB222", "xoxSECRETxyz123"]),
}


@pytest.fixture()
def mp(tmp_path, monkeypatch) -> MonitoringParams:
    for var in ("BACKDROP_MONITORING_DB", "AIRFLOW_CONN_BACKDROP_ALERT_WEBHOOK", "AIRFLOW_CONN_BACKDROP_SMTP"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("BACKDROP_PROJECT_DIR", str(tmp_path))
    # no Airflow connection lookups: the webhook comes from the env var only
    return MonitoringParams(db_url=f"sqlite:///{tmp_path / 'monitoring.db'}", webhook_conn_id="", smtp_conn_id="",
                            store_dir=tmp_path / "store", reports_dir=tmp_path / "reports")


def _events(tmp_path: Path) -> list[tuple]:
    db = sqlite3.connect(tmp_path / "monitoring.db")
    try:
        return db.execute("SELECT kind, channels, errors, summary, body FROM alert_events").fetchall()
    finally:
        db.close()


@pytest.mark.parametrize("case", list(WEBHOOKS))
def test_a_broken_webhook_url_never_reaches_logs_or_the_database(tmp_path, mp, monkeypatch, caplog, case):
    from backdrop.monitoring.alerts import AlertDeliveryError, Notification, send

    url, secrets = WEBHOOKS[case]
    monkeypatch.setenv(mp.webhook_url_env, url)
    note = Notification("alert", "ALERT monitored IoU 0.9000 < 0.99: overall", ["*metric*: IoU"], {"kind": "alert"})
    caplog.set_level(logging.DEBUG)
    with pytest.raises(AlertDeliveryError) as err:
        send(mp, note)
    rows = _events(tmp_path)
    assert len(rows) == 1 and rows[0][1] == "" and rows[0][2].startswith("webhook: ")  # the failure is recorded
    places = {"log": caplog.text, "exception": str(err.value), "alert_events": repr(rows)}
    for where, text in places.items():
        for secret in secrets:
            assert secret not in text, f"{secret!r} leaked into {where}: {text}"


@pytest.mark.parametrize("error", [
    RuntimeError("could not connect to postgresql://airflow:s3cretPW@db:5432/airflow"),
    OSError("GET https://minio:9000/dvc/x?X-Amz-Signature=s3cretPW failed"),
    ValueError("webhook https://hooks.slack.com/services/T0AAAA111/B0BBBB222/s3cretPW answered 404"),
])
def test_dag_failure_notice_redacts_the_task_error(tmp_path, mp, caplog, error):
    from backdrop.monitoring.alerts import notify_dag_failure

    caplog.set_level(logging.DEBUG)
    notify_dag_failure({"exception": error}, mp)  # no channel configured: only recorded and logged
    rows = _events(tmp_path)
    assert len(rows) == 1 and rows[0][0] == "dag_failure"
    assert "s3cretPW" not in repr(rows) and "s3cretPW" not in caplog.text


def test_report_links_carry_no_credentials(tmp_path, monkeypatch):
    from backdrop.monitoring.report import link

    monkeypatch.setenv("BACKDROP_PROJECT_DIR", str(tmp_path))
    params = parse_params({"monitoring": {"reports_dir": str(tmp_path / "reports"),
                                          "report_base_url": "https://viewer:s3cretPW@reports.example.com/m"}})
    out = link(params, tmp_path / "reports" / "20261203T100000" / "drift_report.html")
    assert "s3cretPW" not in out
    assert out.startswith("https://viewer:***@reports.example.com/m") and "20261203T100000/drift_report.html" in out


# ------------------------------------------------------------------------------------ CLI output

DOCTOR = [
    ("local", "http://mlflow-user:s3cretPW@127.0.0.1:9", ["s3cretPW"]),
    ("local", "https://127.0.0.1:9/?token=t0kenSECRET", ["t0kenSECRET"]),
    ("production", "postgresql://mlflow:s3cretPW@127.0.0.1:9/mlflow", ["s3cretPW"]),
]


@pytest.mark.parametrize(("profile", "uri", "secrets"), DOCTOR, ids=[d[1].split(":")[0] + "-" + d[0] for d in DOCTOR])
@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_doctor_never_prints_the_tracking_uri_password(tmp_path, monkeypatch, profile, uri, secrets, as_json):
    from backdrop.cli import app
    from backdrop.cli import doctor as doctor_module

    # only the MLflow check runs for real (against a closed local port: it fails at once, no server)
    monkeypatch.setattr(doctor_module, "check_versions", lambda profile: [])
    monkeypatch.setattr(doctor_module, "check_airflow", lambda profile: [])
    monkeypatch.setattr(doctor_module, "check_dvc", lambda profile, project: [])
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("BACKDROP_PROJECT_DIR", str(tmp_path))
    (tmp_path / "params.yaml").write_text("mlflow:\n  experiment: backdrop\n")
    argv = ["doctor", "--profile", profile, "--params", str(tmp_path / "params.yaml")] + (["--json"] if as_json else [])
    result = CliRunner().invoke(app, argv)
    assert result.exit_code == 1, result.output  # the tracking check fails: nothing listens there
    assert "mlflow.tracking" in result.output and "127.0.0.1:9" in result.output
    for secret in secrets:
        assert secret not in result.output


@pytest.mark.parametrize("value", [
    "['http://u:s3cretPW@mlflow:5000']", "{uri: 'postgresql://u:s3cretPW@db/m'}", "[https://m/?token=s3cretPW]",
])
def test_a_config_error_quoting_a_url_is_redacted(tmp_path, value):
    from backdrop.cli import app

    path = tmp_path / "params.yaml"
    path.write_text(f"mlflow:\n  tracking_uri: {value}\n")
    result = CliRunner().invoke(app, ["prepare", "--params", str(path)])
    assert result.exit_code == 2 and "mlflow.tracking_uri" in result.output
    assert "s3cretPW" not in result.output


@pytest.mark.parametrize("secret_url", ["postgresql://svc:hunter2pw@db:5432/mlflow",
                                        "http://user:s3cretpw@mlflow.internal:5000",
                                        "https://hooks.slack.com/services/T000/B000/XyZsecretTOKEN1"])
def test_tracebacks_in_cli_logs_are_redacted_too(secret_url):
    """`log.exception` prints the exception's text in the traceback: the CLI's filter redacts it as well."""
    import io
    import logging

    from backdrop.cli.common import RedactingFilter

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactingFilter())
    logger = logging.getLogger("backdrop.test_redaction_tb")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        try:
            raise ConnectionError(f"cannot reach {secret_url}")
        except ConnectionError:
            logger.exception("store unreachable")
    finally:
        logger.removeHandler(handler)
    out = stream.getvalue()
    assert "Traceback" in out and "ConnectionError" in out
    for secret in ("hunter2pw", "s3cretpw", "XyZsecretTOKEN1"):
        assert secret not in out
