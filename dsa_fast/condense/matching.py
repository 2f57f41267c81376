"""Per-class gradient matching: the DSA loss for one outer-loop step (docs/semantics.md §5).

For each class c: the real batch and the synthetic images of c are augmented with the same seed
(one transform ω for both), g_real = ∇θ CE(net(real_aug), c) (detached) and
g_syn = ∇θ CE(net(syn_aug), c) (with its graph, so the loss reaches the synthetic images); the loss
is Σ_c D(g_syn, g_real).

NB: this is the per-class loop of the official code, the oracle of the batched paths
(``batched.py``: every class at once), which take the same arguments. Nothing here reads a value
back to the host.
"""
from __future__ import annotations

from typing import List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import DiffAugment, ParamDiffAug

EPS = 1e-6  # the official constant, added to the PRODUCT of the two norms


def layer_distance(g_syn: Tensor, g_real: Tensor) -> Tensor:
    """The 'ours' distance for one parameter tensor.

    Rank 4 (conv, out x in x kh x kw) -> rows of out x (in*kh*kw); rank 3 -> C x (h*w); rank 2 as
    is; rank 1 (biases, norm affine) -> 0. d = Σ_rows [1 - <a, b> / (‖a‖ ‖b‖ + 1e-6)].
    """
    if g_real.dim() <= 1:
        return g_syn.new_zeros(())
    a = g_syn.reshape(g_syn.shape[0], -1)
    b = g_real.reshape(g_real.shape[0], -1)
    cos = (a * b).sum(dim=-1) / (a.norm(dim=-1) * b.norm(dim=-1) + EPS)
    return (1 - cos).sum()


def gradient_distance(g_syn: Sequence[Tensor], g_real: Sequence[Tensor], metric: str = "ours") -> Tensor:
    """D(g_syn, g_real) over lists of per-parameter gradients.

    'ours': Σ over parameter tensors of ``layer_distance``; 'mse': Σ (g_syn - g_real)² over every
    element; 'cos': 1 - cosine of the two gradients flattened and concatenated (1e-6 on the
    product of the norms, as 'ours').
    """
    if len(g_syn) != len(g_real):
        raise ValueError(f"dsa_fast.condense: {len(g_syn)} synthetic vs {len(g_real)} real gradients")
    if metric == "ours":
        terms = [layer_distance(s, r) for s, r in zip(g_syn, g_real) if r.dim() > 1]
        return torch.stack(terms).sum() if terms else g_syn[0].new_zeros(())
    if metric == "mse":
        return torch.stack([((s - r) ** 2).sum() for s, r in zip(g_syn, g_real)]).sum()
    if metric == "cos":
        dot = torch.stack([(s * r).sum() for s, r in zip(g_syn, g_real)]).sum()
        n_syn = torch.stack([(s * s).sum() for s in g_syn]).sum().sqrt()
        n_real = torch.stack([(r * r).sum() for r in g_real]).sum().sqrt()
        return 1 - dot / (n_syn * n_real + EPS)
    raise ValueError(f"dsa_fast.condense: unknown distance {metric!r}; expected 'ours', 'mse' or 'cos'")


def check_match_args(fn: str, real_batches: Sequence[Tensor], syn_batches: Sequence[Tensor],
                     labels: Optional[Sequence[int]], seeds: Sequence) -> None:
    """The checks every class-matching loss makes of its per-class lists (``labels`` None for a
    loss without labels): one entry per class in each, and at least one class."""
    sizes = {"real_batches": len(real_batches), "syn_batches": len(syn_batches), "seeds": len(seeds)}
    if labels is not None:
        sizes["labels"] = len(labels)
    if len(set(sizes.values())) != 1:
        got = ", ".join(f"{k}={v}" for k, v in sizes.items())
        raise ValueError(f"dsa_fast.condense.{fn}: the per-class lists differ in length ({got})")
    if len(seeds) == 0:
        raise ValueError(f"dsa_fast.condense.{fn}: needs at least one class, got empty lists")


def augment_seed(seed):
    """A class's DiffAugment seed as DiffAugment takes it: an int (rng='compat' or 'device'), or a
    one-element integer tensor on the images' device (rng='device': the key stays on the device)."""
    return seed if isinstance(seed, Tensor) else int(seed)


def class_gradients(net: nn.Module, params: List[Tensor], x: Tensor, label: int, create_graph: bool) -> List[Tensor]:
    """∇θ of the mean cross-entropy of net(x) against the single class ``label``."""
    target = torch.full((x.shape[0],), label, dtype=torch.long, device=x.device)
    loss = F.cross_entropy(net(x), target)
    return list(torch.autograd.grad(loss, params, create_graph=create_graph))


def match_loss(
    net: nn.Module,
    real_batches: Sequence[Tensor],
    syn_batches: Sequence[Tensor],
    labels: Sequence[int],
    seeds: Sequence[int],
    strategy: str,
    param: Optional[ParamDiffAug] = None,
    metric: str = "ours",
    *,
    backend: str = "auto",
) -> Tensor:
    """Σ_c D(∇θ CE(net(aug(syn_c)), c), ∇θ CE(net(aug(real_c)), c)) as a 0-d tensor.

    real_batches[k] and syn_batches[k] are [n, C, H, W] images of class labels[k]; seeds[k] is the
    DiffAugment seed both are augmented with (one transform for the pair): an int, or with
    ``param.rng == 'device'`` a one-element integer tensor on the images' device. The result carries the
    graph to the synthetic images (and the net's parameters); real gradients are constants.
    ``backend``: DiffAugment's backend ('auto', 'fused' or 'reference').
    """
    check_match_args("match_loss", real_batches, syn_batches, labels, seeds)
    params = [p for p in net.parameters() if p.requires_grad]
    total: Optional[Tensor] = None
    for real, syn, label, seed in zip(real_batches, syn_batches, labels, seeds):
        real_aug = DiffAugment(real, strategy, seed=augment_seed(seed), param=param, backend=backend)
        syn_aug = DiffAugment(syn, strategy, seed=augment_seed(seed), param=param, backend=backend)
        g_real = [g.detach() for g in class_gradients(net, params, real_aug, int(label), create_graph=False)]
        g_syn = class_gradients(net, params, syn_aug, int(label), create_graph=True)
        d = gradient_distance(g_syn, g_real, metric)
        total = d if total is None else total + d
    assert total is not None  # check_match_args: at least one class
    return total
