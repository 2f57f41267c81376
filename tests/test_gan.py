"""dsa_fast.gan.DiffAugment against a literal re-implementation of the published GAN DiffAugment
(tests/gan_reference.py): for the same generator state, the same outputs, input gradients and
generator state afterwards; one fused op call after the draws for a policy in canonical order.

Tolerances are those of docs/semantics.md §6: bitwise without 'color'; with it, 1e-6 relative in
float32 (the fused colour program sums in another order) and 1e-12 in float64.
"""
from __future__ import annotations

import zlib

import pytest
import torch

import dsa_fast
from dsa_fast import gan

import gan_reference
from conftest import BACKEND_PARAMS, DEVICES, DispatchLog

POLICIES = ["color,translation,cutout", "color", "translation", "cutout", "translation,cutout", "color,cutout",
            "cutout,color", "translation,color,translation"]
SHAPES = [(4, 3, 8, 8), (3, 1, 7, 9), (2, 3, 32, 32), (2, 3, 6, 11), (1, 3, 5, 5)]


def _run(fn, x, g, seed):
    torch.manual_seed(seed)
    if x.is_cuda:
        torch.cuda.manual_seed(seed)
    x = x.detach().clone().requires_grad_()
    y = fn(x)
    (y * g).sum().backward()
    state = torch.get_rng_state() if not x.is_cuda else torch.cuda.get_rng_state(x.device)
    return y.detach(), x.grad, state


def _close(actual, expected, policy, dtype):
    if "color" not in policy.split(","):
        assert torch.equal(actual, expected), f"{policy}: {(actual != expected).sum().item()} elements differ"
        return
    tol = 1e-6 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(actual, expected, rtol=tol, atol=tol * expected.abs().max().item())


@pytest.mark.parametrize("backend", BACKEND_PARAMS)
@pytest.mark.parametrize("channels_first", [True, False], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("device", DEVICES)
def test_equals_published_formulas(policy, shape, dtype, channels_first, backend, device):
    gen = torch.Generator().manual_seed(zlib.crc32(f"{policy}{shape}".encode()))
    x = torch.randn(shape, generator=gen, dtype=dtype).to(device)
    if not channels_first:
        x = x.permute(0, 2, 3, 1).contiguous()
    g = torch.randn(x.shape, generator=gen, dtype=dtype).to(device)
    for seed in (0, 1, 2021):
        y0, dx0, s0 = _run(lambda t: gan_reference.diff_augment(t, policy, channels_first), x, g, seed)
        y1, dx1, s1 = _run(lambda t: gan.DiffAugment(t, policy, channels_first, backend=backend), x, g, seed)
        assert y1.shape == y0.shape and y1.dtype == dtype and y1.is_contiguous()
        _close(y1, y0, policy, dtype)
        _close(dx1, dx0, policy, dtype)
        assert torch.equal(s1, s0), "the generator must end where the published code leaves it"


def test_samples_get_their_own_transform():
    x = torch.ones(64, 3, 16, 16)
    y = gan.DiffAugment(x, "translation,cutout")
    assert len({tuple(v.flatten().tolist()) for v in y}) > 32


def test_empty_policy_returns_x_and_errors_name_the_call():
    x = torch.randn(2, 3, 4, 4)
    assert gan.DiffAugment(x, "") is x
    with pytest.raises(ValueError, match=r"dsa_fast.gan.DiffAugment: unknown policy token 'flip' in policy 'color,flip'"):
        gan.DiffAugment(x, "color,flip")
    with pytest.raises(TypeError, match="dsa_fast.gan.DiffAugment: policy must be a str"):
        gan.DiffAugment(x, None)
    with pytest.raises(ValueError, match=r"dsa_fast.gan.DiffAugment: expected a 4-D x, got shape \(3, 4, 4\)"):
        gan.DiffAugment(x[0], "color")


DRAWS = ["aten.rand.default"] * 3 + ["aten.randint.low"] * 4


@pytest.mark.skipif(not dsa_fast.has_ops(), reason="dsa_fast._C not loaded (fused backend absent)")
@pytest.mark.parametrize("n", [1, 64])
def test_one_fused_call_after_the_draws(n):
    """'color,translation,cutout': the seven published draws, then ONE op call forward (and one
    backward op); NHWC adds only views and the final copy to contiguous."""
    x = torch.randn(n, 3, 8, 8, requires_grad=True)
    gan.DiffAugment(x, "color,translation,cutout")  # warm: the plan is cached
    with DispatchLog() as fwd:
        y = gan.DiffAugment(x, "color,translation,cutout")
    assert fwd.ops == DRAWS + ["dsa_fast.augment_compat.default"], fwd.ops
    g = torch.ones_like(y)
    with DispatchLog() as bwd:
        y.backward(g)
    assert bwd.ops == ["dsa_fast.augment_backward.default", "aten.detach.default"], bwd.ops
    nhwc = x.detach().permute(0, 2, 3, 1).contiguous()
    with DispatchLog() as fwd:
        gan.DiffAugment(nhwc, "color,translation,cutout", channels_first=False)
    kernels = [op for op in fwd.ops if op not in DRAWS and op not in ("aten.permute.default", "aten.clone.default")]
    assert kernels == ["dsa_fast.augment_compat.default"], fwd.ops
