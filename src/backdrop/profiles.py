"""Deployment profiles: `local` (the default) and `production`, switched by configuration only.

The same DAG file, the same stage functions and the same CLI run in both; a profile is nothing but
the environment those run in:

| concern            | local (default)                         | production                                       |
|--------------------|-----------------------------------------|--------------------------------------------------|
| Airflow metadata   | SQLite in `.airflow/`                   | PostgreSQL (`AIRFLOW__DATABASE__SQL_ALCHEMY_CONN`) |
| Airflow executor   | LocalExecutor                           | CeleryExecutor, Redis broker, PostgreSQL results |
| MLflow             | `sqlite:///mlflow/mlflow.db` + files    | tracking server (`MLFLOW_TRACKING_URI=http://…`), PostgreSQL backend store, proxied S3 artifacts |
| DVC remote         | `.dvc-storage/` directory               | object store (`BACKDROP_DVC_REMOTE_URL=s3://…`), written to `.dvc/config.local` |

The profile is chosen by `BACKDROP_PROFILE` (wins) or `profile.name` in params.yaml. Secrets are
read from the environment only (or Airflow's own `_CMD`/`_SECRET` variants), never from files in
the repository. `backdrop doctor` checks that the environment matches the active profile.
"""

from __future__ import annotations

import os
import secrets
import subprocess
from dataclasses import dataclass
from pathlib import Path

PROFILE_ENV = "BACKDROP_PROFILE"
DVC_REMOTE_ENV = "BACKDROP_DVC_REMOTE_URL"
DVC_ENDPOINT_ENV = "BACKDROP_DVC_ENDPOINT_URL"  # S3-compatible endpoint (MinIO); empty for AWS S3
DVC_REMOTE_NAME = "production"
PROFILES = ("local", "production")
OBJECT_STORE_SCHEMES = ("s3", "gs", "gcs", "azure", "oss", "webdav", "webdavs", "hdfs", "ssh", "http", "https")


class ProfileError(ValueError):
    """BACKDROP_PROFILE or profile.name holds something that is not a profile."""


@dataclass(frozen=True)
class Setting:
    """One environment variable the production profile needs."""

    env: str
    what: str
    example: str
    secret: bool = False
    prefixes: tuple[str, ...] = ()  # accepted value prefixes (empty: anything non-empty)


PRODUCTION_SETTINGS: tuple[Setting, ...] = (
    Setting("AIRFLOW__CORE__EXECUTOR", "Airflow executor", "CeleryExecutor", prefixes=("CeleryExecutor",)),
    Setting("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "Airflow metadata DB (PostgreSQL)",
            "postgresql+psycopg2://airflow:${AIRFLOW_DB_PASSWORD}@postgres:5432/airflow", secret=True,
            prefixes=("postgresql",)),
    Setting("AIRFLOW__CELERY__BROKER_URL", "Celery broker (Redis)", "redis://redis:6379/0", secret=True,
            prefixes=("redis://", "rediss://")),
    Setting("AIRFLOW__CELERY__RESULT_BACKEND", "Celery result backend (PostgreSQL)",
            "db+postgresql+psycopg2://airflow:${AIRFLOW_DB_PASSWORD}@postgres:5432/airflow", secret=True,
            prefixes=("db+postgresql",)),
    Setting("AIRFLOW__CORE__FERNET_KEY", "key that encrypts connection passwords",
            "\"$(python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())')\"",
            secret=True),
    Setting("AIRFLOW__API_AUTH__JWT_SECRET", "JWT secret shared by scheduler, API server and workers",
            "\"$(python -c 'import secrets; print(secrets.token_urlsafe(32))')\"", secret=True),
    Setting("AIRFLOW__API__SECRET_KEY", "API server session secret",
            "\"$(python -c 'import secrets; print(secrets.token_urlsafe(32))')\"", secret=True),
    Setting("AIRFLOW__CORE__EXECUTION_API_SERVER_URL", "where Celery workers reach the Task Execution API",
            "http://airflow-api-server:8080/execution/", prefixes=("http://", "https://")),
    Setting("MLFLOW_TRACKING_URI", "MLflow tracking server", "http://mlflow:5000",
            prefixes=("http://", "https://")),
    Setting(DVC_REMOTE_ENV, "DVC object-store remote", "s3://backdrop/dvc",
            prefixes=tuple(f"{s}://" for s in OBJECT_STORE_SCHEMES)),
)


def active_profile(params_file: str | Path | None = None) -> tuple[str, str]:
    """(profile, where it came from): $BACKDROP_PROFILE, else params.yaml `profile.name`, else local."""
    value = os.environ.get(PROFILE_ENV, "").strip()
    if value:
        if value not in PROFILES:
            raise ProfileError(f"{PROFILE_ENV}={value!r} is not a profile (choose one of {', '.join(PROFILES)})")
        return value, f"env {PROFILE_ENV}"
    from backdrop.config import ConfigError, load_params

    try:
        params = load_params(params_file)
    except ConfigError:
        return "local", "default (params.yaml unreadable)"
    return params.profile.name, "params.yaml profile.name"


def generate_secrets() -> dict[str, str]:
    """Fresh values for the production secrets (for a new deployment's secret store or a test)."""
    from cryptography.fernet import Fernet

    return {
        "AIRFLOW__CORE__FERNET_KEY": Fernet.generate_key().decode(),
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
        "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
    }


def production_env(*, airflow_db_url: str, redis_url: str, mlflow_url: str, dvc_remote_url: str,
                   execution_api_url: str, dvc_endpoint_url: str = "",
                   secret_values: dict[str, str] | None = None, queue: str = "default") -> dict[str, str]:
    """The environment of every production process (scheduler, API server, DAG processor, worker).

    `airflow_db_url` is a SQLAlchemy URL (postgresql+psycopg2://…); the Celery result backend goes to
    the same database. Secrets come from `secret_values` (default: freshly generated).
    """
    # Explicit driver: SQLAlchemy 2.1 made plain `postgresql://` mean psycopg 3, which is not installed.
    result_backend = "db+" + airflow_db_url.replace("postgresql://", "postgresql+psycopg2://", 1)
    env = {
        PROFILE_ENV: "production",
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": airflow_db_url,
        "AIRFLOW__CELERY__BROKER_URL": redis_url,
        "AIRFLOW__CELERY__RESULT_BACKEND": result_backend,
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": execution_api_url,
        "AIRFLOW__OPERATORS__DEFAULT_QUEUE": queue,
        "MLFLOW_TRACKING_URI": mlflow_url,
        DVC_REMOTE_ENV: dvc_remote_url,
    }
    if dvc_endpoint_url:
        env[DVC_ENDPOINT_ENV] = dvc_endpoint_url
    env.update(secret_values or generate_secrets())
    return env


def missing_settings(environ: dict[str, str] | None = None) -> list[tuple[Setting, str]]:
    """Production settings that are absent or malformed in `environ`, each with the reason."""
    environ = os.environ if environ is None else environ
    problems = []
    for s in PRODUCTION_SETTINGS:
        value = environ.get(s.env) or ""
        indirect = environ.get(s.env + "_CMD") or environ.get(s.env + "_SECRET")
        if not value and indirect and s.secret:
            continue  # Airflow reads it from a command / secrets backend
        if not value:
            problems.append((s, "not set"))
        elif s.prefixes and not value.startswith(s.prefixes):
            shown = "***" if s.secret else value
            problems.append((s, f"is {shown!r}, expected {' or '.join(p + '…' for p in s.prefixes)}"))
    return problems


def configure_dvc_remote(project: Path, url: str, endpoint_url: str = "", dvc: str = "dvc") -> str:
    """Make `url` the project's default DVC remote in `.dvc/config.local` (never the tracked .dvc/config).

    Credentials stay in the environment (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY for S3/MinIO).
    Returns the remote's name.
    """
    def _dvc(*args: str) -> None:
        subprocess.run([dvc, *args], cwd=project, check=True, capture_output=True, text=True)

    _dvc("remote", "add", "--local", "--force", "--default", DVC_REMOTE_NAME, url)
    if endpoint_url:
        _dvc("remote", "modify", "--local", DVC_REMOTE_NAME, "endpointurl", endpoint_url)
    return DVC_REMOTE_NAME


def ensure_mlflow_experiment(tracking_uri: str, name: str) -> str:
    """Create the experiment on a tracking server with the *server's* artifact root (proxied store).

    Without this, the first client to call `backdrop.tracking.setup` would create it with a local
    `file://` artifact location that only exists on that client's disk.
    """
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name(name)
    return exp.experiment_id if exp is not None else client.create_experiment(name)
