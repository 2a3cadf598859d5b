#!/usr/bin/env bash
# Entry point of the backdrop Airflow image (every role). Roles:
#   airflow-init     migrate the metadata DB, seed the workspace, bootstrap DVC remote + MLflow experiment
#   anything else    exec'd as given (airflow scheduler | api-server | dag-processor | triggerer | celery worker)
# The workspace (/workspace) is a volume shared by all Airflow containers: stage outputs written by one
# task are read by the next, wherever it runs (see docs/scaling.md for multi-host deployments).
set -euo pipefail
WS=${BACKDROP_PROJECT_DIR:-/workspace}
export BACKDROP_AIRFLOW_ROLE=${BACKDROP_AIRFLOW_ROLE:-${2:-$1}}

seed_workspace() {
  if [ ! -f "$WS/dvc.yaml" ]; then
    cp -a /opt/backdrop/. "$WS/"
    git -C "$WS" init -q
    git -C "$WS" -c user.name=backdrop -c user.email=backdrop@localhost add -A
    git -C "$WS" -c user.name=backdrop -c user.email=backdrop@localhost commit -qm "backdrop workspace"
    echo "workspace seeded in $WS"
  fi
}

if [ "${1:-}" = "airflow-init" ]; then
  seed_workspace
  airflow db migrate
  (cd "$WS" && backdrop doctor bootstrap)
  airflow dags reserialize
  exec backdrop doctor
fi
exec "$@"
