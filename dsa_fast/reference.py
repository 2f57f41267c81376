"""The pure-PyTorch DSA ops: the readable definition (``docs/semantics.md`` §3) and the oracle.
Each op's function lives with its record in ``dsa_fast/ops/``; this module applies an Omega.

Every function takes ``x`` of shape [N, C, H, W] (any float dtype, any device, any memory format)
and the op's parameters as tensors of shape (B,), B = 1 (broadcast) or N, and returns a new tensor
in x's dtype and memory format. All ops are linear (brightness: affine) in x for fixed parameters;
gradients flow to x only. Vectorised: no per-sample Python loops, no host-side grids.

Conventions: i is the row (dim 2), j the column (dim 3); "0" fills are zeros of the normalised
tensor.
"""
from __future__ import annotations

from typing import Dict

import torch
from torch import Tensor

from .ops.affine import rotate, scale  # noqa: F401  (the readable definitions, one module per op family)
from .ops.color import brightness, contrast, saturation  # noqa: F401
from .ops.crop import crop  # noqa: F401
from .ops.cutout import cutout  # noqa: F401
from .ops.flip import flip  # noqa: F401
from .ops_table import SPEC
from .params import Omega


def apply_step(x: Tensor, op: str, params: Dict[str, Tensor], align_corners: bool) -> Tensor:
    return SPEC[op].apply_reference(x, params, align_corners)


def apply(x: Tensor, omega: Omega) -> Tensor:
    """Apply every step of ω in order (no validation: ``dsa_fast.apply`` checks first).

    With ``omega.choice``, the steps of group g apply to the samples whose choice is g: each
    group's steps run on the whole batch and a select keeps them where chosen (an unchosen group
    is the identity), so no value leaves the device.
    """
    if omega.choice is None:
        for step in omega.steps:
            x = apply_step(x, step.op, step.params, omega.align_corners)
        return x
    for g in omega.groups():
        y = x
        for step in omega.steps:
            if step.group == g:
                y = apply_step(y, step.op, step.params, omega.align_corners)
        x = torch.where((omega.choice == g).view(-1, 1, 1, 1), y, x)
    return x
