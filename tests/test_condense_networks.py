"""ConvNet shapes and the variants of the official model pool."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from condense_helpers import _one_thread  # noqa: F401
from dsa_fast.condense.networks import ConvNet, get_network, parse_model_name


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_default_convnet_28x28x1(device, dtype):
    net = get_network("ConvNet", 1, 10, (28, 28)).to(device, dtype)
    assert net.features[0].padding == (3, 3)  # 28x28 -> 32x32
    assert net.feature_shape == (128, 4, 4) and net.classifier.in_features == 2048
    out = net(torch.randn(5, 1, 28, 28, device=device, dtype=dtype))
    assert out.shape == (5, 10) and out.dtype == dtype


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_default_convnet_32x32x3(device, dtype):
    net = get_network("ConvNet", 3, 100, (32, 32)).to(device, dtype)
    assert net.features[0].padding == (1, 1)
    assert net.classifier.in_features == 2048
    assert net(torch.randn(2, 3, 32, 32, device=device, dtype=dtype)).shape == (2, 100)


def test_default_layers_are_the_papers():
    net = get_network("ConvNet", 3, 10, (32, 32))
    kinds = [type(m) for m in net.features]
    assert kinds == [nn.Conv2d, nn.GroupNorm, nn.ReLU, nn.AvgPool2d] * 3
    gn = net.features[1]
    assert gn.num_groups == gn.num_channels == 128 and gn.affine  # instance norm


@pytest.mark.parametrize(
    "name, width, depth, feat",
    [("ConvNetD1", 128, 1, 128 * 16 * 16), ("ConvNetD2", 128, 2, 128 * 8 * 8), ("ConvNetD4", 128, 4, 128 * 2 * 2),
     ("ConvNetW32", 32, 3, 32 * 16), ("ConvNetW64", 64, 3, 64 * 16), ("ConvNetW256", 256, 3, 256 * 16),
     ("ConvNetNP", 128, 3, 128 * 32 * 32)],
)
def test_width_depth_pooling_variants(name, width, depth, feat):
    net = get_network(name, 3, 10, (32, 32))
    assert sum(isinstance(m, nn.Conv2d) for m in net.features) == depth
    assert net.features[0].out_channels == width and net.classifier.in_features == feat
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize(
    "name, kind",
    [("ConvNetAS", nn.Sigmoid), ("ConvNetAR", nn.ReLU), ("ConvNetAL", nn.LeakyReLU), ("ConvNetBN", nn.BatchNorm2d),
     ("ConvNetLN", nn.LayerNorm), ("ConvNetIN", nn.GroupNorm), ("ConvNetGN", nn.GroupNorm), ("ConvNetMP", nn.MaxPool2d),
     ("ConvNetAP", nn.AvgPool2d)],
)
def test_norm_activation_pooling_variants(name, kind):
    net = get_network(name, 1, 10, (28, 28))
    assert any(isinstance(m, kind) for m in net.features)
    assert net(torch.randn(3, 1, 28, 28)).shape == (3, 10)


def test_variant_details():
    assert get_network("ConvNetAL", 1, 10, (28, 28)).features[2].negative_slope == 0.01
    assert get_network("ConvNetGN", 3, 10, (32, 32)).features[1].num_groups == 4
    ln = get_network("ConvNetLN", 3, 10, (32, 32)).features[1]
    assert ln.normalized_shape == (128, 32, 32) and ln.weight.dim() == 3  # the rank-3 case of the distance
    assert not any(isinstance(m, (nn.GroupNorm, nn.BatchNorm2d, nn.LayerNorm))
                   for m in get_network("ConvNetNN", 3, 10, (32, 32)).features)


def test_unknown_model_is_refused():
    with pytest.raises(ValueError, match="unknown model"):
        parse_model_name("ResNet18")
    assert parse_model_name("ConvNetW8")["width"] == 8
    assert isinstance(get_network("ConvNet", 1, 2, (28, 28)), ConvNet)


class _CountOps(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(func)
        return func(*args, **(kwargs or {}))


def test_network_built_on_its_device_from_the_seed(device):
    """Parameters are created and initialised on ``device`` (no CPU copy), from that device's
    generator: the same seed gives the same network bit for bit; on the CPU it is exactly the
    network built without a device."""
    def build(seed, **kw):
        torch.manual_seed(seed)
        return get_network("ConvNetW8", 3, 10, (16, 16), **kw)

    with _CountOps() as mode:
        net = build(4, device=device)
    assert all(p.device.type == torch.device(device).type for p in net.parameters())
    assert not any(f in (torch.ops.aten._to_copy.default, torch.ops.aten.copy_.default) for f in mode.ops)
    again = build(4, device=device)
    other = build(5, device=device)
    for a, b, c in zip(net.parameters(), again.parameters(), other.parameters()):
        assert torch.equal(a, b)
        assert a.dim() == 1 or not torch.equal(a, c)  # norm affine starts at 1 / 0 whatever the seed
    if torch.device(device).type == "cpu":
        for a, b in zip(net.parameters(), build(4).parameters()):
            assert torch.equal(a, b)


def test_network_on_the_meta_device_draws_nothing():
    torch.manual_seed(0)
    before = torch.random.get_rng_state()
    net = get_network("ConvNet", 3, 10, (32, 32), device="meta")
    assert all(p.is_meta for p in net.parameters())
    assert torch.equal(torch.random.get_rng_state(), before)
