"""`backdrop watch DIR`: a burst of 50 photos is processed exactly once, also across kill -9."""

from __future__ import annotations

import hashlib
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from backdrop.serving.watch import embedded_sha

from .conftest import BIN, env_for, jpeg_bytes, write_project

N = 50


def _ledger_counts(upload: Path) -> dict[str, int]:
    path = upload / ".backdrop" / "ledger.sqlite"
    if not path.exists():
        return {}
    try:
        with sqlite3.connect(path, timeout=5) as db:
            return dict(db.execute("SELECT status, count(*) FROM files GROUP BY status").fetchall())
    except sqlite3.OperationalError:  # table not created yet
        return {}


def _start(project: Path, upload: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [str(BIN / "backdrop"), "watch", str(upload), "--out", str(project / "out"), "--model", "official:u2netp",
         "--size", "64", "--record"],
        cwd=project, env=env_for(project), stdout=subprocess.DEVNULL, stderr=open(project / "watch.log", "a"),  # noqa: SIM115
        start_new_session=True)


def _wait(cond, timeout: float, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert proc.poll() is None, f"watcher exited ({proc.returncode}):\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"timed out:\n{log.read_text()[-3000:]}"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def burst_photos() -> list[bytes]:
    return [jpeg_bytes((96, 160), seed=11, index=i) for i in range(N)]


@pytest.mark.slow  # `backdrop watch` subprocesses, one SIGKILLed
def test_burst_is_processed_exactly_once_across_a_kill(tmp_path, burst_photos):
    import json

    project = write_project(tmp_path / "p", serve={"review_threshold": 0.0, "watch_settle_s": 0.2},
                            monitoring={"record_predictions": True})
    upload = project / "uploads"
    upload.mkdir()
    log = project / "watch.log"
    proc = _start(project, upload)
    try:
        _wait(lambda: (upload / ".backdrop" / "lock").exists() and "watching" in log.read_text(), 240, proc, log)
        for i, data in enumerate(burst_photos):  # the burst: 50 files written at once, not atomically
            (upload / f"photo-{i:02d}.jpg").write_bytes(data)
        _wait(lambda: _ledger_counts(upload).get("done", 0) >= 1, 120, proc, log)
        os.killpg(proc.pid, signal.SIGKILL)  # mid-burst, no chance to clean up
        proc.wait(10)
        done_at_kill = _ledger_counts(upload).get("done", 0)
        assert done_at_kill < N, "the watcher finished before it could be killed"

        proc = _start(project, upload)  # restart: same folder, same ledger
        _wait(lambda: _ledger_counts(upload).get("done", 0) >= N, 240, proc, log)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)  # what systemd / docker stop send: a graceful stop
            proc.wait(20)
    assert proc.returncode == 0 and '"ledger"' in log.read_text().splitlines()[-1], log.read_text()[-2000:]
    # the restarted watcher's own account at its graceful stop (the batch in hand finished first): it
    # did exactly what the killed one left undone, published now or found published — nothing twice
    final = json.loads(log.read_text().splitlines()[-1])
    assert final["ledger"] == {"done": N}, final
    assert final["run"]["published"] + final["run"]["recovered"] == N - done_at_kill, final

    shas = {hashlib.sha256(d).hexdigest() for d in burst_photos}
    assert len(shas) == N
    outputs = sorted((project / "out").iterdir())
    assert [p.name for p in outputs] == [f"photo-{i:02d}.png" for i in range(N)]  # no temp files, no extras
    assert {embedded_sha(p) for p in outputs} == shas  # each output is its own photo's cut-out
    with sqlite3.connect(upload / ".backdrop" / "ledger.sqlite") as db:
        rows = db.execute("SELECT status, publications, routed FROM files").fetchall()
        assert len(rows) == N and all(r == ("done", 1, 0) for r in rows)  # published exactly once each
    assert not (upload / "failed").exists()
    with sqlite3.connect(project / "monitoring" / "monitoring.db") as db:
        logged = db.execute("SELECT count(DISTINCT image_sha256) FROM predictions").fetchone()[0]
    assert logged == N  # every cut-out is in the prediction log


def test_failures_are_retried_then_moved_with_a_reason_and_low_confidence_is_routed(tmp_path):
    import json

    from backdrop.config import load_params
    from backdrop.serving.review import ReviewQueue
    from backdrop.serving.watch import UploadProcessor

    upload = tmp_path / "up"
    upload.mkdir()
    good = jpeg_bytes((128, 160), seed=12)
    (upload / "good.jpg").write_bytes(good)
    (upload / "copy-of-good.jpg").write_bytes(good)  # same content: processed once
    (upload / "broken.jpg").write_bytes(good[: len(good) // 3])
    (upload / "readme.txt").write_text("not a photo")
    (upload / ".partial-upload.jpg").write_bytes(good)  # hidden/temp names are ignored
    past = time.time() - 5
    for p in upload.iterdir():
        os.utime(p, (past, past))

    def processor(threshold: float) -> UploadProcessor:
        return UploadProcessor(upload, tmp_path / "out", tmp_path / "review", model="official:u2netp", size=64,
                               retries=1, settle_s=0.2, review_threshold=threshold, record=False,
                               retry_delay_s=0.1, params=load_params())

    stats = processor(threshold=1.01).run_once()  # every confidence is below 1.01: all routed to review
    assert stats.failed == 2 and stats.retried == 2 and stats.routed == 1 and stats.published == 0
    assert stats.skipped == 1
    for name, reason in (("broken.jpg", "corrupt_file"), ("readme.txt", "not_an_image")):
        assert (upload / "failed" / name).exists() and not (upload / name).exists()
        report = json.loads((upload / "failed" / f"{name}.reason.json").read_text())
        assert report["reason"] == reason and report["attempts"] == 2
    rows = ReviewQueue(tmp_path / "review").rows()
    assert len(rows) == 1 and rows[0]["sha256"] == hashlib.sha256(good).hexdigest()
    assert (tmp_path / "review" / rows[0]["cutout"]).exists() and (tmp_path / "review" / rows[0]["photo"]).exists()
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())  # routed, not published
    # a second pass (e.g. a restart) finds nothing to do
    again = processor(threshold=0.0).run_once()
    assert again.as_dict() == {"published": 0, "routed": 0, "failed": 0, "retried": 0, "skipped": 0,
                               "recovered": 0, "unreadable": 0}
