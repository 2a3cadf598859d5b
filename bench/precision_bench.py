"""Training step time, fp32 vs bf16 autocast, U²-NetP at 320 px, on this CPU, in one run.

    .venv/bin/python bench/precision_bench.py [--batch 8] [--size 320] [--steps 2] [--rounds 2]

Why: `train.precision: bf16` only pays where the CPU runs bf16 natively (Intel AMX: 2.2-2.6x;
AMD Zen 5's AVX512-BF16: 2.7x; README); this says by how much on the host at hand before a long run
is planned around it. One step = forward, the deep-supervision loss the trainer uses, backward,
AdamW; the rounds run A B B A (fp32 bf16 bf16 fp32) so a drift in the shared machine's load hits
both alike. Writes bench/results/precision.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--size", type=int, default=320)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    import torch

    from backdrop.config import TrainParams
    from backdrop.host import cpu_info
    from backdrop.models import build_model
    from backdrop.training.loop import autocast_dtype
    from backdrop.training.losses import deep_supervision_loss

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build_model("u2netp").to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), 1e-4)
    x = torch.randn(args.batch, 3, args.size, args.size).contiguous(memory_format=torch.channels_last)
    y = (torch.rand(args.batch, 1, args.size, args.size) > 0.5).float()  # (B,1,S,S)
    native = autocast_dtype(TrainParams(precision="bf16"), torch.device("cpu")) is not None

    def step(bf16: bool) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            outputs = model(x)
        loss = deep_supervision_loss([o.float() for o in outputs], y, 0.5)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    times: dict[str, list[float]] = {"fp32": [], "bf16": []}
    for bf16 in [False, True, True, False] * (args.rounds // 2) or [False, True]:
        step(bf16)  # warm-up: oneDNN picks its kernels on the first call of each precision
        t0 = time.perf_counter()
        for _ in range(args.steps):
            step(bf16)
        seconds = (time.perf_counter() - t0) / args.steps
        times["bf16" if bf16 else "fp32"].append(seconds)
        print(f"{'bf16' if bf16 else 'fp32'}: {seconds:.2f} s/step", flush=True)

    mean = {k: sum(v) / len(v) for k, v in times.items()}
    out = {"model": "u2netp", "batch": args.batch, "size": args.size, "threads": args.threads,
           "seconds_per_step": times, "mean_seconds_per_step": mean,
           "speedup_bf16_over_fp32": round(mean["fp32"] / mean["bf16"], 3),
           "bf16_native": native, "cpu": cpu_info(),
           "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                       "loadavg_end": os.getloadavg()}}
    path = REPO / "bench" / "results" / "precision.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2))
    print(f"bf16 / fp32 speed-up {out['speedup_bf16_over_fp32']}× (native bf16: {native}); wrote {path}")


if __name__ == "__main__":
    main()
