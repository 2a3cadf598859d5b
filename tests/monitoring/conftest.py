"""Real local services for the monitoring tests: a webhook receiver, an SMTP server, a PostgreSQL database.

Nothing is mocked: the webhook is an `http.server` on 127.0.0.1 (ephemeral port) that keeps every JSON
body it receives, the SMTP server is aiosmtpd keeping every message, and PostgreSQL is the server on
127.0.0.1:5432 with a throw-away database per test session.
"""

from __future__ import annotations

import json
import secrets
import shutil
import socket
import sqlite3
import threading
from email import message_from_bytes
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

PG = {"host": "127.0.0.1", "port": 5432, "user": "postgres"}
PATH = "/hooks/on-call"  # the webhook receiver answers this path only


@pytest.fixture()
def webhook():
    """URL of a local webhook receiver and the list of JSON bodies it got (a POST elsewhere gets 404)."""
    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server API)
            length = int(self.headers.get("Content-Length", 0))
            if self.path != PATH:
                self.send_error(404)
                return
            received.append(json.loads(self.rfile.read(length)))
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args):  # keep pytest output clean
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}{PATH}", received
    server.shutdown()
    server.server_close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def smtp():
    """(host, port) of a local aiosmtpd server and the list of email messages it accepted.

    The server offers AUTH (PLAIN/LOGIN, without TLS on loopback) and accepts any credentials; each
    message records the (login, password) its session authenticated with, or None without AUTH.
    """
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult

    received = []

    class Handler:
        async def handle_DATA(self, server, session, envelope):  # noqa: N802 (aiosmtpd API)
            msg = message_from_bytes(envelope.content)
            auth = session.auth_data
            received.append({"from": envelope.mail_from, "to": list(envelope.rcpt_tos), "subject": msg["Subject"],
                             "body": msg.get_payload(decode=True).decode(),
                             "auth": (auth.login.decode(), auth.password.decode()) if auth else None})
            return "250 Message accepted for delivery"

    def authenticator(server, session, envelope, mechanism, auth_data):
        return AuthResult(success=True, auth_data=auth_data)

    controller = Controller(Handler(), hostname="127.0.0.1", port=_free_port(), authenticator=authenticator,
                            auth_require_tls=False)
    controller.start()
    yield ("127.0.0.1", controller.port), received
    controller.stop()


@pytest.fixture(scope="session")
def pg_url():
    """A throw-away PostgreSQL database `backdrop_test_<random>`; dropped afterwards. Fails if no server."""
    import psycopg2

    name = f"backdrop_test_{secrets.token_hex(4)}"
    try:
        admin = psycopg2.connect(dbname="postgres", connect_timeout=5, **PG)
    except psycopg2.OperationalError as exc:
        pytest.fail(f"PostgreSQL is required for these tests and is not reachable at "
                    f"{PG['host']}:{PG['port']} as user {PG['user']}: {exc}", pytrace=False)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    url = f"postgresql+psycopg2://{PG['user']}@{PG['host']}:{PG['port']}/{name}"
    try:
        yield url
    finally:
        from backdrop.data.predlog import engine_for

        engine_for(url).dispose()
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def monitoring_params(project: Path, tmp: Path, **overrides):
    """Write `tmp/params.yaml`: the pipeline project's params, monitoring pointed at `tmp` and test-sized
    (a cluster breaches from 2 corrected images on: a shifted test batch of 7 spread over the 6
    clusters puts at least 2 into one of them, wherever the tiny model's cut-outs get clustered).

    Returns the loaded params; set $BACKDROP_PARAMS to `tmp/params.yaml` for code that loads params itself.
    """
    import yaml

    from backdrop.config import load_params

    raw = yaml.safe_load((project / "params.yaml").read_text())
    raw["monitoring"] = {**raw.get("monitoring", {}),
                         "db_url": f"sqlite:///{tmp / 'monitoring.db'}", "store_dir": str(tmp / "store"),
                         "inbox_dir": str(tmp / "inbox"), "reports_dir": str(tmp / "reports"),
                         "export_dir": str(tmp / "drop"), "min_samples": 2, "window_hours": 1.0,
                         "reference_hours": 2.0, "mlflow_experiment": "backdrop-monitoring-test", **overrides}
    path = tmp / "params.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return load_params(path)


def copy_project(source: Path, dest: Path) -> Path:
    """A complete copy of a pipeline project (DVC repo with cache, remote and dvc.lock; Airflow metadata DB;
    MLflow store) in which absolute paths are moved to the copy, so runs in it never write into `source`.

    airflow.cfg names the metadata DB and logs by absolute path; MLflow keeps absolute artifact locations
    (experiments, runs, registered model versions) in its database.
    """
    shutil.copytree(source, dest, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
    old, new = str(source), str(dest)
    cfg = dest / ".airflow" / "airflow.cfg"
    if cfg.exists():
        cfg.write_text(cfg.read_text().replace(old, new))
    mlflow_db = dest / "mlflow" / "mlflow.db"
    if mlflow_db.exists():
        db = sqlite3.connect(mlflow_db)
        try:
            tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
            for table in tables:
                for col in db.execute(f'PRAGMA table_info("{table}")').fetchall():
                    if any(t in col[2].upper() for t in ("CHAR", "TEXT", "CLOB")):
                        db.execute(f'UPDATE "{table}" SET "{col[1]}" = replace("{col[1]}", ?, ?) '
                                   f'WHERE instr("{col[1]}", ?) > 0', (old, new, old))
            db.commit()
        finally:
            db.close()
    return dest
