"""cluster: PCA + k-means over shape and colour features → product clusters, with manual overrides.

The case study grouped products into six visually similar clusters so quality can be watched
per cluster (white products and beachwear were the weak ones). Features: the downsampled mask
(silhouette) plus colour statistics of product and background (tone, contrast).
The fitted scaler/PCA/k-means is saved so new images (inference, monitoring) get a cluster too.

Stable ids when the data grows: the previous run's `model.joblib` (kept across `dvc repro` by
`persist: true` on the stage's out) supplies the previous centroids. K-means is seeded with them
(projected into the new PCA space), and the new centroids are matched to the previous ones by the
Hungarian algorithm on their distances in feature space, so cluster 3 stays "cluster 3". A fresh
k-means++ fit replaces the seeded one only if its inertia is `cluster.restart_gain` lower (the data
changed shape); its ids are matched the same way. Without a usable previous model (first run,
another k or feature size, `match_previous: false`) ids are ordered by silhouette area. The share
of pairs that kept their cluster is in summary.json (`stability`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from backdrop.config import ClusterParams, PrepareParams, resolve
from backdrop.data.clusters import COLOUR_WEIGHT, assign, features  # noqa: F401  (assign: re-used by callers)
from backdrop.io import read_csv, write_csv, write_json

log = logging.getLogger(__name__)

ASSIGN_FIELDS = ["pair_id", "split", "cluster", "cluster_name", "overridden"]


@dataclass(frozen=True)
class ClusterResult:
    sizes: dict[str, int]
    names: dict[int, str]
    assignments: Path




def describe(centroid_features, size: int) -> str:
    """A human-readable cluster name from its mean silhouette and tone."""
    import numpy as np

    sil = centroid_features[: size * size].reshape(size, size)
    colour = centroid_features[size * size:] / COLOUR_WEIGHT
    rows, cols = np.where(sil > 0.5)
    if len(rows) == 0:
        shape = "sparse"
    else:
        aspect = (np.ptp(rows) + 1) / (np.ptp(cols) + 1)
        shape = "tall" if aspect > 1.4 else "wide" if aspect < 0.8 else "square"
        shape += " full" if sil.mean() > 0.35 else " slim"
    fg_tone, contrast = float(colour[:3].mean()), float(colour[7])
    tone = "white-on-white" if fg_tone > 0.8 and contrast < 0.12 else (
        "dark" if fg_tone < 0.3 else "light" if fg_tone > 0.65 else "mid-tone")
    return f"{shape}, {tone}"


def unique_names(names: dict[int, str], areas: dict[int, float]) -> dict[int, str]:
    """Clusters that `describe` names alike get their silhouette's share of the frame appended
    ("tall slim, mid-tone, 18 % of frame"), then their id if even that ties: a name shown in the MLflow
    UI or an alert must point at one cluster."""
    out = dict(names)
    for name in set(names.values()):
        same = [cid for cid, n in names.items() if n == name]
        if len(same) > 1:
            for cid in same:
                out[cid] = f"{name}, {areas[cid]:.0%} of frame"
    for name in set(out.values()):
        same = [cid for cid, n in out.items() if n == name]
        if len(same) > 1:
            for cid in same:
                out[cid] = f"{name} (c{cid})"
    return out


def load_overrides(path: Path) -> dict[str, int]:
    """pair_id → cluster from the hand-curated CSV (columns pair_id, cluster[, note])."""
    overrides = {}
    for line_no, row in enumerate(read_csv(path), start=2):
        try:
            overrides[row["pair_id"].strip()] = int(row["cluster"])
        except (KeyError, ValueError):
            raise ValueError(f"{path}:{line_no}: needs columns pair_id,cluster with an integer cluster "
                             f"(got {row})") from None
    return overrides


def _previous(path: Path, params: ClusterParams):
    """Centroids (k, F) in feature space, indexed by cluster id, of the previous model, if usable."""
    import joblib

    if not params.match_previous or not path.exists():
        return None
    try:
        bundle = joblib.load(path)
        if bundle["feature_size"] != params.feature_size or len(bundle["names"]) != params.k:
            log.info("cluster: previous model has another k/feature size; ids start afresh")
            return None
        if "centroids" in bundle:
            return bundle["centroids"]
        raw = bundle["pca"].inverse_transform(bundle["kmeans"].cluster_centers_)
        return raw[[old for old, _ in sorted(bundle["relabel"].items(), key=lambda kv: kv[1])]]
    except Exception as exc:  # noqa: BLE001 - an unreadable old model must not block a new one
        log.warning("cluster: previous model %s unusable (%s); ids start afresh", path, exc)
        return None


def match_ids(previous, centroids) -> dict[int, int]:
    """new k-means label → previous cluster id, minimising total centroid distance (Hungarian)."""
    import numpy as np
    from scipy.optimize import linear_sum_assignment

    cost = np.linalg.norm(previous[:, None, :] - centroids[None, :, :], axis=2)  # (k_prev, k_new)
    rows, cols = linear_sum_assignment(cost)
    return {int(c): int(r) for r, c in zip(rows, cols, strict=True)}


def kept_share(before: list[dict[str, str]], after: list[dict]) -> tuple[float | None, int]:
    """Share of pairs in both runs (not overridden in either) whose cluster did not change."""
    old = {r["pair_id"]: int(r["cluster"]) for r in before if str(r.get("overridden")) != "True"}
    common = [r for r in after if r["pair_id"] in old and not r["overridden"]]
    if not common:
        return None, 0
    return sum(old[r["pair_id"]] == int(r["cluster"]) for r in common) / len(common), len(common)


def cluster(params: ClusterParams, prepare_params: PrepareParams) -> ClusterResult:
    import joblib
    import numpy as np
    from PIL import Image
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA
    from tqdm import tqdm

    prepared = resolve(prepare_params.out_dir)
    index = read_csv(prepared / "index.csv")
    if len(index) < params.k:
        raise ValueError(f"{len(index)} prepared pairs cannot make {params.k} clusters")
    feats = np.stack([
        features(Image.open(prepared / r["image"]), Image.open(prepared / r["mask"]),
                 params.feature_size)
        for r in tqdm(index, desc="cluster features", unit="img", disable=None)])  # (N, F)
    train = np.array([r["split"] == "train" for r in index])
    n_comp = min(params.pca_components, int(train.sum()) - 1, feats.shape[1])
    pca = PCA(n_components=n_comp, random_state=params.seed).fit(feats[train])
    z_train = pca.transform(feats[train])
    out = resolve(params.out_dir)
    previous = _previous(out / "model.joblib", params)
    before = read_csv(out / "assignments.csv") if previous is not None else []
    kmeans = KMeans(n_clusters=params.k, n_init=10, random_state=params.seed).fit(z_train)
    seeded = False
    if previous is not None:
        warm = KMeans(n_clusters=params.k, init=pca.transform(previous), n_init=1,
                      random_state=params.seed).fit(z_train)
        seeded = not kmeans.inertia_ < (1 - params.restart_gain) * warm.inertia_
        kmeans = warm if seeded else kmeans
    centroids = pca.inverse_transform(kmeans.cluster_centers_)  # (k, F)
    if previous is not None:  # stable ids: the previous cluster each new centroid is nearest to
        relabel = match_ids(previous, centroids)
    else:  # first run: order clusters by their centroid's silhouette area, largest first
        order = np.argsort(-centroids[:, : params.feature_size ** 2].mean(1), kind="stable")
        relabel = {int(old): new for new, old in enumerate(order)}
    names = unique_names({relabel[i]: describe(centroids[i], params.feature_size) for i in range(params.k)},
                         {relabel[i]: float(centroids[i, : params.feature_size ** 2].clip(0, 1).mean())
                          for i in range(params.k)})
    raw_labels = kmeans.predict(pca.transform(feats))
    overrides = load_overrides(resolve(params.overrides))
    rows, sizes = [], {str(c): 0 for c in range(params.k)}
    for row, label in zip(index, raw_labels, strict=True):
        cid = overrides.get(row["pair_id"], relabel[int(label)])
        if not 0 <= cid < params.k:
            raise ValueError(f"{params.overrides}: cluster {cid} for {row['pair_id']} not in 0..{params.k - 1}")
        sizes[str(cid)] += 1
        rows.append({"pair_id": row["pair_id"], "split": row["split"], "cluster": cid,
                     "cluster_name": names[cid], "overridden": row["pair_id"] in overrides})
    kept, compared = kept_share(before, rows)
    stability = {"previous_model": previous is not None, "seeded_from_previous": seeded,
                 "kept_share": kept, "compared_pairs": compared}
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "assignments.csv", rows, ASSIGN_FIELDS)
    by_id = np.stack([centroids[old] for old, _ in sorted(relabel.items(), key=lambda kv: kv[1])])
    joblib.dump({"pca": pca, "kmeans": kmeans, "relabel": relabel, "names": names,
                 "feature_size": params.feature_size, "centroids": by_id}, out / "model.joblib")
    write_json(out / "summary.json", {"sizes": sizes, "names": {str(k): v for k, v in names.items()},
                                      "overrides_applied": sum(r["overridden"] for r in rows),
                                      "stability": stability})
    if kept is not None:
        log.info("cluster: %.1f%% of %d earlier pairs kept their cluster (seeded: %s)", 100 * kept,
                 compared, seeded)
    _montage(prepared, rows, params.k, out / "montage.png")
    log.info("cluster: sizes %s", sizes)
    return ClusterResult(sizes, names, out / "assignments.csv")


def _montage(prepared: Path, rows: list[dict], k: int, path: Path, per_cluster: int = 8,
             thumb: int = 64) -> None:
    """One row of thumbnails per cluster, so a human can check the grouping at a glance."""
    from PIL import Image, ImageDraw

    sheet = Image.new("RGB", (thumb * (per_cluster + 1), thumb * k), "white")
    draw = ImageDraw.Draw(sheet)
    for cid in range(k):
        draw.text((4, cid * thumb + thumb // 2 - 6), f"c{cid}", fill="black")
        members = [r for r in rows if r["cluster"] == cid][:per_cluster]
        for j, r in enumerate(members):
            img = Image.open(prepared / "images" / f"{r['pair_id']}.png").convert("RGB")
            sheet.paste(img.resize((thumb, thumb)), ((j + 1) * thumb, cid * thumb))
    sheet.save(path)


