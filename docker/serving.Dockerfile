# syntax=docker/dockerfile:1.7
# backdrop serving image: the HTTP API (`backdrop serve`, FastAPI + uvicorn) on onnxruntime only —
# no torch, no Airflow, no MLflow server (~250 MB instead of ~2 GB). The package is installed with
# --no-deps and every module it imports lazily for serving is in docker/requirements-serving.txt.
# Models: an exported ONNX file mounted at /models (or fetched from the registry by the API).
# Build from the repository root:  docker build -f docker/serving.Dockerfile -t backdrop-serving .

FROM python:3.11.14-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv
WORKDIR /src
COPY docker/requirements-serving.txt docker/
RUN pip install -r docker/requirements-serving.txt
COPY pyproject.toml README.md ./
COPY src/ src/
RUN pip install --no-deps . \
 && python -c "import onnxruntime, fastapi, backdrop.cli" \
 && python -c "import importlib.util as u, sys; sys.exit(u.find_spec('torch') is not None)"

FROM python:3.11.14-slim-bookworm AS runtime
RUN useradd --uid 10001 --create-home --home-dir /home/backdrop backdrop \
 && mkdir -p /models && chown backdrop /models
COPY --from=build /opt/venv /opt/venv
COPY --chmod=755 docker/healthcheck.py /usr/local/bin/backdrop-healthcheck
COPY --chown=backdrop:backdrop params.yaml /srv/backdrop/params.yaml
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 BACKDROP_PROJECT_DIR=/srv/backdrop BACKDROP_PROFILE=production \
    BACKDROP_ROLE=serving PORT=8000 OMP_NUM_THREADS=1
USER 10001
WORKDIR /srv/backdrop
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 CMD ["backdrop-healthcheck"]
CMD ["backdrop", "serve", "--host", "0.0.0.0", "--port", "8000"]
