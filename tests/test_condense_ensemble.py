"""Ensemble evaluation (dsa_fast.condense.ensemble) against the sequential path, its oracle."""
from __future__ import annotations

import dataclasses

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from condense_helpers import _one_thread  # noqa: F401
from dsa_fast import ParamDiffAug
from dsa_fast.condense import ensemble
from dsa_fast.condense.data import INFO, TensorDataset
from dsa_fast.condense.ensemble import model_supports_ensemble, supports_ensemble, train_ensemble
from dsa_fast.condense.evaluate import evaluate_set, train_network
from dsa_fast.condense.networks import get_network
from dsa_fast.condense.rng import global_rng_scope

STRATEGY = "color_crop_cutout_flip_scale_rotate"
SEEDS = [11, 2024, 7]
# 12 images in batches of 5 (two full batches and one of 2); epochs 4: passes 0..4, the last one
# after the learning-rate decay (after pass 3).
KW = dict(num_classes=4, epochs=4, lr=0.01, batch_train=5, strategy=STRATEGY)


def _set(dtype, n=12, channel=3, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, channel, size, size, generator=g, dtype=dtype)
    return x, torch.arange(n) % 4


def _sequential(x, y, model, seeds, **kw):
    nets = []
    for s in seeds:
        with global_rng_scope("cpu", s):
            nets.append(train_network(x, y, model=model, param=ParamDiffAug(), **{**KW, **kw}))
    return nets


@pytest.mark.parametrize("model", ["ConvNetW8", "ConvNetGN", "ConvNetLN", "ConvNetNN", "ConvNetAS", "ConvNetMP",
                                   "ConvNetNP", "ConvNetD1"])
def test_ensemble_weights_equal_the_sequential_networks_float64(model):
    size = 8 if model != "ConvNetW8" else 16  # the pool names are width 128: tiny images keep it quick
    x, y = _set(torch.float64, size=size)
    _, params = train_ensemble(x, y, model=model, seeds=SEEDS, param=ParamDiffAug(), **KW)
    nets = _sequential(x, y, model, SEEDS)
    initial = get_network(model, 3, 4, (size, size))
    for k, net in enumerate(nets):
        for name, p in net.named_parameters():
            assert params[name].dtype == torch.float64
            torch.testing.assert_close(params[name][k], p.detach(), rtol=0, atol=1e-6)
        # and training moved them (the comparison is not between two initialisations)
        moved = max((p.detach() - q.double()).abs().max().item()
                    for p, q in zip(net.parameters(), initial.parameters()))
        assert moved > 1e-4


def test_each_network_keeps_its_own_stream_whatever_the_ensemble():
    """Network k's result does not depend on which other networks train beside it."""
    x, y = _set(torch.float64)
    _, three = train_ensemble(x, y, model="ConvNetW8", seeds=SEEDS, param=ParamDiffAug(), **KW)
    _, one = train_ensemble(x, y, model="ConvNetW8", seeds=SEEDS[1:2], param=ParamDiffAug(), **KW)
    for name in three:
        torch.testing.assert_close(three[name][1], one[name][0], rtol=0, atol=1e-12)
        assert not torch.equal(three[name][0], three[name][1])


def test_ensemble_restores_the_callers_rng_state():
    x, y = _set(torch.float32)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    train_ensemble(x, y, model="ConvNetW8", seeds=SEEDS, param=ParamDiffAug(), **{**KW, "epochs": 1})
    assert torch.equal(torch.rand(3), expected)


def _test_set(n=64, size=16, seed=1):
    g = torch.Generator().manual_seed(seed)
    info = dataclasses.replace(INFO["CIFAR10"], im_size=(size, size), num_classes=4)
    return TensorDataset(torch.randn(n, 3, size, size, generator=g), torch.arange(n) % 4, info)


def test_evaluate_set_ensemble_accuracies_equal_sequential_float32(monkeypatch):
    x, y = _set(torch.float32)
    test = _test_set()
    kw = dict(n_models=5, seed=3, model="ConvNetW8", epochs=3, lr=0.01, batch_train=5, strategy=STRATEGY)
    seq = evaluate_set(x, y, test, mode="sequential", **kw)
    ens = evaluate_set(x, y, test, mode="ensemble", **kw)
    auto = evaluate_set(x, y, test, **kw)
    assert len(seq) == 5 and len(set(seq)) > 1  # different networks
    # float32: the stacked convolutions sum in another order; a test image on a near tie could flip.
    assert ens == pytest.approx(seq, abs=1.5 / 64)
    assert auto == ens
    # groups of networks (a small image budget) change nothing
    monkeypatch.setattr(ensemble, "ENSEMBLE_IMAGES_CPU", 10)  # 2 networks per group of 5-image batches
    assert ensemble.group_size(12, 5, torch.device("cpu")) == 2
    assert evaluate_set(x, y, test, mode="ensemble", **kw) == ens
    monkeypatch.setattr(ensemble, "ENSEMBLE_IMAGES_CPU", 25)  # all 5 in one group
    assert ensemble.group_size(12, 5, torch.device("cpu")) == 5
    assert evaluate_set(x, y, test, mode="ensemble", **kw) == ens


def test_progress_hook_counts_network_epochs():
    x, y = _set(torch.float32)
    test = _test_set(n=8)
    kw = dict(n_models=3, seed=0, model="ConvNetW8", epochs=2, lr=0.01, batch_train=5, strategy=STRATEGY)
    for mode in ("ensemble", "sequential"):
        done = []
        evaluate_set(x, y, test, mode=mode, on_pass=done.append, **kw)
        assert sum(done) == 3 * (2 + 1)


def test_batchnorm_falls_back_to_the_sequential_path():
    assert not supports_ensemble(get_network("ConvNetBN", 3, 4, (8, 8)))
    assert not model_supports_ensemble("ConvNetBN", 3, 4, (8, 8))
    for model in ("ConvNet", "ConvNetW8", "ConvNetGN", "ConvNetLN", "ConvNetNN", "ConvNetD1"):
        assert model_supports_ensemble(model, 3, 4, (8, 8)), model
    x, y = _set(torch.float32, size=8)
    test = _test_set(n=16, size=8)
    kw = dict(n_models=2, seed=0, model="ConvNetBN", epochs=1, lr=0.01, batch_train=5, strategy=STRATEGY)
    assert evaluate_set(x, y, test, **kw) == evaluate_set(x, y, test, mode="sequential", **kw)
    with pytest.raises(ValueError, match="ConvNetBN cannot train as an ensemble"):
        evaluate_set(x, y, test, mode="ensemble", **kw)
    with pytest.raises(ValueError, match="unknown evaluation mode 'both'"):
        evaluate_set(x, y, test, mode="both", **kw)


class _CountConvolutions(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.convolutions = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten.convolution.default:
            self.convolutions += 1
        return func(*args, **(kwargs or {}))


def test_ensemble_launches_one_convolution_per_layer_for_all_networks():
    """Depth-3 net, 12 images in batches of 5 (3 batches), 2 passes: 3 x 3 x 2 forward
    convolutions whatever the number of networks; the sequential path pays that per network."""
    x, y = _set(torch.float32)
    counts = {}
    for e in (1, 4):
        with _CountConvolutions() as mode:
            train_ensemble(x, y, model="ConvNetW8", seeds=list(range(e)), param=ParamDiffAug(),
                           **{**KW, "epochs": 1})
        counts[e] = mode.convolutions
    with _CountConvolutions() as mode:
        _sequential(x, y, "ConvNetW8", list(range(4)), epochs=1)
    assert counts == {1: 18, 4: 18}
    assert mode.convolutions == 4 * 18
