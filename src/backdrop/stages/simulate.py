"""A realistic production stream for the demo and tests: champion predictions plus reviewers' verdicts.

Each simulated item is a new synthetic packshot (`backdrop.data.synth.render_item`, seeds disjoint
from the training drop), saved as the JPEG a shop would upload, cut out by the real model (the
champion by default) and recorded in the prediction log exactly as `backdrop remove` does.

The reviewer then looks at the cut-out, as the case study's QA team did: a cut-out whose IoU with the
true mask is at least `review_tolerance` looks right and is approved (its correction is the
prediction itself); otherwise the reviewer hand-fixes it (the correction is the true mask). So the
monitored IoU is 1 for approved images and the real IoU for fixed ones, and it drops when more
images need fixing.

`shift=True` changes the incoming data: `monitoring.simulate_shift_white_share` white-on-white and
`..._black_share` black-on-black products (low contrast, where the model struggles) instead of the
synth defaults.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np

from backdrop.config import Params, resolve
from backdrop.data.predlog import binary, naive_utc, to_alpha
from backdrop.metrics import mask_iou

log = logging.getLogger(__name__)


@dataclass
class SimBatch:
    at: datetime
    n: int = 0
    styles: Counter = field(default_factory=Counter)
    fixed: int = 0  # images the reviewer had to correct
    true_iou: list[float] = field(default_factory=list)  # IoU(prediction, true mask)
    monitored_iou: list[float] = field(default_factory=list)  # IoU(prediction, delivered correction)
    clusters: Counter = field(default_factory=Counter)
    inbox_files: list[Path] = field(default_factory=list)
    items: list[dict] = field(default_factory=list)  # image_id, stem, style, cluster, true/monitored IoU

    def summary(self) -> str:
        mean_true = float(np.mean(self.true_iou)) if self.true_iou else float("nan")
        mean_mon = float(np.mean(self.monitored_iou)) if self.monitored_iou else float("nan")
        return (f"{self.at:%Y-%m-%d %H:%M} n={self.n} styles={dict(self.styles)} fixed={self.fixed} "
                f"true IoU {mean_true:.4f} monitored IoU {mean_mon:.4f} clusters={dict(sorted(self.clusters.items()))}")


def simulate_batch(params: Params, n: int, seed: int, start_index: int = 0, *, shift: bool = False,
                   at: datetime | None = None, model: str = "champion", review_tolerance: float = 0.9,
                   via_inbox: bool = False) -> SimBatch:
    """Render, predict, record and review `n` new items; corrections are stamped `at` (+1 minute)."""
    from PIL import Image

    from backdrop.data.predlog import PredictionRecorder
    from backdrop.data.synth import render_item
    from backdrop.io import open_image
    from backdrop.monitoring.corrections import add_correction
    from backdrop.serving.segmenter import load_segmenter

    mp, sp = params.monitoring, params.synth
    white, black = ((mp.simulate_shift_white_share, mp.simulate_shift_black_share) if shift
                    else (sp.white_share, sp.black_share))
    at = naive_utc(at)
    work = resolve(mp.inbox_dir).parent / "simulate" / f"seed-{seed}"
    (work / "images").mkdir(parents=True, exist_ok=True)
    (work / "masks").mkdir(parents=True, exist_ok=True)
    segmenter = load_segmenter(model, "torch", params=params)  # PyTorch eager: no export for a batch
    recorder = PredictionRecorder(params, segmenter.source)
    batch = SimBatch(at)
    for index in range(start_index, start_index + n):
        photo, truth, item = render_item(seed, index, min_side=sp.min_side, max_side=sp.max_side,
                                         white_share=white, black_share=black)
        photo_path = work / "images" / f"{item.stem}.jpg"
        photo.save(photo_path, format="JPEG", quality=90)
        photo = open_image(photo_path)  # what production sees: the decoded JPEG
        prob = segmenter.probabilities(photo)
        row = recorder.record(photo_path, photo, prob, at=at)
        predicted = binary(to_alpha(prob), params.evaluate.threshold)  # as the log stores and scores it
        true_mask = np.asarray(truth, dtype=np.uint8) >= 128
        true_iou = mask_iou(predicted, true_mask)
        approved = true_iou >= review_tolerance
        delivered = predicted if approved else true_mask
        mask_path = work / "masks" / f"{row.image_id}.png"
        Image.fromarray(delivered.astype(np.uint8) * 255, mode="L").save(mask_path)
        if via_inbox:
            inbox = resolve(mp.inbox_dir)
            inbox.mkdir(parents=True, exist_ok=True)
            dest = inbox / f"{row.image_id}.png"
            dest.write_bytes(mask_path.read_bytes())
            batch.inbox_files.append(dest)
        else:
            add_correction(mp, mask_path, key=row.image_id, source="simulate", at=at + timedelta(minutes=1))
        batch.n += 1
        batch.styles[item.style] += 1
        batch.fixed += int(not approved)
        batch.true_iou.append(true_iou)
        batch.monitored_iou.append(1.0 if approved else true_iou)
        batch.clusters[row.cluster] += 1
        batch.items.append({"image_id": row.image_id, "stem": item.stem, "style": item.style, "cluster": row.cluster,
                            "true_iou": true_iou, "monitored_iou": batch.monitored_iou[-1], "fixed": not approved})
    log.info("simulated %s", batch.summary())
    return batch
