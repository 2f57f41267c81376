"""The grouped class matching (batched.match_loss_grouped: the network as one grouped copy per class)
against the literal per-class loop (matching.match_loss), in float64; its op count; the pieces it
is made of (augment_pair, group_norm_composite, grouped_distance)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from condense_helpers import _one_thread  # noqa: F401
from dsa_fast import DiffAugment, ParamDiffAug, has_ops
from dsa_fast.condense.batched import augment_pair, grouped_distance, match_loss_auto, match_loss_grouped, \
    supports_grouped
from dsa_fast.condense.ensemble import ensemble_forward, group_norm_composite
from dsa_fast.condense.matching import gradient_distance, match_loss
from dsa_fast.condense.networks import ConvNet, get_network

STRATEGY = "color_crop_cutout_flip_scale_rotate"
SEEDS = [101, 2024, 77, 31337, 5, 60000]


def _setup(classes=4, ipc=2, n_real=5, channel=3, size=12, dtype=torch.float64, **net_kw):
    torch.manual_seed(0)
    kw = dict(width=8, depth=2)
    kw.update(net_kw)
    net = ConvNet(channel, classes, (size, size), **kw).to(dtype)
    net.train()
    reals = [torch.randn(n_real, channel, size, size, dtype=dtype) for _ in range(classes)]
    syn = torch.randn(classes * ipc, channel, size, size, dtype=dtype, requires_grad=True)
    return net, reals, syn


def _grads(loss_fn, net, reals, syn, ipc, labels, seeds, strategy, metric, **kw):
    loss = loss_fn(net, reals, list(syn.split(ipc)), labels, seeds, strategy, ParamDiffAug(), metric, **kw)
    return loss, torch.autograd.grad(loss, [syn] + list(net.parameters()))


def _assert_same(net, got, ref, rtol=1e-9):
    (loss, grads), (loss_ref, grads_ref) = got, ref
    assert loss.shape == () and loss.requires_grad
    torch.testing.assert_close(loss, loss_ref, rtol=rtol, atol=rtol)
    # NB: the bias of a conv followed by a norm has a gradient of float noise only (the norm removes
    # it); each gradient is compared at the scale of the largest one.
    scale = max(g.abs().max().item() for g in grads_ref)
    for (name, _), a, b in zip([("syn", None)] + list(net.named_parameters()), grads, grads_ref):
        torch.testing.assert_close(a, b, rtol=rtol, atol=rtol * scale, msg=lambda m: f"{name}: {m}")
    assert grads_ref[0].abs().sum() > 0


@pytest.mark.parametrize("real_chunk", [None, 1, 3])
@pytest.mark.parametrize("metric", ["ours", "mse", "cos"])
@pytest.mark.parametrize("norm", ["instancenorm", "groupnorm", "layernorm", "none"])
def test_grouped_equals_the_per_class_loop(norm, metric, real_chunk):
    classes, ipc = 4, 2
    net, reals, syn = _setup(classes, ipc, norm=norm)
    assert supports_grouped(net)
    args = (net, reals, syn, ipc, list(range(classes)), SEEDS[:classes], STRATEGY, metric)
    _assert_same(net, _grads(match_loss_grouped, *args, real_chunk=real_chunk), _grads(match_loss, *args))


@pytest.mark.parametrize("net_kw", [dict(act="sigmoid"), dict(act="leakyrelu"), dict(pooling="maxpooling"),
                                    dict(pooling="none", depth=1), dict(depth=3, width=4)],
                         ids=["sigmoid", "leakyrelu", "maxpool", "nopool", "depth3"])
def test_grouped_equals_the_per_class_loop_for_the_convnet_variants(net_kw):
    classes, ipc = 3, 1
    net, reals, syn = _setup(classes, ipc, size=8 if net_kw.get("depth") != 3 else 16, **net_kw)
    args = (net, reals, syn, ipc, list(range(classes)), SEEDS[:classes], STRATEGY, "ours")
    _assert_same(net, _grads(match_loss_grouped, *args), _grads(match_loss, *args))


def test_grouped_with_one_channel_labels_out_of_order_and_no_augmentation():
    # MNIST-like: 1 channel (the first conv pads by 3), labels not 0..K-1, 'M' mode, and 'none'.
    classes, ipc = 3, 2
    net, reals, syn = _setup(classes, ipc, channel=1, size=10)
    labels = [2, 0, 1]
    for strategy in ("color_crop_cutout_scale_rotate", "none"):
        args = (net, reals, syn, ipc, labels, SEEDS[:classes], strategy, "ours")
        _assert_same(net, _grads(match_loss_grouped, *args), _grads(match_loss, *args))


def test_grouped_in_float32():
    classes, ipc = 4, 1
    net, reals, syn = _setup(classes, ipc, dtype=torch.float32)
    args = (net, reals, syn, ipc, list(range(classes)), SEEDS[:classes], STRATEGY, "ours")
    _assert_same(net, _grads(match_loss_grouped, *args), _grads(match_loss, *args), rtol=1e-4)


def test_unequal_batches_fall_back_to_the_per_class_loop():
    classes, ipc = 3, 1
    net, reals, syn = _setup(classes, ipc, size=8)
    reals[1] = reals[1][:3]
    args = (reals, list(syn.split(ipc)), [0, 1, 2], SEEDS[:3], STRATEGY, ParamDiffAug(), "ours")
    torch.testing.assert_close(match_loss_grouped(net, *args), match_loss(net, *args), rtol=0, atol=0)


def test_grouped_refuses_what_it_cannot_group():
    net, reals, syn = _setup(3, 1, size=8)
    args = (reals, list(syn.split(1)), [0, 1, 2], SEEDS[:3], STRATEGY)
    with pytest.raises(ValueError, match="differ in length"):
        match_loss_grouped(net, reals, list(syn.split(1)), [0, 1], SEEDS[:3], STRATEGY)
    with pytest.raises(ValueError, match="at least one class"):
        match_loss_grouped(net, [], [], [], [], STRATEGY)
    with pytest.raises(ValueError, match="real_chunk"):
        match_loss_grouped(net, *args, real_chunk=0)
    bn = ConvNet(3, 3, (8, 8), width=4, depth=1, norm="batchnorm").double()
    assert not supports_grouped(bn)
    with pytest.raises(ValueError, match="batch norm"):
        match_loss_grouped(bn, *args)
    with pytest.raises(ValueError, match="batch norm"):
        match_loss_auto(bn, *args, matching="grouped")
    frozen = ConvNet(3, 3, (8, 8), width=4, depth=1).double()
    frozen.classifier.bias.requires_grad_(False)
    assert not supports_grouped(frozen)
    with pytest.raises(ValueError, match="require grad"):
        match_loss_grouped(frozen, *args)
    for name in ("MLP", "LeNet", "ResNet18"):
        assert not supports_grouped(get_network(name, 3, 10, (32, 32), device="meta"))
    for name in ("ConvNet", "ConvNetIN", "ConvNetGN", "ConvNetLN", "ConvNetNN", "ConvNetAS", "ConvNetMP", "ConvNetNP"):
        assert supports_grouped(get_network(name, 3, 10, (32, 32), device="meta")), name


def test_three_sgd_steps_give_the_same_synthetic_set():
    def run(loss_fn):
        classes, ipc = 4, 2
        net, reals, syn = _setup(classes, ipc)
        opt = torch.optim.SGD([syn], lr=0.1, momentum=0.5)
        for step in range(3):
            seeds = [1000 * step + s for s in SEEDS[:classes]]
            loss = loss_fn(net, reals, list(syn.split(ipc)), list(range(classes)), seeds, STRATEGY, ParamDiffAug())
            opt.zero_grad(set_to_none=True)
            loss.backward(inputs=[syn])
            opt.step()
        return syn.detach()

    ref, got = run(match_loss), run(match_loss_grouped)
    torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-10)
    assert (ref - _setup()[2].detach()).abs().max() > 1e-4  # the steps moved the images


# -- the pieces --------------------------------------------------------------------------------


@pytest.mark.parametrize("param", [ParamDiffAug(), ParamDiffAug(aug_mode="M"), ParamDiffAug(rng="device")],
                         ids=["S", "M", "device"])
@pytest.mark.parametrize("strategy", [STRATEGY, "crop_scale", "none"])
def test_augment_pair_is_two_seeded_calls(param, strategy):
    real, syn = torch.randn(7, 3, 9, 11), torch.randn(2, 3, 9, 11)
    for seed in (0, 3, 99):
        torch.manual_seed(5)
        p1 = ParamDiffAug(aug_mode=param.aug_mode, rng=param.rng)
        a, b = DiffAugment(real, strategy, seed=seed, param=p1), DiffAugment(syn, strategy, seed=seed, param=p1)
        after_calls = torch.rand(4)
        torch.manual_seed(5)
        p2 = ParamDiffAug(aug_mode=param.aug_mode, rng=param.rng)
        c, d = augment_pair(real, syn, strategy, seed, p2)
        after_pair = torch.rand(4)
        assert torch.equal(a, c) and torch.equal(b, d)
        assert torch.equal(after_calls, after_pair)  # the global generator is left as by the two calls
        assert (p1.latestseed, p1.Siamese) == (p2.latestseed, p2.Siamese)


def test_augment_pair_gradient_reaches_the_synthetic_batch_only():
    real, syn = torch.randn(5, 3, 8, 8), torch.randn(2, 3, 8, 8, requires_grad=True)
    r, s = augment_pair(real, syn, STRATEGY, 7, ParamDiffAug())
    assert not r.requires_grad
    (g,) = torch.autograd.grad((s * torch.arange(s.numel()).view_as(s)).sum(), [syn])
    s_ref = DiffAugment(syn, STRATEGY, seed=7, param=ParamDiffAug())
    (g_ref,) = torch.autograd.grad((s_ref * torch.arange(s.numel()).view_as(s)).sum(), [syn])
    torch.testing.assert_close(g, g_ref, rtol=0, atol=0)


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("groups", [1, 3, 6])
def test_group_norm_composite_to_the_second_derivative(groups, affine):
    torch.manual_seed(0)
    x = torch.randn(2, 6, 5, 4, dtype=torch.float64, requires_grad=True)
    w = torch.randn(6, dtype=torch.float64, requires_grad=True) if affine else None
    b = torch.randn(6, dtype=torch.float64, requires_grad=True) if affine else None
    leaves = [t for t in (x, w, b) if t is not None]
    assert torch.autograd.gradcheck(lambda *t: group_norm_composite(t[0], groups, *(t[1:] or (None, None)), 1e-5),
                                    leaves)
    assert torch.autograd.gradgradcheck(
        lambda *t: group_norm_composite(t[0], groups, *(t[1:] or (None, None)), 1e-5), leaves)
    torch.testing.assert_close(group_norm_composite(x, groups, w, b, 1e-5), F.group_norm(x, groups, w, b, 1e-5),
                               rtol=1e-12, atol=1e-12)


class _Ops(TorchDispatchMode):
    """Dispatched ops that launch a kernel (views, detach and in-place metadata ops excluded)."""

    def __init__(self):
        super().__init__()
        self.n = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.n += not (getattr(func, "is_view", False) or func in (torch.ops.aten.detach.default,
                                                                   torch.ops.aten._unsafe_view.default))
        return func(*args, **(kwargs or {}))


def test_group_norm_composite_twice_differentiated_takes_fewer_ops():
    torch.manual_seed(0)
    x = torch.randn(2, 6, 5, 4, dtype=torch.float64, requires_grad=True)
    w = torch.randn(6, dtype=torch.float64, requires_grad=True)
    b = torch.randn(6, dtype=torch.float64, requires_grad=True)
    counts = {}
    for name, fn in (("native", F.group_norm), ("composite", group_norm_composite)):
        with _Ops() as ops:
            gw, gb = torch.autograd.grad(fn(x, 6, w, b, 1e-5).square().sum(), [w, b], create_graph=True)
            torch.autograd.grad(gw.square().sum() + gb.square().sum(), [x])
        counts[name] = ops.n
    assert counts["composite"] < 0.8 * counts["native"], counts


def test_ensemble_forward_twice_differentiable_is_the_same_function():
    for norm in ("instancenorm", "groupnorm", "layernorm"):
        net = ConvNet(2, 3, (8, 8), width=4, depth=2, norm=norm).double()
        params = {k: v.detach().expand(3, *v.shape) for k, v in net.named_parameters()}
        x = torch.randn(5, 6, 8, 8, dtype=torch.float64)
        torch.testing.assert_close(ensemble_forward(net, params, x, twice_differentiable=True),
                                   ensemble_forward(net, params, x), rtol=1e-12, atol=1e-12)


def test_grouped_distance_is_the_per_class_distance_summed():
    torch.manual_seed(0)
    shapes = [(4, 3, 3, 3), (4,), (2, 5, 5), (3, 7)]
    k = 3
    g_syn = [torch.randn(k, *s, dtype=torch.float64) for s in shapes]
    g_real = [torch.randn(k, *s, dtype=torch.float64) for s in shapes]
    for metric in ("ours", "mse", "cos"):
        ref = sum(gradient_distance([g[c] for g in g_syn], [g[c] for g in g_real], metric) for c in range(k))
        torch.testing.assert_close(grouped_distance(g_syn, g_real, metric), ref, rtol=1e-12, atol=1e-12)
    assert grouped_distance([g_syn[1]], [g_real[1]], "ours").item() == 0.0  # rank-1 only: no rows
    with pytest.raises(ValueError, match="unknown distance"):
        grouped_distance(g_syn, g_real, "l1")


# -- ops ---------------------------------------------------------------------------------------


def _count(loss_fn, classes, ipc=1):
    net, reals, syn = _setup(classes, ipc, n_real=4, size=8, dtype=torch.float32)
    loss_fn(net, reals, list(syn.split(ipc)), list(range(classes)), SEEDS[:classes], "none", None)  # warm-up
    with _Ops() as ops:
        loss = loss_fn(net, reals, list(syn.split(ipc)), list(range(classes)), SEEDS[:classes], "none", None)
        loss.backward(inputs=[syn])
    return ops.n


def test_grouped_ops_barely_grow_with_the_classes():
    grouped = {k: _count(match_loss_grouped, k) for k in (2, 6)}
    per_class = {k: _count(match_loss, k) for k in (2, 6)}
    # NB: one op per class remains: torch's convolution double backward computes the weight term of a
    # grouped convolution group by group (a convolution per group, for layers after the first).
    assert grouped[6] - grouped[2] <= 6 - 2, grouped
    # The per-class loop pays its whole body per class: at 6 classes, more than 5 times the grouped ops.
    assert per_class[6] - per_class[2] > 3 * grouped[6], (per_class, grouped)
    assert per_class[6] > 5 * grouped[6], (per_class, grouped)


@pytest.mark.skipif(not has_ops(), reason="the one-draw pair needs the compiled extension")
def test_augment_pair_draws_once():
    real, syn = torch.randn(6, 3, 8, 8), torch.randn(1, 3, 8, 8)
    augment_pair(real, syn, STRATEGY, 3, ParamDiffAug())
    with _Ops() as pair:
        augment_pair(real, syn, STRATEGY, 3, ParamDiffAug())
    with _Ops() as calls:
        DiffAugment(real, STRATEGY, seed=3, param=ParamDiffAug())
        DiffAugment(syn, STRATEGY, seed=3, param=ParamDiffAug())
    assert pair.n < calls.n, (pair.n, calls.n)


@pytest.mark.needs_cuda
@pytest.mark.parametrize("metric", ["ours", "cos"])
def test_grouped_on_cuda_equals_the_per_class_loop_and_auto_takes_it(metric):
    classes, ipc = 4, 2
    net, reals, syn = _setup(classes, ipc)
    net = net.cuda()
    reals = [r.cuda() for r in reals]
    syn = syn.detach().cuda().requires_grad_(True)
    args = (net, reals, syn, ipc, list(range(classes)), SEEDS[:classes], STRATEGY, metric)
    _assert_same(net, _grads(match_loss_grouped, *args), _grads(match_loss, *args))
    auto = match_loss_auto(net, reals, list(syn.split(ipc)), list(range(classes)), SEEDS[:classes], STRATEGY,
                           ParamDiffAug(), metric)
    grouped = match_loss_grouped(net, reals, list(syn.split(ipc)), list(range(classes)), SEEDS[:classes], STRATEGY,
                                 ParamDiffAug(), metric)
    torch.testing.assert_close(auto, grouped, rtol=0, atol=0)
