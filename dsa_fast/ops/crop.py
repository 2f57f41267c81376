"""crop: an integer translation with zero fill (docs/semantics.md §3), shifts drawn in
[-s, s] per axis, s = int(size * ratio_crop_pad + 0.5)."""
from __future__ import annotations

import torch
from torch import Tensor

from .spec import OpSpec, Setting, crop_max_shift


def _shift_axis(x: Tensor, shift: Tensor, dim: int) -> Tensor:
    """y[..., k, ...] = x[..., k + shift, ...] along ``dim`` (2 or 3), 0 where k + shift is outside."""
    size = x.shape[dim]
    src = torch.arange(size, device=x.device) + shift.view(-1, 1)  # (B, size): source of each output index
    inside = (src >= 0) & (src < size)
    view = [-1, 1, 1, 1]
    view[dim] = size
    idx = src.clamp(0, size - 1).view(view).expand(x.shape)
    picked = x.gather(dim, idx)
    return torch.where(inside.view(view), picked, torch.zeros((), dtype=x.dtype, device=x.device))


def crop(x: Tensor, shift_h: Tensor, shift_w: Tensor) -> Tensor:
    """Integer translation with zero fill: y[n, c, i, j] = x[n, c, i + shift_h, j + shift_w] if inside,
    else 0. Positive shifts move the content up / left."""
    return _shift_axis(_shift_axis(x, shift_h, 2), shift_w, 3)


def _shifts(x, p):
    return crop_max_shift(x.shape[2], p.ratio_crop_pad), crop_max_shift(x.shape[3], p.ratio_crop_pad)


def _raw(x, n, draws, p):
    sh, sw = _shifts(x, p)
    return [draws.randint(-sh, sh + 1, size=[n, 1, 1], device=x.device),
            draws.randint(-sw, sw + 1, size=[n, 1, 1], device=x.device)]


def _device(s, x, n, p, k):
    sh, sw = _shifts(x, p)
    return {"shift_h": s.integers(-sh, sh + 1, n), "shift_w": s.integers(-sw, sw + 1, n)}


CROP = OpSpec(
    "crop", "crop", ("shift_h", "shift_w"), ("CropH", "CropW"), crop,
    ("torch.randint(-s_H, s_H + 1, [n, 1, 1]) on x.device", "torch.randint(-s_W, s_W + 1, [n, 1, 1]) on x.device"),
    _raw,
    compat=lambda raw, x, p: {"shift_h": raw[0].view(-1), "shift_w": raw[1].view(-1)},
    compat_settings=(),
    device_draws=2,
    device=_device,
    device_settings=(),
    plan_ints=(Setting("CropH", lambda h, w, p: crop_max_shift(h, p.ratio_crop_pad)),
               Setting("CropW", lambda h, w, p: crop_max_shift(w, p.ratio_crop_pad))),
)
