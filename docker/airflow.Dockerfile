# syntax=docker/dockerfile:1.7
# backdrop Airflow image: ONE image for scheduler, api-server, dag-processor, triggerer and Celery
# worker (the command picks the role; docker/compose.yaml shows each). Workers run the stages, so the
# image holds the whole pipeline (torch CPU, DVC with S3, MLflow client).
# Build from the repository root:  docker build -f docker/airflow.Dockerfile -t backdrop-airflow .

FROM python:3.11.14-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv
WORKDIR /src
COPY requirements/ requirements/
COPY docker/requirements-production.txt docker/
# torch first, from the CPU index (PyPI's default Linux wheel is a multi-GB CUDA build).
RUN pip install --index-url https://download.pytorch.org/whl/cpu "torch==2.13.0" \
 && pip install -c requirements/constraints.txt -r docker/requirements-production.txt
COPY pyproject.toml README.md ./
COPY src/ src/
RUN pip install -c requirements/constraints.txt . \
 && python -c "import airflow.providers.celery, backdrop.cli, dvc_s3, asyncpg"

FROM python:3.11.14-slim-bookworm AS runtime
# git: DVC and the lineage tags need the project to be a git work tree. tini: PID 1 reaps children.
RUN apt-get update \
 && apt-get install -y --no-install-recommends git=1:2.39.5-0+deb12u3 tini=0.19.0-1+b3 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --uid 50000 --gid 0 --create-home --home-dir /home/airflow airflow
COPY --from=build /opt/venv /opt/venv
# The project skeleton the stages run in; the entrypoint copies it into the shared workspace volume.
COPY --chown=airflow:0 dvc.yaml params.yaml /opt/backdrop/
COPY --chown=airflow:0 dags/ /opt/backdrop/dags/
COPY --chown=airflow:0 src/ /opt/backdrop/src/
COPY --chown=airflow:0 .dvc/config /opt/backdrop/.dvc/config
COPY --chown=airflow:0 data/cluster_overrides.csv /opt/backdrop/data/cluster_overrides.csv
COPY --chmod=755 docker/airflow-entrypoint.sh /usr/local/bin/backdrop-entrypoint
COPY --chmod=755 docker/healthcheck.py /usr/local/bin/backdrop-healthcheck
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    AIRFLOW_HOME=/opt/airflow \
    BACKDROP_PROJECT_DIR=/workspace \
    BACKDROP_PROFILE=production \
    AIRFLOW__CORE__DAGS_FOLDER=/workspace/dags \
    AIRFLOW__CORE__LOAD_EXAMPLES=False \
    AIRFLOW__CORE__EXECUTOR=CeleryExecutor
RUN mkdir -p /opt/airflow /workspace && chown -R airflow:0 /opt/airflow /workspace && chmod -R g+rwX /opt/airflow /workspace
USER 50000
WORKDIR /workspace
EXPOSE 8080 8793
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=5 CMD ["backdrop-healthcheck"]
ENTRYPOINT ["tini", "--", "backdrop-entrypoint"]
CMD ["airflow", "scheduler"]
