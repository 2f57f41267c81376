"""Spec §4: the official implementation's defects that a drop-in must not copy.

1. Siamese batches of one crash (color, crop, cutout, flip).  -> they work, as a no-op broadcast.
2. scale/rotate only run in float32.                          -> every float dtype, every op.
3. channels_last input comes back NCHW.                       -> the layout is kept.
4. align_corners / meshgrid warnings on every call.           -> silent.
5. CUDA scale/rotate backward is nondeterministic.            -> deterministic mode works.
Plus empty batches (N = 0).
"""
from __future__ import annotations

import warnings

import pytest
import torch

from conftest import BACKEND_PARAMS, DEVICES, FULL_STRATEGY, LOW_PRECISION_DTYPES, TOKENS
from dsa_fast import DiffAugment, Omega, ParamDiffAug, Step, apply, sample_params
from dsa_fast import reference

STRATEGIES = list(TOKENS) + [FULL_STRATEGY]
MODES = ["S", "M"]
# align_corners only changes scale and rotate: both values for those, one for the rest.
STRATEGY_AC = [
    pytest.param(s, ac, id=f"{s}-ac{int(ac)}" if {"scale", "rotate"} & set(s.split("_")) else s)
    for s in STRATEGIES
    for ac in ((False, True) if {"scale", "rotate"} & set(s.split("_")) else (False,))
]


def _dtype_id(dtype):
    return str(dtype).replace("torch.", "")


def _x(shape, seed=0, dtype=torch.float32, device="cpu"):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=gen).to(dtype=dtype, device=device)


# ---------------------------------------------------------------------------------------------
# 1. Siamese batch of one
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKEND_PARAMS)
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_siamese_batch_of_one(strategy, mode, device, backend):
    x4 = _x((4, 3, 10, 9), device=device)
    x1 = x4[:1].clone().requires_grad_()
    for seed in (0, 1, 2, 3):  # several seeds so that 'S' mode visits several families
        y1 = DiffAugment(x1, strategy, seed=seed, param=ParamDiffAug(aug_mode=mode), backend=backend)
        y4 = DiffAugment(x4, strategy, seed=seed, param=ParamDiffAug(aug_mode=mode), backend=backend)
        assert y1.shape == (1, 3, 10, 9)
        torch.testing.assert_close(y1.detach(), y4[:1], rtol=0, atol=1e-6)
        y1.sum().backward()
        assert x1.grad is not None and x1.grad.shape == x1.shape
        x1.grad = None


# ---------------------------------------------------------------------------------------------
# 2. Every float dtype, every op
# ---------------------------------------------------------------------------------------------


def _exact(x, omega):
    """The same transform in float64: the exact answer the low-precision result approximates."""
    return reference.apply(x.detach().double(), omega)


def _rounded_per_op(x, omega):
    """The best a low-precision implementation can do: each op exact, its output rounded once."""
    y = x.detach()
    for step in omega.steps:
        y = reference.apply(y.double(), Omega((step,), omega.align_corners)).to(x.dtype)
    return y


def _grad(fn, x, g):
    x = x.detach().clone().requires_grad_()
    y = fn(x)
    (y * g.to(y.dtype)).sum().backward()
    return y.detach(), x.grad


@pytest.mark.parametrize("backend", BACKEND_PARAMS)
@pytest.mark.parametrize("seed", [-1, 5])
@pytest.mark.parametrize("dtype", LOW_PRECISION_DTYPES, ids=_dtype_id)
@pytest.mark.parametrize("strategy, align_corners", STRATEGY_AC)
def test_low_precision_every_op(strategy, dtype, seed, align_corners, backend):
    """float16/bfloat16: err(result vs float64) <= 2 * err(exact ops rounded once each) + 3 eps.

    The flash-attention rule, with the per-op-rounded result as the low-precision baseline; the
    ω is the one the call itself draws (color draws depend on the dtype, docs/semantics.md §2). Sampling
    coordinates and weights kept in float32 (opmath) and the output rounded once
    measure 0.3-1.2 eps here; coordinates computed in half precision measure 8-19 eps.
    """
    x = _x((5, 3, 16, 12), seed=1, dtype=dtype)
    g = _x((5, 3, 16, 12), seed=2, dtype=dtype)

    def call(t):
        p = ParamDiffAug(aug_mode="M", align_corners=align_corners)
        return DiffAugment(t, strategy, seed=seed, param=p, backend=backend)

    torch.manual_seed(10)
    omega = sample_params(strategy, x, seed=seed, param=ParamDiffAug(aug_mode="M", align_corners=align_corners))
    torch.manual_seed(10)
    y, dx = _grad(call, x, g)
    assert y.dtype == dtype and dx.dtype == dtype
    assert torch.isfinite(y).all() and torch.isfinite(dx).all()

    eps = torch.finfo(dtype).eps
    y_exact, dx_exact = _grad(lambda t: reference.apply(t, omega), x.double(), g.double())
    y_base = _rounded_per_op(x, omega)
    err = (y.double() - y_exact).abs().max().item()
    err_base = (y_base.double() - y_exact).abs().max().item()
    bound = 2 * err_base + 3 * eps * y_exact.abs().max().item()
    assert err <= bound, f"forward error {err:.3g} > {bound:.3g} (per-op rounding gives {err_base:.3g}, eps {eps:.3g})"
    # The input gradient is the transposed linear map applied to g: same rule, same baseline kind.
    gerr = (dx.double() - dx_exact).abs().max().item()
    gbound = 4 * eps * dx_exact.abs().max().item()
    assert gerr <= gbound, f"input-gradient error {gerr:.3g} > {gbound:.3g} (eps {eps:.3g})"


@pytest.mark.parametrize("backend", BACKEND_PARAMS)
@pytest.mark.parametrize("seed", [-1, 5])
@pytest.mark.parametrize("strategy, align_corners", STRATEGY_AC)
def test_float64_every_op(strategy, seed, align_corners, backend):
    x = _x((4, 3, 9, 14), seed=3)
    g = _x((4, 3, 9, 14), seed=4)

    def call(t):
        p = ParamDiffAug(aug_mode="M", align_corners=align_corners)
        return DiffAugment(t, strategy, seed=seed, param=p, backend=backend)

    torch.manual_seed(10)
    p64 = ParamDiffAug(aug_mode="M", align_corners=align_corners)
    omega64 = sample_params(strategy, x.double(), seed=seed, param=p64)
    torch.manual_seed(10)
    y64, dx64 = _grad(call, x.double(), g.double())
    assert y64.dtype == torch.float64 and dx64.dtype == torch.float64
    y_ref, dx_ref = _grad(lambda t: reference.apply(t, omega64), x.double(), g.double())
    torch.testing.assert_close(y64, y_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(dx64, dx_ref, rtol=1e-12, atol=1e-12)

    if "color" not in strategy.split("_"):
        # Draws that do not depend on the dtype (docs/semantics.md §2): the float32 call makes the same ω.
        torch.manual_seed(10)
        y32, dx32 = _grad(call, x, g)
        torch.testing.assert_close(y64.float(), y32, rtol=0, atol=1e-5)
        torch.testing.assert_close(dx64.float(), dx32, rtol=0, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64], ids=_dtype_id)
@pytest.mark.parametrize("strategy", ["crop", "cutout", "flip", "scale", "rotate", "crop_cutout_flip_scale_rotate"])
def test_dtype_independent_draws_match_float32(strategy, dtype):
    """Non-color ω do not depend on the dtype: the result is the float32 result, rounded."""
    x = _x((3, 2, 11, 13), seed=5)
    p = ParamDiffAug(aug_mode="M")
    y32 = DiffAugment(x, strategy, seed=8, param=p)
    y = DiffAugment(x.to(dtype), strategy, seed=8, param=ParamDiffAug(aug_mode="M"))
    eps = torch.finfo(dtype).eps if dtype != torch.float64 else 1e-6
    n_ops = len(strategy.split("_"))
    torch.testing.assert_close(y.float(), y32, rtol=0, atol=2 * n_ops * eps * y32.abs().max().item())


# ---------------------------------------------------------------------------------------------
# 3. channels_last kept
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKEND_PARAMS)
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("seed", [-1, 6])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_channels_last_kept(strategy, mode, seed, device, backend):
    x = _x((3, 4, 10, 7), seed=6, device=device)
    g = _x((3, 4, 10, 7), seed=7, device=device)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    assert not x_cl.is_contiguous()

    def call(t):
        return DiffAugment(t, strategy, seed=seed, param=ParamDiffAug(aug_mode=mode), backend=backend)

    torch.manual_seed(12)
    y, dx = _grad(call, x, g)
    torch.manual_seed(12)
    xc = x_cl.detach().clone(memory_format=torch.channels_last).requires_grad_()
    y_cl = call(xc)
    (y_cl * g).sum().backward()
    assert y_cl.is_contiguous(memory_format=torch.channels_last), f"output strides {y_cl.stride()}"
    assert y.is_contiguous(), "NCHW input must give NCHW output"
    scale = y.abs().max().item()
    torch.testing.assert_close(y_cl.detach(), y, rtol=1e-6, atol=1e-6 * scale)
    torch.testing.assert_close(xc.grad, dx, rtol=1e-6, atol=1e-6 * dx.abs().max().item())


# ---------------------------------------------------------------------------------------------
# 4. No warnings
# ---------------------------------------------------------------------------------------------


def _calls_silently(shape, strategy, mode, seed, align_corners, backend):
    x = _x(shape, seed=8).requires_grad_()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        p = ParamDiffAug(aug_mode=mode, align_corners=align_corners)
        y = DiffAugment(x, strategy, seed=seed, param=p, backend=backend)
        y.sum().backward()
        omega = sample_params(strategy, x, seed=seed, param=p)
        apply(x, omega, backend=backend)


@pytest.mark.parametrize("backend", BACKEND_PARAMS)
@pytest.mark.parametrize("seed", [-1, 9])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("strategy, align_corners", STRATEGY_AC)
def test_no_warnings(strategy, mode, seed, align_corners, backend):
    _calls_silently((3, 3, 9, 8), strategy, mode, seed, align_corners, backend)


@pytest.mark.parametrize("backend", BACKEND_PARAMS)
@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("shape", [(2, 3, 1, 8), (2, 3, 7, 1), (2, 1, 1, 1)], ids=["H1", "W1", "H1W1"])
@pytest.mark.parametrize("strategy", ["scale", "rotate", FULL_STRATEGY])
def test_no_warnings_unit_size(strategy, shape, align_corners, backend):
    """Images of one row or column are valid input (H or W = 1 is an edge case to cover)."""
    _calls_silently(shape, strategy, "M", 4, align_corners, backend)


# ---------------------------------------------------------------------------------------------
# 5. Deterministic mode
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("strategy", ["scale", "rotate", FULL_STRATEGY])
def test_deterministic_algorithms(strategy, device):
    x = _x((4, 3, 12, 12), seed=9, device=device)
    g = _x((4, 3, 12, 12), seed=10, device=device)
    prev = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        grads = [
            _grad(lambda t: DiffAugment(t, strategy, seed=3, param=ParamDiffAug(aug_mode="M")), x, g)[1]
            for _ in range(2)
        ]
    finally:
        torch.use_deterministic_algorithms(prev)
    assert torch.equal(grads[0], grads[1])


# ---------------------------------------------------------------------------------------------
# Empty batch
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKEND_PARAMS)
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("seed", [-1, 2])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_empty_batch(strategy, mode, seed, device, backend):
    x = torch.zeros(0, 3, 8, 6, device=device, requires_grad=True)
    p = ParamDiffAug(aug_mode=mode)
    torch.manual_seed(0)
    y = DiffAugment(x, strategy, seed=seed, param=p, backend=backend)
    assert y.shape == (0, 3, 8, 6) and y.dtype == x.dtype and y.device == x.device
    y.sum().backward()
    assert x.grad is not None and x.grad.shape == x.shape
    omega = sample_params(strategy, x.detach(), seed=seed, param=ParamDiffAug(aug_mode=mode))
    assert omega.batch_size in ((1,) if seed != -1 else (0,))
    # A Siamese ω (batch 1) also applies to an empty batch.
    omega1 = sample_params(strategy, _x((2, 3, 8, 6), device=device), seed=3, param=ParamDiffAug(aug_mode=mode))
    assert apply(x.detach(), omega1, backend=backend).shape == (0, 3, 8, 6)


def test_empty_batch_cutout_with_explicit_omega():
    omega = Omega((Step("cutout", {k: torch.tensor([1]) for k in ("top", "left", "height", "width")}),))
    assert apply(torch.zeros(0, 2, 5, 5), omega).shape == (0, 2, 5, 5)
