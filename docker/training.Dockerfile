# syntax=docker/dockerfile:1.7
# backdrop training image, CPU: torch 2.13 CPU + Horovod 0.28.1 (Gloo controller) built from its sdist
# with the C++14→17 patch (scripts/install_horovod.sh, the same script `make install` runs).
# Single host:   docker run backdrop-training backdrop train
# Across hosts:  horovodrun --gloo -np 8 -H host1:4,host2:4 backdrop-train-hvd …   (see docs/scaling.md)
# Build from the repository root:  docker build -f docker/training.Dockerfile -t backdrop-training .

FROM python:3.11.14-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake=3.25.1-1 g++=4:12.2.0-3 make=4.3-4.1 \
 && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/venv
WORKDIR /src
COPY requirements/ requirements/
RUN pip install -c requirements/build.txt pip setuptools wheel \
 && pip install --index-url https://download.pytorch.org/whl/cpu "torch==2.13.0"
COPY pyproject.toml README.md ./
COPY src/ src/
COPY scripts/install_horovod.sh scripts/
RUN pip install -c requirements/constraints.txt . "dvc-s3==3.3.0" \
 && BACKDROP_CACHE=/tmp/backdrop-cache bash scripts/install_horovod.sh /opt/venv \
 && rm -rf /tmp/backdrop-cache

FROM python:3.11.14-slim-bookworm AS runtime
# openssh-client: horovodrun starts remote ranks over ssh; git: DVC work tree.
RUN apt-get update \
 && apt-get install -y --no-install-recommends git=1:2.39.5-0+deb12u3 openssh-client=1:9.2p1-2+deb12u10 \
      tini=0.19.0-1+b3 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --uid 10001 --create-home --home-dir /home/backdrop backdrop
COPY --from=build /opt/venv /opt/venv
COPY --chown=backdrop:backdrop dvc.yaml params.yaml /workspace/
COPY --chown=backdrop:backdrop src/ /workspace/src/
COPY --chown=backdrop:backdrop .dvc/config /workspace/.dvc/config
COPY --chown=backdrop:backdrop data/cluster_overrides.csv /workspace/data/cluster_overrides.csv
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 BACKDROP_PROJECT_DIR=/workspace BACKDROP_PROFILE=production \
    OMP_NUM_THREADS=4
USER 10001
WORKDIR /workspace
HEALTHCHECK --interval=60s --timeout=30s --retries=3 \
  CMD ["python", "-c", "import torch, horovod.torch, backdrop.stages.train, backdrop.training.launcher"]
ENTRYPOINT ["tini", "--"]
CMD ["backdrop", "train"]
