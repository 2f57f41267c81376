"""cutout: zero a box of int(size * ratio_cutout + 0.5) pixels per axis around a drawn centre
(docs/semantics.md §3)."""
from __future__ import annotations

import torch
from torch import Tensor

from .spec import OpSpec, Setting, cutout_box, cutout_params


def cutout(x: Tensor, top: Tensor, left: Tensor, height: Tensor, width: Tensor) -> Tensor:
    """Zero the box rows [top, top + height) x cols [left, left + width) (clipped to the image), for
    every channel. NB: a multiply by the 0/1 mask, as the official code does (NaN * 0 stays NaN)."""
    rows = torch.arange(x.shape[2], device=x.device)
    cols = torch.arange(x.shape[3], device=x.device)
    in_rows = (rows >= top.view(-1, 1)) & (rows < (top + height).view(-1, 1))  # (B, H)
    in_cols = (cols >= left.view(-1, 1)) & (cols < (left + width).view(-1, 1))  # (B, W)
    keep = ~(in_rows[:, :, None] & in_cols[:, None, :])  # (B, H, W)
    return x * keep.unsqueeze(1).to(x.dtype)


def _boxes(x, p):
    return cutout_box(x.shape[2], p.ratio_cutout), cutout_box(x.shape[3], p.ratio_cutout)


def _raw(x, n, draws, p):
    (_, _, h, w), (bh, bw) = x.shape, _boxes(x, p)
    return [draws.randint(0, h + (1 - bh % 2), size=[n, 1, 1], device=x.device),
            draws.randint(0, w + (1 - bw % 2), size=[n, 1, 1], device=x.device)]


def _compat(raw, x, p):
    bh, bw = _boxes(x, p)
    return cutout_params(raw[0].view(-1), raw[1].view(-1), bh, bw)


def _device(s, x, n, p, k):
    (_, _, h, w), (bh, bw) = x.shape, _boxes(x, p)
    oh = s.integers(0, h + (1 - bh % 2), n)
    ow = s.integers(0, w + (1 - bw % 2), n)
    return cutout_params(oh, ow, bh, bw)


CUTOUT = OpSpec(
    "cutout", "cutout", ("top", "left", "height", "width"), ("CutTop", "CutLeft", "CutH", "CutW"), cutout,
    ("torch.randint(0, H + 1 - b_H % 2, [n, 1, 1]) on x.device", "torch.randint(0, W + 1 - b_W % 2, [n, 1, 1]) on x.device"),
    _raw,
    compat=_compat,
    compat_settings=(),
    device_draws=2,
    device=_device,
    device_settings=(),
    plan_ints=(Setting("CutH", lambda h, w, p: cutout_box(h, p.ratio_cutout)),
               Setting("CutW", lambda h, w, p: cutout_box(w, p.ratio_cutout))),
)
