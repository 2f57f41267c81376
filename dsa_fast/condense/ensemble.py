"""Ensemble evaluation: the networks of one evaluation trained together, each as if alone.

``evaluate.train_network`` trains one network at a time: E networks cost E times every launch and
every host round trip of one training. Here the E networks' parameters are stacked
(``torch.func.stack_module_state``: a leading network axis on every parameter) and one forward
runs all E networks on their own batches as grouped layers (``ensemble_forward``): the activations
are [B, E*C, H, W], network k owning channels k*C..(k+1)*C; a convolution is one convolution with
E groups, an instance/group norm one group norm with E times the groups (the same statistics),
activations and pooling act per channel anyway, the classifier is one batched matmul. The loss is
the sum over networks of each network's mean cross-entropy, so the gradient of the stacked
parameters holds each network's own gradient; SGD (momentum, weight decay) is elementwise, so one
optimiser over the stacked tensors makes each network's own update.

NB: the grouped layers are written out rather than ``vmap``-ped: vmap's group-norm rule applies
the affine weight as separate broadcast multiply and add kernels (forward and backward), which
cost more than the convolutions on the CPU.

Each network keeps the random stream it has in the sequential path: torch's global generators
seeded with that network's seed (``evaluate.evaluate_set``). ``_Streams`` holds one saved global
generator state per network and swaps it in around that network's draws (initialisation, the
epoch's shuffle, each batch's per-sample DiffAugment call), in the order the sequential path makes
them. So both paths draw the same numbers for network k, and the sequential path stays the oracle:
the trained weights agree to floating-point summation order (tests/test_condense_ensemble.py).

Networks whose layers couple the samples of a batch or keep state (batch norm: batch statistics,
running buffers) cannot be grouped this way: ``supports_ensemble`` is False and the evaluation
trains them one after another (``ConvNetBN``).
"""
from __future__ import annotations

import contextlib
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import stack_module_state

from .. import DiffAugment, ParamDiffAug
from .networks import ConvNet, get_network

# The layers ``ensemble_forward`` knows how to group (networks.ConvNet's features).
_GROUPABLE: Tuple[type, ...] = (
    nn.Conv2d, nn.GroupNorm, nn.LayerNorm, nn.ReLU, nn.Sigmoid, nn.LeakyReLU, nn.AvgPool2d, nn.MaxPool2d,
)

# Images (networks x batch) trained in one ensemble step at most; larger ensembles train in groups
# of networks, one group after another. On CUDA the bound is memory: the activations of this many
# images in one network (about 4 MB each for a width-128 ConvNet at 32x32, saved for the
# backward). On the CPU it is the cache: a group of 4 networks at ipc 1 (40 images) trained as fast
# as or faster than one network after another at 1 and 2 threads, 20 networks (200 images) slower
# at 1 thread (every layer's tensors leave the cache); see docs/condense.md.
ENSEMBLE_IMAGES = 2560
ENSEMBLE_IMAGES_CPU = 40

MODES = ("auto", "ensemble", "sequential")


def supports_ensemble(net: nn.Module) -> bool:
    """True when ``net`` is a ``networks.ConvNet`` whose layers ``ensemble_forward`` can group:
    per-sample and stateless (no buffers). False for batch norm (``ConvNetBN``: batch statistics
    and running buffers), which the evaluation trains one network after another."""
    if type(net) is not ConvNet or any(True for _ in net.buffers()):
        return False
    return all(type(m) in _GROUPABLE for m in net.features)


def group_norm_composite(x: Tensor, groups: int, weight: Optional[Tensor], bias: Optional[Tensor],
                         eps: float) -> Tensor:
    """``F.group_norm`` written with plain tensor ops (the same function up to rounding).

    NB: for a graph that is differentiated twice (gradient matching's synthetic side) its second
    derivative is about 40 % fewer ops than that of ``native_group_norm``'s backward formula
    (tests/test_condense_batched.py counts them); the fused ``F.group_norm`` is faster otherwise.
    """
    b = x.shape[0]
    xg = x.view(b, groups, -1)
    var, mean = torch.var_mean(xg, dim=-1, keepdim=True, correction=0)
    y = ((xg - mean) * torch.rsqrt(var + eps)).view(x.shape)
    if weight is None:
        return y
    shape = (-1,) + (1,) * (x.dim() - 2)
    return torch.addcmul(bias.view(shape), y, weight.view(shape))


def ensemble_forward(template: ConvNet, params: Dict[str, Tensor], x: Tensor, shared_input: bool = False,
                     twice_differentiable: bool = False) -> Tensor:
    """Logits [E, B, K] of the E networks ``params`` (stacked [E, ...] by ``template``'s names).

    x: [B, E*C, H, W], network k's images in channels k*C..(k+1)*C; with ``shared_input`` x is
    [B, C, H, W], the same images for every network (testing). ``twice_differentiable``: the
    norms as ``group_norm_composite`` (for a graph that is differentiated twice).
    """
    group_norm = group_norm_composite if twice_differentiable else F.group_norm
    e = next(iter(params.values())).shape[0]
    for name, m in template.features.named_children():
        pre = f"features.{name}."
        if isinstance(m, nn.Conv2d):
            groups = m.groups if shared_input else e * m.groups
            shared_input = False
            x = F.conv2d(x, params[pre + "weight"].flatten(0, 1), params[pre + "bias"].flatten(), m.stride,
                         m.padding, m.dilation, groups)
        elif isinstance(m, nn.GroupNorm):
            # Network k's groups are groups k*G..(k+1)*G of the stacked channels: same statistics.
            x = group_norm(x, e * m.num_groups, params[pre + "weight"].flatten(), params[pre + "bias"].flatten(),
                           m.eps)
        elif isinstance(m, nn.LayerNorm):
            # One group per network = its (C, H, W) statistics; the elementwise affine per network.
            b = x.shape[0]
            y = group_norm(x, e, None, None, m.eps).view(b, e, *m.normalized_shape)
            x = (y * params[pre + "weight"] + params[pre + "bias"]).view(x.shape)
        else:  # activation or pooling: per channel
            x = m(x)
    b = x.shape[0]
    f = x.reshape(b, e, -1).transpose(0, 1)  # [E, B, F]
    return torch.baddbmm(params["classifier.bias"].unsqueeze(1), f, params["classifier.weight"].transpose(1, 2))


def model_supports_ensemble(model: str, channel: int, num_classes: int, im_size) -> bool:
    """``supports_ensemble`` for a pool name, decided on a meta-device copy (no memory, no draws)."""
    return supports_ensemble(get_network(model, channel, num_classes, im_size, device="meta"))


def group_size(n_images: int, batch_size: int, device: torch.device) -> int:
    """Networks per ensemble group: as many as fit ``ENSEMBLE_IMAGES`` (CPU:
    ``ENSEMBLE_IMAGES_CPU``) images of one batch."""
    budget = ENSEMBLE_IMAGES_CPU if torch.device(device).type == "cpu" else ENSEMBLE_IMAGES
    return max(1, budget // max(1, min(n_images, batch_size)))


class _Streams:
    """One saved state of torch's global generators (the CPU one and, for a CUDA run, the device's)
    per network. ``use(k)`` makes network k's state the global one for a block and saves it back
    afterwards: network k's draws continue its own stream whatever the other networks draw.

    Must run inside a ``torch.random.fork_rng`` (the caller's global state is restored there).
    """

    def __init__(self, device: torch.device):
        self.gens: List[torch.Generator] = [torch.default_generator]
        if device.type == "cuda":
            index = device.index if device.index is not None else torch.cuda.current_device()
            self.gens.append(torch.cuda.default_generators[index])
        self.states: List[List[Tensor]] = []

    def add(self, seed: int) -> int:
        """A new stream as ``torch.manual_seed(seed)`` starts it; returns its index."""
        torch.manual_seed(seed)
        self.states.append([g.get_state() for g in self.gens])
        return len(self.states) - 1

    @contextlib.contextmanager
    def use(self, k: int) -> Iterator[None]:
        for g, s in zip(self.gens, self.states[k]):
            g.set_state(s)
        yield
        self.states[k] = [g.get_state() for g in self.gens]


def _sgd(params: Sequence[Tensor], lr: float) -> torch.optim.Optimizer:
    # The evaluation's optimiser (evaluate.train_network), here over the stacked parameters.
    return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=0.0005)


def train_ensemble(
    images: Tensor,
    labels: Tensor,
    *,
    model: str,
    num_classes: int,
    seeds: Sequence[int],
    epochs: int,
    lr: float,
    batch_train: int,
    strategy: str,
    param: Optional[ParamDiffAug],
    on_pass: Optional[Callable[[int], None]] = None,
) -> Tuple[nn.Module, Dict[str, Tensor]]:
    """Train one network per seed on (images, labels) together; returns (a template module,
    the trained parameters stacked [E, ...] by name) for ``ensemble_forward``.

    Network k ends as ``evaluate.train_network`` under ``torch.manual_seed(seeds[k])`` leaves it
    (same initialisation, shuffles, augmentation draws, optimiser steps and schedule), up to the
    summation order of the stacked convolutions. The caller's global RNG state is restored.
    ``on_pass(E)`` is called after every pass over the data.
    """
    device = images.device
    n = images.shape[0]
    e_count = len(seeds)
    fork = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else []
    with torch.random.fork_rng(devices=fork):
        streams = _Streams(device)
        nets = []
        for s in seeds:
            k = streams.add(s)
            with streams.use(k):
                nets.append(get_network(model, images.shape[1], num_classes, tuple(images.shape[2:]), device=device)
                            .to(images.dtype))
        if not supports_ensemble(nets[0]):
            raise ValueError(f"dsa_fast.condense: {model} cannot train as an ensemble (its layers couple "
                             f"samples or keep state); evaluate it sequentially")
        params, _ = stack_module_state(nets)
        template = nets[0]
        names = list(params)
        leaves = [params[k] for k in names]
        optimizer = _sgd(leaves, lr)
        decay_after = epochs // 2 + 1
        for ep in range(epochs + 1):
            perms: List[Tensor] = [torch.empty(0)] * e_count
            for start in range(0, n, batch_train):
                xs, ys = [], []
                for k in range(e_count):
                    # Network k's draws in the sequential order: the epoch's shuffle, then the
                    # batch's augmentation.
                    with streams.use(k):
                        if start == 0:
                            perms[k] = torch.randperm(n, device=device)
                        idx = perms[k][start:start + batch_train]
                        xs.append(DiffAugment(images[idx], strategy, seed=-1, param=param))
                    ys.append(labels[idx])
                x = torch.stack(xs, dim=1).flatten(1, 2)  # [B, E*C, H, W]
                y = torch.stack(ys)
                logits = ensemble_forward(template, params, x)
                # Σ_k mean_b CE: the gradient of network k's parameters is its own loss's gradient.
                loss = F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none").view(y.shape)
                loss = loss.mean(dim=1).sum()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            if ep == decay_after:
                optimizer = _sgd(leaves, lr * 0.1)
            if on_pass is not None:
                on_pass(e_count)
    return template, {k: v.detach() for k, v in params.items()}


@torch.no_grad()
def test_ensemble(template: nn.Module, params: Dict[str, Tensor], images: Tensor, labels: Tensor,
                  batch_size: int = 256) -> Tensor:
    """Top-1 test accuracy of each stacked network ([E] float64 tensor on the data's device), without
    augmentation (the grouped layers have no train/eval difference). Test batches shrink with E so that networks x images stays
    ``batch_size``."""
    e_count = next(iter(params.values())).shape[0]
    step = max(1, batch_size // e_count)
    correct = torch.zeros(e_count, dtype=torch.long, device=images.device)
    for start in range(0, images.shape[0], step):
        out = ensemble_forward(template, params, images[start:start + step], shared_input=True)  # [E, b, K]
        correct += (out.argmax(dim=2) == labels[start:start + step]).sum(dim=1)
    return correct.double() / max(images.shape[0], 1)
