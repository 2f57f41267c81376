"""The distribution-matching loss (DM, Zhao & Bilen, WACV 2023), as the official ``main_DM.py``.

For a freshly initialised network with frozen parameters in train mode, and per class c one DSA
transform (one seed) applied to the real batch real_c and the synthetic images syn_c:

    loss = Σ_c ‖ mean_0(embed(aug(real_c))) - mean_0(embed(aug(syn_c))) ‖²

with the real embeddings constants. Batch-norm networks take every class in one forward (the
official mixed batch: batch statistics over all classes) and split the embeddings per class.

``dm_loss`` does every class of an iteration in one forward for the real images and one for the
synthetic ones: for batch norm that is the official computation itself, and for networks whose
layers treat each sample on its own (instance / group / layer / no norm; their class declares
``per_sample``, networks.py) the
embeddings of a concatenated batch are the per-class embeddings, so it is the official per-class
loop computed at once (equal up to floating-point summation order). Each class's transform is
sampled once and applied to its real and its synthetic images. Anything else takes
``dm_loss_per_class``, the official per-class loop. Nothing here reads a device value back to the
host.
"""
from __future__ import annotations

from typing import List, Optional, Sequence

import torch
from torch import Tensor, nn

from .. import DiffAugment, ParamDiffAug, apply, sample_params
from ..params import NO_AUGMENT
from .matching import augment_seed, check_match_args
from .networks import has_batchnorm


def per_sample(net: nn.Module) -> bool:
    """True when ``net``'s class declares ``per_sample`` (networks.py: no layer but batch norm
    mixes the samples of a batch) and it has no batch norm; other networks take the per-class
    loop."""
    return getattr(type(net), "per_sample", False) is True and not has_batchnorm(net)


def _embed(net: nn.Module, x: Tensor) -> Tensor:
    embed = getattr(net, "embed", None)
    if embed is None:
        raise ValueError(f"dsa_fast.condense: distribution matching needs a network with embed(x); "
                         f"{type(net).__name__} has none")
    return embed(x)


def dm_loss_per_class(
    net: nn.Module,
    real_batches: Sequence[Tensor],
    syn_batches: Sequence[Tensor],
    seeds: Sequence[int],
    strategy: str,
    param: Optional[ParamDiffAug] = None,
) -> Tensor:
    """The official per-class loop for networks without batch norm: per class, two DiffAugment
    calls with the class's seed, two embeddings, the squared distance of their means."""
    check_match_args("dm_loss_per_class", real_batches, syn_batches, None, seeds)
    total: Optional[Tensor] = None
    for real, syn, seed in zip(real_batches, syn_batches, seeds):
        real_aug = DiffAugment(real, strategy, seed=augment_seed(seed), param=param)
        syn_aug = DiffAugment(syn, strategy, seed=augment_seed(seed), param=param)
        d = ((_embed(net, real_aug).detach().mean(0) - _embed(net, syn_aug).mean(0)) ** 2).sum()
        total = d if total is None else total + d
    assert total is not None
    return total


def _class_means(e: Tensor, sizes: List[int]) -> Tensor:
    """[sum(sizes), F] embeddings -> [K, F] means of consecutive groups of ``sizes`` rows."""
    if len(set(sizes)) == 1:
        return e.view(len(sizes), sizes[0], -1).mean(1)
    return torch.stack([part.mean(0) for part in e.split(sizes)])


def dm_loss(
    net: nn.Module,
    real_batches: Sequence[Tensor],
    syn_batches: Sequence[Tensor],
    seeds: Sequence[int],
    strategy: str,
    param: Optional[ParamDiffAug] = None,
) -> Tensor:
    """Σ_c ‖mean embed(aug_c(real_c)) - mean embed(aug_c(syn_c))‖² as a 0-d tensor.

    real_batches[c] and syn_batches[c] are [n_c, C, H, W] and [m_c, C, H, W] images of class c;
    seeds[c] is the DiffAugment seed of class c (one transform for the pair). The result carries
    the graph to the synthetic images; the real side is computed without one. Batch-norm networks:
    the official mixed batch (statistics over all classes). Per-sample networks: one forward per
    side, equal to the per-class loop. Other networks: ``dm_loss_per_class``.
    """
    check_match_args("dm_loss", real_batches, syn_batches, None, seeds)
    if not has_batchnorm(net) and not per_sample(net):
        return dm_loss_per_class(net, real_batches, syn_batches, seeds, strategy, param)
    if strategy in NO_AUGMENT:
        real_aug, syn_aug = list(real_batches), list(syn_batches)
    else:
        real_aug, syn_aug = [], []
        for real, syn, seed in zip(real_batches, syn_batches, seeds):
            # NB: a seeded draw does not depend on the batch size: one ω serves both batches, as
            # two DiffAugment calls with the same seed would.
            omega = sample_params(strategy, syn, seed=augment_seed(seed), param=param)
            real_aug.append(apply(real, omega))
            syn_aug.append(apply(syn, omega))
    with torch.no_grad():
        e_real = _embed(net, torch.cat(real_aug))
    e_syn = _embed(net, torch.cat(syn_aug))
    m_real = _class_means(e_real, [r.shape[0] for r in real_batches])
    m_syn = _class_means(e_syn, [s.shape[0] for s in syn_batches])
    return ((m_real - m_syn) ** 2).sum()
