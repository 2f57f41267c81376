"""The colour ops of the 'color' token: brightness, saturation, contrast (docs/semantics.md §3).

Each draws one uniform number per element, in x's dtype on x's device (rng='compat', as the
official code), and is linear (brightness: affine) in x for a fixed parameter.
"""
from __future__ import annotations

from torch import Tensor

from .spec import OpSpec, Setting, per_sample


def brightness(x: Tensor, shift: Tensor) -> Tensor:
    """y = x + shift. No clamping."""
    return x + per_sample(shift, x)


def saturation(x: Tensor, factor: Tensor) -> Tensor:
    """y = (x - m) * factor + m, m the per-pixel mean over channels (identity for C = 1)."""
    m = x.mean(dim=1, keepdim=True)
    return (x - m) * per_sample(factor, x) + m


def contrast(x: Tensor, factor: Tensor) -> Tensor:
    """y = (x - mu) * factor + mu, mu the per-image mean over (C, H, W)."""
    mu = x.mean(dim=[1, 2, 3], keepdim=True)
    return (x - mu) * per_sample(factor, x) + mu


def _one_in_dtype(x, n, draws, p):
    return [draws.rand(n, 1, 1, 1, dtype=x.dtype, device=x.device)]


_RAW = ("torch.rand(n, 1, 1, 1) in x.dtype on x.device",)

BRIGHTNESS = OpSpec(
    "brightness", "color", ("shift",), ("Shift",), brightness, _RAW, _one_in_dtype,
    compat=lambda raw, x, p: {"shift": ((raw[0] - 0.5) * p.brightness).view(-1)},
    compat_settings=(Setting("brightness", lambda p: p.brightness),),
    device_draws=1,
    device=lambda s, x, n, p, k: {"shift": ((s.uniform(n) - 0.5) * k["brightness"]).to(x.dtype)},
    device_settings=(Setting("brightness", lambda p: p.brightness),),
)

SATURATION = OpSpec(
    "saturation", "color", ("factor",), ("Sat",), saturation, _RAW, _one_in_dtype,
    compat=lambda raw, x, p: {"factor": (raw[0] * p.saturation).view(-1)},
    compat_settings=(Setting("saturation", lambda p: p.saturation),),
    device_draws=1,
    device=lambda s, x, n, p, k: {"factor": (s.uniform(n) * k["saturation"]).to(x.dtype)},
    device_settings=(Setting("saturation", lambda p: p.saturation),),
)

CONTRAST = OpSpec(
    "contrast", "color", ("factor",), ("Con",), contrast, _RAW, _one_in_dtype,
    compat=lambda raw, x, p: {"factor": (raw[0] + p.contrast).view(-1)},
    compat_settings=(Setting("contrast", lambda p: p.contrast),),
    device_draws=1,
    device=lambda s, x, n, p, k: {"factor": (s.uniform(n) + k["contrast"]).to(x.dtype)},
    device_settings=(Setting("contrast", lambda p: p.contrast),),
)
