"""The pure-PyTorch DSA ops: the readable definition (``docs/semantics.md`` §3) and the oracle.

Every function takes ``x`` of shape [N, C, H, W] (any float dtype, any device, any memory format)
and the op's parameters as tensors of shape (B,), B = 1 (broadcast) or N, and returns a new tensor
in x's dtype and memory format. All ops are linear (brightness: affine) in x for fixed parameters;
gradients flow to x only. Vectorised: no per-sample Python loops, no host-side grids.

Conventions: i is the row (dim 2), j the column (dim 3); "0" fills are zeros of the normalised
tensor.
"""
from __future__ import annotations

import warnings
from typing import Callable, Dict

import torch
import torch.nn.functional as F
from torch import Tensor

from .params import Omega


def _per_sample(t: Tensor, like: Tensor) -> Tensor:
    """(B,) -> (B, 1, 1, 1) in like's dtype, for broadcasting over [N, C, H, W]."""
    return t.to(like.dtype).view(-1, 1, 1, 1)


def brightness(x: Tensor, shift: Tensor) -> Tensor:
    """y = x + shift. No clamping."""
    return x + _per_sample(shift, x)


def saturation(x: Tensor, factor: Tensor) -> Tensor:
    """y = (x - m) * factor + m, m the per-pixel mean over channels (identity for C = 1)."""
    m = x.mean(dim=1, keepdim=True)
    return (x - m) * _per_sample(factor, x) + m


def contrast(x: Tensor, factor: Tensor) -> Tensor:
    """y = (x - mu) * factor + mu, mu the per-image mean over (C, H, W)."""
    mu = x.mean(dim=[1, 2, 3], keepdim=True)
    return (x - mu) * _per_sample(factor, x) + mu


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


def cutout(x: Tensor, top: Tensor, left: Tensor, height: Tensor, width: Tensor) -> Tensor:
    """Zero the box rows [top, top + height) x cols [left, left + width) (clipped to the image), for
    every channel. NB: a multiply by the 0/1 mask, as the official code does (NaN * 0 stays NaN)."""
    rows = torch.arange(x.shape[2], device=x.device)
    cols = torch.arange(x.shape[3], device=x.device)
    in_rows = (rows >= top.view(-1, 1)) & (rows < (top + height).view(-1, 1))  # (B, H)
    in_cols = (cols >= left.view(-1, 1)) & (cols < (left + width).view(-1, 1))  # (B, W)
    keep = ~(in_rows[:, :, None] & in_cols[:, None, :])  # (B, H, W)
    return x * keep.unsqueeze(1).to(x.dtype)


def flip(x: Tensor, flip: Tensor) -> Tensor:
    """Mirror along W (j -> W-1-j) where ``flip`` is true."""
    return torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)


def _resample(x: Tensor, theta: Tensor, align_corners: bool) -> Tensor:
    """Bilinear resampling with zero fill at affine_grid(theta) — torch's grid conventions, exactly
    the official ``F.grid_sample(x, F.affine_grid(theta, x.shape))``. theta: (B, 2, 3) float32.

    NB: the grid and the sampling run in float32 (float64 for float64 input) and the output is
    rounded once: a grid in half precision would misplace the samples by up to 0.1 px.
    """
    n = x.shape[0]
    if n == 0:
        return x * 0
    compute = torch.float64 if x.dtype == torch.float64 else torch.float32
    theta = theta.to(compute).expand(n, 2, 3)
    if align_corners and min(x.shape[2], x.shape[3]) == 1:
        # affine_grid warns about unit-size grids with align_corners=True; the behaviour it warns
        # about (coordinate 0 for a size-1 axis) is the one we want. NB: only here, because
        # torch.compile cannot trace catch_warnings (a graph break for this case alone).
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            grid = F.affine_grid(theta, list(x.shape), align_corners=align_corners)
    else:
        grid = F.affine_grid(theta, list(x.shape), align_corners=align_corners)
    y = F.grid_sample(x.to(compute), grid, mode="bilinear", padding_mode="zeros", align_corners=align_corners)
    return y.to(x.dtype)


def scale(x: Tensor, scale_w: Tensor, scale_h: Tensor, align_corners: bool = False) -> Tensor:
    """Output pixel (i, j) samples x at X = c_W + scale_w (j - c_W), Y = c_H + scale_h (i - c_H):
    scale > 1 shrinks the content and leaves a zero border."""
    zero = torch.zeros_like(scale_w)
    theta = torch.stack(
        [torch.stack([scale_w, zero, zero], -1), torch.stack([zero, scale_h, zero], -1)], dim=1
    )
    return _resample(x, theta, align_corners)


def rotate(x: Tensor, angle: Tensor, align_corners: bool = False) -> Tensor:
    """Rotation by ``angle`` radians about the image centre (positive: counter-clockwise as shown),
    theta = [[cos, -sin, 0], [sin, cos, 0]] in torch's normalised coordinates (so H != W gets the
    aspect factors of docs/semantics.md §3)."""
    cos, sin, zero = torch.cos(angle), torch.sin(angle), torch.zeros_like(angle)
    theta = torch.stack([torch.stack([cos, -sin, zero], -1), torch.stack([sin, cos, zero], -1)], dim=1)
    return _resample(x, theta, align_corners)


GEOMETRIC = ("scale", "rotate")
FUNCTIONS: Dict[str, Callable[..., Tensor]] = {
    "brightness": brightness,
    "saturation": saturation,
    "contrast": contrast,
    "crop": crop,
    "cutout": cutout,
    "flip": flip,
    "scale": scale,
    "rotate": rotate,
}


def apply_step(x: Tensor, op: str, params: Dict[str, Tensor], align_corners: bool) -> Tensor:
    if op in GEOMETRIC:
        return FUNCTIONS[op](x, **params, align_corners=align_corners)
    return FUNCTIONS[op](x, **params)


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
