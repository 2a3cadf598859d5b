"""The backdrop_inference DAG parses cleanly; its upload trigger tells new files from processed ones."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

DAGS = Path(__file__).resolve().parents[2] / "dags"


def test_dagbag_imports_inference_dag_without_errors():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS / "inference.py"))  # tests/dags parses the whole folder
    assert bag.import_errors == {}
    dag = bag.dags["backdrop_inference"]
    assert dag.task_ids == ["cut_out_uploads"]
    assert dag.max_active_runs == 1 and dag.catchup is False
    (asset,) = dag.timetable.asset_condition.objects
    assert asset.name == "backdrop_uploads" and asset.uri.startswith("file:///")
    (watcher,) = asset.watchers
    cls, kwargs = watcher.trigger.serialize()
    assert cls == "backdrop.serving.trigger.UploadFolderTrigger"
    assert kwargs["directory"].endswith("uploads") and kwargs["poke_interval"] > 0


def test_trigger_announces_only_new_settled_uploads(tmp_path):
    from backdrop.serving.trigger import UploadFolderTrigger, unprocessed
    from backdrop.serving.watch import Ledger

    (tmp_path / "a.jpg").write_bytes(b"a")
    (tmp_path / "b.jpg").write_bytes(b"bb")
    (tmp_path / ".hidden.jpg").write_bytes(b"x")
    (tmp_path / "c.jpg.part").write_bytes(b"x")
    past = time.time() - 5
    for p in tmp_path.iterdir():
        os.utime(p, (past, past))
    assert [f[0] for f in unprocessed(str(tmp_path))] == ["a.jpg", "b.jpg"]
    ledger = Ledger(tmp_path / ".backdrop" / "ledger.sqlite")  # a.jpg processed already
    st = (tmp_path / "a.jpg").stat()
    ledger.start("sha-a", "a.jpg", st.st_size, st.st_mtime_ns, "out/a.png")
    ledger.remember("a.jpg", st.st_size, st.st_mtime_ns, "sha-a")
    ledger.done("sha-a", "out/a.png", False, 0.99)
    ledger.close()
    assert [f[0] for f in unprocessed(str(tmp_path))] == ["b.jpg"]
    (tmp_path / "fresh.jpg").write_bytes(b"still being written")  # not settled yet
    assert [f[0] for f in unprocessed(str(tmp_path), settle_s=3)] == ["b.jpg"]

    async def first_event():
        gen = UploadFolderTrigger(str(tmp_path), poke_interval=0.05, settle_s=0.0).run()
        try:
            return await asyncio.wait_for(gen.__anext__(), 10)
        finally:
            await gen.aclose()

    event = asyncio.run(first_event())
    assert event.payload["files"] == ["b.jpg", "fresh.jpg"]
