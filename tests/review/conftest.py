"""A review station on a throw-away project: real photos cut out by the real watcher, a real server.

Photos are rendered packshots; `UploadProcessor` (the `backdrop watch` code) cuts them out with the
official U²-NetP weights (at 320 px, as served), routes one folder entirely (review_threshold 1.0) and publishes
the other with an audit share of 1.0, so the queue holds routed and audit items exactly as
production fills it. The station runs under uvicorn in a thread of the test process.
"""

from __future__ import annotations

import os
import socket
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.browser import wait_until_up

REPO = Path(__file__).resolve().parents[2]
USER, PASSWORD = "alice", "correct horse battery"
N_ROUTED, N_AUDIT = 4, 2


@dataclass
class Station:
    url: str
    project: Path
    params: object


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_params(project: Path, users: dict[str, str]) -> Path:
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["monitoring"].update({"db_url": "sqlite:///monitoring/monitoring.db", "store_dir": "monitoring/store",
                              "min_samples": 2})
    raw["serve"].update({"review_dir": "review", "out_dir": "cutouts", "format": "rgba"})
    raw["mlflow"]["tracking_uri"] = "sqlite:///mlflow/mlflow.db"
    raw["cluster"]["out_dir"] = "data/clusters"
    raw["review"]["users"] = users
    project.mkdir(parents=True, exist_ok=True)
    path = project / "params.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def station(tmp_path_factory):
    from backdrop.config import load_params
    from backdrop.review.app import create_app
    from backdrop.review.auth import hash_password
    from backdrop.serving.watch import UploadProcessor
    from tests.serving.conftest import write_photos

    project = tmp_path_factory.mktemp("station")
    saved = {k: os.environ.get(k) for k in ("BACKDROP_PROJECT_DIR", "BACKDROP_MONITORING_DB", "MLFLOW_TRACKING_URI",
                                            "BACKDROP_REVIEW_SECRET")}
    os.environ["BACKDROP_PROJECT_DIR"] = str(project)
    os.environ.pop("BACKDROP_MONITORING_DB", None)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    os.environ["BACKDROP_REVIEW_SECRET"] = "test-secret-for-the-review-station"
    params = load_params(write_params(project, {USER: hash_password(PASSWORD)}))
    for folder, n, seed, threshold, share in (("up-routed", N_ROUTED, 11, 1.0, 0.0), ("up-audit", N_AUDIT, 12, 0.0, 1.0)):
        write_photos(project / folder, n, seed, 160, 240)
        stats = UploadProcessor(project / folder, project / "cutouts", project / "review", model="official:u2netp",
                                review_threshold=threshold, audit_share=share, settle_s=0.0,
                                params=params).run_once()
        assert stats.failed == 0, stats

    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(params), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    wait_until_up(f"{url}/healthz", 30, "review station")
    try:
        yield Station(url, project, params)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
