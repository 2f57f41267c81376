"""``DiffAugment`` of data-efficient GAN training (Zhao et al., "Differentiable Augmentation for
Data-Efficient GAN Training", NeurIPS 2020) on dsa_fast's ops.

Same call, same draws: ``DiffAugment(x, policy='color,translation,cutout', channels_first=True)``
augments every sample with its own transform, drawing from the global generator of x's device in
the order and dtypes of that code, so for the same generator state the outputs and the input
gradients are that code's (docs/semantics.md §8).

Its policy tokens are DSA strategy tokens at DSA's default settings (docs/semantics.md §8):
'color' is DSA's 'color' (brightness 1, saturation 2, contrast 0.5, drawn in x's dtype),
'translation' is DSA's 'crop' (shift int(size / 8 + 0.5) per axis: ratio_crop_pad 0.125) and
'cutout' is DSA's 'cutout' (box int(size / 2 + 0.5): ratio_cutout 0.5). A policy whose tokens come
in the canonical order (any of 'color,translation,cutout' in that order) is one fused op call
after its draws; other orders and repeats apply op by op, as DSA's 'M' mode does.
"""
from __future__ import annotations

from typing import Dict, Tuple

from torch import Tensor

from .augment import DiffAugment as _dsa_augment
from .params import ParamDiffAug
from ._host_cache import host_cache

# GAN policy token -> the DSA strategy token with the same draws and formulas.
POLICY_TOKENS: Dict[str, str] = {"color": "color", "translation": "crop", "cutout": "cutout"}


@host_cache(256)
def strategy_of(policy: str) -> str:
    """The DSA strategy of a GAN policy string ('color,translation' -> 'color_crop')."""
    tokens: Tuple[str, ...] = tuple(policy.split(","))
    for tok in tokens:
        if tok not in POLICY_TOKENS:
            raise ValueError(
                f"dsa_fast.gan.DiffAugment: unknown policy token {tok!r} in policy {policy!r}; "
                f"valid tokens are {', '.join(POLICY_TOKENS)} joined by ','"
            )
    return "_".join(POLICY_TOKENS[tok] for tok in tokens)


def DiffAugment(x: Tensor, policy: str = "", channels_first: bool = True, *, backend: str = "auto") -> Tensor:
    """Drop-in for the GAN ``DiffAugment``: per-sample random colour, translation and cutout.

    ``x``: [N, C, H, W] (``channels_first=True``) or [N, H, W, C]. ``policy``: comma-separated
    tokens among 'color', 'translation', 'cutout' ('' returns x itself). The output is contiguous,
    in x's layout.
    """
    if not isinstance(policy, str):
        raise TypeError(f"dsa_fast.gan.DiffAugment: policy must be a str, got {type(policy).__name__}")
    if not policy:
        return x
    strategy = strategy_of(policy)
    if not isinstance(x, Tensor):
        raise TypeError(f"dsa_fast.gan.DiffAugment: expected a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(f"dsa_fast.gan.DiffAugment: expected a 4-D x, got shape {tuple(x.shape)}")
    if not channels_first:
        x = x.permute(0, 3, 1, 2)
    # A fresh ParamDiffAug: the GAN code has no settings, and DSA's defaults are its constants.
    y = _dsa_augment(x, strategy, seed=-1, param=ParamDiffAug(aug_mode="M"), backend=backend)
    if not channels_first:
        y = y.permute(0, 2, 3, 1)
    return y.contiguous()
