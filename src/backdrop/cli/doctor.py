"""`backdrop doctor`: check that this machine's environment matches the active profile.

Each check prints OK / WARN / FAIL with what is wrong and the command that fixes it; the exit
status is 1 when anything FAILs. `backdrop doctor bootstrap` does the one-off production setup
(DVC remote from $BACKDROP_DVC_REMOTE_URL, MLflow experiment on the server); `backdrop doctor env`
prints the environment a production process needs.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

import typer

from backdrop.cli.common import ParamsOpt

app = typer.Typer(help="Check (and bootstrap) the active deployment profile: local or production.",
                  invoke_without_command=True, no_args_is_help=False)

TIMEOUT = 5.0


@dataclass
class Check:
    """One finding. Its detail (URLs, driver and HTTP errors) is redacted when made: whatever a check
    puts there, `backdrop doctor` prints and `--json` emits no password or token."""

    area: str
    status: str  # OK | WARN | FAIL
    detail: str
    fix: str = ""

    def __post_init__(self) -> None:
        from backdrop.config import redact

        self.detail = redact(self.detail)


def _redact(url: str) -> str:
    """A URL fit to print: backdrop.config.redact_url (imported on use: `backdrop --help` stays fast)."""
    from backdrop.config import redact_url

    return redact_url(url)


def _tcp(host: str, port: int) -> str | None:
    try:
        with socket.create_connection((host, port), timeout=TIMEOUT):
            return None
    except OSError as exc:
        return f"{host}:{port} unreachable ({exc.strerror or exc})"


# ------------------------------------------------------------------ versions
def check_versions(profile: str) -> list[Check]:
    from importlib.metadata import PackageNotFoundError, version

    wanted = {"apache-airflow": 3, "mlflow": 3, "dvc": 3}
    if profile == "production":
        wanted.update({"apache-airflow-providers-celery": 3, "redis": None, "psycopg2-binary": None,
                       "asyncpg": None})  # Airflow 3 opens an async engine on PostgreSQL too
    found, out = [], []
    for dist, major in wanted.items():
        try:
            v = version(dist)
        except PackageNotFoundError:
            if dist == "psycopg2-binary":
                try:
                    v = version("psycopg2")
                except PackageNotFoundError:
                    v = None
            else:
                v = None
        if v is None:
            out.append(Check("versions", "FAIL", f"{dist} is not installed",
                             f"pip install -c requirements/constraints.txt {dist}"))
        elif major is not None and int(v.split(".")[0]) != major:
            out.append(Check("versions", "FAIL", f"{dist} {v}: backdrop needs {major}.x",
                             f"pip install -c requirements/constraints.txt '{dist}>={major},<{major + 1}'"))
        else:
            found.append(f"{dist} {v}")
    out.insert(0, Check("versions", "OK", ", ".join(found)))
    return out


# ------------------------------------------------------------------ Airflow
def _airflow_conf():
    from airflow.configuration import conf

    return conf


def _sql_reachable(url: str) -> tuple[str | None, bool]:
    """(error, migrated) for a SQLAlchemy URL: can we connect, does it hold alembic_version?"""
    import sqlalchemy as sa

    kwargs = {"connect_args": {"connect_timeout": int(TIMEOUT)}} if url.startswith("postgresql") else {}
    try:
        engine = sa.create_engine(url, **kwargs)
        with engine.connect() as conn:
            migrated = sa.inspect(conn).has_table("alembic_version")
        engine.dispose()
        return None, migrated
    except Exception as exc:  # noqa: BLE001 — any driver error is the diagnosis
        return str(exc).strip().splitlines()[0], False


def check_airflow(profile: str) -> list[Check]:
    out: list[Check] = []
    try:
        conf = _airflow_conf()
    except Exception as exc:  # noqa: BLE001
        return [Check("airflow", "FAIL", f"cannot load Airflow's configuration: {exc}",
                      "check AIRFLOW_HOME and AIRFLOW__* variables")]
    executor = conf.get("core", "executor")
    conn = conf.get("database", "sql_alchemy_conn")
    if profile == "production":
        if "CeleryExecutor" not in executor:
            out.append(Check("airflow.executor", "FAIL", f"executor is {executor}, production runs CeleryExecutor",
                             "export AIRFLOW__CORE__EXECUTOR=CeleryExecutor"))
        else:
            out.append(Check("airflow.executor", "OK", executor))
        if not conn.startswith("postgresql"):
            out.append(Check("airflow.metadata_db", "FAIL", f"metadata DB is {_redact(conn)}, production uses PostgreSQL",
                             "export AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=postgresql+psycopg2://USER:PASS@HOST:5432/airflow"))
    else:
        out.append(Check("airflow.executor", "OK" if executor in ("LocalExecutor", "SequentialExecutor") else "WARN",
                         executor, "" if executor == "LocalExecutor" else
                         "the local profile runs LocalExecutor: unset AIRFLOW__CORE__EXECUTOR"))
    err, migrated = _sql_reachable(conn)
    if err:
        out.append(Check("airflow.metadata_db", "FAIL", f"{_redact(conn)}: {err}",
                         "start the database / fix the URL (createdb airflow; check host, user, password)"))
    elif not migrated:
        out.append(Check("airflow.metadata_db", "FAIL", f"{_redact(conn)} reachable but not migrated",
                         "airflow db migrate"))
    else:
        out.append(Check("airflow.metadata_db", "OK", f"{_redact(conn)} (migrated)"))
    if profile == "production":
        broker = conf.get("celery", "broker_url", fallback="")
        out.append(_check_redis(broker))
        backend = conf.get("celery", "result_backend", fallback="") or ""
        if backend.startswith("db+"):
            err, _ = _sql_reachable(backend[3:])
            out.append(Check("airflow.celery_results", "FAIL" if err else "OK",
                             f"{_redact(backend)}" + (f": {err}" if err else ""),
                             "export AIRFLOW__CELERY__RESULT_BACKEND=db+postgresql+psycopg2://USER:PASS@HOST:5432/airflow"
                             if err else ""))
    return out


def _check_redis(url: str) -> Check:
    if not url.startswith(("redis://", "rediss://")):
        return Check("airflow.broker", "FAIL", f"broker is {_redact(url) or 'unset'}, production uses Redis",
                     "export AIRFLOW__CELERY__BROKER_URL=redis://HOST:6379/0")
    try:
        import redis

        client = redis.Redis.from_url(url, socket_connect_timeout=TIMEOUT, socket_timeout=TIMEOUT)
        client.ping()
        info = client.info("server")
        return Check("airflow.broker", "OK", f"{_redact(url)} (Redis {info.get('redis_version')})")
    except Exception as exc:  # noqa: BLE001
        return Check("airflow.broker", "FAIL", f"{_redact(url)}: {exc}",
                     "start Redis (systemctl start redis-server / docker compose up redis) or fix the URL")


# ------------------------------------------------------------------ MLflow
def check_mlflow(profile: str, params) -> list[Check]:
    from backdrop.config import tracking_uri

    uri = tracking_uri(params)
    out: list[Check] = []
    if profile == "production" and not uri.startswith(("http://", "https://")):
        return [Check("mlflow.tracking", "FAIL", f"tracking URI is {_redact(uri)}, production uses a tracking server",
                      "export MLFLOW_TRACKING_URI=http://MLFLOW_HOST:5000")]
    if uri.startswith(("http://", "https://")):
        import requests

        try:
            r = requests.get(uri.rstrip("/") + "/health", timeout=TIMEOUT)
            r.raise_for_status()
            out.append(Check("mlflow.tracking", "OK", f"{_redact(uri)} healthy"))
        except Exception as exc:  # noqa: BLE001
            return [Check("mlflow.tracking", "FAIL", f"{_redact(uri)}: {exc}",
                          "start the server: mlflow server --backend-store-uri postgresql://… "
                          "--artifacts-destination s3://… --host 0.0.0.0 --port 5000")]
    else:
        out.append(Check("mlflow.tracking", "OK", _redact(uri)))
    try:
        import mlflow
        from mlflow.exceptions import MlflowException

        client = mlflow.MlflowClient(tracking_uri=uri)
        name, alias = params.register_.model_name, params.register_.alias
        exp = client.get_experiment_by_name(params.mlflow.experiment)
        if exp is None:
            out.append(Check("mlflow.experiment", "WARN", f"experiment {params.mlflow.experiment!r} does not exist yet",
                             "backdrop doctor bootstrap (or run the pipeline once)"))
        elif profile == "production" and exp.artifact_location.startswith("file:"):
            out.append(Check("mlflow.experiment", "FAIL",
                             f"experiment artifacts go to {exp.artifact_location}, a path on one machine's disk",
                             "delete the experiment and run `backdrop doctor bootstrap` so the server's artifact "
                             "store is used"))
        else:
            out.append(Check("mlflow.experiment", "OK", f"{exp.name} → {exp.artifact_location}"))
        try:
            version = client.get_model_version_by_alias(name, alias)
            out.append(Check("mlflow.registry", "OK", f"models:/{name}@{alias} = version {version.version}"))
        except MlflowException:
            client.search_registered_models(max_results=1)  # the registry answers at all
            out.append(Check("mlflow.registry", "WARN", f"registry reachable, no models:/{name}@{alias} yet",
                             "run the training DAG (airflow dags trigger backdrop_training)"))
    except Exception as exc:  # noqa: BLE001
        out.append(Check("mlflow.registry", "FAIL", f"registry query failed: {str(exc).splitlines()[0]}",
                         "check the tracking server's backend store (mlflow db upgrade …) and its logs"))
    return out


# ------------------------------------------------------------------ DVC
def check_dvc(profile: str, project: Path) -> list[Check]:
    try:
        from dvc.repo import Repo

        repo = Repo(str(project))
    except Exception as exc:  # noqa: BLE001
        return [Check("dvc.repo", "FAIL", f"{project}: not a DVC project ({exc})", "dvc init")]
    try:
        name = repo.config["core"].get("remote")
        if not name:
            return [Check("dvc.remote", "FAIL", "no default DVC remote",
                          "backdrop doctor bootstrap (production) or dvc remote add -d local ../.dvc-storage")]
        url = repo.config["remote"][name]["url"]
        scheme = urlsplit(url).scheme
        out = []
        if profile == "production" and scheme in ("", "file"):
            out.append(Check("dvc.remote", "FAIL", f"default remote {name!r} is a local directory ({url})",
                             "export BACKDROP_DVC_REMOTE_URL=s3://BUCKET/dvc (+ AWS_* credentials) and run "
                             "`backdrop doctor bootstrap`"))
            return out
        try:
            odb = repo.cloud.get_remote_odb(name)
            fs, path = odb.fs, odb.path
            if scheme in ("", "file") and not fs.exists(path):
                anchor = Path(path)
                while not anchor.exists() and anchor != anchor.parent:
                    anchor = anchor.parent
                ok = os.access(anchor, os.W_OK)
                out.append(Check("dvc.remote", "OK" if ok else "FAIL",
                                 f"{name} → {path} (created on first push)" if ok
                                 else f"{name} → {path}: {anchor} is not writable",
                                 "" if ok else f"mkdir -p {path} and make it writable for this user"))
            else:
                fs.exists(path)  # reaches the store: credentials and endpoint are right
                out.append(Check("dvc.remote", "OK", f"{name} → {url} reachable"))
        except ImportError as exc:
            out.append(Check("dvc.remote", "FAIL", f"{name} → {url}: DVC plugin missing ({exc})",
                             f"pip install 'dvc[{scheme}]'"))
        except Exception as exc:  # noqa: BLE001
            out.append(Check("dvc.remote", "FAIL", f"{name} → {url}: {str(exc).splitlines()[0] if str(exc) else exc!r}",
                             "check the bucket, BACKDROP_DVC_ENDPOINT_URL and AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"))
        return out
    finally:
        repo.close()


# ------------------------------------------------------------------ runner
def run_checks(profile: str, source: str, params_file: Path | None = None) -> list[Check]:
    from backdrop.config import ConfigError, load_params, project_dir
    from backdrop.profiles import missing_settings

    checks = [Check("profile", "OK", f"{profile} (from {source})")]
    try:
        params = load_params(params_file)
    except ConfigError as exc:
        return [*checks, Check("params", "FAIL", str(exc), "fix params.yaml")]
    if profile == "production":
        for setting, why in missing_settings():
            checks.append(Check("env", "FAIL", f"{setting.env} ({setting.what}) {why}",
                                f"export {setting.env}={setting.example}"))
    checks += check_versions(profile)
    for fn, args in ((check_airflow, (profile,)), (check_mlflow, (profile, params)),
                     (check_dvc, (profile, project_dir()))):
        try:
            checks += fn(*args)
        except Exception as exc:  # noqa: BLE001 — a crashing check is itself a finding
            checks.append(Check(fn.__name__.removeprefix("check_"), "FAIL", f"check crashed: {exc!r}"))
    return checks


COLORS = {"OK": "green", "WARN": "yellow", "FAIL": "red"}


@app.callback()
def doctor(
    ctx: typer.Context,
    profile: Annotated[str | None, typer.Option(help="check this profile instead of the active one")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
    params: ParamsOpt = None,
) -> None:
    """Check the active profile: databases, broker, DVC remote, MLflow registry, versions."""
    if ctx.invoked_subcommand is not None:
        return
    from backdrop.profiles import PROFILES, ProfileError, active_profile

    try:
        name, source = (profile, "--profile") if profile else active_profile(params)
    except ProfileError as exc:
        typer.secho(str(exc), fg="red", err=True)
        raise typer.Exit(2) from None
    if name not in PROFILES:
        typer.secho(f"--profile {name!r}: choose one of {', '.join(PROFILES)}", fg="red", err=True)
        raise typer.Exit(2)
    # Airflow, DVC and botocore log to stdout when first imported: keep stdout for the report.
    with contextlib.redirect_stdout(sys.stderr):
        checks = run_checks(name, source, params)
    failed = [c for c in checks if c.status == "FAIL"]
    if as_json:
        typer.echo(json.dumps({"profile": name, "ok": not failed, "checks": [asdict(c) for c in checks]}, indent=2))
    else:
        for c in checks:
            typer.secho(f"{c.status:<4}  {c.area:<22} {c.detail}", fg=COLORS[c.status])
            if c.fix and c.status != "OK":
                typer.echo(f"      {'':<22} fix: {c.fix}")
        typer.secho(f"\n{len(failed)} problem(s) in profile {name}" if failed else f"\nprofile {name}: all checks passed",
                    fg="red" if failed else "green", bold=True)
    if failed:
        raise typer.Exit(1)


@app.command()
def bootstrap(params: ParamsOpt = None) -> None:
    """One-off production setup: DVC remote from $BACKDROP_DVC_REMOTE_URL, MLflow experiment on the server."""
    from backdrop.config import load_params, project_dir, tracking_uri
    from backdrop.profiles import (
        DVC_ENDPOINT_ENV,
        DVC_REMOTE_ENV,
        configure_dvc_remote,
        ensure_mlflow_experiment,
    )

    p = load_params(params)
    url = os.environ.get(DVC_REMOTE_ENV)
    if url:
        name = configure_dvc_remote(project_dir(), url, os.environ.get(DVC_ENDPOINT_ENV, ""))
        typer.echo(f"dvc: default remote {name!r} → {_redact(url)} (in .dvc/config.local)")
    else:
        typer.echo(f"dvc: {DVC_REMOTE_ENV} not set, remote left as configured")
    uri = tracking_uri(p)
    if uri.startswith(("http://", "https://")):
        exp_id = ensure_mlflow_experiment(uri, p.mlflow.experiment)
        typer.echo(f"mlflow: experiment {p.mlflow.experiment!r} ({exp_id}) on {_redact(uri)}")
    else:
        typer.echo(f"mlflow: {_redact(uri)} is not a server; the experiment is created on first use")


@app.command()
def env(
    postgres: Annotated[str, typer.Option(help="PostgreSQL host:port")] = "postgres:5432",
    redis_url: Annotated[str, typer.Option("--redis", help="broker URL")] = "redis://redis:6379/0",
    mlflow_url: Annotated[str, typer.Option("--mlflow", help="tracking server URL")] = "http://mlflow:5000",
    api_url: Annotated[str, typer.Option("--api", help="Airflow API server URL")] = "http://airflow-api-server:8080",
    dvc_remote: Annotated[str, typer.Option(help="DVC remote URL")] = "s3://backdrop/dvc",
    dvc_endpoint: Annotated[str, typer.Option(help="S3 endpoint (MinIO)")] = "http://minio:9000",
) -> None:
    """Print `export` lines for a production process (secrets freshly generated: store them, don't commit)."""
    from backdrop.profiles import production_env

    values = production_env(
        airflow_db_url=f"postgresql+psycopg2://airflow:${{AIRFLOW_DB_PASSWORD}}@{postgres}/airflow",
        redis_url=redis_url, mlflow_url=mlflow_url, dvc_remote_url=dvc_remote,
        execution_api_url=api_url.rstrip("/") + "/execution/", dvc_endpoint_url=dvc_endpoint)
    for key, value in values.items():
        typer.echo(f'export {key}="{value}"')
