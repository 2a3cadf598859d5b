"""train: the stage. One process trains in-process; `train.processes > 1` (or `--np N`) starts that
many data-parallel workers through the launcher (`backdrop.training.launcher`), each running the same
loop (`backdrop.training.loop`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from backdrop.config import Params
from backdrop.training.loop import TrainResult, run

if TYPE_CHECKING:
    from backdrop.distributed import Dist


def train(params: Params, resume: bool = False, *, dist: Dist | None = None,
          hosts: str | None = None) -> TrainResult:
    """Train per params; with `train.processes > 1` (and no `dist`) launch that many workers."""
    if dist is None:
        if params.train.processes > 1:
            from backdrop.training.launcher import launch

            return launch(params, resume=resume, hosts=hosts)
        from backdrop.distributed import Dist

        dist = Dist()
    return run(params, resume, dist)
