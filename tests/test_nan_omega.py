"""NaN in ω, one rule on every executor (docs/semantics.md §6): a NaN colour factor propagates
through the arithmetic; a NaN scale or rotation makes its sample positions NaN, and such a position
has no tap inside the image: its output pixel is NaN (forward) and it adds nothing to the input
gradient (backward), as torch's grid_sample (the reference) does on the CPU. The CPU executor here;
the CUDA kernels in csrc/tests/cuda_sim_test.cpp (tests/test_cuda_sim.py)."""
from __future__ import annotations

import pytest
import torch

import dsa_fast
from dsa_fast import ParamDiffAug, sample_params

from conftest import FULL_STRATEGY

pytestmark = pytest.mark.skipif(not dsa_fast.has_ops(), reason="needs the built extension")


def _omega(x, op, key, value):
    omega = sample_params(FULL_STRATEGY, x, seed=3, param=ParamDiffAug(aug_mode="M"))
    (step,) = [s for s in omega.steps if s.op == op]
    step.params[key] = torch.full_like(step.params[key], value)
    return omega


def _forward_backward(x, omega, backend):
    xr = x.clone().requires_grad_()
    y = dsa_fast.apply(xr, omega, backend=backend)
    (dx,) = torch.autograd.grad(y, xr, torch.randn(y.shape, generator=torch.Generator().manual_seed(5),
                                                    dtype=y.dtype))
    return y.detach(), dx


@pytest.mark.parametrize("op, key", [("scale", "scale_w"), ("scale", "scale_h"), ("rotate", "angle")])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_nan_resampling_gives_nan_forward_and_no_gradient(op, key, dtype):
    x = torch.randn(3, 3, 7, 6, dtype=dtype)
    omega = _omega(x, op, key, float("nan"))
    for backend in ("fused", "reference"):
        y, dx = _forward_backward(x, omega, backend)
        assert torch.isnan(y).all(), (backend, y)
        assert torch.equal(dx, torch.zeros_like(dx)), (backend, dx)


@pytest.mark.parametrize("op, key", [("brightness", "shift"), ("saturation", "factor"), ("contrast", "factor")])
def test_nan_colour_factor_propagates_as_in_the_reference(op, key):
    x = torch.randn(2, 3, 9, 8, dtype=torch.float64)
    omega = _omega(x, op, key, float("nan"))
    y, dx = _forward_backward(x, omega, "fused")
    y_ref, dx_ref = _forward_backward(x, omega, "reference")
    assert torch.isnan(y).any()
    torch.testing.assert_close(y, y_ref, equal_nan=True, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(dx, dx_ref, equal_nan=True, rtol=1e-12, atol=1e-12)
