"""The cross-architecture model pool: official parameter counts, shapes, embed, one training step,
and use from the condense and evaluate commands."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from condense_helpers import _one_thread  # noqa: F401
from dsa_fast.condense import CondenseConfig, condense
from dsa_fast.condense.config import resolve
from dsa_fast.condense.networks import POOL, check_model_name, get_network
from dsa_fast.evaluate import main as evaluate_main

# Published: parameter counts of the official definitions for 10 classes, measured by building them
# (torch 2.13): (1x28x28, 3x32x32).
OFFICIAL_PARAMS = {
    "MLP": (118_282, 411_146),
    "LeNet": (61_706, 62_006),
    "AlexNet": (1_865_802, 1_872_202),
    "AlexNetBN": (1_867_722, 1_874_122),
    "VGG11": (9_229_962, 9_231_114),
    "VGG11BN": (9_229_962, 9_231_114),
    "ResNet18": (11_172_810, 11_173_962),
    "ResNet18BN": (11_172_810, 11_173_962),
    "ResNet18BN_AP": (11_213_770, 11_250_762),
    "ConvNet": (317_706, 320_010),
    "ConvNetW32": (24_138, 24_714),
}
# Width of embed(x) at the official shapes.
EMBED_DIM = {
    "MLP": (128, 128), "LeNet": (84, 84), "AlexNet": (3072, 3072), "AlexNetBN": (3072, 3072),
    "VGG11": (512, 512), "VGG11BN": (512, 512), "ResNet18": (512, 512), "ResNet18BN": (512, 512),
    "ResNet18BN_AP": (512 * 9, 512 * 16), "ConvNet": (2048, 2048), "ConvNetW32": (512, 512),
}
SHAPES = [(1, 28), (3, 32), (1, 32), (3, 28)]


def n_params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def test_the_pool_is_complete():
    assert set(POOL) | {"ConvNet", "ConvNetW32"} == set(OFFICIAL_PARAMS)


@pytest.mark.parametrize("name", sorted(OFFICIAL_PARAMS))
def test_official_parameter_counts(name):
    assert n_params(get_network(name, 1, 10, (28, 28))) == OFFICIAL_PARAMS[name][0]
    assert n_params(get_network(name, 3, 10, (32, 32))) == OFFICIAL_PARAMS[name][1]


def test_structures():
    le = get_network("LeNet", 1, 10, (28, 28))
    assert le.features[0].padding == (2, 2) and get_network("LeNet", 3, 10, (32, 32)).features[0].padding == (0, 0)
    alex = get_network("AlexNet", 1, 10, (28, 28))
    assert alex.features[0].padding == (4, 4) and alex.features[0].out_channels == 128
    assert not any(isinstance(m, nn.BatchNorm2d) for m in alex.modules())
    assert sum(isinstance(m, nn.BatchNorm2d) for m in get_network("AlexNetBN", 3, 10, (32, 32)).modules()) == 5
    vgg = get_network("VGG11", 1, 10, (28, 28))
    convs = [m for m in vgg.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 128, 256, 256, 512, 512, 512, 512] and convs[0].padding == (3, 3)
    assert get_network("VGG11", 3, 10, (32, 32)).features[0].padding == (1, 1)
    gns = [m for m in vgg.modules() if isinstance(m, nn.GroupNorm)]
    assert len(gns) == 8 and all(g.num_groups == g.num_channels for g in gns)  # instance norm
    assert sum(isinstance(m, nn.BatchNorm2d) for m in get_network("VGG11BN", 1, 10, (28, 28)).modules()) == 8
    res = get_network("ResNet18", 3, 10, (32, 32))
    assert res.conv1.bias is None and isinstance(res.bn1, nn.GroupNorm)
    assert sum(isinstance(m, nn.Conv2d) for m in res.modules()) == 20  # 1 + 16 + 3 shortcuts
    assert all(m.bias is None for m in res.modules() if isinstance(m, nn.Conv2d))
    strides = [m.stride for m in res.modules() if isinstance(m, nn.Conv2d)]
    assert strides.count((2, 2)) == 6  # first conv and shortcut of stages 2-4
    ap = get_network("ResNet18BN_AP", 3, 10, (32, 32))
    assert all(m.stride == (1, 1) for m in ap.modules() if isinstance(m, nn.Conv2d))
    assert sum(isinstance(m, nn.AvgPool2d) for m in ap.modules()) == 3  # in the three shortcuts
    assert isinstance(get_network("ResNet18BN", 3, 10, (32, 32)).bn1, nn.BatchNorm2d)


@pytest.mark.parametrize("name", sorted(OFFICIAL_PARAMS))
@pytest.mark.parametrize("channel, size", SHAPES)
def test_builds_embeds_and_trains(name, channel, size):
    torch.manual_seed(0)
    net = get_network(name, channel, 10, (size, size))
    x = torch.randn(4, channel, size, size)
    y = torch.tensor([0, 1, 2, 3])
    net.train()
    logits = net(x)
    assert logits.shape == (4, 10)
    emb = net.embed(x)
    assert emb.dim() == 2 and emb.shape[0] == 4
    if (channel, size) in ((1, 28), (3, 32)):
        assert emb.shape[1] == EMBED_DIM[name][0 if channel == 1 else 1]
    # embed is what the final Linear reads
    last = [m for m in net.modules() if isinstance(m, nn.Linear)][-1]
    assert emb.shape[1] == last.in_features
    torch.testing.assert_close(last(emb), logits)
    before = [p.detach().clone() for p in net.parameters()]
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    loss = F.cross_entropy(net(x), y)
    assert torch.isfinite(loss)
    opt.zero_grad()
    loss.backward()
    opt.step()
    changed = [not torch.equal(b, p) for b, p in zip(before, net.parameters())]
    assert sum(changed) >= len(changed) - 2, f"{name}: only {sum(changed)} of {len(changed)} parameters moved"
    assert torch.isfinite(net(x)).all()


def test_model_names_are_checked():
    for name in POOL:
        check_model_name(name)
    with pytest.raises(ValueError, match="ResNet18BN_AP"):
        check_model_name("ResNet34")
    with pytest.raises(ValueError, match="unknown model"):
        resolve(CondenseConfig(model="VGG16", device="cpu"))
    assert resolve(CondenseConfig(model="LeNet", device="cpu")).model == "LeNet"


@pytest.mark.parametrize("method", ["dsa", "dm"])
def test_pool_model_in_a_run(tmp_path, method):
    cfg = CondenseConfig(method=method, dataset="MNIST", data_path=None, ipc=1, iterations=1, model="LeNet",
                         batch_real=4, eval_models=1, eval_epochs=1, device="cpu", out=str(tmp_path / method))
    result = condense(cfg, progress=False)
    assert torch.isfinite(result.images).all() and result.summary["model"] == "LeNet"
    assert 0 <= result.summary["accuracy_mean"] <= 1


def test_cross_architecture_evaluation(tmp_path, capsys):
    cfg = CondenseConfig(method="dm", dataset="MNIST", data_path=None, ipc=1, iterations=1, model="ConvNetW8",
                         batch_real=4, eval_models=0, device="cpu", out=str(tmp_path / "run"))
    condense(cfg, progress=False)
    out = tmp_path / "cross.json"
    models = ["ConvNetW8", "MLP", "LeNet"]
    rc = evaluate_main([str(tmp_path / "run" / "synthetic.pt"), "--models", ",".join(models), "--eval-models", "2",
                        "--eval-epochs", "1", "--device", "cpu", "--json", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    res = json.loads(out.read_text())
    assert list(res["per_model"]) == models
    for m in models:
        r = res["per_model"][m]
        assert len(r["accuracies"]) == 2 and all(0 <= a <= 1 for a in r["accuracies"])
        assert r["accuracy_mean"] == pytest.approx(sum(r["accuracies"]) / 2)
        assert m in printed
    # the same seed trains the same networks as a single-model evaluation
    single = tmp_path / "single.json"
    assert evaluate_main([str(tmp_path / "run" / "synthetic.pt"), "--model", "MLP", "--eval-models", "2",
                          "--eval-epochs", "1", "--device", "cpu", "--json", str(single)]) == 0
    assert json.loads(single.read_text())["accuracies"] == res["per_model"]["MLP"]["accuracies"]
    all_accs = [a for m in models for a in res["per_model"][m]["accuracies"]]
    assert res["accuracy_mean"] == pytest.approx(sum(all_accs) / len(all_accs))
    assert evaluate_main([str(tmp_path / "run" / "synthetic.pt"), "--models", "MLP,Nope", "--device", "cpu"]) == 1
    assert "unknown model" in capsys.readouterr().err
