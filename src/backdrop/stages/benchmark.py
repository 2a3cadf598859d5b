"""benchmark: the out-of-distribution benchmark (issue 19) → `benchmark.out_dir`.

Fashion-MNIST test products in the benchmark's own studio and among props, never trained on
(:mod:`backdrop.data.benchmark_build`); `backdrop data benchmark` and the DVC stage both run this.
"""

from __future__ import annotations

from pathlib import Path

from backdrop.config import Params, resolve


def benchmark(params: Params, *, out: Path | None = None, n: int | None = None, seed: int | None = None,
              progress: bool = True) -> list[dict]:
    """Build the set from params (out, n, seed may be overridden); returns its index rows."""
    from backdrop.data.benchmark_build import build_benchmark

    b = params.benchmark
    return build_benchmark(out or resolve(b.out_dir), n if n is not None else b.n, seed if seed is not None else b.seed,
                           min_side=b.min_side, max_side=b.max_side, val_share=b.val_share,
                           source_dir=params.fashion_mnist.source_dir, training_drop=resolve(params.ingest.drop_dir),
                           progress=progress)
