"""Trajectory matching (``--method mtt``): the iteration against a literal float64 re-implementation
of the published algorithm, the functional network against the module, the checkpointed unroll
against the plain one, ZCA against its closed form."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dsa_fast import DiffAugment, ParamDiffAug
from dsa_fast.condense.functional import FlatNetwork
from dsa_fast.condense.methods.mtt import augmenter, mtt_loss
from dsa_fast.condense.networks import get_network
from dsa_fast.condense.zca import ZCA, fit_zca, whitening_matrix

from condense_helpers import _one_thread  # noqa: F401  (fixture)

STRATEGY = "color_crop_cutout_flip_scale_rotate"


def _depth2(channel, classes, size):
    from dsa_fast.condense.networks import ConvNet

    return ConvNet(channel, classes, size, width=4, depth=2).double()


def _literal_convnet(theta, x, shapes, channel):
    """ConvNet depth 2 (conv, instance norm, relu, avg pool per block; then linear) written with
    torch.nn.functional on a flat vector cut in parameters() order."""
    params, at = [], 0
    for s in shapes:
        n = 1
        for d in s:
            n *= d
        params.append(theta[at:at + n].view(s))
        at += n
    w1, b1, g1, be1, w2, b2, g2, be2, wl, bl = params
    pad = 3 if channel == 1 else 1
    h = F.conv2d(x, w1, b1, padding=pad)
    h = F.avg_pool2d(F.relu(F.group_norm(h, h.shape[1], g1, be1, eps=1e-5)), 2)
    h = F.conv2d(h, w2, b2, padding=1)
    h = F.avg_pool2d(F.relu(F.group_norm(h, h.shape[1], g2, be2, eps=1e-5)), 2)
    return F.linear(h.flatten(1), wl, bl)


def _literal_mtt(theta_start, theta_target, images, labels, syn_lr, syn_steps, batch_syn, shapes, channel, param):
    """Spec §2, step for step: fresh randperm split into batch_syn chunks taken from the end, unseeded
    DiffAugment (the reference backend), θ_{k+1} = θ_k − α ∇CE with the graph kept, then
    ‖θ_N − θ*‖² / ‖θ_0 − θ*‖² with both sums divided by the parameter count as the code does."""
    student = [theta_start.clone().requires_grad_(True)]
    chunks = []
    for _ in range(syn_steps):
        if not chunks:
            chunks = list(torch.split(torch.randperm(len(images)), batch_syn))
        these = chunks.pop()
        x = DiffAugment(images[these], STRATEGY, seed=-1, param=param, backend="reference")
        ce = F.cross_entropy(_literal_convnet(student[-1], x, shapes, channel), labels[these])
        grad = torch.autograd.grad(ce, student[-1], create_graph=True)[0]
        student.append(student[-1] - syn_lr * grad)
    n = theta_start.numel()
    param_loss = F.mse_loss(student[-1], theta_target, reduction="sum") / n
    param_dist = F.mse_loss(theta_start, theta_target, reduction="sum") / n
    return param_loss / param_dist


def _setup(channel=1, classes=3, ipc=2, size=(12, 12)):
    net = _depth2(channel, classes, size)
    fnet = FlatNetwork(net)
    torch.manual_seed(5)
    start = fnet.flatten().clone()
    target = start + 0.05 * torch.randn_like(start)
    images = torch.randn(classes * ipc, channel, *size, dtype=torch.float64)
    labels = torch.arange(classes).repeat_interleave(ipc)
    return net, fnet, start, target, images, labels


@pytest.mark.parametrize("batch_syn", [6, 4])
@pytest.mark.parametrize("checkpointed", [False, True])
def test_iteration_equals_the_literal_algorithm_in_float64(batch_syn, checkpointed):
    net, fnet, start, target, images, labels = _setup()
    param = ParamDiffAug(align_corners=True)
    shapes = [tuple(p.shape) for p in net.parameters()]
    results = []
    for literal in (True, False):
        x = images.clone().requires_grad_(True)
        lr = torch.tensor(0.01, dtype=torch.float64, requires_grad=True)
        torch.manual_seed(11)
        if literal:
            loss = _literal_mtt(start, target, x, labels, lr, 5, batch_syn, shapes, 1, param)
        else:
            loss = mtt_loss(fnet, start, target, x, labels, lr, syn_steps=5, batch_syn=batch_syn,
                            augment=augmenter(STRATEGY, param), checkpointed=checkpointed)
        gx, glr = torch.autograd.grad(loss, [x, lr])
        results.append((loss, gx, glr))
    (l0, gx0, glr0), (l1, gx1, glr1) = results
    assert gx0.abs().max() > 0 and glr0.abs() > 0
    torch.testing.assert_close(l1, l0, rtol=1e-12, atol=0)
    torch.testing.assert_close(gx1, gx0, rtol=1e-10, atol=1e-14)
    torch.testing.assert_close(glr1, glr0, rtol=1e-10, atol=0)


def test_checkpointed_unroll_equals_the_plain_one_in_float64():
    _, fnet, start, target, images, labels = _setup(channel=3, classes=2, ipc=3)
    out = []
    for checkpointed in (False, True):
        x = images.clone().requires_grad_(True)
        lr = torch.tensor(0.02, dtype=torch.float64, requires_grad=True)
        torch.manual_seed(3)
        loss = mtt_loss(fnet, start, target, x, labels, lr, syn_steps=6, batch_syn=4,
                        augment=augmenter(STRATEGY, ParamDiffAug(align_corners=True)), checkpointed=checkpointed)
        out.append((loss, *torch.autograd.grad(loss, [x, lr])))
    for a, b in zip(*out):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def _saved_elements(fnet, start, target, images, labels, steps, checkpointed):
    """Elements of the tensors the autograd graph keeps for the backward of one mtt_loss."""
    saved = []

    def pack(t):
        saved.append(t.numel())
        return t

    x = images.clone().requires_grad_(True)
    lr = torch.tensor(0.02, dtype=torch.float64, requires_grad=True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        mtt_loss(fnet, start, target, x, labels, lr, syn_steps=steps, batch_syn=6,
                 augment=augmenter(STRATEGY, ParamDiffAug(align_corners=True)), checkpointed=checkpointed)
    return sum(saved)


def test_checkpointed_unroll_keeps_one_step_of_activations():
    _, fnet, start, target, images, labels = _setup(channel=3, classes=2, ipc=3)
    plain = [_saved_elements(fnet, start, target, images, labels, n, False) for n in (4, 8)]
    ckpt = [_saved_elements(fnet, start, target, images, labels, n, True) for n in (4, 8)]
    # the plain unroll keeps every step's activations; the checkpointed one a step's inputs
    assert plain[1] - plain[0] > 5 * (ckpt[1] - ckpt[0])


def test_functional_network_equals_the_module():
    for model, channel, size in (("ConvNetW8", 1, (28, 28)), ("ConvNetW4", 3, (32, 32)), ("MLP", 1, (28, 28))):
        torch.manual_seed(1)
        net = get_network(model, channel, 10, size).double()
        fnet = FlatNetwork(net)
        x = torch.randn(5, channel, *size, dtype=torch.float64)
        theta = fnet.flatten().requires_grad_(True)
        out = fnet(theta, x)
        torch.testing.assert_close(out, net(x), rtol=0, atol=0)
        (g,) = torch.autograd.grad(out.square().sum(), theta)
        net.zero_grad()
        net(x).square().sum().backward()
        torch.testing.assert_close(g, torch.cat([p.grad.reshape(-1) for p in net.parameters()]), rtol=0, atol=0)
        # load() puts a vector back into the module
        moved = theta.detach() * 2
        fnet.load(moved)
        torch.testing.assert_close(fnet.flatten(), moved, rtol=0, atol=0)


def test_functional_network_refuses_a_vector_of_the_wrong_size():
    fnet = FlatNetwork(get_network("ConvNetW4", 1, 10, (28, 28)))
    with pytest.raises(ValueError, match=f"{fnet.num_params} values"):
        fnet(torch.zeros(fnet.num_params + 1), torch.zeros(1, 1, 28, 28))


def _inverse_sqrt_2x2(m):
    """(M)^(-1/2) of a symmetric positive-definite 2x2 matrix, closed form:
    sqrt(M) = (M + s I) / t with s = sqrt(det M), t = sqrt(tr M + 2 s)."""
    s = torch.sqrt(torch.det(m))
    t = torch.sqrt(torch.trace(m) + 2 * s)
    root = (m + s * torch.eye(2, dtype=m.dtype)) / t
    return torch.linalg.inv(root)


def test_zca_equals_the_closed_form_on_a_small_matrix():
    x = torch.tensor([[1.0, 2.0], [3.0, 1.0], [0.0, -1.0], [2.0, 5.0], [-1.0, 0.5]], dtype=torch.float64)
    eps = 0.1
    centred = x - x.mean(0)
    cov = torch.tensor([[centred[:, 0] @ centred[:, 0], centred[:, 0] @ centred[:, 1]],
                        [centred[:, 1] @ centred[:, 0], centred[:, 1] @ centred[:, 1]]], dtype=torch.float64) / 4
    expected = _inverse_sqrt_2x2(cov + eps * torch.eye(2, dtype=torch.float64))
    torch.testing.assert_close(whitening_matrix(x, eps), expected, rtol=1e-12, atol=1e-12)
    # eps 0: the whitened rows have the identity as covariance
    w = whitening_matrix(x, 0.0)
    white = centred @ w
    torch.testing.assert_close(white.t() @ white / 4, torch.eye(2, dtype=torch.float64), rtol=0, atol=1e-12)


def test_zca_of_images_undoes_the_normalisation_and_round_trips():
    torch.manual_seed(0)
    mean, std = (0.5, 0.4), (0.2, 0.3)
    raw = torch.rand(40, 2, 2, 2, dtype=torch.float64)
    normalised = (raw - torch.tensor(mean).view(1, 2, 1, 1)) / torch.tensor(std).view(1, 2, 1, 1)
    zca = fit_zca(normalised, mean, std, eps=0.1)
    flat = raw.reshape(40, -1)
    expected = (flat - flat.mean(0)) @ whitening_matrix(flat, 0.1)
    torch.testing.assert_close(zca(normalised.float()).double().reshape(40, -1), expected, rtol=1e-4, atol=1e-4)
    again = ZCA.from_state(zca.state())
    torch.testing.assert_close(again(normalised.float()), zca(normalised.float()), rtol=0, atol=0)
