"""Progress that shows up everywhere: a tqdm bar on a terminal, periodic log lines elsewhere.

Airflow task logs and CI capture output line by line; a carriage-return bar there is either
hidden or one endless line, so off a TTY we log "desc: i/n (pct) rate" every `every` percent.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")
log = logging.getLogger("backdrop.progress")


def progress(items: Iterable[T], desc: str, total: int | None = None, unit: str = "it",
             every: float = 10.0, enabled: bool = True) -> Iterator[T]:
    """Iterate with visible progress; `total` defaults to len(items) when it has one.

    `enabled=False` iterates silently (e.g. on every rank but 0 of a distributed run).
    """
    if not enabled:
        yield from items
        return
    if total is None:
        total = len(items) if hasattr(items, "__len__") else None  # type: ignore[arg-type]
    if sys.stderr.isatty():
        from tqdm import tqdm

        yield from tqdm(items, desc=desc, total=total, unit=unit)
        return
    start, next_pct = time.perf_counter(), every
    for i, item in enumerate(items, start=1):
        yield item
        if total:
            pct = 100.0 * i / total
            if pct >= next_pct or i == total:
                rate = i / max(time.perf_counter() - start, 1e-9)
                log.info("%s: %d/%d %s (%.0f%%, %.2f %s/s)", desc, i, total, unit, pct, rate, unit)
                while next_pct <= pct:
                    next_pct += every
