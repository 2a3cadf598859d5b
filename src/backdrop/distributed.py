"""Data-parallel training over N processes: Horovod (default) or PyTorch DDP, Gloo on CPU.

`backdrop train --np N [--backend horovod|ddp]` (or `train.processes` / `train.backend` in
params.yaml, which the Airflow task uses) starts N workers that each run
:func:`backdrop.stages.train.train` with a :class:`Dist` context:

* Horovod: ``horovodrun --gloo -np N -H localhost:N python -m backdrop.distributed ...``
  (``NCCL`` is used by Horovod itself when it was built with it and CUDA is present).
* DDP: N local ``python -m backdrop.distributed --backend ddp`` processes with the usual
  ``RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT`` environment and ``torch.distributed`` on Gloo
  (NCCL on CUDA). Workers die with the launcher (``PR_SET_PDEATHSIG``), so a killed launcher
  never leaves a rank behind that keeps writing checkpoints.

What every worker does (see ``train``): the same global sample order on every rank, each rank
takes its shard (``order[rank::N]``, padded so every rank runs the same number of steps);
parameters (and, on resume, the whole checkpoint: optimizer, scheduler, history) come from rank
0; gradients are averaged every step (``hvd.DistributedOptimizer`` / DDP); BatchNorm statistics
agree on every rank: frozen for ``init: official`` (BN is folded into those weights), else
:class:`SyncBatchNorm2d` (all-reduced batch statistics; works on CPU, unlike PyTorch's and
Horovod's SyncBatchNorm which are GPU-only); loss, val IoU and images/s are reduced over ranks;
only rank 0 logs to MLflow, shows a progress bar and writes checkpoints/models. At the end the
ranks compare a digest of their weights and buffers and fail if they differ.

``train.batch_size`` is per process (the global batch is N × batch_size), as usual for Horovod.

Multi-host
----------
Horovod: every host needs the same venv, the project (data/prepared, data/clusters, params)
at the same path and password-less ssh from the launching host; then::

    backdrop train --np 8 --hosts host1:4,host2:4        # = horovodrun --gloo -np 8 -H host1:4,host2:4

Rank 0 (on the first host) writes checkpoints and logs to MLflow; resume there. Add
``HOROVOD_GLOO_IFACE=eth0`` (or horovodrun ``--network-interfaces``) when hosts have several NICs.

DDP: start one launcher per host with torchrun, which sets the same environment variables::

    torchrun --nnodes 2 --nproc-per-node 4 --rdzv-backend c10d --rdzv-endpoint host1:29400 \\
        -m backdrop.distributed --backend ddp --params params.yaml [--resume]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import functools
import hashlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import yaml

from backdrop.config import Params, load_params, project_dir, resolve

log = logging.getLogger(__name__)

BACKENDS = ("horovod", "ddp")
LAUNCH_PARAMS = "launch-params.yaml"  # params the workers read, written into train.out_dir
RESULT_FILE = "result.json"


class DistributedError(RuntimeError):
    """The worker processes failed; the message says how."""


# ------------------------------------------------------------------------------------------ contexts

class Dist:
    """One process, no communication: the interface every backend implements."""

    backend = "none"
    rank = 0
    size = 1
    local_rank = 0
    local_size = 1

    @property
    def is_root(self) -> bool:
        return self.rank == 0

    def broadcast_object(self, obj: Any) -> Any:
        return obj

    def allgather_object(self, obj: Any) -> list[Any]:
        return [obj]

    def allreduce(self, values: list[float], op: str = "mean") -> list[float]:
        return [float(v) for v in values]

    def broadcast_parameters(self, model) -> None:
        pass

    def wrap_optimizer(self, optimizer, model):
        return optimizer

    def wrap_model(self, model):
        return model

    def stat_allreduce(self, tensor, name: str):
        """Differentiable sum over ranks (SyncBatchNorm statistics)."""
        return tensor

    def barrier(self) -> None:
        pass

    def shutdown(self) -> None:
        pass


class HorovodDist(Dist):
    backend = "horovod"

    def __init__(self) -> None:
        import horovod.torch as hvd

        hvd.init()
        self.hvd = hvd
        self.rank, self.size = hvd.rank(), hvd.size()
        self.local_rank, self.local_size = hvd.local_rank(), hvd.local_size()

    def broadcast_object(self, obj: Any) -> Any:
        return self.hvd.broadcast_object(obj, root_rank=0, name="backdrop.bcast_object")

    def allgather_object(self, obj: Any) -> list[Any]:
        return self.hvd.allgather_object(obj, name="backdrop.gather_object")

    def allreduce(self, values: list[float], op: str = "mean") -> list[float]:
        import torch

        hvd = self.hvd
        ops = {"mean": hvd.Average, "sum": hvd.Sum, "max": hvd.Max, "min": hvd.Min}
        t = torch.tensor(values, dtype=torch.float64)
        return hvd.allreduce(t, op=ops[op], name=f"backdrop.metrics.{op}.{len(values)}").tolist()

    def broadcast_parameters(self, model) -> None:
        # Horovod broadcasts in place and needs contiguous tensors: call before channels_last.
        self.hvd.broadcast_parameters(model.state_dict(), root_rank=0)

    def wrap_optimizer(self, optimizer, model):
        return self.hvd.DistributedOptimizer(optimizer, named_parameters=model.named_parameters(),
                                             compression=_Contiguous, op=self.hvd.Average)

    def stat_allreduce(self, tensor, name: str):
        return _hvd_sum_function().apply(tensor, f"syncbn.{name}")

    def barrier(self) -> None:
        self.hvd.barrier()

    def shutdown(self) -> None:
        self.hvd.shutdown()


@functools.cache
def _hvd_sum_function():
    """Differentiable Horovod sum with fixed names for forward and backward (hvd.allreduce names
    its backward op afresh on every call, which thrashes Horovod's response cache)."""
    import horovod.torch as hvd
    import torch

    class _Sum(torch.autograd.Function):
        @staticmethod
        def forward(ctx, tensor, name):
            ctx.name = name
            return hvd.allreduce(tensor, op=hvd.Sum, name=name)

        @staticmethod
        def backward(ctx, grad):
            return hvd.allreduce(grad.contiguous(), op=hvd.Sum, name=ctx.name + ".grad"), None

    return _Sum


class _Contiguous:
    """Horovod "compression" that hands it a contiguous copy: channels_last conv gradients are
    dense but not `is_contiguous()`, which Horovod's in-place allreduce refuses."""

    @staticmethod
    def compress(tensor):
        return (tensor if tensor.is_contiguous() else tensor.contiguous()), None

    @staticmethod
    def decompress(tensor, ctx):
        return tensor


class DDPDist(Dist):
    backend = "ddp"

    def __init__(self) -> None:
        import torch
        import torch.distributed as td

        self.td = td
        warnings.filterwarnings("ignore", message=r"torch\.distributed\.nn\.functional\.all_reduce is deprecated",
                                category=FutureWarning)  # still the differentiable one (SyncBatchNorm2d)
        self.rank, self.size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        self.local_rank = int(os.environ.get("LOCAL_RANK", self.rank))
        self.local_size = int(os.environ.get("LOCAL_WORLD_SIZE", self.size))
        cuda = torch.cuda.is_available() and os.environ.get("BACKDROP_DEVICE", "auto") != "cpu"
        td.init_process_group("nccl" if cuda else "gloo", rank=self.rank, world_size=self.size,
                              timeout=datetime.timedelta(minutes=30))

    def broadcast_object(self, obj: Any) -> Any:
        box = [obj]
        self.td.broadcast_object_list(box, src=0)
        return box[0]

    def allgather_object(self, obj: Any) -> list[Any]:
        out: list[Any] = [None] * self.size
        self.td.all_gather_object(out, obj)
        return out

    def allreduce(self, values: list[float], op: str = "mean") -> list[float]:
        import torch

        R = self.td.ReduceOp
        t = torch.tensor(values, dtype=torch.float64)
        if self.td.get_backend() == "nccl":
            t = t.cuda()
        self.td.all_reduce(t, op={"mean": R.SUM, "sum": R.SUM, "max": R.MAX, "min": R.MIN}[op])
        if op == "mean":
            t /= self.size
        return t.cpu().tolist()

    def broadcast_parameters(self, model) -> None:
        for tensor in model.state_dict().values():
            self.td.broadcast(tensor, src=0)

    def wrap_model(self, model):
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [self.local_rank] if next(model.parameters()).is_cuda else None
        # Buffers agree by construction (frozen or synchronised BN): no per-step buffer broadcast.
        return DistributedDataParallel(model, device_ids=device_ids, broadcast_buffers=False)

    def stat_allreduce(self, tensor, name: str):
        from torch.distributed.nn.functional import all_reduce

        return all_reduce(tensor)  # SUM, with autograd

    def barrier(self) -> None:
        self.td.barrier()

    def shutdown(self) -> None:
        with contextlib.suppress(Exception):
            self.td.destroy_process_group()


def init(backend: str) -> Dist:
    """The context of this worker process."""
    if backend == "horovod":
        return HorovodDist()
    if backend == "ddp":
        return DDPDist()
    if backend in ("none", "local"):
        return Dist()
    raise ValueError(f"unknown backend {backend!r}; valid: {list(BACKENDS)}")


# ------------------------------------------------------------------------------- synchronised BN

@functools.cache
def _sync_bn_class():
    import torch
    from torch import nn

    class SyncBatchNorm2d(nn.BatchNorm2d):
        """BatchNorm whose training statistics are all-reduced over every rank (any device).

        Same parameters and buffers as ``nn.BatchNorm2d`` (state dicts are interchangeable).
        Per channel it all-reduces [Σ(x−c), Σ(x−c)², n] with autograd (one collective per BN
        forward, one in backward), where c = running_mean is identical on all ranks and keeps
        the single-pass variance free of cancellation.
        """

        dist: Dist | None = None
        sync_name = "bn"

        def forward(self, x):
            dist = self.dist
            if not self.training or dist is None or dist.size == 1:
                return super().forward(x)
            xf = x.float()
            shift = self.running_mean.detach().view(1, -1, 1, 1)
            centred = xf - shift
            n_local = torch.full((1,), float(xf.numel() // xf.shape[1]), dtype=xf.dtype, device=x.device)
            stats = torch.cat([centred.sum((0, 2, 3)), (centred * centred).sum((0, 2, 3)), n_local])
            stats = dist.stat_allreduce(stats, self.sync_name)
            c = self.num_features
            n = stats[-1]
            d_mean = stats[:c] / n
            var = (stats[c:2 * c] / n - d_mean * d_mean).clamp_min(0.0)
            mean = self.running_mean.detach() + d_mean
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                unbiased = var.detach() * (n / (n - 1).clamp_min(1.0))
                self.running_var.mul_(1 - m).add_(unbiased, alpha=m)
            inv = torch.rsqrt(var + self.eps)
            scale, offset = inv, -mean * inv
            if self.affine:
                scale, offset = scale * self.weight, offset * self.weight + self.bias
            y = xf * scale.view(1, -1, 1, 1) + offset.view(1, -1, 1, 1)
            return y.to(x.dtype)

    return SyncBatchNorm2d


def convert_sync_batchnorm(model, dist: Dist):
    """Swap every ``nn.BatchNorm2d`` of ``model`` for :class:`SyncBatchNorm2d` (in place, state kept)."""
    from torch import nn

    cls = _sync_bn_class()
    for parent_name, parent in list(model.named_modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.BatchNorm2d and child.track_running_stats:
                sync = cls(child.num_features, child.eps, child.momentum, child.affine,
                           child.track_running_stats)
                sync.load_state_dict(child.state_dict())
                sync.train(child.training)
                sync.dist = dist
                sync.sync_name = f"{parent_name}.{name}" if parent_name else name
                setattr(parent, name, sync)
    return model


# ------------------------------------------------------------------------------------------ launch

def _pdeathsig() -> None:
    """Linux: die with the parent (the launcher), so no orphan rank outlives a killed run."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _horovodrun() -> list[str]:
    exe = Path(sys.executable).with_name("horovodrun")
    if exe.exists():
        return [str(exe)]
    return [sys.executable, "-c", "from horovod.runner.launch import run_commandline; run_commandline()"]


def worker_command(backend: str, params_file: Path, resume: bool) -> list[str]:
    return [sys.executable, "-m", "backdrop.distributed", "--backend", backend,
            "--params", str(params_file), *(["--resume"] if resume else [])]


def launch(params: Params, resume: bool = False, hosts: str | None = None):
    """Run ``train.processes`` workers of ``train.backend``; returns rank 0's TrainResult."""
    import json

    from backdrop.stages.train import TrainResult

    tp = params.train
    np_, backend = tp.processes, tp.backend
    out = resolve(tp.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    params_file = out / LAUNCH_PARAMS
    params_file.write_text(yaml.safe_dump(params.model_dump(by_alias=True, mode="json"), sort_keys=False))
    (out / RESULT_FILE).unlink(missing_ok=True)
    threads = max(1, tp.num_threads // (np_ if not hosts else _slots_on_first_host(hosts, np_)))
    env = dict(os.environ, BACKDROP_PROJECT_DIR=str(project_dir()), OMP_NUM_THREADS=str(threads),
               PYTHONUNBUFFERED="1", BACKDROP_DEVICE=tp.device)
    if backend == "horovod":
        # Horovod's background thread negotiates every cycle even when idle (≈12 % of a core per
        # rank at the 1 ms default, measured). With BN frozen a step has one fused gradient
        # allreduce and lasts ≥0.1 s on CPU, so a 10 ms cycle costs nothing; SyncBatchNorm makes
        # 2 blocking allreduces per BN layer per step, which want the short cycle.
        env.setdefault("HOROVOD_CYCLE_TIME", "10" if tp.init == "official" else "1")
    cmd = worker_command(backend, params_file, resume)
    log.info("launching %d %s workers%s", np_, backend, f" on {hosts}" if hosts else "")
    t0 = time.perf_counter()
    if backend == "horovod":
        rc = _run_horovod(cmd, np_, hosts, env)
    elif backend == "ddp":
        if hosts:
            raise DistributedError("--hosts is for Horovod; multi-host DDP runs under torchrun "
                                   "(see backdrop.distributed's docstring)")
        rc = _run_ddp(cmd, np_, env)
    else:
        raise ValueError(f"unknown backend {backend!r}; valid: {list(BACKENDS)}")
    if rc != 0:
        raise DistributedError(f"{backend} training with {np_} processes failed (exit code {rc}); "
                               f"the last checkpoint in {out} can be resumed with --resume")
    result_path = out / RESULT_FILE
    if not result_path.exists():
        raise DistributedError(f"{backend} workers exited 0 but rank 0 wrote no {result_path}")
    r = json.loads(result_path.read_text())
    log.info("%d %s workers done in %.1f s", np_, backend, time.perf_counter() - t0)
    return TrainResult(r["best_val_iou"], r["epochs_run"], Path(r["model_path"]), r["run_id"])


def _slots_on_first_host(hosts: str, default: int) -> int:
    first = hosts.split(",")[0]
    return int(first.split(":")[1]) if ":" in first else default


def _run_horovod(cmd: list[str], np_: int, hosts: str | None, env: dict[str, str]) -> int:
    import importlib.util

    if importlib.util.find_spec("horovod") is None:
        raise DistributedError("Horovod is not installed in this environment: `make install` builds it "
                               "(scripts/install_horovod.sh), or use --backend ddp")
    args = [*_horovodrun(), "-np", str(np_), "-H", hosts or f"localhost:{np_}", "--gloo",
            "--start-timeout", "120", *cmd]
    proc = subprocess.Popen(args, env=env, preexec_fn=_pdeathsig)
    try:
        return proc.wait()
    except BaseException:
        proc.terminate()
        proc.wait()
        raise


def _run_ddp(cmd: list[str], np_: int, env: dict[str, str]) -> int:
    port = _free_port()
    procs = []
    for rank in range(np_):
        penv = dict(env, RANK=str(rank), WORLD_SIZE=str(np_), LOCAL_RANK=str(rank),
                    LOCAL_WORLD_SIZE=str(np_), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        procs.append(subprocess.Popen(cmd, env=penv, preexec_fn=_pdeathsig))
    try:
        while True:
            codes = [p.poll() for p in procs]
            failed = [c for c in codes if c not in (None, 0)]
            if failed:  # one rank died: the others would wait on it; stop them
                for p in procs:
                    if p.poll() is None:
                        p.terminate()
                deadline = time.monotonic() + 15
                for p in procs:
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        p.wait(max(0.1, deadline - time.monotonic()))
                    if p.poll() is None:
                        p.kill()
                        p.wait()
                return failed[0]
            if all(c == 0 for c in codes):
                return 0
            time.sleep(0.2)
    except BaseException:
        for p in procs:
            p.kill()
        raise


# ------------------------------------------------------------------------------------------ worker

def state_digest(model) -> str:
    """sha256 over every parameter and buffer (name, dtype, shape, bytes): equal ⇔ identical replicas."""
    import torch

    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update((t.float() if t.dtype == torch.bfloat16 else t).numpy().tobytes())
    return h.hexdigest()


def worker_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m backdrop.distributed",
                                     description="One training worker (started by `backdrop train --np N`).")
    parser.add_argument("--backend", choices=BACKENDS, required=True)
    parser.add_argument("--params", type=Path, default=None)
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args(argv)
    if args.backend == "ddp" and os.environ.get("TORCHELASTIC_RUN_ID") is None:
        _pdeathsig()  # started by our own launcher
    dist = init(args.backend)
    logging.basicConfig(level=logging.INFO if dist.is_root else logging.WARNING,
                        format=f"%(asctime)s %(levelname)s rank{dist.rank} %(name)s: %(message)s",
                        stream=sys.stderr)
    from backdrop.stages.train import train

    params = load_params(args.params)
    try:
        train(params, resume=args.resume, dist=dist)
    finally:
        dist.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(worker_main())
