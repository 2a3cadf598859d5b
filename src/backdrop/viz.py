"""Pictures people would rather see than read: overlay grids and per-cluster IoU bars."""

from __future__ import annotations

from pathlib import Path

import numpy as np

HEADERS = ("photo", "vendor mask", "prediction", "cut-out")


def _pyplot():
    """matplotlib's pyplot on the Agg backend (no display on servers and CI)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def overlay_grid(photos: np.ndarray, truths: np.ndarray, preds: np.ndarray, path: Path,
                 titles: list[str] | None = None, max_rows: int = 8) -> Path:
    """Rows of (photo, truth, prediction, cut-out on checkerboard) under a header naming the columns;
    photos uint8 (N,H,W,3), masks (N,H,W) in [0,1]."""
    from PIL import Image, ImageDraw

    n = min(len(photos), max_rows)
    h, w = photos.shape[1:3]
    top = 16  # header row
    sheet = Image.new("RGB", (4 * w, top + n * h), "white")
    yy, xx = np.mgrid[0:h, 0:w]
    checker = np.where(((yy // 8 + xx // 8) % 2)[..., None] == 0, 200, 255).astype(np.float32)
    draw = ImageDraw.Draw(sheet)
    for j, header in enumerate(HEADERS):
        draw.text((j * w + 4, 2), header, fill=(0, 0, 0))
    for i in range(n):
        truth = (np.clip(truths[i], 0, 1) * 255).astype(np.uint8)
        pred = np.clip(preds[i], 0, 1)
        cut = photos[i].astype(np.float32) * pred[..., None] + checker * (1 - pred[..., None])
        tiles = [photos[i], np.repeat(truth[..., None], 3, -1),
                 np.repeat((pred * 255).astype(np.uint8)[..., None], 3, -1), cut.astype(np.uint8)]
        for j, tile in enumerate(tiles):
            sheet.paste(Image.fromarray(tile), (j * w, top + i * h))
        if titles:
            draw.text((3, top + i * h + 2), titles[i], fill=(255, 0, 0))
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return path


def cluster_bars(per_cluster: dict[str, float], names: dict[str, str], path: Path,
                 title: str, target: float = 0.99) -> Path:
    """One horizontal bar per cluster (its name and IoU written out) against the 99 % target line."""
    plt = _pyplot()
    keys = sorted(per_cluster, key=int, reverse=True)  # c0 on top
    labels = [f"c{k} {names.get(k, '')}".strip() for k in keys]
    values = [per_cluster[k] for k in keys]
    # horizontal bars: long cluster names stay readable instead of overlapping under the axis
    fig, ax = plt.subplots(figsize=(8, 0.5 * len(keys) + 1.5))
    bars = ax.barh(labels, values, color=["#2a9d8f" if v >= target else "#e76f51" for v in values])
    ax.bar_label(bars, labels=[f"{v:.4f}" for v in values], padding=3, fontsize=8)
    ax.axvline(target, color="black", linestyle="--", linewidth=1, label=f"target {target:.0%}")
    lo = max(0.0, min(values + [target]) - 0.05)
    ax.set_xlim(lo, 1.0 + 0.12 * (1.0 - lo))  # room for the value labels right of a perfect bar
    ax.set_xlabel("IoU")
    ax.set_title(title)
    ax.legend(loc="lower left")
    return _save(fig, path)


def wise_line(candidates: list[dict], chosen: float, path: Path, title: str) -> Path:
    """IoU along the line from the official weights (α 0) to the fine-tune (α 1): the drop's val split,
    each benchmark style's val part and the selection score, the chosen α marked."""
    plt = _pyplot()
    alphas = [c["alpha"] for c in candidates]
    series = {"drop val": "val_iou_mean", "selection score": "selection_score"}
    series |= {k.removeprefix("ood_val_iou_").replace("_", "/", 1) + " (val)": k for k in sorted(candidates[0])
               if k.startswith("ood_val_iou_") and k != "ood_val_iou_mean"}
    fig, ax = plt.subplots(figsize=(9, 4))
    for label, key in series.items():
        ax.plot(alphas, [c[key] for c in candidates], marker="o", label=label,
                linewidth=2.5 if key == "selection_score" else 1.2)
    ax.axvline(chosen, color="black", linestyle="--", linewidth=1, label=f"chosen α {chosen:g}")
    ax.set_xlabel("α  ((1 − α)·official + α·fine-tuned)")
    ax.set_ylabel("IoU at the training size")
    ax.set_title(title)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))  # beside the lines, never over them
    return _save(fig, path)
