"""ConvNet of the DC/DSA papers and the variants of the official model pool.

Default (``ConvNet``): depth 3; each block Conv3x3 (padding 1; padding 3 on the first conv for
1-channel input, so 28x28 becomes 32x32) -> instance norm (GroupNorm(C, C), affine) -> ReLU ->
AvgPool 2x2; then Linear(width * h * w, num_classes). PyTorch default initialisation.

Pool names: ConvNetD<k> (depth k), ConvNetW<k> (width k), ConvNetAS/AR/AL (sigmoid / relu /
leaky relu 0.01), ConvNetNN/BN/LN/IN/GN (no norm / batch / layer over (C,H,W) / instance / group of
4), ConvNetNP/MP/AP (no / max / avg pooling). The official pool lists D1-D4 and W32-W256; any
positive k is accepted here (small widths keep tests fast).
"""
from __future__ import annotations

import contextlib
import re
from typing import Dict, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

ACTIVATIONS = ("relu", "sigmoid", "leakyrelu")
NORMS = ("none", "batchnorm", "layernorm", "instancenorm", "groupnorm")
POOLINGS = ("none", "maxpooling", "avgpooling")

DEFAULTS: Dict[str, object] = {
    "width": 128,
    "depth": 3,
    "act": "relu",
    "norm": "instancenorm",
    "pooling": "avgpooling",
}

_SUFFIXES: Dict[str, Dict[str, object]] = {
    "": {},
    "AS": {"act": "sigmoid"},
    "AR": {"act": "relu"},
    "AL": {"act": "leakyrelu"},
    "NN": {"norm": "none"},
    "BN": {"norm": "batchnorm"},
    "LN": {"norm": "layernorm"},
    "IN": {"norm": "instancenorm"},
    "GN": {"norm": "groupnorm"},
    "NP": {"pooling": "none"},
    "MP": {"pooling": "maxpooling"},
    "AP": {"pooling": "avgpooling"},
}


def parse_model_name(name: str) -> Dict[str, object]:
    """'ConvNetW32' -> {'width': 32, 'depth': 3, ...}: the full architecture settings of a pool name."""
    settings = dict(DEFAULTS)
    m = re.fullmatch(r"ConvNet(?:([WD])(\d+))?", name)
    if m is not None:
        if m.group(1):
            k = int(m.group(2))
            if k < 1:
                raise ValueError(f"dsa_fast.condense: {name}: width/depth must be >= 1")
            settings["width" if m.group(1) == "W" else "depth"] = k
        return settings
    if name.startswith("ConvNet") and name[len("ConvNet"):] in _SUFFIXES:
        settings.update(_SUFFIXES[name[len("ConvNet"):]])
        return settings
    raise ValueError(
        f"dsa_fast.condense: unknown model {name!r}; expected ConvNet, ConvNetD<k>, ConvNetW<k> or "
        f"ConvNet{{{','.join(s for s in _SUFFIXES if s)}}}"
    )


def _activation(act: str) -> nn.Module:
    if act == "relu":
        return nn.ReLU()
    if act == "sigmoid":
        return nn.Sigmoid()
    if act == "leakyrelu":
        return nn.LeakyReLU(negative_slope=0.01)
    raise ValueError(f"dsa_fast.condense: unknown activation {act!r}; expected one of {ACTIVATIONS}")


def _norm(norm: str, shape: Sequence[int]) -> nn.Module:
    c = shape[0]
    if norm == "batchnorm":
        return nn.BatchNorm2d(c, affine=True)
    if norm == "layernorm":
        return nn.LayerNorm(list(shape), elementwise_affine=True)
    if norm == "instancenorm":
        return nn.GroupNorm(c, c, affine=True)
    if norm == "groupnorm":
        return nn.GroupNorm(4, c, affine=True)
    raise ValueError(f"dsa_fast.condense: unknown norm {norm!r}; expected one of {NORMS}")


def _pooling(pooling: str) -> nn.Module:
    if pooling == "maxpooling":
        return nn.MaxPool2d(kernel_size=2, stride=2)
    if pooling == "avgpooling":
        return nn.AvgPool2d(kernel_size=2, stride=2)
    raise ValueError(f"dsa_fast.condense: unknown pooling {pooling!r}; expected one of {POOLINGS}")


class ConvNet(nn.Module):
    """x: [N, channel, H, W] -> logits [N, num_classes]."""

    def __init__(
        self,
        channel: int,
        num_classes: int,
        im_size: Tuple[int, int],
        width: int = 128,
        depth: int = 3,
        act: str = "relu",
        norm: str = "instancenorm",
        pooling: str = "avgpooling",
    ):
        super().__init__()
        layers = []
        c, h, w = channel, int(im_size[0]), int(im_size[1])
        for d in range(depth):
            # NB: the official net pads the first conv by 3 for 1-channel input: 28x28 -> 32x32.
            pad = 3 if (channel == 1 and d == 0) else 1
            layers.append(nn.Conv2d(c, width, kernel_size=3, padding=pad))
            c, h, w = width, h + 2 * pad - 2, w + 2 * pad - 2
            if norm != "none":
                layers.append(_norm(norm, (c, h, w)))
            layers.append(_activation(act))
            if pooling != "none":
                layers.append(_pooling(pooling))
                h, w = h // 2, w // 2
            if h < 1 or w < 1:
                raise ValueError(f"dsa_fast.condense: depth {depth} pools a {tuple(im_size)} image to nothing")
        self.features = nn.Sequential(*layers)
        self.feature_shape = (c, h, w)
        self.classifier = nn.Linear(c * h * w, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x).flatten(1))


def get_network(name: str, channel: int, num_classes: int, im_size: Tuple[int, int],
                device: Optional[Union[str, torch.device]] = None) -> ConvNet:
    """A freshly initialised network from the current global RNG (callers seed it).

    ``device``: where the parameters are created and initialised (default: torch's default
    device). The initialisation draws from that device's global generator, so the network is a
    function of the seed on each device; nothing is built on the CPU and copied. On the CPU this is
    the same network as before; on CUDA it is drawn from the CUDA generator (other values than a
    CPU-built copy, as reproducible).
    """
    settings = parse_model_name(name)
    with contextlib.nullcontext() if device is None else torch.device(device):
        return ConvNet(channel, num_classes, im_size, **settings)  # type: ignore[arg-type]


def has_batchnorm(net: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules())


def freeze_batchnorm(net: nn.Module) -> None:
    """Put every batch-norm layer in eval mode (use and keep its running statistics)."""
    for m in net.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


@torch.no_grad()
def set_batchnorm_statistics(net: nn.Module, images: Tensor) -> None:
    """The official loop's treatment of batch norm during matching: one train-mode forward over a
    few real images per class sets the running statistics, then the BN layers are frozen."""
    net.train()
    net(images)
    freeze_batchnorm(net)
