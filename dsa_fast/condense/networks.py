"""ConvNet of the DC/DSA papers and the variants of the official model pool.

Default (``ConvNet``): depth 3; each block Conv3x3 (padding 1; padding 3 on the first conv for
1-channel input, so 28x28 becomes 32x32) -> instance norm (GroupNorm(C, C), affine) -> ReLU ->
AvgPool 2x2; then Linear(width * h * w, num_classes). PyTorch default initialisation.

Pool names: ConvNetD<k> (depth k), ConvNetW<k> (width k), ConvNetAS/AR/AL (sigmoid / relu /
leaky relu 0.01), ConvNetNN/BN/LN/IN/GN (no norm / batch / layer over (C,H,W) / instance / group of
4), ConvNetNP/MP/AP (no / max / avg pooling). The official pool lists D1-D4 and W32-W256; any
positive k is accepted here (small widths keep tests fast).

The cross-architecture pool (``POOL``): MLP, LeNet, AlexNet, AlexNetBN, VGG11, VGG11BN, ResNet18,
ResNet18BN, ResNet18BN_AP, built from the official structures (docs/condense.md lists them); "IN"
there is GroupNorm(C, C) as in ConvNet. Every network has ``embed(x)``: the flattened features the
final Linear reads (distribution matching compares their class means). Sizes that the official
definitions hard-code (the first Linear of MLP and LeNet, the classifier of AlexNet and
ResNet18BN_AP) are computed from the input shape here; for the official shapes (1x28x28, 3x32x32)
they are the official numbers, and 1x32x32 and 3x28x28 inputs work too.

Every network class declares ``per_sample``: True when, in train mode, no layer but batch norm
mixes the samples of a batch (instance / group / layer / no norm), so that a forward of several
classes' images at once gives each image the embedding a forward of its class alone gives
(distribution matching then takes every class in one forward, ``dm.dm_loss``).
``register_network`` refuses a class that does not say.
"""
from __future__ import annotations

import contextlib
import functools
import re
from typing import Any, Callable, Dict, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from .registry import Registry

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


def _convnet_names() -> str:
    """'ConvNet, ConvNetW<k>, ConvNetD<k>, ConvNetAS/AR/AL, ...': the ConvNet family, one group
    per setting its suffixes change."""
    groups: Dict[str, list] = {}
    for suffix, change in _SUFFIXES.items():
        for key in change:
            groups.setdefault(key, []).append(suffix)
    return ", ".join(["ConvNet", "ConvNetW<k>", "ConvNetD<k>"] + ["ConvNet" + "/".join(g) for g in groups.values()])


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

    per_sample = True  # every norm but batch norm (which has_batchnorm finds) is per sample

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

    def embed(self, x: Tensor) -> Tensor:
        """The features the classifier reads, [N, width * h * w]."""
        return self.features(x).flatten(1)

def get_network(name: str, channel: int, num_classes: int, im_size: Tuple[int, int],
                device: Optional[Union[str, torch.device]] = None) -> nn.Module:
    """A freshly initialised network from the current global RNG (callers seed it).

    ``device``: where the parameters are created and initialised (default: torch's default
    device). The initialisation draws from that device's global generator, so the network is a
    function of the seed on each device; nothing is built on the CPU and copied. On the CPU this is
    the same network as before; on CUDA it is drawn from the CUDA generator (other values than a
    CPU-built copy, as reproducible).
    """
    with contextlib.nullcontext() if device is None else torch.device(device):
        if name in POOL:
            return POOL[name](channel, num_classes, im_size)
        return ConvNet(channel, num_classes, im_size, **parse_model_name(name))  # type: ignore[arg-type]


def check_model_name(name: str) -> None:
    """Raise a ValueError naming the accepted models unless ``name`` is one of them."""
    if name in POOL:
        return
    try:
        parse_model_name(name)
    except ValueError as e:
        raise ValueError(f"{e}, or one of {', '.join(POOL)}") from None


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


# -- the cross-architecture pool ---------------------------------------------------------------


def _conv_out(size: int, kernel: int, pad: int, stride: int = 1) -> int:
    return (size + 2 * pad - kernel) // stride + 1


def _check_size(name: str, im_size: Sequence[int], h: int, w: int) -> None:
    if h < 1 or w < 1:
        raise ValueError(f"dsa_fast.condense: {name} reduces a {tuple(im_size)} image to nothing")


def _norm2d(norm: str, c: int) -> nn.Module:
    # Only the two norms the pool uses: the official "instance norm" and batch norm.
    return nn.GroupNorm(c, c, affine=True) if norm == "instancenorm" else nn.BatchNorm2d(c)


class MLP(nn.Module):
    """flatten -> Linear(C*H*W, 128) -> ReLU -> Linear(128, 128) -> ReLU -> Linear(128, classes)."""

    per_sample = True

    def __init__(self, channel: int, num_classes: int, im_size: Tuple[int, int]):
        super().__init__()
        self.fc_1 = nn.Linear(channel * int(im_size[0]) * int(im_size[1]), 128)
        self.fc_2 = nn.Linear(128, 128)
        self.fc_3 = nn.Linear(128, num_classes)

    def embed(self, x: Tensor) -> Tensor:
        return torch.relu(self.fc_2(torch.relu(self.fc_1(x.flatten(1)))))

    def forward(self, x: Tensor) -> Tensor:
        return self.fc_3(self.embed(x))


class LeNet(nn.Module):
    """Conv5x5 6 (pad 2 for 1 channel) -> ReLU -> MaxPool2 -> Conv5x5 16 -> ReLU -> MaxPool2 ->
    Linear 120 -> ReLU -> Linear 84 -> ReLU -> Linear classes."""

    per_sample = True

    def __init__(self, channel: int, num_classes: int, im_size: Tuple[int, int]):
        super().__init__()
        pad = 2 if channel == 1 else 0
        self.features = nn.Sequential(
            nn.Conv2d(channel, 6, kernel_size=5, padding=pad), nn.ReLU(), nn.MaxPool2d(2, 2),
            nn.Conv2d(6, 16, kernel_size=5), nn.ReLU(), nn.MaxPool2d(2, 2),
        )
        h, w = ((_conv_out(_conv_out(s, 5, pad) // 2, 5, 0) // 2) for s in im_size)
        _check_size("LeNet", im_size, h, w)
        self.fc_1 = nn.Linear(16 * h * w, 120)
        self.fc_2 = nn.Linear(120, 84)
        self.fc_3 = nn.Linear(84, num_classes)

    def embed(self, x: Tensor) -> Tensor:
        return torch.relu(self.fc_2(torch.relu(self.fc_1(self.features(x).flatten(1)))))

    def forward(self, x: Tensor) -> Tensor:
        return self.fc_3(self.embed(x))


class AlexNet(nn.Module):
    """Conv5x5 128 (pad 4 for 1 channel, else 2), MaxPool2, Conv5x5 192, MaxPool2, Conv3x3 256, 192,
    192, MaxPool2 (ReLU after every conv; BatchNorm before it with ``batchnorm=True``) ->
    Linear classes."""

    per_sample = True

    def __init__(self, channel: int, num_classes: int, im_size: Tuple[int, int], batchnorm: bool = False):
        super().__init__()
        pad = 4 if channel == 1 else 2
        # (out channels, kernel, padding, pool after)
        plan = [(128, 5, pad, True), (192, 5, 2, True), (256, 3, 1, False), (192, 3, 1, False), (192, 3, 1, True)]
        layers, c = [], channel
        h, w = int(im_size[0]), int(im_size[1])
        for out, k, p, pool in plan:
            layers.append(nn.Conv2d(c, out, kernel_size=k, padding=p))
            if batchnorm:
                layers.append(nn.BatchNorm2d(out))
            layers.append(nn.ReLU(inplace=True))
            h, w, c = _conv_out(h, k, p), _conv_out(w, k, p), out
            if pool:
                layers.append(nn.MaxPool2d(2, 2))
                h, w = h // 2, w // 2
        _check_size("AlexNet", im_size, h, w)
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(c * h * w, num_classes)

    def embed(self, x: Tensor) -> Tensor:
        return self.features(x).flatten(1)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.embed(x))


VGG11_PLAN: Tuple[object, ...] = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")


class VGG11(nn.Module):
    """VGG11 of the official pool: Conv3x3 + norm + ReLU per number of ``VGG11_PLAN``, MaxPool2 per
    'M', AvgPool(1), Linear(512, classes).

    NB: the first conv pads by 3 for 1-channel input (as ConvNet: 28x28 becomes 32x32). A 3-channel
    input smaller than 32 pixels is padded by 3 too, since five poolings would leave nothing of a
    28x28 map (the official definition fails there).
    """

    per_sample = True

    def __init__(self, channel: int, num_classes: int, im_size: Tuple[int, int], norm: str = "instancenorm"):
        super().__init__()
        layers, c = [], channel
        h, w = int(im_size[0]), int(im_size[1])
        first = True
        for v in VGG11_PLAN:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
                h, w = h // 2, w // 2
                continue
            pad = 3 if first and (channel == 1 or min(h, w) < 32) else 1
            first = False
            layers += [nn.Conv2d(c, int(v), kernel_size=3, padding=pad), _norm2d(norm, int(v)), nn.ReLU(inplace=True)]
            c, h, w = int(v), h + 2 * pad - 2, w + 2 * pad - 2
        _check_size("VGG11", im_size, h, w)
        layers.append(nn.AvgPool2d(kernel_size=1, stride=1))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(c * h * w, num_classes)

    def embed(self, x: Tensor) -> Tensor:
        return self.features(x).flatten(1)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.embed(x))


class BasicBlock(nn.Module):
    """ResNet basic block: conv3x3(stride) + norm + ReLU, conv3x3 + norm, plus the shortcut (identity,
    or conv1x1 + norm when the shape changes), then ReLU. ``avgpool=True`` keeps every conv at
    stride 1 and downsamples by a 2x2 average pooling instead (after the first conv's ReLU, and
    after the shortcut's 1x1 conv): the official BasicBlock_AP."""

    def __init__(self, in_planes: int, planes: int, stride: int, norm: str, avgpool: bool):
        super().__init__()
        self.stride, self.avgpool = stride, avgpool
        conv_stride = 1 if avgpool else stride
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, stride=conv_stride, padding=1, bias=False)
        self.bn1 = _norm2d(norm, planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = _norm2d(norm, planes)
        self.shortcut: nn.Module = nn.Sequential()
        if stride != 1 or in_planes != planes:
            conv = nn.Conv2d(in_planes, planes, kernel_size=1, stride=conv_stride, bias=False)
            pool = [nn.AvgPool2d(kernel_size=2, stride=2)] if avgpool and stride != 1 else []
            self.shortcut = nn.Sequential(conv, *pool, _norm2d(norm, planes))

    def forward(self, x: Tensor) -> Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        if self.avgpool and self.stride != 1:
            out = nn.functional.avg_pool2d(out, kernel_size=2, stride=2)
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    """ResNet-18 of the official pool: conv3x3 64 (no bias) + norm + ReLU, four stages of two basic
    blocks (64, 128, 256, 512; stride 2 in the first block of stages 2-4), then avg_pool2d(4) ->
    Linear(512, classes). ``avgpool=True``: ResNet18BN_AP (2x2 average pooling for every stride 2,
    final avg_pool2d(1), Linear over the whole 512 x h x w map)."""

    per_sample = True

    def __init__(self, channel: int, num_classes: int, im_size: Tuple[int, int], norm: str = "instancenorm",
                 avgpool: bool = False):
        super().__init__()
        self.avgpool = avgpool
        self.conv1 = nn.Conv2d(channel, 64, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = _norm2d(norm, 64)
        blocks, in_planes = [], 64
        h, w = int(im_size[0]), int(im_size[1])
        for i, planes in enumerate((64, 128, 256, 512)):
            for j in range(2):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(BasicBlock(in_planes, planes, stride, norm, avgpool))
                in_planes = planes
                if stride == 2:
                    h, w = (h // 2, w // 2) if avgpool else (_conv_out(h, 3, 1, 2), _conv_out(w, 3, 1, 2))
        self.layers = nn.Sequential(*blocks)
        if not avgpool:
            h, w = h // 4, w // 4
        _check_size("ResNet18", im_size, h, w)
        self.classifier = nn.Linear(512 * h * w, num_classes)

    def embed(self, x: Tensor) -> Tensor:
        out = self.layers(torch.relu(self.bn1(self.conv1(x))))
        if not self.avgpool:
            out = nn.functional.avg_pool2d(out, 4)
        return out.flatten(1)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.embed(x))


POOL: Registry[Callable[[int, int, Tuple[int, int]], nn.Module]] = Registry("model")


def register_network(name: str, cls: type, **options: Any) -> None:
    """Make ``name`` a model: ``cls(channel, num_classes, im_size, **options)``. ``cls`` must
    declare ``per_sample`` (a bool, see the module docstring) and have ``embed(x)``."""
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise TypeError(f"dsa_fast.condense: register_network({name!r}) takes an nn.Module class, got {cls!r}")
    if not isinstance(getattr(cls, "per_sample", None), bool):
        raise TypeError(f"dsa_fast.condense: network class {cls.__name__} must declare per_sample = True or False "
                        f"(True: in train mode no layer but batch norm mixes the samples of a batch)")
    if not callable(getattr(cls, "embed", None)):
        raise TypeError(f"dsa_fast.condense: network class {cls.__name__} has no embed(x) (the features its last "
                        f"layer reads)")
    if re.fullmatch(r"ConvNet\w*", name):
        raise ValueError(f"dsa_fast.condense: model names ConvNet... are the ConvNet family's; not {name!r}")
    POOL.add(name, functools.partial(cls, **options) if options else cls)


def unregister_network(name: str) -> None:
    POOL.remove(name)


def model_names() -> str:
    """The accepted models, for the help."""
    return ", ".join([_convnet_names()] + list(POOL))


# The cross-architecture pool of the official code.
register_network("MLP", MLP)
register_network("LeNet", LeNet)
register_network("AlexNet", AlexNet)
register_network("AlexNetBN", AlexNet, batchnorm=True)
register_network("VGG11", VGG11)
register_network("VGG11BN", VGG11, norm="batchnorm")
register_network("ResNet18", ResNet18)
register_network("ResNet18BN", ResNet18, norm="batchnorm")
register_network("ResNet18BN_AP", ResNet18, norm="batchnorm", avgpool=True)
