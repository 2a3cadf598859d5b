#!/usr/bin/env python3
"""Container healthcheck for the backdrop images, by role ($BACKDROP_AIRFLOW_ROLE or the command).

api-server → GET /api/v2/monitor/health; scheduler / triggerer / dag-processor → `airflow jobs check`;
celery worker → `celery inspect ping` on this worker; mlflow → GET /health; serving → GET /healthz.
Exit 0 healthy, 1 not. Standard library only (no curl in the images).
"""
import os
import socket
import subprocess
import sys
import urllib.request


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=8) as r:  # noqa: S310 — fixed local URL
            return r.status == 200
    except OSError:
        return False


role = os.environ.get("BACKDROP_AIRFLOW_ROLE") or os.environ.get("BACKDROP_ROLE", "")
port = os.environ.get("PORT", "")
if role in ("api-server", "webserver"):
    ok = http_ok(f"http://127.0.0.1:{port or os.environ.get('AIRFLOW__API__PORT', '8080')}/api/v2/monitor/health")
elif role in ("scheduler", "triggerer", "dag-processor"):
    job = {"scheduler": "SchedulerJob", "triggerer": "TriggererJob", "dag-processor": "DagProcessorJob"}[role]
    ok = subprocess.run(["airflow", "jobs", "check", "--job-type", job, "--hostname", socket.getfqdn()],
                        capture_output=True, timeout=60).returncode == 0
elif role in ("celery", "worker"):
    ok = subprocess.run(["celery", "--app", "airflow.providers.celery.executors.celery_executor.app",
                         "inspect", "ping", "-d", f"celery@{socket.gethostname()}"],
                        capture_output=True, timeout=60).returncode == 0
elif role == "mlflow":
    ok = http_ok(f"http://127.0.0.1:{port or '5000'}/health")
elif role == "serving":
    ok = http_ok(f"http://127.0.0.1:{port or '8000'}/healthz")
else:  # airflow-init, one-off commands: healthy while running
    ok = True
sys.exit(0 if ok else 1)
