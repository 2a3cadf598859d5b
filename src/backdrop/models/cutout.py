"""The served form of a trained network: photo in [0,1] → foreground probability.

Normalisation and the sigmoid live inside the module, so MLflow's signature, the ONNX export
and every caller see one plain contract: float32 (N,3,S,S) in [0,1] → float32 (N,1,S,S).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

MEAN = (0.485, 0.456, 0.406)  # ImageNet statistics, as the official U²-Net preprocessing
STD = (0.229, 0.224, 0.225)


def normalize(x: torch.Tensor) -> torch.Tensor:
    """(N,3,H,W) in [0,1] → network input."""
    mean = torch.tensor(MEAN, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(STD, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def photos_to_tensor(photos: np.ndarray) -> torch.Tensor:
    """uint8 (N,H,W,3) → float32 (N,3,H,W) in [0,1]."""
    return torch.from_numpy(np.ascontiguousarray(photos)).permute(0, 3, 1, 2).float().div_(255.0)


class CutoutModel(nn.Module):
    """U²-Net wrapped for serving; `size` is the square input it was trained at."""

    def __init__(self, net: nn.Module, size: int, arch: str):
        super().__init__()
        self.net = net
        self.size = size
        self.arch = arch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.net(normalize(x))[0]  # fused output (N,1,S,S)
        return torch.sigmoid(logits)
