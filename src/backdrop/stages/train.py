"""train: the stage. One process trains in-process; `train.processes > 1` (or `--np N`) starts that
many data-parallel workers through the launcher (`backdrop.training.launcher`), each running the same
loop (`backdrop.training.loop`). Then, with `train.wise_alphas`, this process blends the fine-tune
with the official weights (`backdrop.training.wise`)."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from backdrop.config import Params
from backdrop.training.loop import TrainResult, run

if TYPE_CHECKING:
    from backdrop.distributed import Dist


def train(params: Params, resume: bool = False, *, dist: Dist | None = None,
          hosts: str | None = None) -> TrainResult:
    """Train per params; with `train.processes > 1` (and no `dist`) launch that many workers. A worker
    (`dist` given) only trains; the process that started the run blends (`train.wise_alphas`)."""
    if dist is not None:
        return run(params, resume, dist)
    if params.train.processes > 1:
        from backdrop.training.launcher import launch

        result = launch(params, resume=resume, hosts=hosts)
    else:
        from backdrop.distributed import Dist

        result = run(params, resume, Dist())
    from backdrop.training.wise import blend

    report = blend(params, result.run_id)
    return result if report is None else replace(result, best_val_iou=report["val_iou_mean"])
