"""A running server picks up a moved `champion` alias without a restart."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from .conftest import Server, env_for, jpeg_bytes, write_project

pytestmark = pytest.mark.slow  # `backdrop serve` (uvicorn) in a subprocess

REGISTER = """
import mlflow, torch
from mlflow import MlflowClient
from backdrop.config import load_params, tracking_uri
from backdrop.models import build_model
from backdrop.models.cutout import CutoutModel
from backdrop import tracking

p = load_params()
tracking.setup(p)
model = CutoutModel(build_model("u2netp", init="official"), 320, "u2netp").eval()
with mlflow.start_run() as run:
    mlflow.pytorch.log_model(model, name="model", serialization_format="pickle",
                             registered_model_name=p.register_.model_name,
                             pip_requirements=["torch", "backdrop"])
client = MlflowClient()
mlflow.register_model(f"runs:/{run.info.run_id}/model", p.register_.model_name)  # version 2, same weights
client.set_registered_model_alias(p.register_.model_name, "champion", "1")
"""


def test_server_follows_the_champion_alias(tmp_path):
    project = write_project(tmp_path / "reg", serve={"refresh_s": 1}, monitoring={"record_predictions": False})
    subprocess.run([sys.executable, "-c", REGISTER], cwd=project, env=env_for(project), check=True,
                   capture_output=True, timeout=300)
    server = Server(project, "champion")
    try:
        model = server.client.get("/healthz").json()["model"]
        assert (model["alias"], model["version"], model["reloads"]) == ("champion", "1", 0)
        assert model["source"] == "models:/backdrop-u2net/1"
        subprocess.run([sys.executable, "-c",
                        "from mlflow import MlflowClient; from backdrop.config import load_params, tracking_uri; "
                        "p = load_params(); MlflowClient(tracking_uri(p)).set_registered_model_alias("
                        "p.register_.model_name, 'champion', '2')"],
                       cwd=project, env=env_for(project), check=True, capture_output=True, timeout=120)
        deadline = time.monotonic() + 60
        while server.client.get("/healthz").json()["model"]["version"] != "2":
            assert time.monotonic() < deadline, "".join(server.lines[-40:])
            time.sleep(0.5)
        r = server.client.post("/v1/remove?format=mask", content=jpeg_bytes((200, 240), seed=8))
        assert r.status_code == 200 and r.headers["X-Backdrop-Model"] == "models:/backdrop-u2net/2"
        assert 'backdrop_model_reloads 1.0' in server.client.get("/metrics").text
        assert server.proc.pid and server.alive()  # same process throughout: no restart
    finally:
        server.stop()
