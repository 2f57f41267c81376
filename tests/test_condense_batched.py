"""The batched class matching (dsa_fast.condense.batched) against the per-class loop."""
from __future__ import annotations

import pytest
import torch

from condense_helpers import _one_thread  # noqa: F401
from dsa_fast import ParamDiffAug
from dsa_fast.condense.batched import CPU_REAL_CHUNK, match_loss_auto, match_loss_batched, match_loss_grouped, \
    supports_batched
from dsa_fast.condense.matching import match_loss
from dsa_fast.condense.networks import ConvNet, get_network

STRATEGY = "color_crop_cutout_flip_scale_rotate"
SEEDS = [101, 2024, 77, 31337]


def _setup(classes=4, ipc=2, n_real=6, channel=3, size=16, dtype=torch.float64, norm="instancenorm", device="cpu"):
    torch.manual_seed(0)
    net = ConvNet(channel, classes, (size, size), width=16, depth=2, norm=norm).to(device=device, dtype=dtype)
    net.train()
    reals = [torch.randn(n_real, channel, size, size, dtype=dtype, device=device) for _ in range(classes)]
    syn = torch.randn(classes * ipc, channel, size, size, dtype=dtype, device=device, requires_grad=True)
    return net, reals, syn


def _split(syn, classes, ipc):
    return [syn[c * ipc:(c + 1) * ipc] for c in range(classes)]


@pytest.mark.parametrize("metric", ["ours", "mse", "cos"])
@pytest.mark.parametrize("norm", ["instancenorm", "groupnorm", "none"])
def test_batched_equals_per_class_loss_and_gradient(metric, norm):
    classes, ipc = 4, 2
    net, reals, syn = _setup(classes, ipc, norm=norm)
    assert supports_batched(net)
    labels, seeds, param = list(range(classes)), SEEDS[:classes], ParamDiffAug()

    ref = match_loss(net, reals, _split(syn, classes, ipc), labels, seeds, STRATEGY, param, metric)
    (g_ref,) = torch.autograd.grad(ref, [syn])
    got = match_loss_batched(net, reals, _split(syn, classes, ipc), labels, seeds, STRATEGY, param, metric)
    assert got.shape == () and got.requires_grad
    (g_got,) = torch.autograd.grad(got, [syn])

    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(g_got, g_ref, rtol=1e-5, atol=1e-5)
    assert g_ref.abs().sum() > 0


def test_batched_reaches_the_network_parameters_too():
    classes, ipc = 3, 1
    net, reals, syn = _setup(classes, ipc, size=8)
    args = (reals, _split(syn, classes, ipc), [0, 1, 2], SEEDS[:3], STRATEGY, ParamDiffAug(), "ours")
    params = list(net.parameters())
    g_ref = torch.autograd.grad(match_loss(net, *args), params)
    g_got = torch.autograd.grad(match_loss_batched(net, *args), params)
    for a, b in zip(g_got, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_batched_with_labels_not_in_order_and_float32():
    classes, ipc = 3, 2
    net, reals, syn = _setup(classes, ipc, size=8, dtype=torch.float32)
    labels = [2, 0, 1]
    args = (reals, _split(syn, classes, ipc), labels, SEEDS[:3], STRATEGY, ParamDiffAug(), "ours")
    ref = match_loss(net, *args)
    (g_ref,) = torch.autograd.grad(ref, [syn])
    got = match_loss_batched(net, *args)
    (g_got,) = torch.autograd.grad(got, [syn])
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(g_got, g_ref, rtol=1e-4, atol=1e-5)


def test_unequal_real_batches_fall_back_to_the_per_class_loop():
    classes, ipc = 3, 1
    net, reals, syn = _setup(classes, ipc, size=8)
    reals[1] = reals[1][:4]
    args = (reals, _split(syn, classes, ipc), [0, 1, 2], SEEDS[:3], STRATEGY, ParamDiffAug(), "ours")
    ref = match_loss(net, *args)
    got = match_loss_batched(net, *args)
    torch.testing.assert_close(got, ref, rtol=0, atol=0)


def test_no_augmentation_strategy():
    classes, ipc = 3, 2
    net, reals, syn = _setup(classes, ipc, size=8)
    args = (reals, _split(syn, classes, ipc), [0, 1, 2], SEEDS[:3], "none", None, "ours")
    torch.testing.assert_close(match_loss_batched(net, *args), match_loss(net, *args), rtol=1e-5, atol=1e-5)


def test_input_checks():
    net, reals, syn = _setup(3, 1, size=8)
    with pytest.raises(ValueError):
        match_loss_batched(net, reals, _split(syn, 3, 1), [0, 1], SEEDS[:3], STRATEGY)
    with pytest.raises(ValueError):
        match_loss_batched(net, [], [], [], [], STRATEGY)


def test_supports_batched():
    assert supports_batched(get_network("ConvNet", 3, 10, (32, 32)))
    assert supports_batched(get_network("ConvNetD1", 1, 10, (28, 28)))
    for name in ("ConvNetIN", "ConvNetGN", "ConvNetNN", "ConvNetMP", "ConvNetNP", "ConvNetAS"):
        assert supports_batched(get_network(name, 3, 10, (32, 32))), name
    assert not supports_batched(get_network("ConvNetBN", 3, 10, (32, 32)))
    # layer norm is per-sample, but torch's vmap of its double backward is wrong (batched.py NB)
    assert not supports_batched(get_network("ConvNetLN", 3, 10, (32, 32)))
    assert not supports_batched(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.InstanceNorm2d(4, track_running_stats=True)))
    assert not supports_batched(torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Dropout()))

    class Coupled(torch.nn.Module):  # unknown forward: may mix samples
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(x - x.mean(0))

    assert not supports_batched(Coupled())


def test_auto_on_a_batchnorm_net_is_the_per_class_loop():
    classes, ipc = 3, 2
    net, reals, syn = _setup(classes, ipc, size=8, norm="batchnorm")
    assert not supports_batched(net)
    args = (reals, _split(syn, classes, ipc), [0, 1, 2], SEEDS[:3], STRATEGY, ParamDiffAug(), "ours")
    state = {k: v.clone() for k, v in net.state_dict().items()}
    ref = match_loss(net, *args)
    (g_ref,) = torch.autograd.grad(ref, [syn])
    net.load_state_dict(state)  # train-mode BN updated its running statistics
    got = match_loss_auto(net, *args)
    (g_got,) = torch.autograd.grad(got, [syn])
    torch.testing.assert_close(got, ref, rtol=0, atol=0)
    torch.testing.assert_close(g_got, g_ref, rtol=0, atol=0)


def test_auto_on_the_cpu_is_the_per_class_loop_and_grouped_on_request():
    classes, ipc = 3, 2
    net, reals, syn = _setup(classes, ipc, size=8)
    args = (reals, _split(syn, classes, ipc), [0, 1, 2], SEEDS[:3], STRATEGY, ParamDiffAug(), "cos")
    torch.testing.assert_close(match_loss_auto(net, *args), match_loss(net, *args), rtol=0, atol=0)
    torch.testing.assert_close(match_loss_auto(net, *args, matching="per-class"), match_loss(net, *args),
                               rtol=0, atol=0)
    got = match_loss_auto(net, *args, matching="grouped")
    torch.testing.assert_close(got, match_loss_grouped(net, *args, real_chunk=CPU_REAL_CHUNK), rtol=0, atol=0)
    torch.testing.assert_close(got, match_loss(net, *args), rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="unknown matching"):
        match_loss_auto(net, *args, matching="vmap")


def _optimise(loss_fn, steps=3):
    classes, ipc = 4, 2
    net, reals, syn = _setup(classes, ipc)
    syn = syn.detach().clone().requires_grad_(True)
    opt = torch.optim.SGD([syn], lr=0.1, momentum=0.5)
    param = ParamDiffAug()
    for step in range(steps):
        seeds = [1000 * step + s for s in SEEDS[:classes]]
        loss = loss_fn(net, reals, _split(syn, classes, ipc), list(range(classes)), seeds, STRATEGY, param, "ours")
        opt.zero_grad(set_to_none=True)
        loss.backward(inputs=[syn])
        opt.step()
    return syn.detach()


def test_three_sgd_steps_give_the_same_synthetic_set():
    ref = _optimise(match_loss)
    got = _optimise(match_loss_batched)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    start = _setup()[2].detach()
    assert (ref - start).abs().max() > 1e-4  # the steps did move the images


@pytest.mark.needs_cuda
def test_one_matching_step_has_no_host_sync_on_cuda():
    classes, ipc = 10, 2
    net, reals, syn = _setup(classes, ipc, n_real=32, size=32, dtype=torch.float32, device="cuda")
    opt = torch.optim.SGD([syn], lr=0.1, momentum=0.5)
    param = ParamDiffAug()

    def step(seeds):
        loss = match_loss_auto(net, reals, _split(syn, classes, ipc), list(range(classes)), seeds, STRATEGY,
                               param, "ours")
        opt.zero_grad(set_to_none=True)
        loss.backward(inputs=[syn])
        opt.step()
        return loss.detach()

    step(list(range(classes)))  # warm-up: lazy initialisation (cuBLAS/cuDNN handles, optimiser state)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        loss = step([7 * c + 3 for c in range(classes)])
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert torch.isfinite(loss).item()
