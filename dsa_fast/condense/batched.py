"""Class matching of all K classes at once: the DSA matching loss without the per-class loop.

``matching.match_loss`` runs 2·K forward/backward passes (a real and a synthetic one per class).
When no layer couples the samples of a batch (instance norm = GroupNorm(C, C), group norm, layer
norm, no norm; no batch statistics, no running buffers), the gradient of class c's mean loss
depends only on class c's images, so every class's gradient can be computed at once. Two ways:

- ``match_loss_grouped`` (networks.ConvNet): the network as K grouped copies of itself, one per
  class (``ensemble.ensemble_forward``: class c's images in channel group c, one convolution with
  K groups per layer, one batched matmul); the gradient w.r.t. copy c is class c's gradient. One
  pass for the real batches, one (differentiable) for the synthetic ones, the distance of all
  classes at once (``grouped_distance``), one seeded draw per class for its pair of batches, and
  one augmentation call for all real batches and one for all synthetic ones
  (``dsa_fast.augment_pairs``). The ops of a step barely grow with K.
- ``match_loss_batched`` (any per-sample network, ``supports_batched``): ``torch.func.vmap`` over
  a leading class axis of ``torch.func.grad``.

Both are the same function as the per-class loop (equal up to floating-point summation order).
``match_loss_auto`` picks the path (``MATCHINGS``). Nothing here reads a device value back to the
host: class labels are made on the device (no host-to-device copy), and all control flow is on
shapes and Python ints.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from .. import DiffAugment, ParamDiffAug, augment_pairs
from .ensemble import ensemble_forward, supports_ensemble
from .matching import EPS, augment_seed, check_match_args, gradient_distance, match_loss
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
    check_match_args("match_loss_batched", real_batches, syn_batches, labels, seeds)
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


def augment_pair(real: Tensor, syn: Tensor, strategy: str, seed: Union[int, Tensor],
                 param: Optional[ParamDiffAug]) -> Tuple[Tensor, Tensor]:
    """(DiffAugment(real, strategy, seed, param), DiffAugment(syn, strategy, seed, param)), the same
    tensors and the same generator states afterwards (``dsa_fast.augment_pairs`` of one pair: with
    rng='compat' on the fused path the seeded draws are made once and applied to both batches).
    ``seed``: an int, or rng='device' a key tensor on the device."""
    return augment_pairs([(real, syn)], strategy, [seed], param)[0]


def supports_grouped(net: nn.Module) -> bool:
    """True when ``match_loss_grouped`` computes exactly what the per-class loop does for ``net``:
    a ``networks.ConvNet`` whose layers ``ensemble.ensemble_forward`` groups (instance, group,
    layer or no norm; no batch norm, no buffers), every parameter trainable."""
    return supports_ensemble(net) and all(p.requires_grad for p in net.parameters())


def _class_targets(labels: Sequence[int], per_class: int, device: torch.device) -> Tensor:
    """[K * per_class] targets, class k's label repeated per_class times, made on the device (no
    host-to-device copy: arange, or one fill per class for labels out of order)."""
    k = len(labels)
    if list(labels) == list(range(k)):
        y = torch.arange(k, device=device)
    else:
        y = torch.stack([torch.full((), int(c), dtype=torch.long, device=device) for c in labels])
    return y.unsqueeze(1).expand(k, per_class).reshape(-1)


def _grouped_gradients(net: ConvNet, params: Dict[str, Tensor], wrt: Sequence[str], x: Tensor, y: Tensor,
                       per_class: int, create_graph: bool) -> List[Tensor]:
    """Per-class ∇ of the mean cross-entropy w.r.t. ``params[name]`` for the names in ``wrt``:
    ``params`` hold one copy per class ([K, ...], the grouped network), x is [per_class, K*C, H, W]
    (class k's images in channels k*C..(k+1)*C). The gradient w.r.t. copy k is class k's gradient,
    since no other class's loss reads copy k."""
    logits = ensemble_forward(net, params, x, twice_differentiable=create_graph)  # [K, per_class, classes]
    loss = F.cross_entropy(logits.flatten(0, 1), y, reduction="sum") / per_class
    return list(torch.autograd.grad(loss, [params[name] for name in wrt], create_graph=create_graph))


def grouped_distance(g_syn: Sequence[Tensor], g_real: Sequence[Tensor], metric: str = "ours") -> Tensor:
    """Σ_k D(g_syn[:, k], g_real[:, k]) for per-class gradients stacked [K, ...] per parameter:
    ``matching.gradient_distance`` of every class at once (each class's rows and sums stay apart)."""
    if len(g_syn) != len(g_real):
        raise ValueError(f"dsa_fast.condense: {len(g_syn)} synthetic vs {len(g_real)} real gradients")
    if metric == "ours":
        # Rows of every parameter of rank > 1 (per class): out x (everything else), as layer_distance.
        dots, n_syn, n_real = [], [], []
        for s, r in zip(g_syn, g_real):
            if r.dim() <= 2:  # a rank-1 parameter (bias, norm affine): distance 0
                continue
            a, b = s.flatten(2), r.flatten(2)
            dots.append(torch.linalg.vecdot(a, b))
            n_syn.append(torch.linalg.vector_norm(a, dim=-1))
            n_real.append(torch.linalg.vector_norm(b, dim=-1))
        if not dots:
            return g_syn[0].new_zeros(())
        rows = sum(d.numel() for d in dots)
        cos = torch.cat(dots, 1) / (torch.cat(n_syn, 1) * torch.cat(n_real, 1) + EPS)
        return rows - cos.sum()
    if metric == "mse":
        return torch.stack([((s - r) ** 2).sum() for s, r in zip(g_syn, g_real)]).sum()
    if metric == "cos":
        flat = [(s.flatten(1), r.flatten(1)) for s, r in zip(g_syn, g_real)]
        dot = torch.stack([torch.linalg.vecdot(a, b) for a, b in flat]).sum(0)  # [K]
        n_syn = torch.stack([torch.linalg.vecdot(a, a) for a, _ in flat]).sum(0).sqrt()
        n_real = torch.stack([torch.linalg.vecdot(b, b) for _, b in flat]).sum(0).sqrt()
        return (1 - dot / (n_syn * n_real + EPS)).sum()
    raise ValueError(f"dsa_fast.condense: unknown distance {metric!r}; expected 'ours', 'mse' or 'cos'")


def match_loss_grouped(
    net: nn.Module,
    real_batches: Sequence[Tensor],
    syn_batches: Sequence[Tensor],
    labels: Sequence[int],
    seeds: Sequence[int],
    strategy: str,
    param: Optional[ParamDiffAug] = None,
    metric: str = "ours",
    real_chunk: Optional[int] = None,
) -> Tensor:
    """``matching.match_loss`` with the network run as K grouped copies, one per class.

    Same arguments, same result up to floating-point summation order (a 0-d tensor carrying the
    graph to the synthetic images and the net's parameters; real gradients are constants). The
    parameters are expanded to [K, ...] (``ensemble.ensemble_forward``: one convolution with K
    groups per layer, one group norm with K times the groups, one batched matmul), so one forward
    and one ``autograd.grad`` give every class's gradient: one pass for the real batches, one
    (differentiable) for the synthetic ones, then the distance of all classes at once
    (``grouped_distance``). The ops per step do not grow with K.

    ``real_chunk``: classes per real pass (None: all K in one). The real pass holds the
    activations of its classes' real images at once; a chunk bounds that memory (K / real_chunk
    passes). Each class's real and synthetic batch is augmented by its own ``DiffAugment`` calls
    with that class's seed, as ``match_loss``. Falls back to ``match_loss`` when the real (or
    synthetic) batches differ in size across classes. ``net`` must pass ``supports_grouped``.
    """
    check_match_args("match_loss_grouped", real_batches, syn_batches, labels, seeds)
    if not supports_grouped(net):
        raise ValueError(f"dsa_fast.condense: match_loss_grouped needs a ConvNet without batch norm whose "
                         f"parameters all require grad, got {type(net).__name__}")
    if real_chunk is not None and real_chunk < 1:
        raise ValueError(f"dsa_fast.condense: real_chunk must be >= 1 or None, got {real_chunk}")
    if len({tuple(r.shape) for r in real_batches}) != 1 or len({tuple(s.shape) for s in syn_batches}) != 1:
        return match_loss(net, real_batches, syn_batches, labels, seeds, strategy, param, metric)

    k = len(labels)
    pairs = augment_pairs(list(zip(real_batches, syn_batches)), strategy, [augment_seed(s) for s in seeds], param)
    real_aug = [r for r, _ in pairs]
    syn_aug = [s for _, s in pairs]
    n, ipc = real_aug[0].shape[0], syn_aug[0].shape[0]
    device = syn_aug[0].device
    trainable = list(net.named_parameters())

    # 'ours' gives rank-1 parameters (biases, norm affine) no term: their gradients are not computed.
    wrt = [name for name, p in trainable if metric != "ours" or p.dim() > 1]
    chunk = k if real_chunk is None else min(real_chunk, k)
    g_real_parts: List[List[Tensor]] = []
    for lo in range(0, k, chunk):
        hi = min(lo + chunk, k)
        params = {name: p.detach().expand(hi - lo, *p.shape) for name, p in trainable}
        for name in wrt:
            params[name].requires_grad_()
        # [n, K*C, H, W]: class k's images in channels k*C..(k+1)*C; constants (no graph to the real images).
        x = torch.stack(real_aug[lo:hi], dim=1).flatten(1, 2).detach()
        g_real_parts.append(_grouped_gradients(net, params, wrt, x, _class_targets(labels[lo:hi], n, device), n,
                                               create_graph=False))
    g_real = [g_real_parts[0][j] if len(g_real_parts) == 1 else torch.cat([part[j] for part in g_real_parts])
              for j in range(len(wrt))]

    params = {name: p.expand(k, *p.shape) for name, p in trainable}  # graph to the net's parameters
    xs = torch.stack(syn_aug, dim=1).flatten(1, 2)
    g_syn = _grouped_gradients(net, params, wrt, xs, _class_targets(labels, ipc, device), ipc, create_graph=True)
    return grouped_distance(g_syn, [g.detach() for g in g_real], metric)


# How ``match_loss_auto`` matches (``CondenseConfig.matching``).
MATCHINGS = ("auto", "grouped", "per-class")
# Classes per real pass of the grouped matching on the CPU: one, so the real side holds one class's
# activations (below the per-class loop's peak, benchmarks/bench_loop_memory.py). Elsewhere every
# class goes in one pass (fewest launches).
CPU_REAL_CHUNK = 1


def match_loss_auto(
    net: nn.Module,
    real_batches: Sequence[Tensor],
    syn_batches: Sequence[Tensor],
    labels: Sequence[int],
    seeds: Sequence[int],
    strategy: str,
    param: Optional[ParamDiffAug] = None,
    metric: str = "ours",
    matching: str = "auto",
) -> Tensor:
    """``matching.match_loss`` by the fastest exact path.

    ``matching='auto'``: off the CPU, ``match_loss_grouped`` for the ConvNets it supports
    (``supports_grouped``, every class in one real pass), else ``match_loss_batched`` on CUDA where
    exact (``supports_batched``); on the CPU, and for batch norm and the other networks of the pool,
    the per-class loop (on the 2-core development machine the grouped path did the same arithmetic
    in the same time, benchmarks/cpu_loop.py, so the CPU keeps the per-class loop's float rounding).
    ``'grouped'`` insists on the grouped path (``CPU_REAL_CHUNK`` classes per real pass on the CPU; a
    ValueError for networks it does not support); ``'per-class'`` is the per-class loop. The paths
    agree up to floating-point summation order.
    """
    if matching not in MATCHINGS:
        raise ValueError(f"dsa_fast.condense: unknown matching {matching!r}; expected one of {MATCHINGS}")
    args = (net, real_batches, syn_batches, labels, seeds, strategy, param, metric)
    on_cpu = len(syn_batches) > 0 and syn_batches[0].device.type == "cpu"
    if matching == "grouped":
        return match_loss_grouped(*args, real_chunk=CPU_REAL_CHUNK if on_cpu else None)
    if matching == "per-class" or on_cpu:
        return match_loss(*args)
    if supports_grouped(net):
        return match_loss_grouped(*args)
    if syn_batches[0].is_cuda and supports_batched(net):
        return match_loss_batched(*args)
    return match_loss(*args)
