"""The one scoring function: IoU of what `backdrop remove` publishes, at each photo's own size.

evaluate, register's gate and `bench/quality_bench.py` all score through `score`, so they report
the same numbers for the same model. A model is loaded the way `backdrop remove` loads it
(`served_segmenter`: `remove.engine`, `serve.precision`, the zoom pass as `serve.zoom` says) and
each probability map goes through `serve.refine` (`outputs.final_prob`) before it is thresholded
and compared with the vendor's mask at full resolution.

The photos (`eval_photos`) are the held-out test split (original photos through the validated
manifest, `data.heldout`) plus the test part of every frozen benchmark set in
`evaluate.benchmarks` (`data.benchmark`). Every photo has a group: its cluster (`c3`) for the
split, `<set>/<style>` for a benchmark; the gate's "no group may drop" rule reads those.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from backdrop.config import Params

TEST = "test"


@dataclass(frozen=True)
class EvalPhoto:
    set: str              # "test" (the split) or a benchmark set's name
    id: str               # pair_id or the benchmark's id
    group: str            # "c<cluster>" or "<set>/<style>"
    cluster: int | None   # the test split's cluster; None for benchmark photos
    load: Callable[[], tuple]  # → (RGB photo, (H,W) bool mask)

    @property
    def key(self) -> str:
        return f"{self.set}:{self.id}"


def eval_photos(params: Params, limit: int = 0) -> list[EvalPhoto]:
    """The test split at original size, then every `evaluate.benchmarks` set's test part (the first
    `limit` photos of each when limit > 0)."""
    from backdrop.config import resolve
    from backdrop.data.benchmark import load_benchmark
    from backdrop.data.heldout import held_out

    test = held_out(params, TEST, limit)
    photos = [EvalPhoto(TEST, r["pair_id"], f"c{int(r['cluster'])}", int(r["cluster"]),
                        (lambda r=r: test.load(r))) for r in test.rows]
    for directory in params.evaluate.benchmarks:
        bench = load_benchmark(resolve(directory), "test")
        photos += benchmark_photos(bench, bench.rows[:limit] if limit else bench.rows)
    return photos


def benchmark_photos(bench, rows: Sequence[dict]) -> list[EvalPhoto]:
    """A loaded benchmark set's rows as photos to score, each in the group `<set>/<style>`."""
    return [EvalPhoto(bench.name, r["id"], f"{bench.name}/{r['style']}", None, (lambda r=r: bench.load(r)))
            for r in rows]


def served_segmenter(spec: str, params: Params):
    """The segmenter `backdrop remove --model spec` would use (engine, precision and zoom from params)."""
    from backdrop.serving.segmenter import load_segmenter

    return load_segmenter(spec, params.remove.engine, params.serve.precision, params=params)


def score(segmenters: Mapping[str, object], photos: Sequence[EvalPhoto], params: Params,
          desc: str = "score", regions: bool = False) -> dict[str, list[dict]]:
    """Per-photo rows for every named segmenter on the same photos, each photo decoded once.

    A row: set, id, group, cluster, iou, mae, tp, fp, fn — of `final_prob` (serve.refine applied)
    thresholded at `evaluate.threshold` against the vendor mask at the photo's own size; with
    `regions`, also `lost_<region>`: the IoU its errors cost at the edge, in see-through gaps, outside
    the product and inside it (`metrics.iou_lost_by_region`)."""
    from backdrop.metrics import confusion, iou, iou_lost_by_region, mae, truth_regions
    from backdrop.progress import progress
    from backdrop.serving.outputs import OutputOptions, final_prob

    options = OutputOptions.from_params(params.serve)
    threshold = params.evaluate.threshold
    out: dict[str, list[dict]] = {name: [] for name in segmenters}
    for photo_ref in progress(photos, desc=desc, unit="img"):
        photo, truth = photo_ref.load()
        zones = truth_regions(truth) if regions else None  # one per photo, shared by the models
        for name, seg in segmenters.items():
            prob = final_prob(photo, seg.probabilities(photo), options)
            stats = confusion(prob > threshold, truth)
            row = {"set": photo_ref.set, "id": photo_ref.id, "group": photo_ref.group,
                   "cluster": "" if photo_ref.cluster is None else photo_ref.cluster,
                   "iou": iou(stats), "mae": mae(prob, truth), "tp": stats.tp, "fp": stats.fp, "fn": stats.fn}
            if zones is not None:
                row.update({f"lost_{k}": v for k, v in iou_lost_by_region(prob > threshold, truth, zones).items()})
            out[name].append(row)
    return out


def summarize_rows(rows: Sequence[dict], k: int) -> dict[str, float]:
    """DVC / MLflow metrics of per-photo rows: the test split's mean, share ≥ 0.99 and per-cluster
    IoU (`iou_mean`, `iou_cluster_<c>`: what the evaluate stage always reported), each benchmark
    set's mean (`iou_mean_<set>`), and the mean over every scored photo (`iou_mean_all`)."""
    from backdrop.metrics import summarize

    test = [r for r in rows if r["set"] == TEST]
    metrics = summarize([r["iou"] for r in test], [int(r["cluster"]) for r in test], k)
    metrics["mae"] = float(np.mean([r["mae"] for r in test])) if test else float("nan")
    for name in sorted({r["set"] for r in rows} - {TEST}):
        metrics[f"iou_mean_{name}"] = float(np.mean([r["iou"] for r in rows if r["set"] == name]))
    metrics["iou_mean_all"] = float(np.mean([r["iou"] for r in rows])) if rows else float("nan")
    metrics["n_all"] = len(rows)
    return metrics


def benchmark_clusters(params: Params, photos: Sequence[EvalPhoto]) -> dict[str, int]:
    """Product cluster of every benchmark photo in `photos` (key → id), assigned by its true mask with
    the cluster stage's model (`<cluster.out_dir>/model.joblib`), as monitoring assigns new photos;
    empty without that model. Issue 19's "every cluster" target reads the benchmark per cluster."""
    from PIL import Image

    from backdrop.config import resolve
    from backdrop.data.clusters import assigner
    from backdrop.progress import progress

    model = resolve(params.cluster.out_dir) / "model.joblib"
    bench = [p for p in photos if p.set != TEST]
    if not bench or not model.is_file():
        return {}
    assign = assigner(model)
    out = {}
    for ref in progress(bench, desc="benchmark clusters", unit="img"):
        photo, truth = ref.load()
        out[ref.key] = assign(photo, Image.fromarray(truth.astype(np.uint8) * 255, "L"))[0]
    return out


def score_benchmark(segmenters: Mapping[str, object], photos: Sequence[EvalPhoto], params: Params,
                    desc: str) -> dict[str, list[dict]]:
    """`score` with the region split on benchmark photos, each row with its style and product cluster
    (`ood_rows`): what `ood_metrics` reads."""
    scored = score(segmenters, photos, params, desc=desc, regions=True)
    clusters = benchmark_clusters(params, photos)  # empty before the cluster stage has run
    return {name: ood_rows(rows, clusters) for name, rows in scored.items()}


def ood_rows(rows: Sequence[dict], clusters: Mapping[str, int]) -> list[dict]:
    """The benchmark rows of `score` (every set but the test split) with their style (from the group
    `<set>/<style>`) and product cluster (`benchmark_clusters`; "" where unknown), for `ood_metrics`."""
    return [{**r, "style": r["group"].split("/", 1)[1], "cluster": clusters.get(f"{r['set']}:{r['id']}", "")}
            for r in rows if r["set"] != TEST]


def ood_metrics(rows: Sequence[dict]) -> dict[str, float]:
    """`ood_iou_mean` and `ood_share_ge_099` of scored benchmark rows, overall and per style
    (`…_<style>`), the mean IoU lost per region (`ood_lost_<region>…`) where rows were scored with
    `regions`, and the mean per product cluster (`ood_iou_cluster_<c>`) where rows carry one."""
    from backdrop.metrics import REGIONS

    out: dict[str, float] = {}
    styles = sorted({r["style"] for r in rows})
    with_regions = all(f"lost_{region}" in r for r in rows for region in REGIONS)
    for suffix, chosen in [("", rows)] + [(f"_{s}", [r for r in rows if r["style"] == s]) for s in styles]:
        ious = np.array([r["iou"] for r in chosen], float)
        out[f"ood_iou_mean{suffix}"] = float(ious.mean())
        out[f"ood_share_ge_099{suffix}"] = float((ious >= 0.99).mean())
        out[f"ood_n{suffix}"] = len(chosen)
        for region in REGIONS if with_regions else ():
            out[f"ood_lost_{region}{suffix}"] = float(np.mean([r[f"lost_{region}"] for r in chosen]))
    by_cluster: dict[int, list[float]] = {}
    for r in rows:
        if r.get("cluster") not in (None, ""):
            by_cluster.setdefault(int(r["cluster"]), []).append(float(r["iou"]))
    for c, ious in sorted(by_cluster.items()):
        out[f"ood_iou_cluster_{c}"] = float(np.mean(ious))
        out[f"ood_n_cluster_{c}"] = len(ious)
    return out


def group_means(rows: Sequence[dict]) -> dict[str, float]:
    """Mean IoU per group (`c3`, `<set>/<style>`), sorted by group."""
    groups: dict[str, list[float]] = {}
    for r in rows:
        groups.setdefault(r["group"], []).append(float(r["iou"]))
    return {g: float(np.mean(v)) for g, v in sorted(groups.items())}


def thumbnails(segmenter, photos: Sequence[EvalPhoto], params: Params, side: int = 128):
    """(photos uint8 (N,S,S,3), truths (N,S,S), published maps (N,S,S)) squeezed to side² for an
    overlay grid of a few photos (the worst, the ones that got worse): recomputed, not kept from
    `score`, so scoring a thousand photos never holds their full-size maps."""
    from PIL import Image

    from backdrop.serving.outputs import OutputOptions, final_prob

    options = OutputOptions.from_params(params.serve)
    ims, truths, probs = [], [], []
    for ref in photos:
        photo, truth = ref.load()
        prob = final_prob(photo, segmenter.probabilities(photo), options)
        ims.append(np.asarray(photo.resize((side, side), Image.Resampling.BILINEAR)))
        truths.append(np.asarray(Image.fromarray(truth.astype(np.uint8) * 255).resize((side, side))) / 255.0)
        probs.append(np.asarray(Image.fromarray(prob.astype(np.float32), "F").resize((side, side))))
    shape = (0, side, side)
    return (np.stack(ims) if ims else np.zeros(shape + (3,), np.uint8),
            np.stack(truths) if truths else np.zeros(shape), np.stack(probs) if probs else np.zeros(shape))
