"""Distribution matching: the loss against literal per-class implementations, the batched path,
op counts, the DM and DC runs (defaults, resume, what DC changes)."""
from __future__ import annotations

import json
from collections import Counter

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from condense_helpers import _one_thread  # noqa: F401
from dsa_fast import DiffAugment, ParamDiffAug
from dsa_fast.condense import CondenseConfig, condense
from dsa_fast.condense.checkpoint import load_checkpoint
from dsa_fast.condense.cli import config_from_args
from dsa_fast.condense.config import main_job_config, resolve
from dsa_fast.condense.dm import dm_loss, dm_loss_per_class, per_sample
from dsa_fast.condense.networks import get_network

STRATEGY = "color_crop_cutout_flip_scale_rotate"


def literal_dm_loss(net, reals, syns, seeds, strategy, param=None):
    """main_DM.py, literally, for networks without batch norm: per class, two DiffAugment calls
    with the class's seed (reference backend), embed, squared distance of the means."""
    loss = torch.tensor(0.0, dtype=syns[0].dtype)
    for real, syn, seed in zip(reals, syns, seeds):
        img_real = DiffAugment(real, strategy, seed=seed, param=param, backend="reference")
        img_syn = DiffAugment(syn, strategy, seed=seed, param=param, backend="reference")
        output_real = net.embed(img_real).detach()
        output_syn = net.embed(img_syn)
        loss = loss + torch.sum((torch.mean(output_real, dim=0) - torch.mean(output_syn, dim=0)) ** 2)
    return loss


def literal_dm_loss_bn(net, reals, syns, seeds, strategy, param=None):
    """main_DM.py, literally, for batch-norm networks: every class in one forward, then per class."""
    k, n, ipc = len(reals), reals[0].shape[0], syns[0].shape[0]
    real_all, syn_all = [], []
    for real, syn, seed in zip(reals, syns, seeds):
        real_all.append(DiffAugment(real, strategy, seed=seed, param=param, backend="reference"))
        syn_all.append(DiffAugment(syn, strategy, seed=seed, param=param, backend="reference"))
    output_real = net.embed(torch.cat(real_all)).detach()
    output_syn = net.embed(torch.cat(syn_all))
    return torch.sum((torch.mean(output_real.reshape(k, n, -1), dim=1)
                      - torch.mean(output_syn.reshape(k, ipc, -1), dim=1)) ** 2)


def make_case(name, k=3, n=6, ipc=2, channel=1, size=28, seed=0):
    torch.manual_seed(seed)
    net = get_network(name, channel, k, (size, size)).double()
    net.train()
    for p in net.parameters():
        p.requires_grad_(False)
    reals = [torch.randn(n, channel, size, size, dtype=torch.float64) for _ in range(k)]
    syn = torch.randn(k * ipc, channel, size, size, dtype=torch.float64, requires_grad=True)
    syns = [syn[c * ipc:(c + 1) * ipc] for c in range(k)]
    seeds = [11 + 7 * c for c in range(k)]
    return net, reals, syn, syns, seeds


def value_and_grad(fn, net, reals, syn, syns, seeds, strategy=STRATEGY):
    loss = fn(net, reals, syns, seeds, strategy, ParamDiffAug())
    (g,) = torch.autograd.grad(loss, syn)
    return loss.detach(), g


@pytest.mark.parametrize("name", ["ConvNetW8", "ConvNetGN", "ConvNetNN", "ConvNetLN", "MLP", "LeNet"])
@pytest.mark.parametrize("strategy", [STRATEGY, "none", "crop_scale"])
def test_dm_loss_equals_the_literal_per_class_loop(name, strategy):
    net, reals, syn, syns, seeds = make_case(name)
    want = value_and_grad(literal_dm_loss, net, reals, syn, syns, seeds, strategy)
    got = value_and_grad(dm_loss, net, reals, syn, syns, seeds, strategy)
    assert want[0] > 0
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)
    loop = value_and_grad(dm_loss_per_class, net, reals, syn, syns, seeds, strategy)
    torch.testing.assert_close(loop, want, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", ["ConvNetBN", "AlexNetBN"])
def test_dm_loss_of_batchnorm_nets_is_the_official_mixed_batch(name):
    net, reals, syn, syns, seeds = make_case(name)
    want = value_and_grad(literal_dm_loss_bn, net, reals, syn, syns, seeds)
    got = value_and_grad(dm_loss, net, reals, syn, syns, seeds)
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)
    # and it is not the per-class loop: batch statistics over all classes
    per_class = value_and_grad(literal_dm_loss, net, reals, syn, syns, seeds)
    assert not torch.allclose(per_class[0], want[0])


@pytest.mark.parametrize("name", ["VGG11", "ResNet18", "AlexNet"])
def test_batched_equals_per_class_for_pool_nets_with_instance_norm(name):
    net, reals, syn, syns, seeds = make_case(name, k=2, n=3, ipc=1, channel=3, size=32)
    assert per_sample(net)
    torch.testing.assert_close(value_and_grad(dm_loss, net, reals, syn, syns, seeds),
                               value_and_grad(dm_loss_per_class, net, reals, syn, syns, seeds), rtol=1e-9, atol=1e-12)


def test_unequal_class_sizes():
    net, reals, syn, syns, seeds = make_case("ConvNetW8")
    reals = [reals[0], reals[1][:4], reals[2][:1]]
    torch.testing.assert_close(value_and_grad(dm_loss, net, reals, syn, syns, seeds),
                               value_and_grad(literal_dm_loss, net, reals, syn, syns, seeds), rtol=1e-9, atol=1e-12)


def test_per_sample_detection():
    assert per_sample(get_network("ConvNetW8", 1, 10, (28, 28)))
    assert per_sample(get_network("ResNet18", 1, 10, (28, 28)))
    for name in ("ConvNetBN", "VGG11BN", "ResNet18BN_AP"):
        assert not per_sample(get_network(name, 1, 10, (28, 28)))

    class Mixer(torch.nn.Module):  # couples the samples: must take the per-class loop
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(4, 3)

        def embed(self, x):
            e = self.lin(x.flatten(1))
            return e - e.mean(0)

    net = Mixer().double()
    assert not per_sample(net)
    reals = [torch.randn(5, 1, 2, 2, dtype=torch.float64) + c for c in range(3)]
    syn = torch.randn(3, 1, 2, 2, dtype=torch.float64, requires_grad=True)
    syns = [syn[c:c + 1] for c in range(3)]
    torch.testing.assert_close(value_and_grad(dm_loss, net, reals, syn, syns, [1, 2, 3], "none"),
                               value_and_grad(literal_dm_loss, net, reals, syn, syns, [1, 2, 3], "none"))


class OpCounter(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.counts = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.counts[str(func.overloadpacket.__name__)] += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("k", [2, 5])
def test_one_forward_per_side_whatever_the_number_of_classes(k):
    """ConvNet depth 3: 3 convolutions for all real images and 3 for all synthetic ones in the
    batched path (the per-class loop: 6 per class); no value is read back to the host."""
    net, reals, syn, syns, seeds = make_case("ConvNetW8", k=k)
    param = ParamDiffAug(rng="device")
    with OpCounter() as batched:
        loss = dm_loss(net, reals, syns, seeds, STRATEGY, param)
    with OpCounter() as loop:
        dm_loss_per_class(net, reals, syns, seeds, STRATEGY, param)
    assert batched.counts["convolution"] == 6
    assert loop.counts["convolution"] == 6 * k
    with OpCounter() as backward:
        loss.backward()
    assert backward.counts["convolution_backward"] == 3
    for counts in (batched.counts, backward.counts):
        assert counts["_local_scalar_dense"] == 0 and counts["item"] == 0


# -- runs ------------------------------------------------------------------------------------------

TINY = dict(dataset="MNIST", data_path=None, model="ConvNetW8", batch_real=8, eval_models=1, eval_epochs=1,
            device="cpu", seed=3, checkpoint_every=2, log_every=1)


def test_method_defaults_are_the_published_ones(tmp_path, monkeypatch):
    r = resolve(CondenseConfig(method="dm", device="cpu"))
    assert (r.lr_img, r.iterations, r.batch_real, r.init) == (1.0, 20000, 256, "real")
    assert r.strategy == "color_crop_cutout_flip_scale_rotate" and r.outer_loop is None
    assert resolve(CondenseConfig(method="dm", ipc=7, device="cpu")).ipc == 7  # no loop table needed
    d = resolve(CondenseConfig(device="cpu"))
    assert (d.lr_img, d.iterations, d.strategy) == (0.1, 1000, "color_crop_cutout_scale_rotate")
    assert resolve(CondenseConfig(method="dc", device="cpu")).lr_img == 0.1
    assert resolve(CondenseConfig(method="dm", lr_img=3.0, iterations=5, device="cpu")).lr_img == 3.0
    with pytest.raises(ValueError, match="do not apply"):
        resolve(CondenseConfig(method="dm", outer_loop=2, inner_loop=1, device="cpu"))
    with pytest.raises(ValueError, match="unknown method"):
        resolve(CondenseConfig(method="nosuch"))
    monkeypatch.chdir(tmp_path)
    job = config_from_args({"method": "dm"})
    assert job.replace(out=None) == main_job_config(method="dm")
    assert job.method == "dm" and job.ipc == 10 and job.data_path is None and job.out == "runs/mnist-subset-dm-ipc10-seed0"
    assert config_from_args({"method": "dm", "dataset": "CIFAR10", "data_path": "d"}).replace(out=None) == \
        CondenseConfig(method="dm", dataset="CIFAR10", data_path="d")


def test_dm_run_writes_resolved_config(tmp_path):
    cfg = CondenseConfig(method="dm", ipc=2, iterations=2, eval_every=0, out=str(tmp_path / "dm"), **TINY)
    result = condense(cfg, progress=False)
    saved = json.loads((tmp_path / "dm" / "config.json").read_text())
    assert saved["method"] == "dm" and saved["lr_img"] == 1.0 and saved["iterations"] == 2
    assert saved["strategy"] == "color_crop_cutout_flip_scale_rotate"
    assert result.summary["method"] == "dm" and 0 <= result.summary["accuracy_mean"] <= 1
    metrics = [json.loads(line) for line in (tmp_path / "dm" / "metrics.jsonl").read_text().splitlines()]
    assert metrics[-1]["loss"] > 0


class Interrupt(Exception):
    pass


def test_dm_run_resumes_exactly(tmp_path):
    def cfg(out):
        return CondenseConfig(method="dm", ipc=2, iterations=6, eval_every=3, out=str(out), **TINY)

    full = condense(cfg(tmp_path / "full"), progress=False)

    def hook(i):
        if i == 5:
            raise Interrupt()

    with pytest.raises(Interrupt):
        condense(cfg(tmp_path / "cut"), progress=False, on_iteration=hook)
    assert load_checkpoint(str(tmp_path / "cut" / "checkpoint.pt"))["iteration"] == 4
    resumed = condense(cfg(tmp_path / "cut"), resume=True, progress=False)
    assert torch.equal(resumed.images, full.images)
    assert [m["iteration"] for m in resumed.metrics] == [0, 3, 6]
    assert [(m["loss"], m["accuracies"]) for m in resumed.metrics] == [(m["loss"], m["accuracies"]) for m in full.metrics]
    assert resumed.summary["accuracies"] == full.summary["accuracies"]


def test_dc_is_dsa_without_augmentation_in_the_iteration(tmp_path):
    base = dict(ipc=2, outer_loop=2, inner_loop=1, iterations=2, **{**TINY, "eval_models": 0})
    dc = condense(CondenseConfig(method="dc", out=str(tmp_path / "dc"), **base), progress=False)
    dsa_plain = condense(CondenseConfig(method="dsa", strategy="none", out=str(tmp_path / "plain"), **base),
                         progress=False)
    dsa = condense(CondenseConfig(method="dsa", out=str(tmp_path / "dsa"), **base), progress=False)
    assert torch.equal(dc.images, dsa_plain.images)
    assert not torch.equal(dc.images, dsa.images)
    # the run's strategy is kept for evaluation
    assert json.loads((tmp_path / "dc" / "config.json").read_text())["strategy"] == "color_crop_cutout_scale_rotate"
