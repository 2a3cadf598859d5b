"""Real 2-process Horovod run on CPU over Gloo (needs scripts/install_horovod.sh to have run)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # horovodrun starts 2 worker processes

NP = 2

WORKER = textwrap.dedent(
    """
    import json
    import sys

    import torch
    import horovod.torch as hvd

    hvd.init()
    rank, size = hvd.rank(), hvd.size()
    torch.set_num_threads(1)

    # allreduce of rank-dependent tensors: sum over ranks of (rank + 1) * [1, 2, 3]
    t = torch.arange(1, 4, dtype=torch.float32) * (rank + 1)
    summed = hvd.allreduce(t, op=hvd.Sum, name="smoke_sum")
    averaged = hvd.allreduce(t, op=hvd.Average, name="smoke_avg")

    # Different init per rank, then broadcast from rank 0 and take one synchronous SGD step
    # on rank-dependent data: the averaged gradients must keep the replicas identical.
    torch.manual_seed(1000 + rank)
    model = torch.nn.Linear(4, 2)
    before_bcast = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    hvd.broadcast_parameters(model.state_dict(), root_rank=0)
    hvd.broadcast_optimizer_state(opt, root_rank=0)
    opt = hvd.DistributedOptimizer(opt, named_parameters=model.named_parameters())
    after_bcast = [p.detach().clone() for p in model.parameters()]

    torch.manual_seed(rank)
    x = torch.randn(8, 4)
    y = torch.randn(8, 2)
    opt.zero_grad()
    loss = torch.nn.functional.mse_loss(model(x), y)
    loss.backward()
    opt.step()

    out = {
        "rank": rank,
        "size": size,
        "summed": summed.tolist(),
        "averaged": averaged.tolist(),
        "bcast_changed_params": any(
            not torch.equal(a, b) for a, b in zip(before_bcast, after_bcast)
        ),
        "params": [p.detach().flatten().tolist() for p in model.parameters()],
        "moved": any(not torch.equal(a, p) for a, p in zip(after_bcast, model.parameters())),
    }
    with open(sys.argv[1] + f"/rank{rank}.json", "w") as f:
        json.dump(out, f)
    hvd.shutdown()
    """
)


def _require_horovod() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", "import horovod, horovod.torch; print(horovod.__version__)"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if proc.returncode != 0:
        pytest.fail(
            "horovod.torch is not importable in this venv; run `make install` "
            "(scripts/install_horovod.sh builds it).\n" + proc.stderr[-2000:],
            pytrace=False,
        )


def _horovodrun() -> list[str]:
    exe = Path(sys.executable).with_name("horovodrun")
    if exe.exists():
        return [str(exe)]
    return [sys.executable, "-c", "from horovod.runner.launch import run_commandline; run_commandline()"]


def test_two_rank_gloo_allreduce_and_distributed_optimizer(tmp_path: Path) -> None:
    _require_horovod()
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    out_dir = tmp_path / "out"
    out_dir.mkdir()

    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    cmd = [
        *_horovodrun(),
        "-np", str(NP),
        "-H", f"localhost:{NP}",
        "--gloo",
        "--start-timeout", "60",
        sys.executable, str(script), str(out_dir),
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=150, env=env, cwd=tmp_path)
    assert proc.returncode == 0, (
        f"horovodrun failed (rc={proc.returncode})\nSTDOUT:\n{proc.stdout[-4000:]}"
        f"\nSTDERR:\n{proc.stderr[-4000:]}"
    )

    results = [json.loads((out_dir / f"rank{r}.json").read_text()) for r in range(NP)]
    assert [r["rank"] for r in results] == list(range(NP))
    assert all(r["size"] == NP for r in results)

    # sum_r (r + 1) * [1, 2, 3] = 3 * [1, 2, 3] for NP=2; average = that / NP
    factor = sum(range(1, NP + 1))
    for r in results:
        assert r["summed"] == pytest.approx([1.0 * factor, 2.0 * factor, 3.0 * factor])
        assert r["averaged"] == pytest.approx([v * factor / NP for v in (1.0, 2.0, 3.0)])

    # rank 1 started from different weights, so the broadcast must have overwritten them
    assert results[0]["bcast_changed_params"] is False
    assert results[1]["bcast_changed_params"] is True
    # the optimizer step actually moved the weights, and both replicas stayed identical
    assert all(r["moved"] for r in results)
    assert results[0]["params"] == results[1]["params"]
