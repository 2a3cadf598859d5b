"""How fast the review station lists a queue of 1,000 routed photos (issue: under a second).

A throw-away project gets 1,000 routed photos the way the watcher queues them (`ReviewQueue.add`:
photo + cut-out files and a queue.csv row each) and their prediction-log rows (6 clusters, 2 model
versions). Then the station (the real FastAPI app, in process) is signed into and `/queue` is timed:
the first request (which mirrors the 1,000 new CSV rows into the database), steady-state requests at
the default page size, the whole queue on one page, and filtered views.

    .venv/bin/python bench/review_bench.py [--n 1000] [--out bench/results/review_queue.json]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import re
import statistics
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]


def timed(fn, repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "review_queue.json")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="review-bench-"))
    os.environ["BACKDROP_PROJECT_DIR"] = str(tmp)
    os.environ.pop("BACKDROP_MONITORING_DB", None)
    os.environ["BACKDROP_REVIEW_SECRET"] = "bench"
    from PIL import Image

    from backdrop.config import load_params
    from backdrop.data.predlog import Prediction, sessions, utcnow
    from backdrop.review.auth import hash_password
    from backdrop.serving.review import Confidence, ReviewQueue

    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["monitoring"].update({"db_url": "sqlite:///monitoring/monitoring.db", "store_dir": "monitoring/store"})
    raw["serve"].update({"review_dir": "review", "out_dir": "cutouts"})
    raw["review"]["users"] = {"bench": hash_password("bench")}
    (tmp / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    params = load_params(tmp / "params.yaml")

    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (48, 48, 4), dtype=np.uint8), mode="RGBA").save(buf, format="PNG")
    cut = buf.getvalue()
    queue = ReviewQueue(tmp / "review")
    t0 = time.perf_counter()
    preds = []
    now = utcnow()
    for i in range(args.n):
        sha = f"{i:08x}" + "ab" * 28
        conf = float(rng.uniform(0.3, 0.94))
        queue.add(f"product-{i:04d}.jpg", sha, b"\xff\xd8 photo bytes", cut, ".png", Confidence(conf, 1 - conf, None),
                  "models:/backdrop-u2net@champion")
        preds.append(Prediction(image_id=sha[:16], image_sha256=sha, stem=f"product-{i:04d}", source_path="-",
                                image_path="-", model_uri="models:/backdrop-u2net@champion",
                                model_version=str(1 + i % 2), model_alias="champion", cluster=i % 6,
                                cluster_name=f"cluster {i % 6}", confidence=conf, mask_sha256="-", mask_path="-",
                                width=1000, height=1000, brightness=0.5, contrast=0.2, coverage=0.3,
                                created_at=now - timedelta(minutes=args.n - i)))
    with sessions(params.monitoring)() as s, s.begin():
        s.add_all(preds)
    fill_s = time.perf_counter() - t0

    from fastapi.testclient import TestClient

    from backdrop.review.app import create_app

    client = TestClient(create_app(params))
    login = client.get("/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', login.text).group(1)
    assert client.post("/login", data={"csrf": csrf, "username": "bench", "password": "bench"},
                       follow_redirects=False).status_code == 303

    def get(url: str, rows: int | None = None, c=client):
        r = c.get(url)
        assert r.status_code == 200, (url, r.status_code)
        if rows is not None:
            got = r.text.count("<tr class=")
            assert got == rows, (url, got, rows)

    first = timed(lambda: get("/queue", params.review.page_size), 1)[0]  # mirrors 1,000 new CSV rows
    page = timed(lambda: get("/queue", params.review.page_size), args.repeat)
    everything = timed(lambda: get("/queue?order=newest&max_age_h=48"), args.repeat)
    filtered = timed(lambda: get("/queue?cluster=3&model=2&order=newest"), args.repeat)
    # the whole queue on one page (review.page_size = n): every row rendered
    big = TestClient(create_app(params.model_copy(
        update={"review": params.review.model_copy(update={"page_size": args.n})})))
    big.cookies = client.cookies
    all_rows = timed(lambda: get("/queue", args.n, big), args.repeat)

    result = {
        "what": f"GET /queue of the review station with {args.n} routed photos waiting (in-process FastAPI, SQLite log)",
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU(s)",
        "n_routed": args.n,
        "fill_s": round(fill_s, 2),
        "first_request_with_csv_sync_s": round(first, 4),
        f"page_of_{params.review.page_size}_median_s": round(statistics.median(page), 4),
        f"page_of_{params.review.page_size}_max_s": round(max(page), 4),
        f"all_{args.n}_on_one_page_median_s": round(statistics.median(all_rows), 4),
        f"all_{args.n}_on_one_page_max_s": round(max(all_rows), 4),
        "newest_first_age_filter_median_s": round(statistics.median(everything), 4),
        "cluster_and_model_filter_median_s": round(statistics.median(filtered), 4),
        "under_one_second": max(first, max(page), max(all_rows)) < 1.0,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
