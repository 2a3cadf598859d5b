"""The CLI is the library: commands map to stage functions and fail with clear messages."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

BACKDROP = Path(sys.executable).parent / "backdrop"

pytestmark = pytest.mark.slow  # every test runs the `backdrop` CLI in a subprocess


def test_help_lists_every_stage():
    out = subprocess.run([str(BACKDROP), "--help"], capture_output=True, text=True, check=True).stdout
    for command in ("ingest", "validate", "prepare", "cluster", "train", "evaluate", "register",
                    "remove", "data", "summary"):
        assert command in out


def test_bad_params_fail_with_key_and_reason(tmp_path):
    (tmp_path / "params.yaml").write_text("prepare:\n  size: 100\n")
    proc = subprocess.run([str(BACKDROP), "prepare", "--params", str(tmp_path / "params.yaml")],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2
    assert "prepare" in proc.stderr and "multiple of 32" in proc.stderr


def test_remove_without_a_champion_says_how_to_get_one(tmp_path):
    (tmp_path / "params.yaml").write_text("mlflow:\n  tracking_uri: sqlite:///mlflow.db\n")
    Image.new("RGB", (40, 30), "white").save(tmp_path / "shirt.jpg")
    env = {"PATH": "/usr/bin:/bin", "BACKDROP_PROJECT_DIR": str(tmp_path), "HOME": str(tmp_path)}
    proc = subprocess.run([str(BACKDROP), "remove", "shirt.jpg", "--out", "out", "--model", "champion"],
                          capture_output=True, text=True, cwd=tmp_path, env=env)
    assert proc.returncode == 1
    assert "backdrop-u2net@champion" in proc.stderr and "make demo" in proc.stderr
    assert "official:u2netp" in proc.stderr  # the model that needs no training
    assert not (tmp_path / "out" / "shirt.png").exists()
    assert not (tmp_path / "mlflow.db").exists()  # looking for the champion created no MLflow store
    # without --model, the stock model stands in, and says so (issue 23)
    proc = subprocess.run([str(BACKDROP), "remove", "shirt.jpg", "--out", "out"], capture_output=True,
                          text=True, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "official:u2netp (the stock model: this project has no registered champion yet)" in proc.stderr
    assert (tmp_path / "out" / "shirt.png").exists() and not (tmp_path / "mlflow.db").exists()


def test_remove_rejects_missing_input(tmp_path):
    (tmp_path / "params.yaml").write_text("remove:\n  format: rgba\n")
    proc = subprocess.run([str(BACKDROP), "remove", str(tmp_path / "nope.jpg"), "--out", str(tmp_path)],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 1 and "nope.jpg" in proc.stderr
