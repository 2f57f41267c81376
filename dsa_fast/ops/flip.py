"""flip: mirror along W with probability prob_flip (docs/semantics.md §3)."""
from __future__ import annotations

import torch
from torch import Tensor

from .spec import OpSpec, Setting


def flip(x: Tensor, flip: Tensor) -> Tensor:
    """Mirror along W (j -> W-1-j) where ``flip`` is true."""
    return torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)


FLIP = OpSpec(
    "flip", "flip", ("flip",), ("Flip",), flip,
    ("torch.rand(n, 1, 1, 1) in float32 on x.device",),
    lambda x, n, draws, p: [draws.rand(n, 1, 1, 1, device=x.device)],
    compat=lambda raw, x, p: {"flip": (raw[0] < p.prob_flip).view(-1)},
    compat_settings=(Setting("prob_flip", lambda p: p.prob_flip),),
    device_draws=1,
    device=lambda s, x, n, p, k: {"flip": s.uniform(n) < k["prob_flip"]},
    device_settings=(Setting("prob_flip", lambda p: p.prob_flip),),
)
