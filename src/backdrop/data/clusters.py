"""Product-cluster features and assignment of a new photo to a trained cluster model.

The cluster stage fits PCA + k-means on these features; serving and monitoring assign new photos
with the saved model (`data/clusters/model.joblib`).
"""

from __future__ import annotations

from pathlib import Path

COLOUR_WEIGHT = 8.0  # colour stats are few dims next to the silhouette; weight them so tone counts


def features(photo, mask, size: int):
    """One feature vector: silhouette (size² values) + weighted colour stats (8 values)."""
    import numpy as np
    from PIL import Image

    silhouette = np.asarray(mask.convert("L").resize((size, size), Image.Resampling.BOX),
                            dtype=np.float32).ravel() / 255.0
    rgb = np.asarray(photo.convert("RGB"), dtype=np.float32) / 255.0  # (H, W, 3)
    fg = np.asarray(mask.convert("L"), dtype=np.uint8) > 127  # (H, W)
    fg_px, bg_px = rgb[fg], rgb[~fg]
    fg_mean = fg_px.mean(0) if len(fg_px) else np.zeros(3, np.float32)
    bg_mean = bg_px.mean(0) if len(bg_px) else np.ones(3, np.float32)
    colour = np.concatenate([fg_mean, [fg_px.std() if len(fg_px) else 0.0],
                             bg_mean, [abs(fg_mean.mean() - bg_mean.mean())]])
    return np.concatenate([silhouette, COLOUR_WEIGHT * colour.astype(np.float32)])


def assigner(model_path: Path):
    """A function (photo, mask) → (cluster id, name) for the saved model, loaded once (scoring a
    benchmark assigns every photo; `assign` would reload the model per photo)."""
    import joblib

    bundle = joblib.load(model_path)

    def assign_one(photo, mask) -> tuple[int, str]:
        vec = features(photo, mask, bundle["feature_size"])[None]
        label = int(bundle["kmeans"].predict(bundle["pca"].transform(vec))[0])
        cid = bundle["relabel"][label]
        return cid, bundle["names"][cid]

    return assign_one


def assign(model_path: Path, photo, mask) -> tuple[int, str]:
    """Cluster id and name for a new image (mask: hand-made or predicted)."""
    return assigner(model_path)(photo, mask)
