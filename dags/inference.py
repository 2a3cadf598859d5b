"""backdrop_inference: photos dropped into the upload folder are cut out within seconds.

Event-driven, with no worker slot spent waiting: the Asset `backdrop_uploads` has an AssetWatcher
whose trigger (`backdrop.serving.trigger.UploadFolderTrigger`) runs in the Airflow triggerer and
scans the folder (`serve.upload_dir`, every `serve.watch_poke_s` seconds, asyncio) for files the
ledger has not settled. Each such event schedules one run of this DAG; its task processes the folder
with the same code as `backdrop watch` (`UploadProcessor.run_once`): folder lock, sha256 ledger,
atomic outputs, retries then `failed/`, review routing, prediction log. So every photo is processed
exactly once, however many events arrive, and a run killed midway is completed by the next one.

Run the triggerer (`airflow triggerer`, part of `airflow standalone`) for the watcher to fire.
Parsing imports only the stdlib, the Airflow SDK, the trigger module (stdlib + Airflow) and
`backdrop.config` (params.yaml read as the CLI reads it: YAML 1.2, errors name the key).
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import pendulum
from airflow.sdk import Asset, AssetWatcher, dag, task

from backdrop.config import load_params
from backdrop.serving.trigger import UploadFolderTrigger

PROJECT_DIR = Path(os.environ.get("BACKDROP_PROJECT_DIR") or Path(__file__).resolve().parents[1])


PARAMS_FILE = Path(os.environ.get("BACKDROP_PARAMS") or PROJECT_DIR / "params.yaml")
_params = load_params(PARAMS_FILE)
UPLOAD_DIR = _params.serve.upload_dir
UPLOAD_DIR = UPLOAD_DIR if UPLOAD_DIR.is_absolute() else PROJECT_DIR / UPLOAD_DIR

UPLOADS = Asset(
    name="backdrop_uploads",
    uri=UPLOAD_DIR.as_uri(),
    watchers=[AssetWatcher(
        name="backdrop_upload_folder",
        trigger=UploadFolderTrigger(str(UPLOAD_DIR), poke_interval=_params.serve.watch_poke_s,
                                    settle_s=_params.serve.watch_settle_s),
    )],
)


@task(retries=_params.airflow.retries, retry_delay=timedelta(seconds=30))
def cut_out_uploads() -> dict:
    """One pass over the upload folder: every new photo → cut-out or review queue or failed/."""
    os.environ.setdefault("BACKDROP_PROJECT_DIR", str(PROJECT_DIR))
    from backdrop.serving.watch import from_params, summary

    processor = from_params(load_params(PARAMS_FILE), upload_dir=UPLOAD_DIR)
    stats = processor.run_once()
    return {"run": stats.as_dict(), "ledger": summary(UPLOAD_DIR)}


@dag(
    dag_id="backdrop_inference",
    schedule=[UPLOADS],
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,  # runs queue up; the folder lock would serialise them anyway
    tags=["backdrop", "inference"],
    doc_md=__doc__,
)
def backdrop_inference():
    cut_out_uploads()


backdrop_inference()
