"""`pip install backdrop` and go (issue 23): the built wheel, installed core-only into a fresh venv,
cuts out photos from an empty folder with the bundled `official:u2netp`, by the CLI and by the
Python API, without torch (or MLflow, Airflow) installed."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.packaging.core_install import build_core_venv, clean_env, run, write_photos

pytestmark = pytest.mark.slow  # builds a wheel, makes a venv, installs packages, runs the CLI

N_PHOTOS = 10


@pytest.fixture(scope="module")
def core_venv(tmp_path_factory) -> dict:
    """The wheel built from this checkout, installed without extras into a new venv."""
    return build_core_venv(tmp_path_factory.mktemp("packaging"))


def _check_rgba(path: Path, size: tuple[int, int]) -> None:
    with Image.open(path) as im:
        assert im.mode == "RGBA" and im.size == size, (path, im.mode, im.size)
        alpha = np.asarray(im.getchannel("A"))
    opaque, clear = (alpha > 250).mean(), (alpha < 5).mean()
    assert 0.03 < opaque < 0.97 and clear > 0.03, (path, opaque, clear)  # a product found, not all or nothing


def test_core_install_has_no_platform(core_venv, tmp_path):
    py = core_venv["venv"] / "bin" / "python"  # run in an empty folder: the repo's mlflow/ store is a folder
    code = ("import importlib.util as u, json; print(json.dumps({m: u.find_spec(m) is not None for m in "
            "('torch', 'mlflow', 'airflow', 'dvc', 'great_expectations', 'evidently', 'fastapi', 'onnxruntime')}))")
    found = json.loads(run([py, "-c", code], cwd=tmp_path).stdout)
    assert found == {"torch": False, "mlflow": False, "airflow": False, "dvc": False, "great_expectations": False,
                     "evidently": False, "fastapi": False, "onnxruntime": True}
    proc = subprocess.run([py, "-c", "import torch"], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode != 0 and "No module named 'torch'" in proc.stderr


def test_cli_from_an_empty_folder(core_venv, tmp_path):
    sizes = write_photos(tmp_path / "photos", N_PHOTOS)
    here = tmp_path / "empty"
    here.mkdir()
    proc = run([core_venv["venv"] / "bin" / "backdrop", "remove", tmp_path / "photos", "-o", "cutouts",
                "-m", "official:u2netp"], cwd=here, env=clean_env(tmp_path), timeout=600)
    assert f"wrote {N_PHOTOS} file(s)" in proc.stdout
    assert "model: official:u2netp" in proc.stderr
    assert sorted(p.name for p in here.iterdir()) == ["cutouts"]  # no params, no monitoring DB, no copies
    for stem, size in sizes.items():
        _check_rgba(here / "cutouts" / f"{stem}.png", size)
    # without --model: the stock model, with a notice saying so
    default = run([core_venv["venv"] / "bin" / "backdrop", "remove", tmp_path / "photos" / "p00.jpg", "-o", "d"],
                  cwd=here, env=clean_env(tmp_path), timeout=300)
    assert "model: official:u2netp (the stock model" in default.stderr
    # how long install + remove take is measured by bench/install_bench.py (bench/results/install.json)


def test_python_api_from_an_empty_folder(core_venv, tmp_path):
    sizes = write_photos(tmp_path / "photos", 3)
    here = tmp_path / "empty"
    here.mkdir()
    script = f"""
import io, sys
from pathlib import Path
import numpy as np
from PIL import Image
import backdrop
assert "onnxruntime" not in sys.modules
photos = sorted(Path({str(tmp_path / "photos")!r}).glob("*.jpg"))
png = backdrop.remove(photos[0].read_bytes())                      # bytes -> PNG bytes
Path("p00.png").write_bytes(png)
session = backdrop.new_session("official:u2netp")
session.remove(Image.open(photos[1])).save("p01.png")              # PIL -> PIL
arr = session.remove(np.asarray(Image.open(photos[2]).convert("RGB")))  # array -> array
Image.fromarray(arr).save("p02.png")
print(session.model, "torch" in sys.modules, "mlflow" in sys.modules)
"""
    proc = run([core_venv["venv"] / "bin" / "python", "-c", script], cwd=here, env=clean_env(tmp_path),
                timeout=300)
    assert proc.stdout.split() == ["official:u2netp", "False", "False"]
    assert sorted(p.name for p in here.iterdir()) == ["p00.png", "p01.png", "p02.png"]
    for stem, size in sizes.items():
        _check_rgba(here / f"{stem}.png", size)
