"""dsa_fast.augment_pairs: several (real, synthetic) pairs, each with its own seed, are exactly the
two DiffAugment calls per pair (outputs, gradients, generator state, param.latestseed), and with
rng='compat' on the kernels one augment call for all real batches and one for all synthetic ones
(counted, not timed)."""
from __future__ import annotations

import pytest
import torch

import dsa_fast
from dsa_fast import DiffAugment, ParamDiffAug, augment_pairs

from conftest import BACKEND_PARAMS, DispatchLog, FULL_STRATEGY

SEEDS = [11, 2024, 7, 31337]


def _pairs(k, n=5, ipc=2, shape=(3, 9, 8), dtype=torch.float32):
    gen = torch.Generator().manual_seed(k)
    reals = [torch.randn(n, *shape, generator=gen, dtype=dtype) for _ in range(k)]
    syns = [torch.randn(ipc, *shape, generator=gen, dtype=dtype).requires_grad_() for _ in range(k)]
    return reals, syns


@pytest.mark.parametrize("backend", BACKEND_PARAMS)
@pytest.mark.parametrize("strategy", [FULL_STRATEGY, "crop_flip", "color_cutout", "rotate_scale"])
@pytest.mark.parametrize("mode", ["M", "S"])
@pytest.mark.parametrize("k", [1, 4])
def test_pairs_equal_two_calls_per_pair(k, mode, strategy, backend):
    reals, syns = _pairs(k)
    seeds = SEEDS[:k]
    torch.manual_seed(5)
    p1 = ParamDiffAug(aug_mode=mode)
    expected = [(DiffAugment(r, strategy, seed=s, param=p1, backend=backend),
                 DiffAugment(y, strategy, seed=s, param=p1, backend=backend)) for r, y, s in zip(reals, syns, seeds)]
    state = torch.get_rng_state()
    weights = [torch.randn(y.shape, generator=torch.Generator().manual_seed(j)) for j, y in enumerate(syns)]
    g_expected = torch.autograd.grad(sum((s * w).sum() for (_, s), w in zip(expected, weights)), syns)
    torch.manual_seed(5)
    p2 = ParamDiffAug(aug_mode=mode)
    got = augment_pairs(list(zip(reals, syns)), strategy, seeds, p2, backend=backend)
    assert torch.equal(torch.get_rng_state(), state)
    assert p2.latestseed == p1.latestseed and p2.Siamese
    for (er, es), (gr, gs) in zip(expected, got):
        assert torch.equal(gr, er) and torch.equal(gs, es)
        assert (gr.requires_grad, gs.requires_grad) == (er.requires_grad, es.requires_grad)
    g_got = torch.autograd.grad(sum((s * w).sum() for (_, s), w in zip(got, weights)), syns)
    for a, b in zip(g_got, g_expected):
        assert torch.equal(a, b)


def test_unseeded_and_device_pairs_take_their_own_calls():
    reals, syns = _pairs(2)
    for seeds, param in (([-1, -1], ParamDiffAug()), ([3, 4], ParamDiffAug(rng="device"))):
        torch.manual_seed(0)
        expected = [(DiffAugment(r, "crop_cutout", seed=s, param=param), DiffAugment(y, "crop_cutout", seed=s, param=param))
                    for r, y, s in zip(reals, syns, seeds)]
        torch.manual_seed(0)
        got = augment_pairs(list(zip(reals, syns)), "crop_cutout", seeds, param)
        for e, g in zip(expected, got):
            assert torch.equal(e[0], g[0]) and torch.equal(e[1], g[1])


def test_errors_name_the_call():
    reals, syns = _pairs(2)
    with pytest.raises(ValueError, match="dsa_fast.augment_pairs: 2 pairs but 1 seeds"):
        augment_pairs(list(zip(reals, syns)), "crop", [1])
    assert augment_pairs([(reals[0], syns[0])], "none", [1]) == [(reals[0], syns[0])]


@pytest.mark.skipif(not dsa_fast.has_ops(), reason="dsa_fast._C not loaded (fused backend absent)")
@pytest.mark.parametrize("k", [1, 4])
def test_one_augment_call_per_side_for_all_pairs(k):
    """K seeded draws (each: a table from the formulas, no pixel), then ONE augment call for the K
    real batches and ONE for the K synthetic ones (which need a gradient), and ONE augment_backward
    over the synthetic batches only; two DiffAugment calls per pair would make 2K and K."""
    reals, syns = _pairs(k)
    pairs = list(zip(reals, syns))
    augment_pairs(pairs, FULL_STRATEGY, SEEDS[:k], ParamDiffAug(aug_mode="M"))  # warm: plans cached
    with DispatchLog() as fwd:
        out = augment_pairs(pairs, FULL_STRATEGY, SEEDS[:k], ParamDiffAug(aug_mode="M"))
    assert fwd.ops.count("dsa_fast.augment.default") == 2, fwd.ops
    assert fwd.ops.count("dsa_fast.augment_compat.default") == k, fwd.ops
    assert not any(r.requires_grad for r, _ in out) and all(s.requires_grad for _, s in out)
    loss = sum(s.sum() for _, s in out)
    with DispatchLog() as bwd:
        loss.backward()
    assert bwd.ops.count("dsa_fast.augment_backward.default") == 1, bwd.ops
    with torch.no_grad(), DispatchLog() as fwd:
        augment_pairs(pairs, FULL_STRATEGY, SEEDS[:k], ParamDiffAug(aug_mode="M"))
    assert fwd.ops.count("dsa_fast.augment.default") == 1, fwd.ops
