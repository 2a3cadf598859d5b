"""Segmentation models: U²-Net / U²-NetP, from scratch or with the official weights."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from torch import nn

from .u2net import MODEL_REGISTRY, RSU, RSUConfig, StageConfig, U2Net, probabilities

__all__ = [
    "MODEL_REGISTRY",
    "RSU",
    "RSUConfig",
    "StageConfig",
    "U2Net",
    "build_model",
    "fetch_official",
    "load_official",
    "onnx_path",
    "probabilities",
    "weights_dir",
]

if TYPE_CHECKING:
    from .official import fetch_official, load_official, onnx_path, weights_dir

INITS = ("scratch", "official")
_OFFICIAL_API = {"fetch_official", "load_official", "onnx_path", "weights_dir"}


def __getattr__(name: str) -> Any:
    """Import ``.official`` lazily: keeps ``python -m backdrop.models.official`` free of the
    runpy double-import warning and ``import backdrop.models`` light."""
    if name in _OFFICIAL_API:
        from . import official

        return getattr(official, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def build_model(name: str, init: str = "scratch") -> nn.Module:
    """Build ``name`` ("u2net" | "u2netp"); ``init="official"`` loads the converted official
    weights (eval mode, needs the cached ONNX: ``make weights``), "scratch" is PyTorch's default
    random init (train mode)."""
    if name not in MODEL_REGISTRY:
        raise ValueError(f"unknown model {name!r}; valid names: {sorted(MODEL_REGISTRY)}")
    if init == "scratch":
        return MODEL_REGISTRY[name]()
    if init == "official":
        from .official import load_official

        return load_official(name)
    raise ValueError(f"unknown init {init!r}; valid: {list(INITS)}")
