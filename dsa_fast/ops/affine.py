"""The resampling ops: scale and rotate, bilinear with zero fill at an affine grid, torch's grid
conventions (docs/semantics.md §3). Their raw draws are made on the CPU generator, as the official
code makes them."""
from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F
from torch import Tensor

from .spec import OpSpec, Setting


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


def _scale_compat(raw, x, p):
    r = p.ratio_scale
    return {"scale_w": (raw[0] * (r - 1.0 / r) + 1.0 / r).float(),
            "scale_h": (raw[1] * (r - 1.0 / r) + 1.0 / r).float()}


def _scale_device(s, x, n, p, k):
    return {"scale_w": s.uniform(n) * k["scale_mul"] + k["scale_add"],
            "scale_h": s.uniform(n) * k["scale_mul"] + k["scale_add"]}


_SCALE_SETTINGS = (Setting("scale_mul", lambda p: p.ratio_scale - 1.0 / p.ratio_scale),
                   Setting("scale_add", lambda p: 1.0 / p.ratio_scale))

SCALE = OpSpec(
    "scale", "scale", ("scale_w", "scale_h"), ("ScaleW", "ScaleH"), scale,
    ("torch.rand(n) in float32 on the CPU", "torch.rand(n) in float32 on the CPU"),
    lambda x, n, draws, p: [draws.rand(n), draws.rand(n)],
    compat=_scale_compat,
    compat_settings=_SCALE_SETTINGS,
    device_draws=2,
    device=_scale_device,
    device_settings=_SCALE_SETTINGS,
    geometric=True,
)


def _rotation_columns(params):
    # NB: cos/sin in float32, as the reference builds its theta.
    angle = params["angle"].float()
    return [torch.cos(angle), torch.sin(angle)]


ROTATE = OpSpec(
    "rotate", "rotate", ("angle",), ("Cos", "Sin"), rotate,
    ("torch.rand(n) in float32 on the CPU",),
    lambda x, n, draws, p: [draws.rand(n)],
    compat=lambda raw, x, p: {"angle": ((raw[0] - 0.5) * 2 * p.ratio_rotate / 180 * float(math.pi)).float()},
    compat_settings=(Setting("ratio_rotate", lambda p: p.ratio_rotate), Setting("pi", lambda p: math.pi)),
    device_draws=1,
    device=lambda s, x, n, p, k: {"angle": (s.uniform(n) - 0.5) * k["rotate_mul"]},
    device_settings=(Setting("rotate_mul", lambda p: 2 * p.ratio_rotate / 180 * math.pi),),
    geometric=True,
    pack=_rotation_columns,
)
