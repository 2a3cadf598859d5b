"""`pip install backdrop` and go (issue 23): the built wheel, installed core-only into a fresh venv,
cuts out photos from an empty folder with the bundled `official:u2netp`, by the CLI and by the
Python API, without torch (or MLflow, Airflow) installed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.slow  # builds a wheel, makes a venv, installs packages, runs the CLI

REPO = Path(__file__).resolve().parents[2]
N_PHOTOS = 10


def _run(cmd, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)
    assert proc.returncode == 0, f"{cmd}: rc={proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def core_venv(tmp_path_factory) -> dict:
    """The wheel built from this checkout, installed without extras into a new venv (timed)."""
    work = tmp_path_factory.mktemp("packaging")
    src = work / "src"  # build from a copy: setuptools writes build/ and *.egg-info beside the sources
    shutil.copytree(REPO / "src", src / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    t0 = time.perf_counter()
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", str(src),
          "-w", work / "dist"])
    wheel = next((work / "dist").glob("backdrop-*.whl"))
    venv = work / "venv"
    _run([sys.executable, "-m", "venv", venv])
    _run([venv / "bin" / "pip", "install", "-q", "--disable-pip-version-check",
          "-c", REPO / "requirements" / "constraints.txt", wheel])
    installed = time.perf_counter() - t0
    return {"venv": venv, "wheel": wheel, "install_s": installed}


def _photos(folder: Path, n: int = N_PHOTOS) -> dict[str, tuple[int, int]]:
    from backdrop.data.synth import render_item

    folder.mkdir(parents=True, exist_ok=True)
    sizes = {}
    for i in range(n):
        photo, _mask, _ = render_item(2323, i, min_side=500, max_side=900)
        photo.save(folder / f"p{i:02d}.jpg", quality=90)
        sizes[f"p{i:02d}"] = photo.size
    return sizes


def _clean_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BACKDROP", "MLFLOW", "AIRFLOW", "VIRTUAL_ENV"))}
    env.update(HOME=str(home), PYTHONNOUSERSITE="1", TQDM_DISABLE="1")
    return env


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
    found = json.loads(_run([py, "-c", code], cwd=tmp_path).stdout)
    assert found == {"torch": False, "mlflow": False, "airflow": False, "dvc": False, "great_expectations": False,
                     "evidently": False, "fastapi": False, "onnxruntime": True}
    proc = subprocess.run([py, "-c", "import torch"], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode != 0 and "No module named 'torch'" in proc.stderr


def test_cli_from_an_empty_folder(core_venv, tmp_path):
    sizes = _photos(tmp_path / "photos")
    here = tmp_path / "empty"
    here.mkdir()
    t0 = time.perf_counter()
    proc = _run([core_venv["venv"] / "bin" / "backdrop", "remove", tmp_path / "photos", "-o", "cutouts",
                 "-m", "official:u2netp"], cwd=here, env=_clean_env(tmp_path), timeout=600)
    took = time.perf_counter() - t0
    assert f"wrote {N_PHOTOS} file(s)" in proc.stdout
    assert "model: official:u2netp" in proc.stderr
    assert sorted(p.name for p in here.iterdir()) == ["cutouts"]  # no params, no monitoring DB, no copies
    for stem, size in sizes.items():
        _check_rgba(here / "cutouts" / f"{stem}.png", size)
    # without --model: the stock model, with a notice saying so
    default = _run([core_venv["venv"] / "bin" / "backdrop", "remove", tmp_path / "photos" / "p00.jpg", "-o", "d"],
                   cwd=here, env=_clean_env(tmp_path), timeout=300)
    assert "model: official:u2netp (the stock model" in default.stderr
    print(f"install {core_venv['install_s']:.0f} s, remove of {N_PHOTOS} photos {took:.0f} s, "
          f"wheel {core_venv['wheel'].stat().st_size / 1e6:.1f} MB")
    assert core_venv["install_s"] + took < 240  # the target is 120 s on a quiet machine; this one is shared


def test_python_api_from_an_empty_folder(core_venv, tmp_path):
    sizes = _photos(tmp_path / "photos", 3)
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
    proc = _run([core_venv["venv"] / "bin" / "python", "-c", script], cwd=here, env=_clean_env(tmp_path),
                timeout=300)
    assert proc.stdout.split() == ["official:u2netp", "False", "False"]
    assert sorted(p.name for p in here.iterdir()) == ["p00.png", "p01.png", "p02.png"]
    for stem, size in sizes.items():
        _check_rgba(here / f"{stem}.png", size)
