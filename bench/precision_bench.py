"""Training step time, fp32 vs bf16 autocast, U²-NetP at 320 px, on this CPU, in one run.

    .venv/bin/python bench/precision_bench.py [--batch 8] [--size 320] [--steps 2] [--rounds 2]
        [--variants fp32,bf16,fp32_nchw] [--threads 2] [--out precision.json]

Why: `train.precision: bf16` only pays where the CPU runs bf16 natively (Intel AMX: 2.2-2.6x;
AMD Zen 5's AVX512-BF16: 2.7x; README); this says by how much on the host at hand before a long run
is planned around it. One step = forward, the deep-supervision loss the trainer uses, backward,
AdamW; the rounds run A B B A (fp32 bf16 bf16 fp32) so a drift in the shared machine's load hits
both alike. `fp32_nchw` adds the fp32 step in PyTorch's default NCHW layout (the others run
channels_last), which `train.channels_last: auto` picks on CPUs without AVX-512; `--threads 1` times
what each of two Horovod workers runs. Writes bench/results/precision.json (or `--out`).
"""

from __future__ import annotations

import argparse
import copy
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
    ap.add_argument("--variants", default="fp32,bf16", help="comma-separated: fp32, bf16, fp32_nchw")
    ap.add_argument("--out", default="precision.json", help="file name under bench/results/")
    args = ap.parse_args()
    variants = args.variants.split(",")
    if not variants or set(variants) - {"fp32", "bf16", "fp32_nchw"} or len(set(variants)) != len(variants):
        ap.error(f"--variants: distinct names from fp32, bf16, fp32_nchw, not {args.variants!r}")

    import torch

    from backdrop.config import TrainParams
    from backdrop.host import cpu_info
    from backdrop.models import build_model
    from backdrop.training.loop import autocast_dtype
    from backdrop.training.losses import deep_supervision_loss

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build_model("u2netp")
    layouts = {"channels_last": model.to(memory_format=torch.channels_last)}
    if "fp32_nchw" in variants:
        layouts["contiguous"] = copy.deepcopy(model).to(memory_format=torch.contiguous_format)
    optimizers = {k: torch.optim.AdamW(m.parameters(), 1e-4) for k, m in layouts.items()}
    x = torch.randn(args.batch, 3, args.size, args.size)  # (B,3,S,S)
    y = (torch.rand(args.batch, 1, args.size, args.size) > 0.5).float()  # (B,1,S,S)
    native = autocast_dtype(TrainParams(precision="bf16"), torch.device("cpu")) is not None

    def step(variant: str) -> None:
        layout = "contiguous" if variant == "fp32_nchw" else "channels_last"
        model, optimizer = layouts[layout], optimizers[layout]
        fmt = torch.contiguous_format if layout == "contiguous" else torch.channels_last
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=variant == "bf16"):
            outputs = model(x.contiguous(memory_format=fmt))
        loss = deep_supervision_loss([o.float() for o in outputs], y, 0.5)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    times: dict[str, list[float]] = {v: [] for v in variants}
    for variant in (variants + variants[::-1]) * (args.rounds // 2) or variants:
        step(variant)  # warm-up: oneDNN picks its kernels on the first call of each precision and layout
        t0 = time.perf_counter()
        for _ in range(args.steps):
            step(variant)
        seconds = (time.perf_counter() - t0) / args.steps
        times[variant].append(seconds)
        print(f"{variant}: {seconds:.2f} s/step", flush=True)

    mean = {k: sum(v) / len(v) for k, v in times.items()}
    out = {"model": "u2netp", "batch": args.batch, "size": args.size, "threads": args.threads,
           "seconds_per_step": times, "mean_seconds_per_step": mean,
           "bf16_native": native, "cpu": cpu_info(),
           "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                       "loadavg_end": os.getloadavg()}}
    if "bf16" in mean and "fp32" in mean:
        out["speedup_bf16_over_fp32"] = round(mean["fp32"] / mean["bf16"], 3)
    if "fp32_nchw" in mean and "fp32" in mean:
        out["speedup_nchw_over_channels_last_fp32"] = round(mean["fp32"] / mean["fp32_nchw"], 3)
    path = REPO / "bench" / "results" / args.out
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2))
    ratios = {k: v for k, v in out.items() if k.startswith("speedup_")}
    print(f"{ratios} (native bf16: {native}); wrote {path}")


if __name__ == "__main__":
    main()
