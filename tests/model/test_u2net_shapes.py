"""Weightless checks of the U²-Net / U²-NetP architecture (no files, no network).

Kept cheap: one forward per net at 64×64 is shared by several tests, U²-Net only sees small inputs.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from backdrop.models import MODEL_REGISTRY, RSU, RSUConfig, build_model, probabilities

# Official parameter counts (Qin et al. 2020: U²-Net 44.0 M, U²-NetP 1.13 M).
PARAMS = {"u2net": 44.0e6, "u2netp": 1.13e6}
NAMES = sorted(MODEL_REGISTRY)


@pytest.fixture(scope="module")
def nets() -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    return {name: build_model(name).eval() for name in NAMES}


@pytest.fixture(scope="module")
def x64() -> torch.Tensor:
    return torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))  # (2, 3, 64, 64)


@pytest.fixture(scope="module")
def out64(nets, x64) -> dict[str, list[torch.Tensor]]:
    with torch.no_grad():
        return {name: net(x64) for name, net in nets.items()}


def test_registry_names():
    assert set(MODEL_REGISTRY) == {"u2net", "u2netp"}


@pytest.mark.parametrize("name", NAMES)
def test_param_count_matches_paper(nets, name):
    n = sum(p.numel() for p in nets[name].parameters())
    assert abs(n - PARAMS[name]) / PARAMS[name] < 0.01, n


@pytest.mark.parametrize("name", NAMES)
def test_seven_logit_maps_at_64(out64, name):
    out = out64[name]
    assert len(out) == 7
    for o in out:
        assert o.shape == (2, 1, 64, 64)
        assert torch.isfinite(o).all()
    # Logits, not probabilities: a scratch net's maps are not confined to [0, 1] ...
    assert any(((o < 0) | (o > 1)).any() for o in out)
    # ... and probabilities() is the sigmoid of the fused map.
    torch.testing.assert_close(probabilities(out), torch.sigmoid(out[0]))


def test_u2netp_batch2_at_320(nets):
    with torch.no_grad():
        out = nets["u2netp"](torch.randn(2, 3, 320, 320))
    assert [tuple(o.shape) for o in out] == [(2, 1, 320, 320)] * 7


@pytest.mark.parametrize("name", NAMES)
def test_any_input_size(nets, name):
    # Not a multiple of 32: ceil-mode pooling + size-matched upsampling must restore it.
    with torch.no_grad():
        out = nets[name](torch.randn(1, 3, 37, 50))
    assert [tuple(o.shape) for o in out] == [(1, 1, 37, 50)] * 7


@pytest.mark.parametrize("name", NAMES)
def test_channels_last_matches_contiguous(nets, x64, out64, name):
    net_cl = build_model(name).eval()
    net_cl.load_state_dict(nets[name].state_dict())
    net_cl = net_cl.to(memory_format=torch.channels_last)
    with torch.no_grad():
        out = net_cl(x64.contiguous(memory_format=torch.channels_last))
    for a, b in zip(out64[name], out, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4)


def test_training_step_reaches_every_parameter():
    torch.manual_seed(0)
    net = build_model("u2netp").train()
    x, y = torch.randn(2, 3, 32, 32), torch.rand(2, 1, 32, 32).round()
    loss = sum(F.binary_cross_entropy_with_logits(o, y) for o in net(x))
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())


def test_rsu4f_is_dilated_and_keeps_size():
    block = RSU(RSUConfig(4, 8, 4, 6, dilated=True)).eval()
    dilations = [block.get_submodule(f"rebnconv{i}").conv_s1.dilation[0] for i in range(1, 5)]
    assert dilations == [1, 2, 4, 8]
    assert block(torch.randn(1, 8, 10, 10)).shape == (1, 6, 10, 10)


def test_state_dict_keys_are_official():
    keys = set(build_model("u2netp").state_dict())
    for k in [
        "stage1.rebnconvin.conv_s1.weight",
        "stage1.rebnconv7.bn_s1.running_var",
        "stage5d.rebnconv3d.conv_s1.bias",
        "side6.weight",
        "outconv.bias",
    ]:
        assert k in keys


def test_registry_errors():
    with pytest.raises(ValueError, match=r"u2net.*u2netp"):
        build_model("u3net")
    with pytest.raises(ValueError, match="scratch"):
        build_model("u2netp", init="imagenet")
