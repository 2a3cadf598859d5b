"""The launcher of data-parallel training: N worker processes, Horovod (default) or PyTorch DDP, Gloo on CPU.

`backdrop train --np N [--backend horovod|ddp]` (or `train.processes` / `train.backend` in
params.yaml, which the Airflow task uses) starts N workers that each run
:func:`backdrop.training.loop.run` with a :class:`backdrop.distributed.Dist` context:

* Horovod: ``horovodrun --gloo -np N -H localhost:N python -m backdrop.training.launcher ...``
  (``NCCL`` is used by Horovod itself when it was built with it and CUDA is present).
* DDP: N local ``python -m backdrop.training.launcher --backend ddp`` processes with the usual
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
        -m backdrop.training.launcher --backend ddp --params params.yaml [--resume]
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import yaml

from backdrop.config import Params, load_params, project_dir, resolve
from backdrop.distributed import BACKENDS, DistributedError, init

log = logging.getLogger(__name__)


LAUNCH_PARAMS = "launch-params.yaml"  # params the workers read, written into train.out_dir


RESULT_FILE = "result.json"


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
    return [sys.executable, "-m", "backdrop.training.launcher", "--backend", backend,
            "--params", str(params_file), *(["--resume"] if resume else [])]


def launch(params: Params, resume: bool = False, hosts: str | None = None):
    """Run ``train.processes`` workers of ``train.backend``; returns rank 0's TrainResult."""
    import json

    from backdrop.training.loop import TrainResult

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
                                   "(see backdrop.training.launcher's docstring)")
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


def worker_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m backdrop.training.launcher",
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
    from backdrop.training.loop import run

    params = load_params(args.params)
    try:
        run(params, args.resume, dist)
    finally:
        dist.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(worker_main())
