"""U²-Net and U²-NetP (Qin et al., 2020, "U²-Net: Going Deeper with Nested U-Structure").

Faithful re-implementation of the official PyTorch code (``u2net.py`` / ``u2net_refactor.py``
in github.com/xuebinqin/U-2-Net):

* one :class:`RSU` ("ReSidual U-block") class built from a :class:`RSUConfig` covers RSU-7..RSU-4
  (pooling + bilinear upsampling) and RSU-4F (dilated convolutions, no resampling);
* :class:`U2Net` is built from a per-stage config dict (``U2NET_CFG`` / ``U2NETP_CFG``);
* module names (``stage1.rebnconvin.conv_s1.weight``, ``side1.weight``, ``outconv.bias`` ...)
  equal the official ones, so official ``.pth`` state dicts load as they are.

Difference to the official code, on purpose: ``forward`` returns LOGITS, not sigmoid
probabilities, so training can use the numerically stable ``BCEWithLogitsLoss``.
Use :func:`probabilities` to get the official fused output ``sigmoid(d0)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "REBNCONV",
    "RSU",
    "RSUConfig",
    "StageConfig",
    "U2Net",
    "U2NET_CFG",
    "U2NETP_CFG",
    "u2net_full",
    "u2net_lite",
    "probabilities",
    "MODEL_REGISTRY",
]


def _upsample_like(src: torch.Tensor, tar: torch.Tensor) -> torch.Tensor:
    """Bilinearly resize ``src`` to ``tar``'s spatial size (official: ``align_corners=False``).

    Resizing instead of a fixed 2x upsampling is what lets the nets accept any input size:
    ceil-mode pooling of an odd size is undone exactly by matching sizes here.
    """
    if src.shape[-2:] == tar.shape[-2:]:
        return src  # same size: bilinear with align_corners=False is the identity anyway
    return F.interpolate(src, size=tar.shape[-2:], mode="bilinear", align_corners=False)


class REBNCONV(nn.Module):
    """3x3 conv (with bias, as official) -> BatchNorm -> ReLU.

    The conv keeps its bias although BN follows, because the official checkpoints (and the
    BN-folded ONNX exports) carry one; keeping it makes the state dicts line up one-to-one.
    """

    def __init__(self, in_ch: int, out_ch: int, dilation: int = 1) -> None:
        super().__init__()
        self.conv_s1 = nn.Conv2d(in_ch, out_ch, 3, padding=dilation, dilation=dilation)
        self.bn_s1 = nn.BatchNorm2d(out_ch)
        self.relu_s1 = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu_s1(self.bn_s1(self.conv_s1(x)))


@dataclass(frozen=True)
class RSUConfig:
    """One RSU block: ``height`` L (7..4), channels, and ``dilated`` for the RSU-4F variant."""

    height: int
    in_ch: int
    mid_ch: int
    out_ch: int
    dilated: bool = False

    def __post_init__(self) -> None:
        if self.height < 2:
            raise ValueError(f"RSU height must be >= 2, got {self.height}")


@dataclass(frozen=True)
class StageConfig:
    """One U²-Net stage: its RSU block and, if it feeds a side output, that side's input channels."""

    rsu: RSUConfig
    side_ch: int | None = None


class RSU(nn.Module):
    """ReSidual U-block RSU-L: ``x_in = conv(x)``; returns ``x_in + U(x_in)``.

    ``U`` is a small U-Net of height L. Plain variant: encoder convs 1..L-1 with 2x max-pooling
    between them (none after L-1), a dilation-2 bottom conv L, decoder convs (L-1)d..1d on
    ``cat(upsampled deeper, skip)``. Dilated variant (RSU-4F, used where the maps are already
    tiny): no pooling, the dilation doubles per level instead (1, 2, 4, 8).
    """

    def __init__(self, cfg: RSUConfig) -> None:
        super().__init__()
        self.cfg = cfg
        h, mid = cfg.height, cfg.mid_ch
        self.rebnconvin = REBNCONV(cfg.in_ch, cfg.out_ch)
        self.downsample = nn.MaxPool2d(2, stride=2, ceil_mode=True)  # ceil: odd sizes survive
        # Encoder: rebnconv1..rebnconv{h}; the last one is the bottom (dilated) conv.
        for i in range(1, h + 1):
            in_ch = cfg.out_ch if i == 1 else mid
            self.add_module(f"rebnconv{i}", REBNCONV(in_ch, mid, self._dilation(i)))
        # Decoder: rebnconv{h-1}d..rebnconv1d, each on cat(deeper, skip) -> 2*mid channels.
        for i in range(h - 1, 0, -1):
            out_ch = cfg.out_ch if i == 1 else mid
            self.add_module(f"rebnconv{i}d", REBNCONV(2 * mid, out_ch, self._dilation(i)))

    def _dilation(self, level: int) -> int:
        """Dilation of the conv(s) at ``level`` (1-based), as in the official code."""
        if self.cfg.dilated:
            return 2 ** (level - 1)  # RSU-4F: 1, 2, 4, 8
        return 2 if level == self.cfg.height else 1  # plain: only the bottom conv is dilated

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.cfg.height
        hxin = self.rebnconvin(x)  # (N, out, H, W)
        skips: list[torch.Tensor] = []
        hx = hxin
        for i in range(1, h):
            hx = getattr(self, f"rebnconv{i}")(hx)  # (N, mid, H/2^(i-1), W/2^(i-1)) plain
            skips.append(hx)
            if not self.cfg.dilated and i < h - 1:
                hx = self.downsample(hx)
        hx = getattr(self, f"rebnconv{h}")(hx)  # bottom, same size as skips[-1]
        for i in range(h - 1, 0, -1):
            skip = skips[i - 1]
            hx = _upsample_like(hx, skip)
            hx = getattr(self, f"rebnconv{i}d")(torch.cat((hx, skip), dim=1))
        return hx + hxin  # (N, out, H, W)


# Stage configs exactly as the official U2NET / U2NETP classes.
# Encoder stage1..stage6, decoder stage5d..stage1d; side outputs hang off stage6 and the decoders.
U2NET_CFG: dict[str, StageConfig] = {
    "stage1": StageConfig(RSUConfig(7, 3, 32, 64)),
    "stage2": StageConfig(RSUConfig(6, 64, 32, 128)),
    "stage3": StageConfig(RSUConfig(5, 128, 64, 256)),
    "stage4": StageConfig(RSUConfig(4, 256, 128, 512)),
    "stage5": StageConfig(RSUConfig(4, 512, 256, 512, dilated=True)),
    "stage6": StageConfig(RSUConfig(4, 512, 256, 512, dilated=True), side_ch=512),
    "stage5d": StageConfig(RSUConfig(4, 1024, 256, 512, dilated=True), side_ch=512),
    "stage4d": StageConfig(RSUConfig(4, 1024, 128, 256), side_ch=256),
    "stage3d": StageConfig(RSUConfig(5, 512, 64, 128), side_ch=128),
    "stage2d": StageConfig(RSUConfig(6, 256, 32, 64), side_ch=64),
    "stage1d": StageConfig(RSUConfig(7, 128, 16, 64), side_ch=64),
}

U2NETP_CFG: dict[str, StageConfig] = {
    "stage1": StageConfig(RSUConfig(7, 3, 16, 64)),
    "stage2": StageConfig(RSUConfig(6, 64, 16, 64)),
    "stage3": StageConfig(RSUConfig(5, 64, 16, 64)),
    "stage4": StageConfig(RSUConfig(4, 64, 16, 64)),
    "stage5": StageConfig(RSUConfig(4, 64, 16, 64, dilated=True)),
    "stage6": StageConfig(RSUConfig(4, 64, 16, 64, dilated=True), side_ch=64),
    "stage5d": StageConfig(RSUConfig(4, 128, 16, 64, dilated=True), side_ch=64),
    "stage4d": StageConfig(RSUConfig(4, 128, 16, 64), side_ch=64),
    "stage3d": StageConfig(RSUConfig(5, 128, 16, 64), side_ch=64),
    "stage2d": StageConfig(RSUConfig(6, 128, 16, 64), side_ch=64),
    "stage1d": StageConfig(RSUConfig(7, 128, 16, 64), side_ch=64),
}


class U2Net(nn.Module):
    """U²-Net: a U-Net of RSU blocks with 6 deep-supervision side outputs and a fused output.

    ``forward(x)`` with ``x`` (N, in_ch, H, W) returns 7 logit maps ``[fused, side1..side6]``,
    each (N, out_ch, H, W). Any H, W works (ceil-mode pooling + size-matched upsampling);
    multiples of 32 avoid the fractional resampling the official nets were trained without.
    """

    def __init__(self, cfg: dict[str, StageConfig], out_ch: int = 1) -> None:
        super().__init__()
        self.depth = sum(1 for k in cfg if not k.endswith("d"))  # 6 encoder stages
        expected = [f"stage{i}" for i in range(1, self.depth + 1)]
        expected += [f"stage{i}d" for i in range(self.depth - 1, 0, -1)]
        if list(cfg) != expected:
            raise ValueError(f"stage config keys must be {expected}, got {list(cfg)}")
        self.cfg = cfg
        self.out_ch = out_ch
        self.downsample = nn.MaxPool2d(2, stride=2, ceil_mode=True)
        for name, stage in cfg.items():
            self.add_module(name, RSU(stage.rsu))
        # side{i} belongs to decoder level i (stage{i}d, or stage6 for the deepest level).
        for name, stage in cfg.items():
            if stage.side_ch is not None:
                level = name.removeprefix("stage").removesuffix("d")
                self.add_module(f"side{level}", nn.Conv2d(stage.side_ch, out_ch, 3, padding=1))
        self.outconv = nn.Conv2d(self.depth * out_ch, out_ch, 1)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        # Encoder: stage1..stage5 with pooling in between, stage6 at 1/32 resolution.
        skips: list[torch.Tensor] = []
        hx = x  # (N, in_ch, H, W)
        for i in range(1, self.depth):
            hx = getattr(self, f"stage{i}")(hx)  # (N, C_i, H/2^(i-1), W/2^(i-1))
            skips.append(hx)
            hx = self.downsample(hx)
        hx = getattr(self, f"stage{self.depth}")(hx)  # (N, C_6, H/32, W/32)
        decoded = {self.depth: hx}
        # Decoder: stage5d..stage1d on cat(upsampled deeper, encoder skip).
        for i in range(self.depth - 1, 0, -1):
            skip = skips[i - 1]
            hx = getattr(self, f"stage{i}d")(torch.cat((_upsample_like(hx, skip), skip), dim=1))
            decoded[i] = hx  # (N, C_id, H/2^(i-1), W/2^(i-1))
        # Side outputs in official order side1..side6 (this order is also the official ONNX
        # graph's conv order, which the weight conversion relies on), all at input size.
        d1 = self.side1(decoded[1])  # (N, out_ch, H, W)
        sides = [d1]
        for i in range(2, self.depth + 1):
            sides.append(_upsample_like(getattr(self, f"side{i}")(decoded[i]), d1))
        fused = self.outconv(torch.cat(sides, dim=1))  # (N, out_ch, H, W)
        return [fused, *sides]


def u2net_full(out_ch: int = 1) -> U2Net:
    """U²-Net (≈44.0 M parameters): the accurate, slow variant (official ``u2net.pth``)."""
    return U2Net(U2NET_CFG, out_ch)


def u2net_lite(out_ch: int = 1) -> U2Net:
    """U²-NetP (≈1.13 M parameters): same topology, 16 mid channels (official ``u2netp.pth``)."""
    return U2Net(U2NETP_CFG, out_ch)


def probabilities(outputs: list[torch.Tensor] | torch.Tensor) -> torch.Tensor:
    """Foreground probability of the fused output, i.e. what the official net returns as d0."""
    logits = outputs[0] if isinstance(outputs, (list, tuple)) else outputs
    return torch.sigmoid(logits)


# name -> constructor of a randomly initialised net. ``build_model`` (package root) adds "official" init.
MODEL_REGISTRY: dict[str, Callable[[], U2Net]] = {
    "u2net": u2net_full,
    "u2netp": u2net_lite,
}
