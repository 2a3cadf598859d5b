"""Edge refinement: which `serve.refine` setting publishes the best masks — chosen on val, judged on test.

    .venv/bin/python bench/refine_bench.py [--model champion] [--limit N]

Why: the champion's map is made at 320 px and upsampled 2–4× to the photo, so its edge can sit a
pixel or two off the product's real edge; on a 0.99 IoU target that is most of the error left. A
guided filter (grey or colour guide = the photo) can move the 0.5 crossing onto the photo's edge.

Protocol: the champion's probabilities as served (`--engine served`, the default: the ONNX fast path
at `serve.precision`; `--engine torch`: PyTorch; the zoom pass as `serve.zoom` says) for every val and test photo at its own size; each candidate
(none, probability thresholds, guided / guided_rgb × radius × eps, and the grey ones again with
`serve.tta: hflip`, each pass averaged with its mirror image's; and `serve.zoom_blend` 0.25–0.75, the
whole-photo pass's share inside the zoom box, and `serve.zoom_max_area` 1, on the best grey
filters) is scored by IoU of its > 0.5 mask vs the vendor
mask. The candidate with the most val images ≥ 0.99 (then the best val mean) is the
pick; its test numbers are what it is worth — test never chooses anything. Writes
bench/results/refine.json with every candidate's val and test summary and ms/photo.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
GREY = [(r, e) for r in (1, 2, 3, 4, 6) for e in (1e-3, 1e-2)] + [(r, 1e-4) for r in (1, 2, 3)]
COLOUR = [(r, e) for r in (2, 3, 4) for e in (1e-3, 1e-2)]  # ~3× the grey filter's cost
THRESHOLDS = (0.4, 0.45, 0.55, 0.6)
BLENDS = (0.25, 0.5, 0.75)
BLEND_WITH = ("none", "guided_r1_eps0.001", "guided_r2_eps0.001", "guided_r3_eps0.001")


def candidates() -> list[dict]:
    out = [{"name": "none", "refine": "none", "threshold": 0.5}]
    out += [{"name": f"threshold_{t}", "refine": "none", "threshold": t} for t in THRESHOLDS]
    for mode, grid in (("guided", GREY), ("guided_rgb", COLOUR)):
        out += [{"name": f"{mode}_r{r}_eps{e:g}", "refine": mode, "radius": r, "eps": e, "threshold": 0.5}
                for r, e in grid]
    # serve.zoom_blend: the whole-photo pass's share inside the zoom box (a two-scale mean, no extra
    # runs); and serve.zoom_max_area 1 (every photo gets the zoom pass) with and without blending
    base = [c for c in out if c["name"] in BLEND_WITH]
    out += [{**c, "name": f"blend{b:g}+{c['name']}", "blend": b} for b in BLENDS for c in base]
    out += [{**c, "name": f"zoom_all+blend{b:g}+{c['name']}", "blend": b, "max_area": 1.0}
            for b in (0.0, *BLENDS) for c in base]
    # the same on the mean of the photo's and its mirror image's maps (2× the model's cost)
    out += [{**c, "name": f"hflip_tta+{c['name']}", "tta": True}
            for c in out if c["refine"] in ("none", "guided") and c["threshold"] == 0.5]
    return out


def views(segmenter, photo) -> tuple[np.ndarray, tuple | None, np.ndarray | None]:
    """The served passes, kept apart: the whole photo's (H,W) map, the zoom box (None: no box) and
    the box's own (h,w) map, run whatever share of the frame the box covers — so every zoom_blend
    and zoom_max_area is scored from one set of model runs."""
    from backdrop.serving.preprocess import upsample
    from backdrop.serving.torch_engine import TorchSegmenter
    from backdrop.zoom import object_box

    if isinstance(segmenter, TorchSegmenter):
        one_pass = segmenter.single_pass
    else:
        def one_pass(image):
            return upsample(segmenter.run(segmenter.prepare([image]))[0][0], image.size)
    first = one_pass(photo)
    box = object_box(first, segmenter.zoom_margin) if segmenter.zoom_margin > 0 else None
    if box is None:
        return first, None, None
    return first, box, one_pass(photo.crop(box))


def served(first: np.ndarray, box, crop: np.ndarray | None, blend: float, max_area: float,
           min_agreement: float = 0.0) -> np.ndarray:
    """`backdrop.zoom.refine`'s output for these views, `serve.zoom_blend`, `serve.zoom_max_area` and
    `serve.zoom_min_agreement`."""
    from backdrop.zoom import agreement, merge, worth_zooming

    if box is None or not worth_zooming(box, first.shape[::-1], max_area):
        return first
    if agreement(first, box, crop) < min_agreement:
        return first
    return merge(first, box, crop, blend)


def apply(cand: dict, photo, prob: np.ndarray) -> np.ndarray:
    """The candidate's published mask (bool H,W)."""
    from backdrop.serving.outputs import OutputOptions, final_prob

    if cand["refine"] != "none":
        prob = final_prob(photo, prob, OutputOptions(refine=cand["refine"], refine_radius=cand["radius"],
                                                     refine_eps=cand["eps"]))
    return prob > cand["threshold"]


def summarize(ious: list[float], clusters: list[int], k: int) -> dict:
    from backdrop.metrics import summarize as stage_summary  # the evaluate stage's per-cluster means

    s = stage_summary(ious, clusters, k)
    per = {key.rsplit("_", 1)[1]: round(v, 5) for key, v in s.items() if key.startswith("iou_cluster_")}
    return {"iou_mean": round(s["iou_mean"], 5), "share_ge_0_99": round(s["share_iou_ge_099"], 4),
            "min_cluster": min(per.values()) if per else float("nan"), "per_cluster": per, "n": s["n"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="champion")
    ap.add_argument("--engine", choices=("served", "torch"), default="served",
                    help="served: the ONNX fast path at serve.precision (default); torch: the PyTorch model")
    ap.add_argument("--limit", type=int, default=0, help="first N photos of each split (0 = all)")
    ap.add_argument("--out", type=Path, default=REPO / "bench/results/refine.json")
    args = ap.parse_args(argv)
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")  # progress lines

    from backdrop.config import load_params, resolve
    from backdrop.data.heldout import held_out
    from backdrop.metrics import mask_iou
    from backdrop.progress import progress
    from backdrop.serving.segmenter import load_segmenter

    params = load_params()
    if not (resolve(params.prepare.out_dir) / "index.csv").exists():
        print(f"refine: no trained pipeline in this checkout (data/prepared missing); leaving {args.out} as it is")
        return 0
    k = params.cluster.k
    if args.engine == "served":  # what `backdrop remove` and the API run: ONNX at serve.precision
        champion = load_segmenter(args.model, "onnx", params.serve.precision, params=params)
    else:
        champion = load_segmenter(args.model, "torch", params=params)
    champion = dataclasses.replace(champion, flip_tta=False, zoom_blend=0.0)
    with_tta = dataclasses.replace(champion, flip_tta=True)
    cands = candidates()
    result: dict = {"model": champion.source, "engine": args.engine, "zoom_margin": champion.zoom_margin,
                    "zoom_max_area": champion.zoom_max_area, "splits": {}}
    per_image: dict[str, list] = {}
    checked = False
    for split in ("val", "test"):
        pairs = held_out(params, split, args.limit)
        rows, clusters = pairs.rows, pairs.clusters
        ious = {c["name"]: [] for c in cands}
        seconds = dict.fromkeys(ious, 0.0)
        for row in progress(rows, desc=f"refine ({split})", unit="img"):
            photo, truth = pairs.load(row)
            plain, mirrored = views(champion, photo), views(with_tta, photo)  # serve.tta none / hflip
            if not checked:  # the bench's own composition of the passes is what the segmenter serves
                for b in (0.0, 0.5):
                    product = dataclasses.replace(champion, zoom_blend=b).probabilities(photo)
                    composed = served(*plain, b, champion.zoom_max_area, champion.zoom_min_agreement)
                    assert np.abs(composed - product).max() < 1e-6, f"zoom_blend {b}: bench != served"
                checked = True
            maps = {}
            for cand in cands:
                key = (bool(cand.get("tta")), cand.get("blend", 0.0), cand.get("max_area", champion.zoom_max_area))
                if key not in maps:
                    maps[key] = served(*(mirrored if key[0] else plain), key[1], key[2], champion.zoom_min_agreement)
                base = maps[key]
                t0 = time.perf_counter()
                mask = apply(cand, photo, base)
                seconds[cand["name"]] += time.perf_counter() - t0
                ious[cand["name"]].append(mask_iou(mask, truth))
        result["splits"][split] = {
            name: {**summarize(v, clusters, k), "ms_per_photo": round(1000 * seconds[name] / max(len(rows), 1), 1)}
            for name, v in ious.items()}
        per_image[split] = [{"pair_id": r["pair_id"], "cluster": c, **{n: round(v[i], 5) for n, v in ious.items()}}
                            for i, (r, c) in enumerate(zip(rows, clusters, strict=True))]
    val = result["splits"]["val"]
    pick = max(cands, key=lambda c: (val[c["name"]]["share_ge_0_99"], val[c["name"]]["iou_mean"]))
    result["picked_on_val"] = pick
    result["test_of_pick"] = result["splits"]["test"][pick["name"]]
    result["test_of_none"] = result["splits"]["test"]["none"]
    result["per_image"] = per_image
    result["machine"] = {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                         "python": sys.version.split()[0]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'candidate':<28}{'val mean':>9}{'val≥.99':>8}{'test mean':>10}{'test≥.99':>9}{'test min c':>11}{'ms':>7}")
    for c in cands:
        v, t = val[c["name"]], result["splits"]["test"][c["name"]]
        print(f"{c['name']:<28}{v['iou_mean']:>9.4f}{v['share_ge_0_99']:>8.3f}{t['iou_mean']:>10.4f}"
              f"{t['share_ge_0_99']:>9.3f}{t['min_cluster']:>11.4f}{t['ms_per_photo']:>7.0f}")
    print(f"picked on val: {pick['name']} → test {result['test_of_pick']}; wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
