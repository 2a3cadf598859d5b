"""Progress off a terminal (Airflow task logs, CI) must be log lines, not a hidden carriage-return bar."""

from __future__ import annotations

import logging

from backdrop.progress import progress


def test_off_tty_progress_logs_every_tenth_and_yields_everything(caplog):
    with caplog.at_level(logging.INFO, logger="backdrop.progress"):
        seen = list(progress(range(50), desc="epoch 1/2", unit="batch"))
    assert seen == list(range(50))
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 10  # one line per 10 %
    assert lines[0].startswith("epoch 1/2: 5/50 batch (10%") and lines[-1].startswith("epoch 1/2: 50/50 batch (100%")


def test_disabled_progress_is_silent(caplog):
    with caplog.at_level(logging.INFO, logger="backdrop.progress"):
        assert list(progress([1, 2, 3], desc="rank 1", enabled=False)) == [1, 2, 3]
    assert caplog.records == []
