"""register: log the trained model to MLflow, register a version, and move `champion` only if it wins.

The gate: a challenger becomes champion when its mean test IoU beats the champion's by more than
`register.min_improvement` and no cluster drops by more than `register.max_cluster_drop`.
The decision and both scores are logged on the run and the model version.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from backdrop.config import Params, resolve
from backdrop.io import write_json

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GateDecision:
    promote: bool
    reason: str


@dataclass(frozen=True)
class RegisterResult:
    version: str
    promoted: bool
    reason: str
    uri: str


def gate(challenger: dict[str, float], champion: dict[str, float] | None, min_improvement: float,
         max_cluster_drop: float) -> GateDecision:
    """Pure comparison of two metric dicts (keys iou_mean, iou_cluster_<k>)."""
    if champion is None:
        return GateDecision(True, "no champion yet")
    gain = challenger["iou_mean"] - champion["iou_mean"]
    if gain <= min_improvement:
        return GateDecision(False, f"mean IoU {challenger['iou_mean']:.4f} does not beat champion "
                                   f"{champion['iou_mean']:.4f} by more than {min_improvement}")
    drops = {k: champion[k] - challenger.get(k, 0.0) for k in champion if k.startswith("iou_cluster_")}
    worst = max(drops.items(), key=lambda kv: kv[1], default=(None, 0.0))
    if worst[0] is not None and worst[1] > max_cluster_drop:
        return GateDecision(False, f"{worst[0]} drops by {worst[1]:.4f} > {max_cluster_drop}")
    return GateDecision(True, f"mean IoU +{gain:.4f} over champion, worst cluster change "
                              f"{-worst[1]:+.4f}")


def champion_metrics(client, name: str, alias: str) -> tuple[str | None, dict | None]:
    from mlflow.exceptions import MlflowException

    try:
        version = client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None, None
    metrics = {k.removeprefix("test."): float(v) for k, v in version.tags.items() if k.startswith("test.")}
    if not metrics and "test_metrics" in version.tags:  # versions registered before one tag per metric
        metrics = json.loads(version.tags["test_metrics"])
    return version.version, metrics or None


def export_checked_onnx(cutout, size: int, model_file: Path, params: Params) -> tuple[Path, float]:
    """The serving export of a registered model (`cutout`, loaded from `model_file`), checked
    against PyTorch on one input.

    The export is the one serving loads (the segmenter factory, fp32 ONNX engine): it lands in the
    export cache (keyed by the weights), not in a DVC output of the pipeline. Returns the file and the
    max abs difference of the probabilities (float32 rounding, ~1e-6).
    """
    import numpy as np
    import torch

    from backdrop.serving.segmenter import load_segmenter

    seg = load_segmenter(str(model_file), "onnx", "fp32", params=params)
    path = Path(seg.onnx_file)
    x = np.random.default_rng(1).random((2, 3, size, size), dtype=np.float32)
    with torch.inference_mode():
        want = cutout(torch.from_numpy(x)).numpy()
    got = seg.session.run(["prob"], {"image": x})[0]
    diff = float(np.abs(got - want).max())
    if diff > 1e-3:
        raise RuntimeError(f"{path}: ONNX export disagrees with PyTorch (max abs diff {diff:.2e})")
    return path, diff


def evaluated_metrics(params: Params) -> dict[str, float]:
    """The evaluate stage's test metrics (`<evaluate.out_dir>/eval.json`), read from its output file
    rather than imported from `stages.evaluate` (stages are independent)."""
    path = resolve(params.evaluate.out_dir) / "eval.json"
    if not path.exists():
        raise FileNotFoundError(f"{path}: no evaluation yet (run `backdrop evaluate`)")
    return json.loads(path.read_text())


def register(params: Params) -> RegisterResult:
    import mlflow
    import numpy as np
    import torch
    from mlflow.models import infer_signature

    from backdrop import tracking
    from backdrop.models.cutout import CutoutModel
    from backdrop.models.trained import load_trained

    rp = params.register_
    train_out = resolve(params.train.out_dir)
    net, meta = load_trained(train_out / "model.pt")
    cutout = CutoutModel(net, size=meta["size"], arch=meta["arch"]).eval()
    metrics = evaluated_metrics(params)
    run_id = json.loads((train_out / "run.json").read_text())["run_id"]

    tracking.setup(params)
    client = mlflow.MlflowClient()
    champ_version, champ = champion_metrics(client, rp.model_name, rp.alias)
    decision = gate(metrics, champ, rp.min_improvement, rp.max_cluster_drop)

    example = np.random.default_rng(0).random((1, 3, meta["size"], meta["size"]), dtype=np.float32)
    with torch.inference_mode():
        signature = infer_signature(example, cutout(torch.from_numpy(example)).numpy())
    with mlflow.start_run(run_id=run_id):
        info = mlflow.pytorch.log_model(
            cutout, name="model", signature=signature, registered_model_name=rp.model_name,
            serialization_format="pickle",  # keeps the nn.Module (and its .size) for load_model
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", "backdrop"],
            metadata={"size": meta["size"], "arch": meta["arch"]})
        version = str(info.registered_model_version)
        onnx_path, onnx_diff = export_checked_onnx(cutout, meta["size"], train_out / "model.pt", params)
        mlflow.log_artifact(str(onnx_path), artifact_path="onnx")
        mlflow.log_metric("onnx_max_abs_diff", onnx_diff)
        note = mlflow.get_run(run_id).data.tags.get("mlflow.note.content", "")
        verdict = f"promoted to @{rp.alias}" if decision.promote else "not promoted"
        mlflow.set_tags({"mlflow.note.content": f"{note}\n\n**gate** v{version} {verdict}: {decision.reason}",
                         "gate.promoted": decision.promote, "gate.reason": decision.reason,
                         "gate.champion_version": champ_version or "none",
                         "gate.champion_iou_mean": champ["iou_mean"] if champ else "none"})
    for key, value in metrics.items():  # one readable tag per test metric (not a truncated JSON blob)
        client.set_model_version_tag(rp.model_name, version, f"test.{key}", f"{value:.6g}")
    client.set_model_version_tag(rp.model_name, version, "gate", decision.reason)
    client.set_model_version_tag(rp.model_name, version, "size", str(meta["size"]))
    client.set_model_version_tag(rp.model_name, version, "onnx", f"runs:/{run_id}/onnx/{onnx_path.name}")
    if decision.promote:
        client.set_registered_model_alias(rp.model_name, rp.alias, version)
    uri = f"models:/{rp.model_name}/{version}"
    write_json(resolve(params.evaluate.out_dir) / "register.json", {
        "model": rp.model_name, "version": version, "promoted": decision.promote,
        "reason": decision.reason, "champion_before": champ_version,
        "champion_iou_before": champ["iou_mean"] if champ else None,
        "challenger_iou": metrics["iou_mean"], "run_id": run_id})
    log.info("register: %s v%s — %s (%s)", rp.model_name, version,
             "promoted to @" + rp.alias if decision.promote else "kept old champion", decision.reason)
    return RegisterResult(version, decision.promote, decision.reason, uri)
