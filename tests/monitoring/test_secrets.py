"""Alert secrets only from Airflow connections or the environment, never from params.

Each case runs the alert sender in a fresh interpreter, as `backdrop monitor run` would (no Airflow
process around it), against the real local webhook receiver and SMTP server of conftest.py:

- `AIRFLOW_CONN_BACKDROP_ALERT_WEBHOOK` / `AIRFLOW_CONN_BACKDROP_SMTP` win over the env vars named in
  params (which point at a wrong path / carry other credentials here, so using them would show);
- without connections the env vars are used and Airflow is not even imported;
- a Slack-webhook style connection (host = base URL, password = the secret path) works too.

Inside a real Airflow task the same lookup goes through the Task SDK: see test_dag.py, where the
monitoring DAG's alert reaches the receiver through `AIRFLOW_CONN_BACKDROP_ALERT_WEBHOOK` only.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from urllib.parse import quote

import pytest

pytestmark = pytest.mark.slow  # each case runs the sender in a fresh interpreter (subprocess)

SENDER = r"""
import json, sys
from backdrop.config import MonitoringParams
from backdrop.monitoring.alerts import Notification, send

mp = MonitoringParams.model_validate(json.loads(sys.argv[1]))
note = Notification("alert", "ALERT monitored IoU 0.9000 < 0.99: overall", ["*metric*: IoU"], {"kind": "alert"})
print(json.dumps({"delivered": send(mp, note), "airflow_imported": "airflow" in sys.modules}))
"""


def _send(tmp_path, params: dict, env: dict[str, str]) -> dict:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "BACKDROP"))}
    base.update({"AIRFLOW_HOME": str(tmp_path / "airflow-home"), "BACKDROP_PROJECT_DIR": str(tmp_path)}, **env)
    mp = {"db_url": f"sqlite:///{tmp_path / 'monitoring.db'}", **params}
    proc = subprocess.run([sys.executable, "-c", SENDER, json.dumps(mp)], env=base, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_connections_win_over_env_and_env_works_without_airflow(tmp_path, webhook, smtp):
    url, hooks = webhook
    (host, port), mails = smtp
    wrong_url = url.replace("/hooks/on-call", "/not-the-hook")  # the receiver answers 404 there
    env_creds = {"BACKDROP_SMTP_USER": "env-user", "BACKDROP_SMTP_PASSWORD": "env-password"}

    # 1. Airflow connections (URI form); params name no SMTP host: it comes from the connection as well
    got = _send(tmp_path, {"smtp": {"host": "", "recipients": ["oncall@test"]}}, {
        "AIRFLOW_CONN_BACKDROP_ALERT_WEBHOOK": url,
        "AIRFLOW_CONN_BACKDROP_SMTP": f"smtp://oncall-bot:{quote('s3cr/et@!', safe='')}@{host}:{port}",
        "BACKDROP_ALERT_WEBHOOK_URL": wrong_url, **env_creds})
    assert got == {"delivered": ["webhook", "email"], "airflow_imported": True}
    assert len(hooks) == 1 and hooks[0]["metadata"]["event_type"] == "backdrop_alert"
    assert len(mails) == 1 and mails[0]["auth"] == ("oncall-bot", "s3cr/et@!")

    # 2. no connections: the env vars named in params; a plain CLI process never imports Airflow
    got = _send(tmp_path, {"smtp": {"host": host, "port": port, "recipients": ["oncall@test"]}},
                {"BACKDROP_ALERT_WEBHOOK_URL": url, **env_creds})
    assert got == {"delivered": ["webhook", "email"], "airflow_imported": False}
    assert len(hooks) == 2 and len(mails) == 2 and mails[1]["auth"] == ("env-user", "env-password")

    # 3. a Slack-webhook style connection: base URL in host, the secret path in password
    base, path = url.split("/hooks/", 1)
    slack_style = {"conn_type": "slackwebhook", "host": base, "password": f"hooks/{path}"}
    got = _send(tmp_path, {}, {"AIRFLOW_CONN_BACKDROP_ALERT_WEBHOOK": json.dumps(slack_style),
                               "BACKDROP_ALERT_WEBHOOK_URL": wrong_url})
    assert got == {"delivered": ["webhook"], "airflow_imported": True}
    assert len(hooks) == 3 and len(mails) == 2
