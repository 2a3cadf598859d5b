"""Airflow event trigger for the upload folder: fires when photos arrive that the ledger has not seen.

Runs in the Airflow *triggerer* (asyncio, no worker slot held): every `poke_interval` seconds it
lists the folder and compares (name, size, mtime) with the watcher's ledger (`watch.py`), read-only.
New files produce one event — payload `{"directory", "files"}` — which the AssetWatcher turns into an
asset event on `backdrop_uploads`, which schedules the `backdrop_inference` DAG. A file announced once
is not announced again for `reannounce_s` (the run is processing it); if it is still not in the
ledger after that, it is announced again (e.g. the run failed). Duplicate events are harmless: the
processing task holds the folder lock and skips what the ledger already has, so every photo is
processed exactly once.

Imports only the stdlib and Airflow: the DAG file imports this at parse time.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from airflow.triggers.base import BaseEventTrigger, TriggerEvent

STATE_DIR = ".backdrop"  # = watch.STATE_DIR (not imported: watch.py pulls in PIL & co.)
TEMP_SUFFIXES = (".part", ".tmp", ".crdownload", ".partial", ".swp")


def unprocessed(directory: str, settle_s: float = 0.5) -> list[tuple[str, int, int]]:
    """(name, size, mtime_ns) of settled files in `directory` that the ledger has not settled."""
    root = Path(directory)
    try:
        entries = list(os.scandir(root))
    except FileNotFoundError:
        return []
    now = time.time()
    files = []
    for entry in entries:
        if entry.name.startswith(".") or entry.name.endswith(TEMP_SUFFIXES) or not entry.is_file():
            continue
        st = entry.stat()
        if now - st.st_mtime >= settle_s:
            files.append((entry.name, st.st_size, st.st_mtime_ns))
    ledger = root / STATE_DIR / "ledger.sqlite"
    if not files or not ledger.exists():
        return sorted(files)
    try:
        db = sqlite3.connect(f"file:{ledger}?mode=ro", uri=True, timeout=5)
        try:
            rows = db.execute(
                "SELECT a.name, a.size, a.mtime_ns, f.status, f.output FROM aliases a "
                "JOIN files f ON f.sha256 = a.sha256 WHERE f.status IN ('done', 'failed')").fetchall()
        finally:
            db.close()
    except sqlite3.Error:
        rows = []  # ledger being created: announce, the task sorts it out
    known = {(_text(name), size, mtime) for name, size, mtime, status, output in rows
             # a failed photo moved back by hand (its copy in failed/ gone) is a new attempt: announce it
             if status == "done" or (output and os.path.lexists(os.fsdecode(output)))}
    return sorted(f for f in files if f not in known)


def _text(name: str | bytes) -> str:
    return os.fsdecode(name) if isinstance(name, bytes) else name  # undecodable names are stored as bytes


class UploadFolderTrigger(BaseEventTrigger):
    def __init__(self, directory: str, poke_interval: float = 2.0, settle_s: float = 0.5,
                 reannounce_s: float = 600.0):
        super().__init__()
        self.directory = str(directory)
        self.poke_interval = float(poke_interval)
        self.settle_s = float(settle_s)
        self.reannounce_s = float(reannounce_s)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return ("backdrop.serving.trigger.UploadFolderTrigger",
                {"directory": self.directory, "poke_interval": self.poke_interval,
                 "settle_s": self.settle_s, "reannounce_s": self.reannounce_s})

    async def run(self) -> AsyncIterator[TriggerEvent]:
        announced: dict[tuple[str, int, int], float] = {}
        while True:
            files = await asyncio.to_thread(unprocessed, self.directory, self.settle_s)
            now = time.monotonic()
            new = [f for f in files if now - announced.get(f, -1e12) > self.reannounce_s]
            current = set(files)
            for key in list(announced):
                if key not in current:
                    del announced[key]  # processed (or removed): forget it
            if new:
                for f in new:
                    announced[f] = now
                self.log.info("%d new upload(s) in %s", len(new), self.directory)
                yield TriggerEvent({"directory": self.directory, "files": [f[0] for f in new]})
            await asyncio.sleep(self.poke_interval)
