"""The record every op of the table is: ``OpSpec``, and the size rules its formulas share.

An op's record holds everything the package knows about it apart from its per-pixel kernel code:
its strategy token, its parameters and the ω columns they fill, its readable reference function,
the official generator calls it makes (rng='compat') and the formula that turns them into
parameters, its rng='device' formula, and the settings each formula reads. ``dsa_fast.ops_table``
puts the records in the canonical order; everything else (the samplers, the packing, the plans,
the generated C++ layout ``csrc/kernels/layout.h``) iterates over them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
from torch import Tensor


@dataclass(frozen=True)
class Setting:
    """A number a formula reads, computed from a ``ParamDiffAug`` (and for plan integers, from the
    image's height and width). ``name`` is its slot in the kernels' settings (``layout.h``)."""

    name: str
    value: Callable[..., Any]


@dataclass(frozen=True)
class OpSpec:
    name: str
    token: str                        # the strategy token that includes the op (one token may hold several ops)
    keys: Tuple[str, ...]             # parameter names of a Step (params.py)
    slots: Tuple[str, ...]            # the op's columns of the packed ω table (kSlot<name> in layout.h)
    reference: Callable[..., Tensor]  # the readable definition: reference(x, **params[, align_corners])
    raw: Tuple[str, ...]              # the official generator calls, one per raw draw, in order (words)
    raw_draws: Callable[..., List[Tensor]]        # (x, n, draws, p): those calls (compat.CompatDraws)
    compat: Callable[..., Dict[str, Tensor]]      # (raw, x, p): the official formulas -> params
    compat_settings: Tuple[Setting, ...]          # kC<name>: the constants the kernels' copy reads
    device_draws: int                             # uniform numbers drawn per element (rng='device')
    device: Callable[..., Dict[str, Tensor]]      # (stream, x, n, p, k): rng='device' draws -> params
    device_settings: Tuple[Setting, ...]          # kSet<name>: the constants of the device formula
    plan_ints: Tuple[Setting, ...] = ()           # value(h, w, p): sizes both plans carry (kPlan<name>)
    geometric: bool = False                       # resamples: the reference takes align_corners
    pack: Optional[Callable[[Dict[str, Tensor]], List[Tensor]]] = None  # params -> columns (default: keys)

    def columns_of(self, params: Dict[str, Tensor]) -> List[Tensor]:
        """The op's packed columns, in ``slots`` order."""
        return self.pack(params) if self.pack is not None else [params[k] for k in self.keys]

    def apply_reference(self, x: Tensor, params: Dict[str, Tensor], align_corners: bool) -> Tensor:
        if self.geometric:
            return self.reference(x, **params, align_corners=align_corners)
        return self.reference(x, **params)


# ---------------------------------------------------------------------------------------------
# Sizes both samplers and both plans derive from the settings (docs/semantics.md §3).
# ---------------------------------------------------------------------------------------------


def crop_max_shift(size: int, ratio: float) -> int:
    """Largest integer shift for an axis of ``size`` pixels (docs/semantics.md §3: int(size*ratio + 0.5))."""
    return int(size * ratio + 0.5)


def cutout_box(size: int, ratio: float) -> int:
    return int(size * ratio + 0.5)


def cutout_params(centre_h: Tensor, centre_w: Tensor, box_h: int, box_w: int) -> Dict[str, Tensor]:
    """The cutout step's parameters from the drawn box centres (o_H, o_W in docs/semantics.md §3): zeroed rows
    start at o_H - box_h // 2 (columns likewise)."""
    return {
        "top": centre_h - box_h // 2,
        "left": centre_w - box_w // 2,
        "height": torch.full_like(centre_h, box_h),
        "width": torch.full_like(centre_w, box_w),
    }


def per_sample(t: Tensor, like: Tensor) -> Tensor:
    """(B,) -> (B, 1, 1, 1) in like's dtype, for broadcasting over [N, C, H, W]."""
    return t.to(like.dtype).view(-1, 1, 1, 1)
