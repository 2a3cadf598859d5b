"""Ingest (+ validate) memory benchmark: peak RSS stays flat from 500 to 5,000 pairs.

* data: `--n` (5,000) synthetic packshots (`render_item`, 256-320 px, JPEG q90 + PNG mask) written one
  at a time into a vendor drop (images/ + masks/) — generation streams too, nothing is held in RAM.
  The small drop (`--small`, 500) is the first pairs of the same set, hard-linked.
* measurement: each (drop size) runs in a fresh Python process that imports everything first
  (baseline RSS), then runs `ingest` and then `validate` (Great Expectations suite, quarantine,
  report) on its own project dir; `resource.getrusage(RUSAGE_SELF).ru_maxrss` (peak RSS) is read after
  imports, after ingest and after validate. Peak RSS of the two sizes is compared in the same run.

    .venv/bin/python bench/ingest_bench.py [--n 5000] [--small 500]   → bench/results/ingest.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "bench" / "results" / "ingest.json"

CHILD = r"""
import json, logging, os, resource, sys, time
from pathlib import Path
logging.disable(logging.WARNING)
os.environ["TQDM_DISABLE"] = "1"
from backdrop.config import IngestParams, ValidateParams
from backdrop.stages.ingest import ingest
from backdrop.stages import validate as validate_mod  # imports Great Expectations lazily on first use
validate_mod.gx_context()  # ... so import it now, inside the baseline
def peak_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
drop, project = Path(sys.argv[1]), Path(sys.argv[2])
os.environ["BACKDROP_PROJECT_DIR"] = str(project)
ip = IngestParams(drop_dir=drop, raw_dir=Path("data/raw"), vendor="bench", license="internal")
vp = ValidateParams(suite=Path(validate_mod.__file__).parents[1] / "expectations" / "pairs_suite.json",
                    out_dir=Path("data/validated"), quarantine_dir=Path("data/quarantine"), max_bad_share=1.0)
out = {"baseline_peak_mib": peak_mib()}
t = time.perf_counter()
r = ingest(ip)
out.update(ingest_s=time.perf_counter() - t, ingest_peak_mib=peak_mib(), added=r.added)
t = time.perf_counter()
v = validate_mod.validate(vp, ip)
out.update(validate_s=time.perf_counter() - t, validate_peak_mib=peak_mib(), good=v.good,
           quarantined=v.quarantined, reasons=v.reasons)
print(json.dumps(out))
"""


def generate(drop: Path, n: int, seed: int) -> float:
    from backdrop.data.synth import JPEG_QUALITY, render_item

    start = time.perf_counter()
    (drop / "images").mkdir(parents=True, exist_ok=True)
    (drop / "masks").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        photo, mask, item = render_item(seed, i, min_side=256, max_side=320)
        photo.save(drop / "images" / f"{item.stem}.jpg", format="JPEG", quality=JPEG_QUALITY)
        mask.save(drop / "masks" / f"{item.stem}.png", format="PNG")
    return time.perf_counter() - start


def link_subset(src: Path, dest: Path, n: int) -> None:
    for sub in ("images", "masks"):
        (dest / sub).mkdir(parents=True, exist_ok=True)
        for path in sorted((src / sub).iterdir())[:n]:
            os.link(path, dest / sub / path.name)


def measure(drop: Path, project: Path) -> dict:
    env = os.environ | {"PYTHONPATH": str(REPO / "src")}
    proc = subprocess.run([sys.executable, "-c", CHILD, str(drop), str(project)], capture_output=True,
                          text=True, env=env, timeout=3600)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--small", type=int, default=500)
    ap.add_argument("--seed", type=int, default=17)
    args = ap.parse_args()
    sys.path.insert(0, str(REPO / "src"))
    work = Path(tempfile.mkdtemp(prefix="ingest-bench-"))
    try:
        big, small = work / "drop-big", work / "drop-small"
        gen_s = generate(big, args.n, args.seed)
        link_subset(big, small, args.small)
        drop_mib = sum(p.stat().st_size for p in big.rglob("*") if p.is_file()) / 2**20
        print(f"generated {args.n} pairs ({drop_mib:.0f} MiB) in {gen_s:.0f} s", flush=True)
        runs = {}
        for n, drop in ((args.small, small), (args.n, big)):
            runs[str(n)] = measure(drop, work / f"project-{n}")
            print(f"{n} pairs: {runs[str(n)]}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    s, b = runs[str(args.small)], runs[str(args.n)]
    growth = {k: b[f"{k}_peak_mib"] - s[f"{k}_peak_mib"] for k in ("ingest", "validate")}
    result = {
        "benchmark": "peak RSS of ingest (+ validate) in a fresh process, small vs large drop",
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {"cores": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version()},
        "config": {"pairs_small": args.small, "pairs_large": args.n, "photo_sides_px": [256, 320],
                   "drop_mib_large": round(drop_mib, 1), "generate_s": round(gen_s, 1)},
        "runs": runs,
        "peak_growth_mib": {k: round(v, 1) for k, v in growth.items()},
        "peak_ratio": {k: round(b[f"{k}_peak_mib"] / s[f"{k}_peak_mib"], 3) for k in ("ingest", "validate")},
        "ingest_peak_above_baseline_mib": {n: round(r["ingest_peak_mib"] - r["baseline_peak_mib"], 1)
                                           for n, r in runs.items()},
        "flat": growth["ingest"] < 50 and growth["validate"] < 100,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("peak_growth_mib", "peak_ratio", "flat")}))
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
