"""Data-parallel comms for training: the rank context (`Dist`: Horovod, DDP or a single process),
its collectives, and a SyncBatchNorm that works on CPU. The processes themselves are started by
:mod:`backdrop.training.launcher` (its docstring covers multi-host runs).

Every rank runs :func:`backdrop.training.loop.run` with a :class:`Dist`: parameters (and, on
resume, the whole checkpoint) come from rank 0; gradients are averaged every step
(``hvd.DistributedOptimizer`` / DDP); BatchNorm statistics agree on every rank: frozen for
``init: official`` (BN is folded into those weights), else :class:`SyncBatchNorm2d` (all-reduced
batch statistics; works on CPU, unlike PyTorch's and Horovod's SyncBatchNorm which are GPU-only);
loss, val IoU and images/s are reduced over ranks. At the end the ranks compare
:func:`state_digest` of their weights and buffers and fail if they differ.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import hashlib
import logging
import os
import warnings
from typing import Any

log = logging.getLogger(__name__)

BACKENDS = ("horovod", "ddp")


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


def state_digest(model) -> str:
    """sha256 over every parameter and buffer (name, dtype, shape, bytes): equal ⇔ identical replicas."""
    import torch

    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update((t.float() if t.dtype == torch.bfloat16 else t).numpy().tobytes())
    return h.hexdigest()
