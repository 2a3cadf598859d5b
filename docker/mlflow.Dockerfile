# syntax=docker/dockerfile:1.7
# MLflow tracking server for the production profile: PostgreSQL backend store + registry,
# artifacts proxied to S3/MinIO (clients never need bucket credentials).
# Build from the repository root:  docker build -f docker/mlflow.Dockerfile -t backdrop-mlflow .

FROM python:3.11.14-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv
COPY docker/requirements-mlflow.txt /tmp/requirements-mlflow.txt
RUN pip install -r /tmp/requirements-mlflow.txt && python -c "import mlflow, psycopg2, boto3"

FROM python:3.11.14-slim-bookworm AS runtime
RUN useradd --uid 10002 --create-home --home-dir /home/mlflow mlflow
COPY --from=build /opt/venv /opt/venv
COPY --chmod=755 docker/healthcheck.py /usr/local/bin/backdrop-healthcheck
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 BACKDROP_ROLE=mlflow PORT=5000
USER 10002
WORKDIR /home/mlflow
EXPOSE 5000
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=5 CMD ["backdrop-healthcheck"]
# The backend store URI holds the DB password: it comes from the environment at run time (compose sets it).
CMD ["sh", "-c", "exec mlflow server --backend-store-uri \"$MLFLOW_BACKEND_STORE_URI\" --artifacts-destination \"$MLFLOW_ARTIFACTS_DESTINATION\" --serve-artifacts --host 0.0.0.0 --port 5000 --workers \"${MLFLOW_WORKERS:-2}\" --allowed-hosts \"${MLFLOW_ALLOWED_HOSTS:-mlflow,mlflow:5000,localhost,localhost:5000,127.0.0.1,127.0.0.1:5000}\""]
