"""Prediction log, corrections intake and the metric time series — on SQLite and on PostgreSQL.

`backdrop remove` runs with the pipeline's champion and must leave one log row per cut-out; the
corrections CLI validates, matches and keeps history; scoring and the rolling window write metric
points that read back identically from both databases.
"""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import func, select
from typer.testing import CliRunner

from backdrop.io import sha256_file
from backdrop.metrics import mask_iou

from .conftest import monitoring_params

pytestmark = pytest.mark.slow


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'log.db'}"
    return request.getfixturevalue("pg_url")


def test_remove_logs_predictions_and_corrections_feed_the_time_series(project_cwd, tmp_path, db_url, monkeypatch):
    from backdrop.cli import app
    from backdrop.data.predlog import Correction, Prediction, Store, sessions, utcnow
    from backdrop.monitoring.drift import score_pending, time_series, window_metrics
    from backdrop.serving.remove import remove

    monkeypatch.setenv("BACKDROP_MONITORING_DB", db_url)  # how production points the log at PostgreSQL
    params = monitoring_params(project_cwd, tmp_path, min_samples=1)
    monkeypatch.setenv("BACKDROP_PARAMS", str(tmp_path / "params.yaml"))  # remove() and the CLI read these
    images = sorted((project_cwd / "data/drop/images").glob("*.jpg"))[:2]
    before = utcnow()
    remove(images, tmp_path / "cutouts", fmt="mask", params=params)

    store = Store.from_params(params.monitoring)
    with sessions(params.monitoring)() as s:
        rows = s.scalars(select(Prediction).order_by(Prediction.id)).all()
        assert len(rows) == 2
        for row, image in zip(rows, images, strict=True):
            sha = sha256_file(image)
            assert (row.image_sha256, row.image_id, row.stem) == (sha, sha[:16], image.stem)
            assert row.model_uri == "models:/backdrop-u2net@champion"
            assert row.model_alias == "champion" and row.model_version.isdigit()  # the alias resolved to its version
            assert row.cluster is not None and 0 <= row.cluster < params.cluster.k and row.cluster_name
            assert 0.0 < row.confidence <= 1.0
            assert sha256_file(store.path(row.mask_path)) == row.mask_sha256  # content-addressed
            stored = np.asarray(Image.open(store.path(row.mask_path)))
            cut = np.asarray(Image.open(tmp_path / "cutouts" / f"{image.stem}.png"))
            assert np.array_equal(stored, cut)  # the logged mask is exactly what the customer got
            assert (row.width, row.height) == Image.open(image).size
            assert before - timedelta(seconds=1) <= row.created_at <= utcnow()

    runner = CliRunner()
    truth = project_cwd / "data/drop/masks" / f"{images[0].stem}.png"
    first = rows[0]
    ok = runner.invoke(app, ["corrections", "add", str(truth), "--image-id", first.image_id])
    assert ok.exit_code == 0, ok.output
    # wrong size: refused with the reason; a grey (non-binary) mask: refused
    small = tmp_path / "small.png"
    Image.open(truth).resize((50, 50)).save(small)
    bad = runner.invoke(app, ["corrections", "add", str(small), "--image-id", first.image_id])
    assert bad.exit_code == 1 and "size_mismatch" in bad.output
    grey = tmp_path / "grey.png"
    Image.fromarray(np.full((first.height, first.width), 128, np.uint8)).save(grey)
    bad = runner.invoke(app, ["corrections", "add", str(grey), "--image-id", first.image_id])
    assert bad.exit_code == 1 and "not_binary" in bad.output
    # a second, different correction of the same image arrives via the inbox as <stem>.png with alpha
    mask = np.asarray(Image.open(truth).convert("L"))
    eroded = mask.copy()
    eroded[: mask.shape[0] // 2] = 0  # the reviewer cut the top half off
    inbox = params.monitoring.inbox_dir
    inbox.mkdir(parents=True)
    rgba = np.dstack([np.full((*mask.shape, 3), 200, np.uint8), eroded])
    Image.fromarray(rgba, mode="RGBA").save(inbox / f"{first.stem}.png")
    (inbox / "unknown-image.png").write_bytes((inbox / f"{first.stem}.png").read_bytes())
    res = runner.invoke(app, ["corrections", "ingest", str(inbox)])
    assert res.exit_code == 0 and "1 accepted, 1 rejected" in res.output, res.output
    assert (inbox / "rejected").is_dir() and any((inbox / "processed").iterdir())

    assert score_pending(params) == 2
    with sessions(params.monitoring)() as s:
        history = s.scalars(select(Correction).where(Correction.prediction_id == first.id)
                            .order_by(Correction.id)).all()
        assert [c.source for c in history] == ["cli", "inbox"]  # history kept, nothing overwritten
        predicted = np.asarray(Image.open(store.path(first.mask_path))) >= 128
        assert history[0].iou == pytest.approx(mask_iou(predicted, mask >= 128))
        assert history[1].iou == pytest.approx(mask_iou(predicted, eroded >= 128))
        assert s.scalar(select(func.count()).select_from(Correction)) == 2

    wm = window_metrics(params)
    overall = next(p for p in wm.points if p["scope"] == "overall")
    assert overall["n"] == 1  # one image: the newest correction counts
    assert overall["iou_mean"] == pytest.approx(history[1].iou)
    later = window_metrics(params, wm.at + timedelta(minutes=5))
    series = time_series(params)
    assert sorted({p.at for p in series}) == [wm.at, later.at]
    assert {(p.scope, p.key) for p in series} >= {("overall", "all"), ("cluster", str(first.cluster)),
                                                   ("model", first.model_version)}
    assert all(p.iou_mean == pytest.approx(history[1].iou) for p in series)


def test_first_use_from_many_threads_creates_the_tables_once(tmp_path):
    """The API records from several threads at once; the first writes must not race on CREATE TABLE."""
    import threading

    from sqlalchemy import inspect

    from backdrop.data.predlog import engine_for

    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    start, engines, errors = threading.Barrier(8), [], []

    def first_use() -> None:
        start.wait()
        try:
            engines.append(engine_for(url))
        except Exception as exc:  # noqa: BLE001  (collected and asserted below)
            errors.append(exc)

    threads = [threading.Thread(target=first_use) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len({id(e) for e in engines}) == 1
    assert "predictions" in inspect(engines[0]).get_table_names()
