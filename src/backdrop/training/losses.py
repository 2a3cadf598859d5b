"""Deep-supervision loss, soft IoU and the learning-rate schedule."""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)


def lr_lambda(total_steps: int, warmup_steps: int):
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return factor


def soft_iou_loss(logits, target, eps: float = 1.0, per_sample: bool = False):
    """1 − soft Jaccard of sigmoid(logits) and target per image, averaged (or (N,) per image);
    (N,1,S,S) each."""
    import torch

    p = torch.sigmoid(logits)
    inter = (p * target).sum(dim=(1, 2, 3))
    union = (p + target - p * target).sum(dim=(1, 2, 3))
    loss = 1 - (inter + eps) / (union + eps)  # (N,)
    return loss if per_sample else loss.mean()


def deep_supervision_loss(outputs, target, iou_weight: float = 0.0):
    """Sum of BCE-with-logits over the fused and six side outputs (+ iou_weight × soft IoU loss)."""
    import torch.nn.functional as F

    loss = sum(F.binary_cross_entropy_with_logits(o, target) for o in outputs)
    if iou_weight:
        loss = loss + iou_weight * sum(soft_iou_loss(o, target) for o in outputs)
    return loss


def distillation_loss(student_logits, teacher_logits):
    """BCE of the student's fused map against the frozen teacher's probabilities (Learning without
    Forgetting, Li & Hoiem 2016): on the fine-tune's own photos the student keeps answering as the
    official weights did wherever the labels do not pay for a change. (B, 1, H, W) logits each."""
    import torch
    import torch.nn.functional as F

    return F.binary_cross_entropy_with_logits(student_logits, torch.sigmoid(teacher_logits))


def anchor_weights(model) -> dict:
    """Detached copies of the trainable parameters: the starting point L2-SP pulls towards."""
    return {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}


def l2sp_penalty(model, anchor: dict):
    """Σ‖w − w₀‖² over the parameters in ``anchor`` (L2-SP, Li et al. 2018): fine-tuning may move
    the official weights only as far as the data pays for, so it forgets less of what they knew."""
    import torch

    terms = [(p - anchor[name]).pow(2).sum() for name, p in model.named_parameters() if name in anchor]
    return torch.stack(terms).sum() if terms else torch.zeros(())


def encoder_param_groups(model, lr: float, encoder_lr_scale: float) -> list[dict]:
    """AdamW parameter groups: the encoder stages (stage1..stage6) at lr × scale, the rest at lr.
    A lower encoder rate keeps the official features while the decoder adapts."""
    import re

    encoder, rest = [], []
    for name, p in model.named_parameters():
        (encoder if re.fullmatch(r"stage\d+", name.split(".")[0]) else rest).append(p)
    return [{"params": encoder, "lr": lr * encoder_lr_scale}, {"params": rest, "lr": lr}]
