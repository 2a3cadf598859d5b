"""Review routing on held-out photos: is the confidence score low where the cut-out is bad?

Renders synthetic packshots with exact masks (a seed the training data does not use), cuts them out
with the serving path, and reports: the confidence threshold that routes `--route-share` of the
photos, the mean IoU of routed vs published photos, and the share of bad cut-outs (IoU < 0.99) that
routing catches. Writes bench/results/review_calibration.json.

    .venv/bin/python bench/review_calibration.py [--model official:u2netp] [--n 60]

Not run by `make bench` (minutes on a 2-core machine); the threshold it suggests goes into
params.yaml `serve.review_threshold`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="official:u2netp")
    ap.add_argument("--n", type=int, default=60)
    ap.add_argument("--seed", type=int, default=9090)
    ap.add_argument("--route-share", type=float, default=0.075)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "review_calibration.json")
    args = ap.parse_args(argv)

    from backdrop.data.synth import render_item
    from backdrop.serving.onnx_fast import load_fast_segmenter
    from backdrop.serving.review import confidence

    seg = load_fast_segmenter(args.model)
    rows = []
    for i in range(args.n):
        photo, mask, meta = render_item(args.seed, i, min_side=600, max_side=1000, white_share=0.2, black_share=0.1)
        pred = seg.predict_batch([photo])[0]
        gt = np.asarray(mask) > 127
        fg = pred.prob >= 0.5
        iou = float((fg & gt).sum() / max(1, (fg | gt).sum()))
        conf = confidence(pred.small, pred.disagreement)
        rows.append({"i": i, "style": meta.style, "iou": iou, **conf.as_dict()})
    conf_arr = np.array([r["confidence"] for r in rows])
    iou_arr = np.array([r["iou"] for r in rows])
    threshold = float(np.quantile(conf_arr, args.route_share))
    routed = conf_arr <= threshold
    bad = iou_arr < 0.99
    report = {
        "model": seg.source, "n": args.n, "route_share_target": args.route_share,
        "suggested_review_threshold": round(threshold + 1e-6, 5),
        "routed": int(routed.sum()),
        "iou_mean_routed": round(float(iou_arr[routed].mean()), 5) if routed.any() else None,
        "iou_mean_published": round(float(iou_arr[~routed].mean()), 5),
        "bad_lt_0_99": int(bad.sum()),
        "bad_caught_share": round(float((bad & routed).sum() / bad.sum()), 3) if bad.any() else None,
        "spearman_confidence_vs_iou": round(float(np.corrcoef(np.argsort(np.argsort(conf_arr)),
                                                              np.argsort(np.argsort(iou_arr)))[0, 1]), 3),
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k != "rows"}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
