"""`pip install backdrop` and go, timed (issue 23 target: a fresh venv, `pip install` of the built wheel,
core only, then `backdrop remove` on 10 photos, within 2 minutes, without torch installed).

The wheel is built from this checkout (timed apart: a user downloads it), installed into a new venv with
the project's constraints, and `backdrop remove -m official:u2netp` cuts out 10 photos from an empty
folder with a fresh HOME (so the first run's one-off work is counted). pip's own download cache is kept,
as on any machine that installed a Python package before; `--no-cache` measures a cold one.

    .venv/bin/python bench/install_bench.py [--photos 10] [--no-cache] [--out bench/results/install.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "src"))

TARGET_S = 120.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photos", type=int, default=10)
    ap.add_argument("--no-cache", action="store_true", help="pip without its download cache (a cold machine)")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "install.json")
    args = ap.parse_args()

    from tests.packaging.core_install import build_core_venv, clean_env, run, write_photos

    if args.no_cache:
        os.environ["PIP_NO_CACHE_DIR"] = "1"
    work = Path(tempfile.mkdtemp(prefix="install-bench-"))
    load_start = os.getloadavg()
    try:
        built = build_core_venv(work)
        write_photos(work / "photos", args.photos)
        here = work / "empty"
        here.mkdir()
        t0 = time.perf_counter()
        run([built["venv"] / "bin" / "backdrop", "remove", work / "photos", "-o", "cutouts", "-q",
             "-m", "official:u2netp"], cwd=here, env=clean_env(work / "home"), timeout=1200)
        remove_s = time.perf_counter() - t0
        written = len(list((here / "cutouts").glob("*.png")))
        torch_present = (built["venv"] / "lib").glob("python*/site-packages/torch")
        venv_mb = sum(f.stat().st_size for f in built["venv"].rglob("*") if f.is_file()) / 1e6
        out = {
            "what": f"fresh venv + pip install of the core wheel, then `backdrop remove` of {args.photos} photos",
            "pip_cache": not args.no_cache,
            "wheel_build_s": round(built["wheel_s"], 1),
            "wheel_mb": round(built["wheel"].stat().st_size / 1e6, 2),
            "install_s": round(built["install_s"], 1),
            "remove_s": round(remove_s, 1),
            "install_plus_remove_s": round(built["install_s"] + remove_s, 1),
            "target_s": TARGET_S,
            "target_met": built["install_s"] + remove_s <= TARGET_S and written == args.photos,
            "cutouts_written": written,
            "torch_installed": any(True for _ in torch_present),
            "venv_mb": round(venv_mb),
            "loadavg_start": [round(v, 2) for v in load_start],
            "loadavg_end": [round(v, 2) for v in os.getloadavg()],
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
