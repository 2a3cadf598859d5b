"""Serving fixtures: a throw-away project dir, a real uvicorn server in a subprocess, test photos.

The official U²-NetP weights (`official:u2netp`) serve every test, so nothing here needs a trained
or registered model; its ONNX graphs ship inside the package (`backdrop/weights/`, issue 23).
"""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
TOKEN = "test-token-7"


def write_project(dest: Path, serve: dict | None = None, monitoring: dict | None = None) -> Path:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["serve"].update(serve or {})
    params["monitoring"].update(monitoring or {})
    params["mlflow"]["tracking_uri"] = "sqlite:///mlflow/mlflow.db"
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return dest


def env_for(project: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW", "BACKDROP"))}
    env.update({"BACKDROP_PROJECT_DIR": str(project), "PYTHONUNBUFFERED": "1", "TQDM_DISABLE": "1",
                "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}", **extra})
    return env


def jpeg_bytes(size=(300, 400), seed: int = 1, index: int = 0) -> bytes:
    from backdrop.data.synth import render_item

    photo, _mask, _ = render_item(seed, index, min_side=min(size), max_side=max(size))
    buf = io.BytesIO()
    photo.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def write_photos(folder: Path, n: int, seed: int, min_side: int, max_side: int) -> dict[str, tuple[int, int]]:
    """n rendered product photos as JPEGs p000.jpg…; returns stem → (width, height)."""
    from backdrop.data.synth import render_item

    folder.mkdir(parents=True, exist_ok=True)
    sizes = {}
    for i in range(n):
        photo, _mask, _ = render_item(seed, i, min_side=min_side, max_side=max_side)
        photo.save(folder / f"p{i:03d}.jpg", quality=90)
        sizes[f"p{i:03d}"] = photo.size
    return sizes


class Server:
    """`backdrop serve` on an ephemeral 127.0.0.1 port, in its own process group."""

    def __init__(self, project: Path, model: str, env: dict[str, str] | None = None, timeout: float = 240):
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [str(BIN / "backdrop"), "serve", "--model", model, "--host", "127.0.0.1", "--port", "0"],
            cwd=project, env=env_for(project, **(env or {})), stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, start_new_session=True)
        found = threading.Event()
        self.port = 0

        def pump() -> None:
            for line in self.proc.stdout:
                self.lines.append(line)
                m = re.search(r"Uvicorn running on http://127\.0\.0\.1:(\d+)", line)
                if m:
                    self.port = int(m.group(1))
                    found.set()

        threading.Thread(target=pump, daemon=True).start()
        deadline = time.monotonic() + timeout
        while not found.wait(0.5):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError("server did not start:\n" + "".join(self.lines[-60:]))
        self.url = f"http://127.0.0.1:{self.port}"
        self.client = httpx.Client(base_url=self.url, timeout=120)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)


@pytest.fixture(scope="session")
def api_project(tmp_path_factory) -> Path:
    return write_project(tmp_path_factory.mktemp("api"),
                         serve={"max_upload_bytes": 2_000_000, "review_threshold": 0.5, "refresh_s": 0},
                         monitoring={"record_predictions": True})


@pytest.fixture(scope="session")
def server(api_project):
    srv = Server(api_project, "official:u2netp", env={"BACKDROP_API_TOKEN": TOKEN})
    yield srv
    srv.stop()
