"""API load: N concurrent clients post product photos to a real `backdrop serve` for D seconds,
then the same to the real `rembg s` (the rembg server, same stock u2netp weights) for comparison.

Reports requests/s, p50/p95/max latency, errors, and the server's resident memory at start and end
(bounded memory = no growth beyond the first requests' working set); `vs_rembg` holds rembg's figures
and `target_met` = backdrop ≥ 2× rembg's requests/s (issue 23). The backdrop server runs requests
through parallel lanes (`remove.workers`, one 1-thread session each), as `backdrop remove` does.
rembg runs from its own venv (bench/rembg_bench.py makes it). Writes bench/results/api_load.json.

    .venv/bin/python bench/api_load.py [--clients 4] [--seconds 30] [--model official:u2netp] [--no-rembg]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def start_server(model: str, project: Path) -> tuple[subprocess.Popen, int]:
    """The server runs in a scratch project (its prediction log and review queue land there)."""
    shutil.copyfile(ROOT / "params.yaml", project / "params.yaml")
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "BACKDROP_PROJECT_DIR": str(project)}
    env.pop("BACKDROP_API_TOKEN", None)
    proc = subprocess.Popen([str(Path(sys.executable).parent / "backdrop"), "serve", "--model", model,
                             "--host", "127.0.0.1", "--port", "0"], cwd=project, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    for line in proc.stdout:
        m = re.search(r"Uvicorn running on http://127\.0\.0\.1:(\d+)", line)
        if m:
            threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()
            return proc, int(m.group(1))
    raise RuntimeError("server did not start")


def rss_mb(pid: int) -> float:
    import psutil

    return psutil.Process(pid).memory_info().rss / 2**20


def start_rembg(rembg_py: Path, home: Path) -> tuple[subprocess.Popen, int]:
    """`rembg s` on a free port with the stock model in place; ready when its API answers."""
    import socket

    import httpx

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("U2NET")}, "REMBG_HOME": str(home)}
    proc = subprocess.Popen([str(rembg_py.parent / "rembg"), "s", "--host", "127.0.0.1", "--port", str(port),
                             "--no-ui", "--log_level", "warning"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/openapi.json", timeout=2).status_code == 200:
                return proc, port
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise SystemExit(f"rembg s exited with {proc.returncode}")
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGTERM)
    raise SystemExit("rembg s did not start in 180 s")


def drive(url: str, path: str, photos: list[bytes], clients: int, seconds: float, pid: int,
          extra: dict | None = None) -> dict:
    """`clients` threads posting photos for `seconds`: requests/s, latency percentiles, errors, RSS."""
    import httpx

    with httpx.Client(base_url=url, timeout=300) as c:  # warm-up (model load)
        c.post(path, files={"file": ("p.jpg", photos[0], "image/jpeg")}, data=extra or {}).raise_for_status()
    rss_start = rss_mb(pid)
    latencies: list[float] = []
    errors: list[str] = []
    rss_peak = [rss_start]
    stop = time.monotonic() + seconds

    def client(k: int) -> None:
        with httpx.Client(base_url=url, timeout=300) as c:
            i = k
            while time.monotonic() < stop:
                t = time.perf_counter()
                r = c.post(path, files={"file": (f"p{i}.jpg", photos[i % len(photos)], "image/jpeg")},
                           data=extra or {})
                latencies.append(time.perf_counter() - t)
                if r.status_code != 200:
                    errors.append(f"{r.status_code}: {r.text[:200]}")
                i += 1

    samples: list[tuple[float, float]] = []  # (seconds since start, server RSS MiB), every second

    def sample() -> None:
        while time.monotonic() < stop:
            rss = rss_mb(pid)
            rss_peak[0] = max(rss_peak[0], rss)
            samples.append((time.monotonic() - t0, rss))
            time.sleep(1)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    threads.append(threading.Thread(target=sample, daemon=True))
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads[:-1]:
        t.join()
    wall = time.monotonic() - t0
    lat = sorted(latencies)
    # Bounded memory: after the working set has grown in, the second half of the run peaks no
    # higher than the first half (+5 % for allocator noise).
    quarters = [max([r for t, r in samples if q * wall / 4 <= t < (q + 1) * wall / 4] or [float("nan")])
                for q in range(4)]
    first_half, second_half = max(quarters[:2]), max(quarters[2:])
    return {
        "clients": clients, "seconds": round(wall, 1), "requests": len(lat), "errors": len(errors),
        "error_samples": errors[:3], "requests_per_s": round(len(lat) / wall, 3),
        "latency_s": {"p50": round(statistics.median(lat), 3),
                      "p95": round(lat[min(len(lat) - 1, int(0.95 * len(lat)))], 3), "max": round(lat[-1], 3)},
        "server_rss_mb": {"after_warmup": round(rss_start, 1), "peak": round(rss_peak[0], 1),
                          "end": round(rss_mb(pid), 1), "peak_per_quarter": [round(q, 1) for q in quarters]},
        "memory_bounded": bool(second_half <= 1.05 * first_half),
    }


def main(argv: list[str] | None = None) -> int:
    import httpx

    from backdrop.data.synth import render_item

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--model", default="official:u2netp")
    ap.add_argument("--no-rembg", action="store_true", help="skip the rembg s comparison")
    ap.add_argument("--rembg-venv", type=Path, default=Path(os.environ.get("REMBG_VENV", ROOT / ".venv-rembg")))
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "api_load.json")
    args = ap.parse_args(argv)

    photos = []
    for i in range(8):
        photo, _, _ = render_item(77, i, min_side=800, max_side=1200)
        buf = io.BytesIO()
        photo.save(buf, format="JPEG", quality=90)
        photos.append(buf.getvalue())
    scratch = tempfile.TemporaryDirectory(prefix="backdrop-api-load-")
    proc, port = start_server(args.model, Path(scratch.name))
    url = f"http://127.0.0.1:{port}"
    try:
        report = drive(url, "/v1/remove", photos, args.clients, args.seconds, proc.pid)
        health = httpx.get(f"{url}/healthz", timeout=30).json()
        report.update({"photo_sides": [800, 1200], "model": args.model, "loadavg_at_end": list(os.getloadavg()),
                       "server_model": health.get("model")})
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(20)
    errors = report["errors"]
    if not args.no_rembg:
        from rembg_bench import rembg_home, rembg_python

        rembg_py = rembg_python(args.rembg_venv)
        rproc, rport = start_rembg(rembg_py, rembg_home(Path(scratch.name) / "rembg-home"))
        try:
            theirs = drive(f"http://127.0.0.1:{rport}", "/api/remove", photos, args.clients, args.seconds,
                           rproc.pid, extra={"model": "u2netp"})
        finally:
            os.killpg(rproc.pid, signal.SIGTERM)
            rproc.wait(20)
        ratio = report["requests_per_s"] / max(theirs["requests_per_s"], 1e-9)
        report["vs_rembg"] = {"server": "rembg s (rembg[cpu,cli] 2.0.86, requirements/rembg-bench.txt)", **theirs}
        report["speedup_vs_rembg"] = round(ratio, 3)
        report["target"] = f"requests/s with {args.clients} concurrent clients >= 2x rembg s"
        report["target_met"] = bool(ratio >= 2.0 and not errors)
    scratch.cleanup()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0 if not errors else 1


if __name__ == "__main__":
    raise SystemExit(main())
