"""A core-only install of the wheel built from this checkout, in a fresh venv: shared by
tests/packaging/test_wheel.py (does it work?) and bench/install_bench.py (how long does it take?)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def run(cmd, **kw) -> subprocess.CompletedProcess:
    """Run `cmd`; a non-zero exit fails with the tail of its output."""
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)
    assert proc.returncode == 0, f"{cmd}: rc={proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def build_core_venv(work: Path) -> dict:
    """Build the wheel from a copy of src/ (setuptools writes build/ and *.egg-info beside the sources),
    then `pip install` it without extras into `work/venv`. Returns the paths and both durations."""
    src = work / "src"
    shutil.copytree(REPO / "src", src / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    t0 = time.perf_counter()
    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", str(src),
         "-w", work / "dist"])
    wheel = next((work / "dist").glob("backdrop-*.whl"))
    t1 = time.perf_counter()
    venv = work / "venv"
    run([sys.executable, "-m", "venv", venv])
    run([venv / "bin" / "pip", "install", "-q", "--disable-pip-version-check",
         "-c", REPO / "requirements" / "constraints.txt", wheel])
    t2 = time.perf_counter()
    return {"venv": venv, "wheel": wheel, "wheel_s": t1 - t0, "install_s": t2 - t1}


def write_photos(folder: Path, n: int) -> dict[str, tuple[int, int]]:
    """`n` synthetic product photos (500–900 px) as JPEG; returns each stem's size."""
    from backdrop.data.synth import render_item

    folder.mkdir(parents=True, exist_ok=True)
    sizes = {}
    for i in range(n):
        photo, _mask, _ = render_item(2323, i, min_side=500, max_side=900)
        photo.save(folder / f"p{i:02d}.jpg", quality=90)
        sizes[f"p{i:02d}"] = photo.size
    return sizes


def clean_env(home: Path) -> dict[str, str]:
    """The environment of a new user: no project, MLflow or Airflow settings, a fresh HOME (no caches)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BACKDROP", "MLFLOW", "AIRFLOW", "VIRTUAL_ENV"))}
    env.update(HOME=str(home), PYTHONNOUSERSITE="1", TQDM_DISABLE="1")
    return env
