"""Batched class matching: the DSA matching loss of all K classes in two vmapped gradient passes.

``matching.match_loss`` runs 2·K forward/backward passes (a real and a synthetic one per class).
When no layer couples the samples of a batch (instance norm = GroupNorm(C, C), group norm, no
norm; no batch statistics, no running buffers), the gradient of class c's mean loss
depends only on class c's images, so ``torch.func.vmap`` over a leading class axis of
``torch.func.grad`` computes every class's gradient at once: one pass for the K real batches, one
(differentiable w.r.t. the synthetic images) for the K synthetic batches. The result is the same
function as the per-class loop (equal up to floating-point summation order).

- ``match_loss_batched``: the signature and semantics of ``matching.match_loss``.
- ``supports_batched(net)``: whether the batched path is exact for ``net``.
- ``match_loss_auto``: the batched path where it is exact, else the per-class loop.

Nothing here reads a device value back to the host: the class labels are made on the device with
``torch.full`` (no host-to-device copy), and all control flow is on shapes and Python ints.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from .. import DiffAugment, ParamDiffAug
from .matching import augment_seed, gradient_distance, match_loss
from .networks import ConvNet

# Modules whose forward treats every sample of the batch independently and keeps no state between
# calls (as configured in networks.ConvNet). Anything else (batch norm in train or eval mode,
# norms with running statistics, dropout, unknown custom layers) takes the per-class loop.
_PER_SAMPLE_LEAVES: Tuple[type, ...] = (
    nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear, nn.Identity, nn.Flatten,
    nn.ReLU, nn.Sigmoid, nn.LeakyReLU, nn.Tanh, nn.GELU, nn.SiLU,
    nn.AvgPool2d, nn.MaxPool2d, nn.AdaptiveAvgPool2d,
    nn.GroupNorm,
)
# NB: nn.LayerNorm is per-sample too, but on torch 2.13 (CPU, float64 checked) the gradient w.r.t.
# the input of a loss built from vmap(grad(...)) through layer_norm is wrong (the loss value is
# right; the per-sample grad-without-vmap is right): ConvNetLN takes the per-class loop until that
# is fixed upstream (tests/test_condense_batched.py checks the exclusion).
# Containers whose own forward is known to be per-sample (ConvNet: features -> flatten(1) -> linear).
_PER_SAMPLE_CONTAINERS: Tuple[type, ...] = (nn.Sequential, nn.ModuleList, ConvNet)


def supports_batched(net: nn.Module) -> bool:
    """True when the vmapped path computes exactly what the per-class loop does for ``net``.

    False when any module is a batch norm (``_BatchNorm``: cross-sample statistics in train mode,
    running statistics either way), any norm tracks running statistics (e.g. InstanceNorm with
    ``track_running_stats``), the net has buffers (state a forward may read or update), or a module
    is not one of the known per-sample layers/containers (a custom forward may couple samples).
    True for the networks.ConvNet variants with instance / group / no norm. False for layer norm
    (ConvNetLN): torch's vmap of a double backward through layer_norm is wrong (see the NB above).
    """
    if any(True for _ in net.buffers()):
        return False
    for m in net.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            return False
        if isinstance(m, nn.modules.batchnorm._NormBase) and getattr(m, "track_running_stats", False):
            return False
        if type(m) in _PER_SAMPLE_LEAVES:
            continue
        if isinstance(m, _PER_SAMPLE_CONTAINERS):
            continue
        return False
    return True


def _split_params(net: nn.Module) -> Tuple[Dict[str, Tensor], Dict[str, Tensor]]:
    """(trainable parameters, everything else functional_call needs: frozen parameters, buffers)."""
    trainable: Dict[str, Tensor] = {}
    frozen: Dict[str, Tensor] = {}
    for name, p in net.named_parameters():
        (trainable if p.requires_grad else frozen)[name] = p
    for name, b in net.named_buffers():
        frozen[name] = b
    return trainable, frozen


def match_loss_batched(
    net: nn.Module,
    real_batches: Sequence[Tensor],
    syn_batches: Sequence[Tensor],
    labels: Sequence[int],
    seeds: Sequence[int],
    strategy: str,
    param: Optional[ParamDiffAug] = None,
    metric: str = "ours",
) -> Tensor:
    """``matching.match_loss`` with the K classes' gradients computed in one vmapped pass each.

    Same arguments, same result (a 0-d tensor carrying the graph to the synthetic images and the
    net's parameters; real gradients are constants). Each class's real and synthetic batch is
    augmented by its own ``DiffAugment`` call with that class's seed, exactly as ``match_loss``
    does; the augmented batches are stacked to [K, n, C, H, W] and [K, ipc, C, H, W].

    Falls back to ``match_loss`` (the per-class loop) when the real batches, or the synthetic
    batches, differ in size across classes (they cannot be stacked). The caller must make sure
    the net has no cross-sample coupling (``supports_batched``; ``match_loss_auto`` does).
    """
    if not (len(real_batches) == len(syn_batches) == len(labels) == len(seeds)):
        raise ValueError("dsa_fast.condense: real_batches, syn_batches, labels and seeds differ in length")
    if len(labels) == 0:
        raise ValueError("dsa_fast.condense: match_loss needs at least one class")
    if len({tuple(r.shape) for r in real_batches}) != 1 or len({tuple(s.shape) for s in syn_batches}) != 1:
        return match_loss(net, real_batches, syn_batches, labels, seeds, strategy, param, metric)

    real_aug: List[Tensor] = []
    syn_aug: List[Tensor] = []
    for real, syn, seed in zip(real_batches, syn_batches, seeds):
        real_aug.append(DiffAugment(real, strategy, seed=augment_seed(seed), param=param))
        syn_aug.append(DiffAugment(syn, strategy, seed=augment_seed(seed), param=param))
    device = syn_aug[0].device
    # [K] labels made on the device by fill kernels: no host-to-device copy, no sync.
    y = torch.stack([torch.full((), int(c), dtype=torch.long, device=device) for c in labels])
    xr = torch.stack(real_aug).detach()  # real gradients are constants: no graph to the real side
    xs = torch.stack(syn_aug)

    trainable, frozen = _split_params(net)
    names = list(trainable)

    def class_loss(params: Dict[str, Tensor], x: Tensor, label: Tensor) -> Tensor:
        # x: [n, C, H, W] of one class; label: 0-d. Mean CE against that single class, as
        # matching.class_gradients.
        logits = functional_call(net, (params, frozen), (x,))
        return F.cross_entropy(logits, label.expand(x.shape[0]))

    per_class_grad = vmap(grad(class_loss), in_dims=(None, 0, 0))
    g_real = per_class_grad({k: v.detach() for k, v in trainable.items()}, xr, y)
    g_real = {k: v.detach() for k, v in g_real.items()}
    g_syn = per_class_grad(trainable, xs, y)  # differentiable w.r.t. xs (and the parameters)

    def class_distance(gs: List[Tensor], gr: List[Tensor]) -> Tensor:
        return gradient_distance(gs, gr, metric)

    d = vmap(class_distance)([g_syn[k] for k in names], [g_real[k] for k in names])  # [K]
    return d.sum()


def match_loss_auto(
    net: nn.Module,
    real_batches: Sequence[Tensor],
    syn_batches: Sequence[Tensor],
    labels: Sequence[int],
    seeds: Sequence[int],
    strategy: str,
    param: Optional[ParamDiffAug] = None,
    metric: str = "ours",
) -> Tensor:
    """``matching.match_loss`` by the faster exact path.

    ``match_loss_batched`` when ``supports_batched(net)`` and the images are on a CUDA device (it
    falls back itself on unequal batch sizes); else the per-class loop: for batch norm and anything
    not known to be per-sample, and on the CPU, where the vmapped gradients measured slower than the
    loop (85.6 s vs 50.9 s for one ipc-1 outer step at CIFAR10 size on the 2-core development
    machine, benchmarks/test_bench_loop.py). NB: the CUDA choice awaits its GPU measurement.
    """
    on_cuda = len(syn_batches) > 0 and syn_batches[0].is_cuda
    if on_cuda and supports_batched(net):
        return match_loss_batched(net, real_batches, syn_batches, labels, seeds, strategy, param, metric)
    return match_loss(net, real_batches, syn_batches, labels, seeds, strategy, param, metric)
