"""One training drop mixing independent sources by share (`backdrop data drop`, issue 19).

A model trained on one renderer learns that renderer. The mix writes ``n`` pairs into one vendor
drop: ``round(n × share)`` from each source (largest remainders, so the counts always add up to
``n``): ``synth`` (`backdrop data synth`, items 0..k-1 of ``synth.seed``) and ``fashion_mnist``
(the **train** split only, `fashion_mnist.seed`'s selection), both rendered with the drop's
``variety``. Alongside the pairs: ``labels.csv`` (stem, source, category, style, width, height),
``looks.csv`` when the variety is broad, and ``drop.json`` (shares, counts, seeds, the idx files'
sha256, ``"training": true``). Every file is a pure function of the params: a rerun rewrites the
same bytes.
"""

from __future__ import annotations

import math
from pathlib import Path

from backdrop.config import FashionMnistParams, SynthParams
from backdrop.io import atomic_path, write_csv, write_json

SOURCES = ("synth", "fashion_mnist")
LABEL_FIELDS = ["stem", "source", "category", "style", "width", "height"]


def split_counts(n: int, shares: dict[str, float]) -> dict[str, int]:
    """Pairs per source: floor(n × share), the remainder to the largest fractions (ties: source order)."""
    unknown = set(shares) - set(SOURCES)
    if unknown:
        raise ValueError(f"drop.shares: unknown source(s) {sorted(unknown)}; known: {', '.join(SOURCES)}")
    if any(v < 0 for v in shares.values()) or abs(sum(shares.values()) - 1) > 1e-6:
        raise ValueError(f"drop.shares must be >= 0 and sum to 1, got {dict(shares)}")
    names = [s for s in SOURCES if s in shares]
    exact = {s: n * shares[s] for s in names}
    counts = {s: math.floor(exact[s]) for s in names}
    for s in sorted(names, key=lambda s: (-(exact[s] - counts[s]), names.index(s)))[:n - sum(counts.values())]:
        counts[s] += 1
    return counts


def _stale(out_dir: Path, stems: set[str]) -> list[Path]:
    return [p for sub in ("images", "masks") if (out_dir / sub).is_dir() for p in sorted((out_dir / sub).iterdir())
            if p.is_file() and p.stem not in stems]


def write_mix(out_dir: Path, n: int, shares: dict[str, float], variety: str, synth: SynthParams,
              fashion: FashionMnistParams, *, clean: bool = False, progress: bool = True) -> dict[str, int]:
    """Render the mix into ``out_dir``; returns the count per source.

    Files in ``images/``/``masks/`` that are not part of this mix would change its shares once
    ingested: with ``clean`` they are removed, otherwise this refuses before rendering anything."""
    from tqdm import tqdm

    from backdrop.data.fashion_mnist import jpeg_options as fm_jpeg
    from backdrop.data.fashion_mnist import load_split, render_product, select
    from backdrop.data.fashion_mnist import stem_for as fm_stem
    from backdrop.data.synth.render import jpeg_options as synth_jpeg
    from backdrop.data.synth.render import render_item
    from backdrop.data.synth.render import stem_for as synth_stem
    from backdrop.data.synth.variety import LOOK_FIELDS, check_variety, draw_look

    out_dir = Path(out_dir)
    check_variety(variety)
    counts = split_counts(n, shares)
    k_synth, k_fm = counts.get("synth", 0), counts.get("fashion_mnist", 0)
    fm_images = fm_labels = None
    digests: dict[str, str] = {}
    chosen = []
    if k_fm:
        fm_images, fm_labels, digests = load_split("train", fashion.source_dir)
        chosen = [int(i) for i in select(len(fm_images), k_fm, fashion.seed)]
    stems = {synth_stem(synth.seed, i) for i in range(k_synth)} | {fm_stem("train", i) for i in chosen}
    stale = _stale(out_dir, stems)
    if stale and not clean:
        raise ValueError(f"{out_dir}: {len(stale)} file(s) in images/ or masks/ are not part of this mix "
                         f"(e.g. {stale[0].name}) and would skew its shares once ingested: pass --clean to "
                         "remove them, or write the mix to an empty folder")
    for path in stale:
        path.unlink()
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    (out_dir / "masks").mkdir(parents=True, exist_ok=True)
    labels, looks = [], []

    def save(photo, mask, stem: str, jpeg: dict) -> None:
        with atomic_path(out_dir / "images" / f"{stem}.jpg") as tmp:
            photo.save(tmp, format="JPEG", **jpeg)
        with atomic_path(out_dir / "masks" / f"{stem}.png") as tmp:
            mask.save(tmp, format="PNG")

    jobs = [("synth", i) for i in range(k_synth)] + [("fashion_mnist", i) for i in chosen]
    for source, i in tqdm(jobs, desc="drop", unit="img", disable=not progress):
        if source == "synth":
            photo, mask, item = render_item(synth.seed, i, min_side=synth.min_side, max_side=synth.max_side,
                                            white_share=synth.white_share, black_share=synth.black_share,
                                            variety=variety)
            save(photo, mask, item.stem, synth_jpeg(synth.seed, i, variety))
            labels.append({"stem": item.stem, "source": source, "category": item.category, "style": item.style,
                           "width": item.width, "height": item.height})
            looks.append(draw_look(synth.seed, i).row(item.stem))
        else:
            photo, mask, item = render_product(fm_images[i], int(fm_labels[i]), "train", i, fashion.seed,
                                               min_side=fashion.min_side, max_side=fashion.max_side,
                                               white_share=fashion.white_share, black_share=fashion.black_share,
                                               variety=variety)
            save(photo, mask, item.stem, fm_jpeg(fashion.seed, i, variety))
            labels.append({"stem": item.stem, "source": source, "category": item.class_name, "style": item.style,
                           "width": item.width, "height": item.height})
            looks.append(draw_look(fashion.seed, i).row(item.stem))
    write_csv(out_dir / "labels.csv", labels, LABEL_FIELDS)
    metadata = ["labels.csv"]
    if variety != "classic":
        write_csv(out_dir / "looks.csv", looks, LOOK_FIELDS)
        metadata.append("looks.csv")
    write_json(out_dir / "drop.json", {
        "source": "backdrop data drop", "training": True, "n": n, "shares": dict(shares), "counts": counts,
        "variety": variety, "seeds": {"synth": synth.seed, "fashion_mnist": fashion.seed},
        "fashion_mnist_split": "train", "idx_sha256": digests, "metadata": metadata,
        "license": "synthetic (backdrop) + MIT (Zalando Research, Fashion-MNIST)"})
    return counts
