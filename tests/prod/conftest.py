"""Production-profile fixtures: real PostgreSQL, Redis, an MLflow tracking server and Airflow processes.

Every database is created here with a random name and dropped afterwards (`DROP DATABASE … WITH
(FORCE)`); every process is started in its own process group and killed with it. When PostgreSQL
(127.0.0.1:5432) or Redis (127.0.0.1:6379) is not reachable the tests skip and say so; nothing else
makes them skip. Override the endpoints with BACKDROP_TEST_PG (a libpq URL without a database, e.g.
postgresql://postgres@127.0.0.1:5432) and BACKDROP_TEST_REDIS.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.conftest import BIN

PG_URL = os.environ.get("BACKDROP_TEST_PG", "postgresql://postgres@127.0.0.1:5432").rstrip("/")
REDIS_URL = os.environ.get("BACKDROP_TEST_REDIS", "redis://127.0.0.1:6379/0")


def _reachable(url: str) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname, parts.port), timeout=3):
            return True
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def services() -> dict[str, str]:
    """PostgreSQL and Redis endpoints; the one allowed skip is here, and it names what is missing."""
    missing = [f"{name} at {url}" for name, url in (("PostgreSQL", PG_URL), ("Redis", REDIS_URL))
               if not _reachable(url)]
    if missing:
        pytest.skip("production-profile tests need real services: " + ", ".join(missing) + " not reachable "
                    "(set BACKDROP_TEST_PG / BACKDROP_TEST_REDIS to point elsewhere)")
    return {"pg": PG_URL, "redis": REDIS_URL}


@pytest.fixture(scope="session")
def make_database(services) -> Iterator[Callable[[str], str]]:
    """Factory: create a throw-away database, return its SQLAlchemy URL; all are dropped at the end."""
    import psycopg2

    created: list[str] = []

    def _admin():
        conn = psycopg2.connect(services["pg"] + "/postgres", connect_timeout=5)
        conn.autocommit = True
        return conn

    def make(prefix: str) -> str:
        name = f"backdrop_test_{prefix}_{uuid.uuid4().hex[:10]}"
        conn = _admin()  # not `with conn:` — that opens a transaction, and CREATE DATABASE refuses one
        try:
            with conn.cursor() as cur:
                cur.execute(f'CREATE DATABASE "{name}"')
        finally:
            conn.close()
        created.append(name)
        return services["pg"].replace("postgresql://", "postgresql+psycopg2://", 1) + "/" + name

    yield make
    conn = _admin()
    try:
        with conn.cursor() as cur:
            for name in created:
                cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        conn.close()


class Processes:
    """Long-running processes, each in its own session/process group; `stop()` kills every group."""

    def __init__(self, log_dir: Path):
        self.log_dir = log_dir
        self.procs: dict[str, subprocess.Popen] = {}
        log_dir.mkdir(parents=True, exist_ok=True)

    def start(self, name: str, cmd: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen:
        log = open(self.log_dir / f"{name}.log", "wb")  # noqa: SIM115 — closed with the process
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        log.close()
        self.procs[name] = proc
        return proc

    def log(self, name: str) -> str:
        path = self.log_dir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def assert_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise AssertionError(f"{name} exited with {proc.returncode}:\n{self.log(name)[-4000:]}")

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for proc in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            with contextlib.suppress(ProcessLookupError):  # the whole group: children that outlived the parent too
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def wait_http(url: str, timeout: float, procs: Processes | None = None, what: str = "") -> None:
    import requests

    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if procs is not None:
            procs.assert_alive()
        try:
            r = requests.get(url, timeout=3)
            if r.status_code == 200:
                return
            last = f"HTTP {r.status_code}"
        except requests.RequestException as exc:
            last = exc
        time.sleep(1)
    raise AssertionError(f"{what or url} not healthy after {timeout:.0f} s: {last}")


S3_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "backdrop-test", "AWS_SECRET_ACCESS_KEY": "backdrop-test-secret",
                  "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture(scope="session")
def s3_store(services, tmp_path_factory) -> Iterator[dict]:
    """An S3-compatible object store on an ephemeral port (moto's server, standing in for MinIO/S3)
    with one bucket: `mlflow/` holds MLflow artifacts, `dvc/` the DVC remote."""
    import boto3

    root = tmp_path_factory.mktemp("s3")
    port = free_port()
    procs = Processes(root / "logs")
    env = {**os.environ, **S3_CREDENTIALS}
    procs.start("moto", [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)], env, root)
    url = f"http://127.0.0.1:{port}"
    bucket = "backdrop-" + uuid.uuid4().hex[:8]
    try:
        wait_http(url + "/moto-api/", 60, procs, "S3 server (moto)")
        boto3.client("s3", endpoint_url=url, **{k.lower(): v for k, v in S3_CREDENTIALS.items()
                                                 if k != "AWS_DEFAULT_REGION"},
                     region_name="us-east-1").create_bucket(Bucket=bucket)
        yield {"endpoint": url, "bucket": bucket, "env": dict(S3_CREDENTIALS)}
    finally:
        procs.stop()


@pytest.fixture(scope="session")
def mlflow_server(make_database, s3_store, tmp_path_factory) -> Iterator[dict]:
    """`mlflow server` on a fresh PostgreSQL backend store, artifacts proxied to the S3 store,
    on an ephemeral port."""
    db_url = make_database("mlflow")
    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    procs = Processes(root / "logs")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW", "AIRFLOW", "BACKDROP"))}
    env.update(s3_store["env"], MLFLOW_S3_ENDPOINT_URL=s3_store["endpoint"],
               # MLflow 3's GenAI job runner starts ~7 consumer processes (~1.5 GB); backdrop needs none.
               MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    artifacts = f"s3://{s3_store['bucket']}/mlflow"
    cmd = [str(BIN / "mlflow"), "server", "--backend-store-uri", db_url,
           "--artifacts-destination", artifacts, "--serve-artifacts",
           "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    procs.start("mlflow", cmd, env, root)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/health", 180, procs, "mlflow server")
        yield {"url": url, "db_url": db_url, "artifacts": artifacts, "procs": procs,
               "s3_endpoint": s3_store["endpoint"]}
    finally:
        procs.stop()


@pytest.fixture(scope="session")
def prod_secrets() -> dict[str, str]:
    from backdrop.profiles import generate_secrets

    return generate_secrets()


def random_queue() -> str:
    return "backdrop-test-" + secrets.token_hex(4)


def run(cmd: list[str], project: Path, timeout: int = 300, check: bool = True,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """tests.conftest.run with an explicit environment (the production one)."""
    from tests.conftest import project_env

    proc = subprocess.run(cmd, cwd=project, env=env or project_env(project), capture_output=True, text=True,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n"
                             f"{proc.stderr[-4000:]}")
    return proc
