# syntax=docker/dockerfile:1.7
# backdrop training image, CUDA: torch 2.13 CUDA wheel + Horovod 0.28.1 with NCCL GPU operations
# (allreduce/allgather/broadcast on NCCL), Gloo and MPI controllers (MPI for Kubeflow MPIJob).
# NOT built or run here (no Docker engine, no GPU): the CUDA/NCCL combination below is the documented
# one for torch cu128 wheels; check `horovodrun --check-build` shows [X] NCCL after the first build.
# Build from the repository root:  docker build -f docker/training-cuda.Dockerfile -t backdrop-training:cuda .

FROM ghcr.io/astral-sh/uv:0.13.9 AS uv

FROM nvidia/cuda:12.8.1-cudnn-devel-ubuntu22.04 AS build
ENV DEBIAN_FRONTEND=noninteractive UV_PYTHON_INSTALL_DIR=/opt/python UV_LINK_MODE=copy \
    VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH
# Ubuntu's package versions move with its security updates: pinned by the CUDA image tag instead.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake g++ make git libopenmpi-dev openmpi-bin \
 && rm -rf /var/lib/apt/lists/*
COPY --from=uv /uv /usr/local/bin/uv
RUN uv python install 3.11.14 && uv venv --python 3.11.14 /opt/venv
WORKDIR /src
COPY requirements/ requirements/
ARG TORCH_INDEX=https://download.pytorch.org/whl/cu128
RUN uv pip install -c requirements/build.txt pip setuptools wheel \
 && uv pip install --index-url "$TORCH_INDEX" "torch==2.13.0"
COPY pyproject.toml README.md ./
COPY src/ src/
RUN uv pip install -c requirements/constraints.txt . "dvc-s3==3.3.0" "cloudpickle==3.1.3" "psutil==7.2.2" "cffi==2.1.1"
# Horovod from the sdist, C++14 -> C++17 (torch >= 2.1 needs 17), NCCL ops, built without a GPU present
# (the build only needs the toolkit; install_horovod.sh would pick Gloo-only when no GPU is visible).
RUN pip download --no-cache-dir --no-deps --no-binary :all: --no-build-isolation -d /tmp/hvd "horovod==0.28.1" \
 && tar -xzf /tmp/hvd/horovod-0.28.1.tar.gz -C /tmp/hvd \
 && sed -i 's/set(CMAKE_CXX_STANDARD 14)/set(CMAKE_CXX_STANDARD 17)/' \
      /tmp/hvd/horovod-0.28.1/CMakeLists.txt /tmp/hvd/horovod-0.28.1/horovod/torch/CMakeLists.txt
WORKDIR /tmp/hvd/horovod-0.28.1
RUN HOROVOD_GPU_OPERATIONS=NCCL HOROVOD_NCCL_LINK=SHARED HOROVOD_WITH_PYTORCH=1 HOROVOD_WITH_GLOO=1 \
    HOROVOD_WITH_MPI=1 HOROVOD_WITHOUT_TENSORFLOW=1 HOROVOD_WITHOUT_MXNET=1 \
    pip install --no-cache-dir --no-build-isolation --no-deps . \
 && python -c "import horovod.torch as h; assert h.nccl_built(), 'no NCCL'"
WORKDIR /src
RUN rm -rf /tmp/hvd

FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu22.04 AS runtime
ENV DEBIAN_FRONTEND=noninteractive
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends git openssh-client openssh-server openmpi-bin tini \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --uid 10001 --create-home --home-dir /home/backdrop backdrop
COPY --from=build /opt/python /opt/python
COPY --from=build /opt/venv /opt/venv
COPY --chown=backdrop:backdrop dvc.yaml params.yaml /workspace/
COPY --chown=backdrop:backdrop src/ /workspace/src/
COPY --chown=backdrop:backdrop .dvc/config /workspace/.dvc/config
COPY --chown=backdrop:backdrop data/cluster_overrides.csv /workspace/data/cluster_overrides.csv
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 BACKDROP_PROJECT_DIR=/workspace BACKDROP_PROFILE=production \
    NCCL_DEBUG=WARN
USER 10001
WORKDIR /workspace
HEALTHCHECK --interval=60s --timeout=30s --retries=3 \
  CMD ["python", "-c", "import torch, horovod.torch; assert horovod.torch.nccl_built()"]
ENTRYPOINT ["tini", "--"]
CMD ["backdrop", "train"]
