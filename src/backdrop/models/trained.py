"""A model saved by `backdrop train`, loaded back, and its foreground maps on a batch of photos."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)


def load_trained(model_path: Path):
    """The network saved by `train` (best epoch) and its metadata (arch, size, epoch, val_iou)."""
    import torch

    from backdrop.models import build_model

    if not model_path.exists():
        raise FileNotFoundError(f"{model_path}: no trained model (run `backdrop train`)")
    state = torch.load(model_path, map_location="cpu", weights_only=False)
    net = build_model(state["arch"], init="scratch")
    net.load_state_dict(state["state_dict"])
    net.eval()
    return net, {k: v for k, v in state.items() if k != "state_dict"}


def predict_probs(model, photos: np.ndarray, batch_size: int = 8) -> np.ndarray:
    """float32 (N,S,S) foreground probabilities for uint8 photos (N,S,S,3)."""
    import torch

    from backdrop.models.cutout import normalize, photos_to_tensor

    device = next(model.parameters()).device
    model.eval()
    out = []
    with torch.inference_mode():
        for i in range(0, len(photos), batch_size):
            x = normalize(photos_to_tensor(photos[i:i + batch_size])).to(device).contiguous(
                memory_format=torch.channels_last)
            out.append(torch.sigmoid(model(x)[0])[:, 0].float().cpu().numpy())
    if not out:
        return np.zeros((0, *photos.shape[1:3]), np.float32)
    return np.concatenate(out)
