"""Weight-space ensembles of the fine-tune and the official weights (WiSE-FT, Wortsman et al. 2022).

Fine-tuning on the drop's renderers trades part of what the official weights knew for what the drop
teaches. Points on the straight line between the two, θ(α) = (1 − α)·θ_official + α·θ_fine-tuned, can
hold a model that keeps more of the first on photos unlike the drop. After training,
`train.wise_alphas` lists the points to try. Each is scored with the same selection score that
picked the epoch (the drop's val split and the benchmarks' val part, `loop.selection_score`), and
the best becomes `model.pt`. The fine-tuned epoch itself (α = 1) is always a candidate; it is kept
as `finetuned.pt`, so a rerun with another grid starts from it and gives the same answer.
"""

from __future__ import annotations

import logging
from pathlib import Path

from backdrop.config import Params, resolve
from backdrop.io import write_json
from backdrop.training.checkpoint import save_checkpoint

log = logging.getLogger(__name__)


FINETUNED = "finetuned.pt"
WISE_JSON = "wise.json"
WISE_PNG = "wise.png"


def interpolate(official: dict, tuned: dict, alpha: float) -> dict:
    """(1 − α)·official + α·tuned for every floating-point tensor of a state dict; other entries
    (counters) are the fine-tune's."""
    import torch

    return {k: torch.lerp(official[k].float(), v.float(), alpha).to(v.dtype) if v.is_floating_point() else v
            for k, v in tuned.items()}


def _finetuned(out: Path) -> dict:
    """The fine-tuned epoch: finetuned.pt once a blend ran, else the loop's model.pt (kept aside)."""
    import torch

    kept, model = out / FINETUNED, out / "model.pt"
    if kept.exists():
        return torch.load(kept, map_location="cpu", weights_only=False)
    if not model.exists():
        raise FileNotFoundError(f"{model}: no trained model to blend (run `backdrop train`)")
    state = torch.load(model, map_location="cpu", weights_only=False)
    if "wise_alpha" in state:
        raise RuntimeError(f"{model} is already a blend and {kept} is missing: retrain (`backdrop train`)")
    save_checkpoint(state, kept)
    return state


def _restore(out: Path) -> None:
    """Blending turned off on a run that was blended: model.pt is the fine-tuned epoch again."""
    kept = out / FINETUNED
    if kept.exists():
        kept.replace(out / "model.pt")
        for name in (WISE_JSON, WISE_PNG):
            (out / name).unlink(missing_ok=True)
        log.info("train.wise_alphas is empty: %s is the fine-tuned epoch again", out / "model.pt")


def blend(params: Params, run_id: str | None = None) -> dict | None:
    """Score θ(α) for every α of `train.wise_alphas` (and 1), write the best as model.pt, the table as
    wise.json and its plot as wise.png, and log them to the training run in MLflow. None when
    `train.wise_alphas` is empty."""
    import torch

    from backdrop.distributed import Dist
    from backdrop.models import build_model
    from backdrop.progress import progress
    from backdrop.training.loop import load_data, selection_score, validate, validate_benchmarks
    from backdrop.viz import wise_line

    tp = params.train
    out = resolve(tp.out_dir)
    if not tp.wise_alphas:
        _restore(out)
        return None
    torch.set_num_threads(max(1, tp.num_threads))
    tuned = _finetuned(out)
    official = build_model(tuned["arch"], init=tp.init).state_dict()
    net = build_model(tuned["arch"], init="scratch")
    data, single = load_data(params, train=False), Dist()
    rows = []
    for alpha in progress(sorted({*tp.wise_alphas, 1.0}), desc="WiSE-FT blends", unit="blend"):
        net.load_state_dict(interpolate(official, tuned["state_dict"], alpha))
        _, val = validate(net, data, single, params.cluster.k)
        ood = validate_benchmarks(net, data, single)
        rows.append({"alpha": alpha, "val_iou_mean": val["iou_mean"], **ood,
                     "selection_score": selection_score(val["iou_mean"], ood.get("ood_val_iou_mean"), tp)})
        log.info("WiSE-FT α %.2f: val IoU %.4f%s, selection score %.4f", alpha, val["iou_mean"],
                 f", benchmark val IoU {ood['ood_val_iou_mean']:.4f}" if ood else "", rows[-1]["selection_score"])
    best = max(rows, key=lambda r: (r["selection_score"], r["alpha"]))  # a tie goes to the fine-tune's side
    save_checkpoint({**tuned, "state_dict": interpolate(official, tuned["state_dict"], best["alpha"]),
                     "wise_alpha": best["alpha"],
                     "finetuned_epoch": tuned.get("epoch"), "val_iou": best["val_iou_mean"],
                     "selection_score": best["selection_score"], "ood_val_iou": best.get("ood_val_iou_mean")},
                    out / "model.pt")
    report = {"alpha": best["alpha"], "val_iou_mean": best["val_iou_mean"], "selection_score": best["selection_score"],
              "finetuned_epoch": tuned.get("epoch"), "candidates": rows}
    write_json(out / WISE_JSON, report)
    wise_line(rows, best["alpha"], out / WISE_PNG, f"WiSE-FT blends of epoch {tuned.get('epoch')}")
    log.info("WiSE-FT: model.pt is α %.2f of epoch %s (selection score %.4f; the fine-tune alone %.4f)",
             best["alpha"], tuned.get("epoch"), best["selection_score"], rows[-1]["selection_score"])
    if run_id:
        _log_to_mlflow(params, run_id, rows, best, [out / WISE_JSON, out / WISE_PNG])
    return report


def _log_to_mlflow(params: Params, run_id: str, rows: list[dict], best: dict, files: list[Path]) -> None:
    """Each candidate as a step of the `wise_*` metrics (step = 100·α: the UI draws the line), the
    chosen α as `wise_alpha`, the table and its picture as artifacts (`wise/`)."""
    import mlflow

    from backdrop import tracking

    tracking.setup(params)
    with mlflow.start_run(run_id=run_id, log_system_metrics=False):
        for row in rows:
            mlflow.log_metrics({f"wise_{k}": v for k, v in row.items() if k != "alpha"},
                               step=round(100 * row["alpha"]))
        mlflow.log_metrics({"wise_alpha": best["alpha"], "wise_chosen_selection_score": best["selection_score"]})
        for path in files:
            mlflow.log_artifact(str(path), artifact_path="wise")
