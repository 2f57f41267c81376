"""The gradient distances against hand-computed values, and the per-class matching loss."""
from __future__ import annotations

import math

import pytest
import torch

from condense_helpers import _one_thread  # noqa: F401
from dsa_fast import DiffAugment, ParamDiffAug
from dsa_fast.condense.batched import match_loss_batched, match_loss_grouped
from dsa_fast.condense.dm import dm_loss
from dsa_fast.condense.matching import EPS, gradient_distance, layer_distance, match_loss
from dsa_fast.condense.networks import get_network

DTYPES = [torch.float32, torch.float64]


@pytest.mark.parametrize("dtype", DTYPES)
def test_ours_rank2_by_hand(device, dtype):
    gs = torch.tensor([[1.0, 0.0], [1.0, 1.0]], dtype=dtype, device=device)
    gr = torch.tensor([[0.0, 2.0], [2.0, 2.0]], dtype=dtype, device=device)
    # row 0: orthogonal -> 1 - 0 = 1; row 1: <a,b> = 4, |a||b| = sqrt(2) * sqrt(8) = 4 -> 1 - 4 / (4 + 1e-6)
    expected = 1.0 + (1.0 - 4.0 / (4.0 + 1e-6))
    got = gradient_distance([gs], [gr], "ours")
    assert got.dtype == dtype and got.shape == ()
    assert abs(got.item() - expected) < (1e-12 if dtype == torch.float64 else 1e-6)


def test_ours_eps_sits_on_the_product_of_the_norms():
    # Tiny rows make the difference visible: |a| = |b| = 1e-3, <a,b> = 1e-6 (parallel).
    a = torch.tensor([[1e-3, 0.0]], dtype=torch.float64)
    b = torch.tensor([[1e-3, 0.0]], dtype=torch.float64)
    on_product = 1 - 1e-6 / (1e-3 * 1e-3 + 1e-6)  # = 0.5
    on_each_norm = 1 - 1e-6 / ((1e-3 + 1e-6) * (1e-3 + 1e-6))
    got = layer_distance(a, b).item()
    assert math.isclose(got, on_product, rel_tol=1e-12) and got == pytest.approx(0.5)
    assert not math.isclose(got, on_each_norm, rel_tol=1e-3)
    assert EPS == 1e-6


def test_ours_rank1_terms_are_zero_and_rank4_rank3_reshape():
    torch.manual_seed(0)
    bias_s, bias_r = torch.randn(5, dtype=torch.float64), torch.randn(5, dtype=torch.float64)
    assert gradient_distance([bias_s], [bias_r], "ours").item() == 0.0
    conv_s, conv_r = torch.randn(4, 3, 3, 3, dtype=torch.float64), torch.randn(4, 3, 3, 3, dtype=torch.float64)
    ln_s, ln_r = torch.randn(2, 5, 5, dtype=torch.float64), torch.randn(2, 5, 5, dtype=torch.float64)

    def by_hand(s, r):  # rows of out x (everything else), each 1 - cos with 1e-6 on the product
        total = 0.0
        for i in range(s.shape[0]):
            a, b = s[i].flatten().tolist(), r[i].flatten().tolist()
            dot = sum(x * y for x, y in zip(a, b))
            na, nb = math.sqrt(sum(x * x for x in a)), math.sqrt(sum(y * y for y in b))
            total += 1 - dot / (na * nb + 1e-6)
        return total

    got = gradient_distance([conv_s, bias_s, ln_s], [conv_r, bias_r, ln_r], "ours").item()
    assert got == pytest.approx(by_hand(conv_s, conv_r) + by_hand(ln_s, ln_r), rel=1e-12)


def test_mse_and_cos_over_everything_concatenated():
    s = [torch.tensor([[1.0, 2.0]], dtype=torch.float64), torch.tensor([3.0], dtype=torch.float64)]
    r = [torch.tensor([[0.0, 2.0]], dtype=torch.float64), torch.tensor([1.0], dtype=torch.float64)]
    assert gradient_distance(s, r, "mse").item() == pytest.approx(1.0 + 0.0 + 4.0)
    # concatenated: s = (1, 2, 3), r = (0, 2, 1): dot 7, |s| = sqrt(14), |r| = sqrt(5); rank-1 terms count here
    assert gradient_distance(s, r, "cos").item() == pytest.approx(1 - 7 / (math.sqrt(14) * math.sqrt(5) + 1e-6))
    with pytest.raises(ValueError, match="unknown distance"):
        gradient_distance(s, r, "l1")


def test_identical_gradients_have_near_zero_distance():
    g = [torch.randn(8, 4, 3, 3, dtype=torch.float64), torch.randn(8, dtype=torch.float64)]
    assert gradient_distance(g, g, "ours").item() == pytest.approx(0.0, abs=1e-6)
    assert gradient_distance(g, g, "mse").item() == 0.0
    assert gradient_distance(g, g, "cos").item() == pytest.approx(0.0, abs=1e-6)


def _tiny_setup(device, ipc=2, classes=3):
    torch.manual_seed(0)
    net = get_network("ConvNetW8", 1, classes, (28, 28)).to(device)
    reals = [torch.randn(6, 1, 28, 28, device=device) for _ in range(classes)]
    syn = torch.randn(classes * ipc, 1, 28, 28, device=device, requires_grad=True)
    syns = [syn[c * ipc:(c + 1) * ipc] for c in range(classes)]
    return net, reals, syn, syns


@pytest.mark.parametrize("metric", ["ours", "mse", "cos"])
def test_match_loss_is_the_sum_of_per_class_distances(device, metric):
    net, reals, syn, syns = _tiny_setup(device)
    strategy, seeds, param = "color_crop_cutout_scale_rotate", [11, 22, 33], ParamDiffAug()
    loss = match_loss(net, reals, syns, [0, 1, 2], seeds, strategy, param, metric)
    assert loss.shape == () and loss.requires_grad
    (grad,) = torch.autograd.grad(loss, [syn])
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0

    params = list(net.parameters())
    expected = 0.0
    for c, seed in enumerate(seeds):  # the same seed gives the real and the synthetic batch one transform
        xr = DiffAugment(reals[c], strategy, seed=seed, param=param)
        xs = DiffAugment(syns[c], strategy, seed=seed, param=param)
        tr = torch.full((xr.shape[0],), c, device=device)
        ts = torch.full((xs.shape[0],), c, device=device)
        gr = torch.autograd.grad(torch.nn.functional.cross_entropy(net(xr), tr), params)
        gs = torch.autograd.grad(torch.nn.functional.cross_entropy(net(xs), ts), params)
        expected += gradient_distance(gs, gr, metric).item()
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_match_loss_checks_its_inputs():
    net, reals, _, syns = _tiny_setup("cpu")
    with pytest.raises(ValueError, match="differ in length"):
        match_loss(net, reals, syns[:2], [0, 1, 2], [1, 2, 3], "crop")


@pytest.mark.parametrize("name", ["match_loss", "match_loss_batched", "match_loss_grouped", "dm_loss"])
def test_every_matching_loss_checks_its_class_lists_alike(name):
    """One check (matching.check_match_args) for every loss over per-class lists: the error names
    the loss and every list's length."""
    fn = {"match_loss": match_loss, "match_loss_batched": match_loss_batched,
          "match_loss_grouped": match_loss_grouped, "dm_loss": dm_loss}[name]
    net, reals, _, syns = _tiny_setup("cpu")
    labeled = name != "dm_loss"

    def call(r, s, labels, seeds):
        return fn(net, r, s, labels, seeds, "crop") if labeled else fn(net, r, s, seeds, "crop")

    with pytest.raises(ValueError, match=rf"condense\.{name}: .*differ in length .*syn_batches=2"):
        call(reals, syns[:2], [0, 1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match=rf"condense\.{name}: .*differ in length .*seeds=1"):
        call(reals, syns, [0, 1, 2], [1])
    if labeled:
        with pytest.raises(ValueError, match=rf"condense\.{name}: .*labels=2"):
            call(reals, syns, [0, 1], [1, 2, 3])
    with pytest.raises(ValueError, match=rf"condense\.{name}: needs at least one class"):
        call([], [], [], [])
