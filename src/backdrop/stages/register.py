"""register: log the trained model to MLflow, register a version, and move `champion` only if it wins.

The gate compares models on the same photos, in this run, through the served path: the challenger's
per-photo rows from evaluate (test split + frozen benchmark sets), and the current champion and the
stock model (`register.stock_model`, official U²-NetP) scored now on exactly those photos by the same
function (`serving.scoring.score`). A number stored on the champion from an older split never
decides: every night's drop changes the split. Promoted only when the seeded bootstrap lower bound
of the paired mean gain exceeds `register.min_improvement`, no group (cluster, benchmark style) drops
by more than `register.max_cluster_drop`, and the challenger is not below the stock model, neither
over all photos nor in any style of a frozen (out-of-distribution) benchmark set. The
decision report (per-group table, the photos that got worse as thumbnails, the reason) goes to
`metrics/gate/`, the MLflow run (`gate/`) and the task log.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from backdrop.config import Params, resolve
from backdrop.io import write_json

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GateDecision:
    promote: bool
    reason: str
    n: int = 0                          # photos compared (paired)
    gain_mean: float | None = None      # challenger − champion, mean over the paired photos
    gain_lower: float | None = None     # the bootstrap's lower confidence bound of that mean
    groups: dict = field(default_factory=dict)  # group → {"n", "champion", "challenger", "stock"}
    worse: list = field(default_factory=list)   # [(key, champion IoU, challenger IoU)], worst drop first
    means: dict = field(default_factory=dict)   # model → mean IoU over the compared photos


@dataclass(frozen=True)
class RegisterResult:
    version: str
    promoted: bool
    reason: str
    uri: str


def bootstrap_lower(gains, resamples: int = 2000, seed: int = 0, confidence: float = 0.95) -> float:
    """One-sided lower bound of the mean of paired per-photo gains: the (1 − confidence) quantile of
    the means of `resamples` seeded resamples (with replacement). Seeded, so the gate's decision is
    reproducible from the rows it read."""
    import numpy as np

    g = np.asarray(gains, dtype=np.float64)
    if g.size == 0:
        raise ValueError("no paired photos to compare")
    rng = np.random.default_rng(seed)
    means = g[rng.integers(0, g.size, size=(resamples, g.size))].mean(axis=1)
    return float(np.quantile(means, 1.0 - confidence))


def _by_key(rows) -> dict[str, tuple[str, float]]:
    return {f"{r['set']}:{r['id']}": (r["group"], float(r["iou"])) for r in rows}


def gate(challenger: list[dict], champion: list[dict] | None, stock: list[dict] | None, *,
         min_improvement: float, max_cluster_drop: float, stock_margin: float = 0.0,
         resamples: int = 2000, seed: int = 0, confidence: float = 0.95) -> GateDecision:
    """The promotion rule on per-photo rows (set, id, group, iou) of the same photos.

    Refused when the challenger's mean is below the stock model's by more than `stock_margin`, over
    all photos or in any group of a frozen benchmark set (every set but the test split): a model
    that wins on photos like its training drop and loses on photos unlike it is a regression. With
    a champion, promoted only when the bootstrap lower bound of the paired mean gain exceeds
    `min_improvement` and no group (test cluster, benchmark style) loses more than
    `max_cluster_drop` of mean IoU. Photos not scored for every model are left out (and counted)."""
    import numpy as np

    from backdrop.serving.scoring import TEST

    chall = _by_key(challenger)
    champ = _by_key(champion) if champion is not None else None
    base = _by_key(stock) if stock is not None else None
    keys = [k for k in chall if (champ is None or k in champ) and (base is None or k in base)]
    if not keys:
        raise ValueError("the challenger and the models it is compared with share no scored photo")
    means = {"challenger": float(np.mean([chall[k][1] for k in keys]))}
    groups: dict[str, dict] = {}
    benchmark_groups = {chall[k][0] for k in keys if not k.startswith(f"{TEST}:")}
    for k in keys:
        g = groups.setdefault(chall[k][0], {"n": 0, "challenger": [], "champion": [], "stock": []})
        g["n"] += 1
        g["challenger"].append(chall[k][1])
        if champ is not None:
            g["champion"].append(champ[k][1])
        if base is not None:
            g["stock"].append(base[k][1])
    table = {name: {"n": g["n"], **{m: (float(np.mean(v)) if v else None) for m, v in g.items() if m != "n"}}
             for name, g in sorted(groups.items())}
    common = {"n": len(keys), "groups": table}
    if base is not None:
        means["stock"] = float(np.mean([base[k][1] for k in keys]))
    if champ is not None:
        means["champion"] = float(np.mean([champ[k][1] for k in keys]))
        gains = [chall[k][1] - champ[k][1] for k in keys]
        worse = sorted(((k, champ[k][1], chall[k][1]) for k in keys if chall[k][1] < champ[k][1]),
                       key=lambda t: t[2] - t[1])
        common.update(gain_mean=float(np.mean(gains)), worse=worse,
                      gain_lower=bootstrap_lower(gains, resamples, seed, confidence))
    common["means"] = means

    if base is not None and means["challenger"] < means["stock"] - stock_margin:
        return GateDecision(False, f"mean IoU {means['challenger']:.4f} is below the stock model's "
                                   f"{means['stock']:.4f} (margin {stock_margin}) on {len(keys)} photos", **common)
    if base is not None:
        below = {name: table[name]["stock"] - table[name]["challenger"] for name in sorted(benchmark_groups)}
        below = {name: gap for name, gap in below.items() if gap > stock_margin}
        if below:
            name, gap = max(below.items(), key=lambda kv: kv[1])
            return GateDecision(False, f"below the stock model on the out-of-distribution benchmark: "
                                       f"{name} {table[name]['challenger']:.4f} vs stock "
                                       f"{table[name]['stock']:.4f} (margin {stock_margin}; "
                                       f"{len(below)} style(s) below)", **common)
    if champ is None:
        floor = f", stock {means['stock']:.4f}" if base is not None else ""
        return GateDecision(True, f"no champion yet (mean IoU {means['challenger']:.4f}{floor})", **common)
    lower, gain = common["gain_lower"], common["gain_mean"]
    if lower <= min_improvement:
        return GateDecision(False, f"paired gain {gain:+.4f} over the champion on {len(keys)} photos, "
                                   f"{confidence:.0%} lower bound {lower:+.4f} does not exceed "
                                   f"{min_improvement}", **common)
    drops = {name: g["champion"] - g["challenger"] for name, g in table.items()}
    name, drop = max(drops.items(), key=lambda kv: kv[1])
    if drop > max_cluster_drop:
        return GateDecision(False, f"group {name} drops by {drop:.4f} > {max_cluster_drop} "
                                   f"(paired gain {gain:+.4f}, lower bound {lower:+.4f})", **common)
    return GateDecision(True, f"paired gain {gain:+.4f} over the champion on {len(keys)} photos, "
                              f"{confidence:.0%} lower bound {lower:+.4f} > {min_improvement}; worst group "
                              f"change {-drop:+.4f}", **common)


def version_tags(metrics: dict[str, float]) -> dict[str, str]:
    """One readable model-version tag per evaluate metric (not a truncated JSON blob): `test.<key>` for
    the test split, `benchmark.<key>` for the benchmark's means and shares (per style and cluster). The
    losses per region, the counts and the stock model's figures stay in the MLflow run."""
    tags = {}
    for key, value in metrics.items():
        if key.startswith("ood_"):
            if not key.startswith(("ood_lost_", "ood_n")):
                tags[f"benchmark.{key}"] = f"{value:.6g}"
        elif not key.startswith("stock_"):
            tags[f"test.{key}"] = f"{value:.6g}"
    return tags


def champion_version(client, name: str, alias: str) -> str | None:
    from mlflow.exceptions import MlflowException

    try:
        return str(client.get_model_version_by_alias(name, alias).version)  # an int in MLflow 3
    except MlflowException:
        return None


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


def evaluated_rows(params: Params) -> list[dict]:
    """The challenger's per-photo rows as evaluate wrote them (`<evaluate.out_dir>/per_image.csv`)."""
    from backdrop.io import read_csv

    path = resolve(params.evaluate.out_dir) / "per_image.csv"
    if not path.exists():
        raise FileNotFoundError(f"{path}: no evaluation yet (run `backdrop evaluate`)")
    rows = read_csv(path)
    missing = {"set", "id", "group", "iou"} - set(rows[0] if rows else {})
    if missing:
        raise ValueError(f"{path}: missing column(s) {', '.join(sorted(missing))} (rerun `backdrop evaluate`)")
    return rows


def score_rivals(params: Params, challenger: list[dict], champion_spec: str | None) -> dict[str, list[dict]]:
    """The champion (when there is one) and the stock model (`register.stock_model`), served the way
    `backdrop remove` serves them, scored on exactly the photos the challenger was scored on."""
    from backdrop.serving.scoring import eval_photos, score, served_segmenter

    wanted = {f"{r['set']}:{r['id']}" for r in challenger}
    photos = [p for p in eval_photos(params) if p.key in wanted]
    rivals = {}
    if champion_spec:
        rivals["champion"] = served_segmenter(champion_spec, params)
    if params.register_.stock_model:
        rivals["stock"] = served_segmenter(params.register_.stock_model, params)
    if not rivals:
        return {}
    return score(rivals, photos, params, desc="gate (champion, stock)")


def decision_report(decision: GateDecision, version: str, champ_version: str | None, stock: str) -> str:
    """The gate's decision as Markdown: verdict, reason, means, per-group table, the photos that got worse."""
    def cell(v):
        return "–" if v is None else f"{v:.4f}"

    lines = [f"# gate: v{version} {'promoted' if decision.promote else 'not promoted'}", "",
             f"**reason**: {decision.reason}", "",
             f"compared on {decision.n} photos; champion: {'v' + champ_version if champ_version else 'none'}; "
             f"stock: {stock or 'none'}", ""]
    if decision.gain_mean is not None:
        lines += [f"paired mean gain {decision.gain_mean:+.4f}, bootstrap lower bound {decision.gain_lower:+.4f}", ""]
    lines += ["| model | mean IoU |", "|---|---|"] + [f"| {m} | {v:.4f} |" for m, v in decision.means.items()]
    lines += ["", "| group | photos | champion | challenger | stock |", "|---|---|---|---|---|"]
    lines += [f"| {g} | {t['n']} | {cell(t['champion'])} | {cell(t['challenger'])} | {cell(t['stock'])} |"
              for g, t in decision.groups.items()]
    if decision.worse:
        lines += ["", f"{len(decision.worse)} photo(s) got worse (worst first): "
                  + ", ".join(f"{k} {a:.3f}→{b:.3f}" for k, a, b in decision.worse[:20])]
    return "\n".join(lines) + "\n"


def worse_grid(params: Params, decision: GateDecision, spec: str, path: Path) -> Path | None:
    """Thumbnails of the photos the challenger (`spec`) cuts out worse than the champion, worst first."""
    from backdrop.serving.scoring import eval_photos, served_segmenter, thumbnails
    from backdrop.viz import overlay_grid

    if not decision.worse:
        return None
    worst = decision.worse[:8]
    by_key = {p.key: p for p in eval_photos(params)}
    photos = [by_key[k] for k, _, _ in worst if k in by_key]
    ims, truths, probs = thumbnails(served_segmenter(spec, params), photos, params)
    return overlay_grid(ims, truths, probs, path, titles=[f"{k.split(':', 1)[1][:10]} {a:.3f}→{b:.3f}"
                                                          for k, a, b in worst])


def register(params: Params) -> RegisterResult:
    import mlflow
    import numpy as np
    import torch
    from mlflow.models import infer_signature

    from backdrop import tracking
    from backdrop.io import write_csv
    from backdrop.models.cutout import CutoutModel
    from backdrop.models.trained import load_trained

    rp = params.register_
    train_out = resolve(params.train.out_dir)
    net, meta = load_trained(train_out / "model.pt")
    cutout = CutoutModel(net, size=meta["size"], arch=meta["arch"]).eval()
    metrics = evaluated_metrics(params)
    challenger = evaluated_rows(params)
    run_id = json.loads((train_out / "run.json").read_text())["run_id"]

    tracking.setup(params)
    client = mlflow.MlflowClient()
    champ_version = champion_version(client, rp.model_name, rp.alias)
    rivals = score_rivals(params, challenger, f"models:/{rp.model_name}/{champ_version}" if champ_version else None)
    decision = gate(challenger, rivals.get("champion"), rivals.get("stock"),
                    min_improvement=rp.min_improvement, max_cluster_drop=rp.max_cluster_drop,
                    stock_margin=rp.stock_margin, resamples=rp.bootstrap_resamples, seed=rp.bootstrap_seed,
                    confidence=rp.confidence)

    example = np.random.default_rng(0).random((1, 3, meta["size"], meta["size"]), dtype=np.float32)
    with torch.inference_mode():
        signature = infer_signature(example, cutout(torch.from_numpy(example)).numpy())
    gate_dir = resolve(params.evaluate.out_dir) / "gate"
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
        report = decision_report(decision, version, champ_version, rp.stock_model)
        gate_dir.mkdir(parents=True, exist_ok=True)
        for old in gate_dir.iterdir():  # this run's report only
            old.unlink()
        (gate_dir / "report.md").write_text(report)
        write_csv(gate_dir / "groups.csv", [{"group": g, **t} for g, t in decision.groups.items()],
                  ["group", "n", "champion", "challenger", "stock"])
        worse = worse_grid(params, decision, str(train_out / "model.pt"), gate_dir / "worse.png")
        mlflow.log_artifacts(str(gate_dir), artifact_path="gate")
        gate_metrics = {f"gate_{m}_iou_mean": v for m, v in decision.means.items()}
        if decision.gain_mean is not None:
            gate_metrics.update(gate_gain_mean=decision.gain_mean, gate_gain_lower=decision.gain_lower)
        mlflow.log_metrics(gate_metrics)
        note = mlflow.get_run(run_id).data.tags.get("mlflow.note.content", "")
        verdict = f"promoted to @{rp.alias}" if decision.promote else "not promoted"
        mlflow.set_tags({"mlflow.note.content": f"{note}\n\n**gate** v{version} {verdict}: {decision.reason}",
                         "gate.promoted": decision.promote, "gate.reason": decision.reason,
                         "gate.champion_version": champ_version or "none",
                         "gate.champion_iou_mean": decision.means.get("champion", "none")})
    for key, value in version_tags(metrics).items():
        client.set_model_version_tag(rp.model_name, version, key, value)
    client.set_model_version_tag(rp.model_name, version, "gate", decision.reason)
    client.set_model_version_tag(rp.model_name, version, "size", str(meta["size"]))
    client.set_model_version_tag(rp.model_name, version, "onnx", f"runs:/{run_id}/onnx/{onnx_path.name}")
    if decision.promote:
        client.set_registered_model_alias(rp.model_name, rp.alias, version)
    uri = f"models:/{rp.model_name}/{version}"
    write_json(resolve(params.evaluate.out_dir) / "register.json", {
        "model": rp.model_name, "version": version, "promoted": decision.promote,
        "reason": decision.reason, "champion_before": champ_version,
        "champion_iou_before": decision.means.get("champion"),
        "challenger_iou": metrics["iou_mean"], "run_id": run_id,
        "compared_photos": decision.n, "means": decision.means, "gain_mean": decision.gain_mean,
        "gain_lower": decision.gain_lower, "groups": decision.groups,
        "worse": [{"photo": k, "champion": a, "challenger": b} for k, a, b in decision.worse],
        "worse_grid": str(worse) if worse else None})
    for line in report.splitlines():  # the decision report in the task log (Airflow keeps it)
        log.info("gate | %s", line)
    log.info("register: %s v%s — %s (%s)", rp.model_name, version,
             "promoted to @" + rp.alias if decision.promote else "kept old champion", decision.reason)
    return RegisterResult(version, decision.promote, decision.reason, uri)
