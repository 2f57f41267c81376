"""Backend choice (fused kernels or the reference) and the drop-in ``DiffAugment``."""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from . import _ops, compat, fused, reference
from ._ops import _memory_format
from .params import NO_AUGMENT, Omega, ParamDiffAug, _check_input, check_omega, check_seed, parse_strategy
from .sampling import sample_params

BACKENDS = ("auto", "fused", "reference")


def _use_fused(backend: str, x: Tensor, omega: Omega) -> bool:
    if backend not in BACKENDS:
        raise ValueError(f"dsa_fast: unknown backend {backend!r}; expected one of {BACKENDS}")
    if backend == "reference":
        return False
    supported = _ops.supports(x)
    if backend == "fused" and not supported:
        raise RuntimeError(
            f"dsa_fast: backend='fused' is not available for a {x.device.type} tensor "
            f"({_ops.why_unavailable(x)}); use backend='auto' or 'reference'"
        )
    return supported


def apply(x: Tensor, omega: Omega, backend: str = "auto") -> Tensor:
    """Apply a sampled transform ω to x. ω of batch 1 broadcasts over any N.

    The output is a new tensor in x's dtype and memory format (channels_last stays channels_last).
    """
    _check_input(x, "apply")
    check_omega(x, omega)
    use_fused = _use_fused(backend, x, omega)
    if not omega.steps:
        return x
    if use_fused:
        y = fused.apply(x, omega)
    else:
        y = reference.apply(x, omega)
    return y.contiguous(memory_format=_memory_format(x))


def DiffAugment(
    x: Tensor,
    strategy: str = "",
    seed: int = -1,
    param: Optional[ParamDiffAug] = None,
    *,
    backend: str = "auto",
) -> Tensor:
    """Drop-in replacement for the official ``DiffAugment``.

    ``seed != -1`` makes the call Siamese: every call with the same seed applies the same transform,
    whatever the batch size. With ``param.rng == 'compat'`` (default) the random numbers come from
    the same generators in the same order as the official code, so the outputs and input gradients
    match it for the same generator state. ``strategy`` in ('', 'none', 'None') returns x itself.
    """
    if strategy in NO_AUGMENT:
        return x
    param = ParamDiffAug() if param is None else param
    if backend != "reference":
        # One op call after the draws (dsa_fast/fused.py, dsa_fast/compat.py).
        param.validate()
        _check_input(x, "DiffAugment")
        tokens = parse_strategy(strategy)
        seed = check_seed(seed, param.rng)
        if _use_fused(backend, x, None):
            if param.rng == "device":
                out = fused.draw_and_apply(x, tokens, seed, param)
                y = None if out is None else out[0]
            else:
                y = compat.draw_and_apply(x, tokens, seed, param)
            if y is not None:
                param.Siamese = isinstance(seed, Tensor) or seed != -1
                return y
    omega = sample_params(strategy, x, seed=seed, param=param)
    return apply(x, omega, backend=backend)


def augment_pairs(
    pairs: Sequence[Tuple[Tensor, Tensor]],
    strategy: str,
    seeds: Sequence[Union[int, Tensor]],
    param: Optional[ParamDiffAug] = None,
    *,
    backend: str = "auto",
) -> List[Tuple[Tensor, Tensor]]:
    """Each pair ``(real, syn)`` augmented with its own seed: ``(DiffAugment(real, strategy, seed),
    DiffAugment(syn, strategy, seed))`` for every pair and seed, in order, the same tensors and the
    same generator states (and ``param.latestseed``) afterwards.

    With ``rng='compat'``, int seeds (not -1) and the fused kernels, each pair's seeded draw is made
    once (for ``syn``; a Siamese transform reads element 0 of a draw, which does not depend on the
    batch size), and the batches of all pairs are transformed by two op calls: one for those that
    need a gradient (the synthetic ones, usually), one for the others (backward: one call). The
    batches must share channels, height, width, dtype and device for that; otherwise, and for other
    seeds or rng='device', each batch takes its own DiffAugment call.
    """
    pairs = [tuple(pair) for pair in pairs]
    seeds = list(seeds)
    if len(pairs) != len(seeds):
        raise ValueError(f"dsa_fast.augment_pairs: {len(pairs)} pairs but {len(seeds)} seeds")
    if any(len(pair) != 2 for pair in pairs):
        raise ValueError("dsa_fast.augment_pairs: every pair must be (real, syn)")
    if strategy in NO_AUGMENT:
        return pairs
    param = ParamDiffAug() if param is None else param
    if backend != "reference" and param.rng == "compat" and pairs:
        param.validate()
        tokens = parse_strategy(strategy)
        batches = [x for pair in pairs for x in pair]
        for x in batches:
            _check_input(x, "augment_pairs")
        first = batches[0]
        one_call = (all(isinstance(s, int) and not isinstance(s, bool) and s != -1 for s in seeds)
                    and all(x.shape[1:] == first.shape[1:] and x.dtype == first.dtype and x.device == first.device
                            for x in batches)
                    and _use_fused(backend, first, None))
        if one_call:
            drawn = compat.draw_tables([syn for _, syn in pairs], tokens, seeds, param)
            if drawn is not None:
                tables, flags = drawn
                ys = fused.apply_rows([r for r, _ in pairs] + [s for _, s in pairs], tables + tables, flags,
                                      bool(param.align_corners))
                param.Siamese = True
                k = len(pairs)
                return list(zip(ys[:k], ys[k:]))
    return [(DiffAugment(real, strategy, seed=seed, param=param, backend=backend),
             DiffAugment(syn, strategy, seed=seed, param=param, backend=backend))
            for (real, syn), seed in zip(pairs, seeds)]
