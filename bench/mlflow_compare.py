"""Screenshots of the MLflow UI comparing two training runs, per-cluster IoU side by side.

    .venv/bin/python bench/mlflow_compare.py [--project .] [--out docs/img] [--runs ID ID]

Starts a real `mlflow server` on the project's store (params.yaml `mlflow:`), opens the experiment's
compare view of two runs (default: the two latest finished training runs) in headless Chromium
(`tests/browser.py`) and saves `mlflow-compare.png` (run names, descriptions, parameters that differ)
and `mlflow-compare-metrics.png` (test IoU overall, per cluster and the gate's numbers). The three-night
test (tests/dags/test_three_nights.py) calls `capture` on its project.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import quote

REPO = Path(__file__).resolve().parents[1]
# the "Metrics" section at the top of the window, its grid scrolled so that the row of `arguments[0]`
# (test_iou_cluster_0, then the other clusters and test_iou_mean) is its first visible row
SCROLL_TO_METRIC = """
const row = arguments[0].parentElement;
let grid = row.parentElement;
while (grid && grid.scrollHeight <= grid.clientHeight + 2) grid = grid.parentElement;
const header = [...document.querySelectorAll('*')].filter(e => e.textContent.trim() === 'Metrics').pop();
if (header) header.scrollIntoView({block: 'start'});
if (!grid) return 0;
// names and values are two virtualised grids of the same height: scroll both to the row
const twins = [...document.querySelectorAll('*')].filter(e => e.scrollHeight === grid.scrollHeight
                                                        && e.clientHeight === grid.clientHeight);
twins.filter(e => e !== grid).forEach(e => { e.scrollTop = row.offsetTop; });
return twins.length;
"""
SYNC_NAMES = """
const row = arguments[0].parentElement;
let grid = row.parentElement;
while (grid && grid.scrollHeight <= grid.clientHeight + 2) grid = grid.parentElement;
if (grid && grid.scrollTop !== row.offsetTop) grid.scrollTop = row.offsetTop;
return grid ? grid.scrollTop : -1;
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(url: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mlflow server exited ({proc.returncode}) before answering {url}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"{url}: no answer within {timeout:.0f} s")


def _latest_runs(params) -> tuple[str, list[str]]:
    """The experiment id and its two latest finished runs with a test IoU (oldest first)."""
    import mlflow

    from backdrop import tracking

    tracking.setup(params)
    exp = mlflow.get_experiment_by_name(params.mlflow.experiment)
    if exp is None:
        raise RuntimeError(f"no MLflow experiment {params.mlflow.experiment!r}: run the pipeline first")
    runs = mlflow.search_runs([exp.experiment_id], filter_string="metrics.test_iou_mean >= 0",
                              order_by=["attributes.start_time DESC"], max_results=2, output_format="list")
    if len(runs) < 2:
        raise RuntimeError(f"experiment {exp.name!r} has {len(runs)} evaluated run(s); comparing needs two")
    return exp.experiment_id, [r.info.run_id for r in reversed(runs)]


def capture(project: Path, out_dir: Path, run_ids: list[str] | None = None, width: int = 1400,
            height: int = 1000) -> list[Path]:
    """Start the server, take the two screenshots, stop the server; returns the PNG paths."""
    sys.path.insert(0, str(REPO))
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from backdrop.config import load_params
    from tests.browser import chromium, screenshot

    project = Path(project).resolve()
    os.environ["BACKDROP_PROJECT_DIR"] = str(project)
    params = load_params(project / "params.yaml")
    if run_ids:
        import mlflow

        from backdrop import tracking

        tracking.setup(params)
        exp_id, runs = mlflow.get_run(run_ids[0]).info.experiment_id, list(run_ids)
    else:
        exp_id, runs = _latest_runs(params)
    from backdrop.config import tracking_uri

    port = _free_port()
    store = tracking_uri(params)
    cmd = [str(Path(sys.executable).parent / "mlflow"), "server", "--backend-store-uri", store,
           "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    proc = subprocess.Popen(cmd, cwd=project, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    shots: list[Path] = []
    try:
        base = f"http://127.0.0.1:{port}"
        _wait(f"{base}/health", proc)
        url = (f"{base}/#/compare-runs?runs={quote(json.dumps(runs))}"
               f"&experiments={quote(json.dumps([exp_id]))}")
        with chromium(width, height) as driver:
            driver.get(url)
            wait = WebDriverWait(driver, 90)
            # the metrics grid is virtualised: its rows are links "Plot chart" to each metric, in the DOM
            # before they are scrolled into its 300 px window
            link = 'a[href*="%22test_iou_cluster_0%22"]'
            wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, link))
            driver.execute_script(  # the assistant side panel would hide half the page
                "document.querySelectorAll('button[aria-label=Close]').forEach(b => b.click())")
            time.sleep(2)  # charts settle after the tables
            shots.append(screenshot(driver, out_dir / "mlflow-compare.png"))
            driver.execute_script(SCROLL_TO_METRIC, driver.find_element(By.CSS_SELECTOR, link))
            time.sleep(1)
            driver.execute_script(SYNC_NAMES, driver.find_element(By.CSS_SELECTOR, link))
            time.sleep(1)
            shots.append(screenshot(driver, out_dir / "mlflow-compare-metrics.png"))
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return shots


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--project", type=Path, default=Path.cwd(), help="project root (default: here)")
    ap.add_argument("--out", type=Path, default=REPO / "docs/img")
    ap.add_argument("--runs", nargs=2, metavar="RUN_ID", help="two run ids (default: the two latest)")
    args = ap.parse_args(argv)
    for path in capture(args.project, args.out, args.runs):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
