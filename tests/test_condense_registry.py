"""The registries: a method, a dataset and a network are each added from here, with no edit
elsewhere, and run through the command line (docs/extending.md counts the places)."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from torch import nn

from condense_helpers import _one_thread, md5_of  # noqa: F401
from dsa_fast.condense import CondenseConfig, condense, resolve
from dsa_fast.condense import cli
from dsa_fast.condense.config import SETTINGS
from dsa_fast.condense.data import (Dataset, DatasetError, DatasetInfo, bad_file, checked_path, get_dataset,
                                    load_tensors, register_dataset, unregister_dataset)
from dsa_fast.condense.dm import per_sample
from dsa_fast.condense.methods import Method, method_names, register_method, unregister_method
from dsa_fast.condense.networks import POOL, get_network, has_batchnorm, register_network, unregister_network
from dsa_fast.condense.settings import Setting

RUN = ["--model", "ConvNetW8", "--batch-real", "4", "--eval-models", "0", "--device", "cpu", "--no-progress"]


class Shrink(Method):
    """A toy method: each iteration takes one SGD step (the run's ``opt_img``) on
    loss = rate * t * ||image_syn||² / 2, t the number of iterations it has done (kept in its state)."""

    name = "shrink"
    help = "toy: shrink the synthetic images"
    defaults = {"iterations": 5, "lr_img": 0.25}
    strategy = "none"
    augments = False
    settings = (Setting("shrink_rate", 1.0, "how fast the images shrink", type=float, minimum=0),)
    main_job = {"ipc": 2, "iterations": 3}

    def __init__(self, state):
        super().__init__(state)
        self.t = 1

    def iteration(self):
        s = self.state
        loss = s.config.shrink_rate * self.t * (s.image_syn ** 2).sum() / 2
        s.opt_img.zero_grad(set_to_none=True)
        loss.backward(inputs=[s.image_syn])
        s.opt_img.step()
        self.t += 1
        return loss.detach()

    def state_dict(self):
        return {"t": self.t}

    def load_state_dict(self, state):
        self.t = state["t"]


@pytest.fixture
def shrink():
    register_method(Shrink)
    try:
        yield Shrink
    finally:
        unregister_method(Shrink.name)


def literal_shrink(x0: torch.Tensor, rate: float, lr: float, iterations: int) -> torch.Tensor:
    """torch.optim.SGD(momentum=0.5) on the toy loss, written out: g = rate * t * x."""
    x, buf = x0.clone(), None
    for t in range(1, iterations + 1):
        g = rate * t * x
        buf = g.clone() if buf is None else buf * 0.5 + g
        x = x - lr * buf
    return x


def test_a_method_registered_here_runs_through_the_command(tmp_path, shrink, capsys):
    assert "shrink" in method_names()
    help_text = cli.build_parser("p").format_help()
    assert "shrink: toy: shrink the synthetic images" in help_text and "--shrink-rate" in help_text
    assert "how fast the images shrink (--method shrink only; default: 1.0)" in " ".join(help_text.split())
    assert "5 (shrink)" in " ".join(help_text.split())  # its published iterations, next to the others'
    published = resolve(CondenseConfig(method="shrink", device="cpu"))
    assert (published.iterations, published.lr_img, published.strategy) == (5, 0.25, "none")

    start = str(tmp_path / "start")
    assert cli.main(["--method", "shrink", "--iterations", "0", "--out", start] + RUN) == 0
    out = str(tmp_path / "run")
    assert cli.main(["--method", "shrink", "--shrink-rate", "0.5", "--out", out] + RUN) == 0
    saved = json.loads(open(os.path.join(out, "config.json")).read())
    assert saved["method"] == "shrink" and saved["shrink_rate"] == 0.5
    assert saved["iterations"] == 3 and saved["lr_img"] == 0.25 and saved["strategy"] == "none"
    assert saved["outer_loop"] is None and saved["ipc"] == 2  # no loops; its main job's ipc and iterations
    x0 = torch.load(os.path.join(start, "synthetic.pt"), weights_only=True)["images"]
    got = torch.load(os.path.join(out, "synthetic.pt"), weights_only=True)["images"]
    torch.testing.assert_close(got, literal_shrink(x0, 0.5, 0.25, 3), rtol=1e-6, atol=1e-6)

    # Its settings are its own: another method refuses them, and checks them.
    capsys.readouterr()
    assert cli.main(["--method", "dsa", "--shrink-rate", "2", "--out", str(tmp_path / "x")] + RUN) == 1
    assert "shrink_rate applies to method 'shrink', not 'dsa'; drop --shrink-rate" in capsys.readouterr().err
    with pytest.raises(ValueError, match="shrink_rate must be >= 0"):
        resolve(CondenseConfig(method="shrink", shrink_rate=-1.0, device="cpu"))


def test_a_registered_methods_state_resumes_with_the_run(tmp_path, shrink):
    cfg = dict(method="shrink", iterations=4, model="ConvNetW8", batch_real=4, eval_models=0, device="cpu",
               checkpoint_every=1)
    whole = condense(CondenseConfig(out=str(tmp_path / "whole"), **cfg), progress=False)

    def stop(i):
        if i == 2:
            raise KeyboardInterrupt

    part = CondenseConfig(out=str(tmp_path / "part"), **cfg)
    with pytest.raises(KeyboardInterrupt):
        condense(part, progress=False, on_iteration=stop)
    resumed = condense(part, resume=True, progress=False)
    # t (the method's state) went on from 3: a restart from 1 gives other images.
    assert torch.equal(resumed.images, whole.images)


def test_registration_is_checked(shrink):
    with pytest.raises(ValueError, match="registered already"):
        register_method(type("Other", (Shrink,), {}))

    class NoIteration(Method):
        name = "idle"

    with pytest.raises(TypeError, match="defines no iteration"):
        register_method(NoIteration)
    with pytest.raises(ValueError, match="unknown method 'idle'"):
        unregister_method("idle")


def test_the_published_methods_keep_their_config_json():
    # The shared settings in config.json's order; a method's own settings follow them.
    assert [s.name for s in SETTINGS] == [
        "method", "dataset", "data_path", "ipc", "outer_loop", "inner_loop", "iterations", "init", "strategy",
        "dis_metric", "lr_img", "lr_net", "batch_real", "batch_train", "model", "eval_every", "eval_models",
        "eval_epochs", "eval_mode", "matching", "device", "seed", "rng", "compile", "out", "checkpoint_every",
        "log_every"]
    for method in ("dsa", "dc", "dm"):
        assert list(CondenseConfig(method=method).to_dict()) == [s.name for s in SETTINGS]
    assert set(CondenseConfig().identity()) == {
        "method", "dataset", "data_path", "ipc", "outer_loop", "inner_loop", "iterations", "init", "strategy",
        "dis_metric", "lr_img", "lr_net", "batch_real", "batch_train", "model", "eval_every", "eval_models",
        "eval_epochs", "seed", "rng"}


# -- a dataset ------------------------------------------------------------------------------------

TOY_MEAN, TOY_STD = (0.25,), (0.5,)


def write_toy(root, n: int, seed: int):
    """A file format of its own: an .npz of uint8 images [N, 8, 8] and labels 0..2."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 8, 8), dtype=np.uint8)
    labels = np.arange(n) % 3
    os.makedirs(os.path.join(root, "toy"), exist_ok=True)
    np.savez(os.path.join(root, "toy", f"{seed}.npz"), images=images, labels=labels)
    return images, labels


def load_toy(name, root, split, md5s):
    (rel,) = get_dataset(name).files[split]
    path = checked_path(name, root, rel, md5s)
    try:
        with np.load(path) as z:
            return z["images"][:, None], z["labels"].astype(np.int64)
    except (OSError, ValueError, KeyError) as e:
        raise bad_file(name, path, str(e)) from e


@pytest.fixture
def toy_data(tmp_path):
    root = str(tmp_path / "data")
    train = write_toy(root, 30, 0)
    test = write_toy(root, 12, 1)
    md5 = {seed: md5_of(os.path.join(root, "toy", f"{seed}.npz")) for seed in (0, 1)}
    register_dataset(Dataset(DatasetInfo("Toy", 1, (8, 8), 3, TOY_MEAN, TOY_STD),
                             files={"train": {"toy/0.npz": md5[0]}, "test": {"toy/1.npz": md5[1]}},
                             loader=load_toy, strategy="color_crop", how_to_get="the toy files"))
    try:
        yield root, train, test
    finally:
        unregister_dataset("Toy")


def test_a_dataset_registered_here_runs_through_the_command(tmp_path, toy_data, capsys):
    root, (images, labels), _ = toy_data
    assert "Toy" in " ".join(cli.build_parser("p").format_help().split())
    t = load_tensors("Toy", root, "train", "cpu")
    want = (torch.from_numpy(images).float()[:, None] / 255 - TOY_MEAN[0]) / TOY_STD[0]
    torch.testing.assert_close(t.images, want, rtol=0, atol=1e-6)
    assert torch.equal(t.labels, torch.from_numpy(labels).long())

    out = str(tmp_path / "run")
    assert cli.main(["--dataset", "Toy", "--data-path", root, "--iterations", "2", "--model", "ConvNetW8",
                     "--batch-real", "4", "--eval-models", "1", "--eval-epochs", "1", "--device", "cpu",
                     "--no-progress", "--out", out]) == 0
    saved = json.loads(open(os.path.join(out, "config.json")).read())
    assert saved["dataset"] == "Toy" and saved["strategy"] == "color_crop"  # its published strategy
    syn = torch.load(os.path.join(out, "synthetic.pt"), weights_only=True)
    assert syn["images"].shape == (3, 1, 8, 8) and syn["labels"].tolist() == [0, 1, 2]
    summary = json.loads(open(os.path.join(out, "summary.json")).read())
    assert len(summary["accuracies"]) == 1 and len(summary["baseline_accuracies"]) == 1

    capsys.readouterr()
    assert cli.main(["--dataset", "Toy", "--out", str(tmp_path / "x"), "--device", "cpu"]) == 1
    assert "Toy needs a data path" in capsys.readouterr().err
    with open(os.path.join(root, "toy", "1.npz"), "ab") as f:
        f.write(b"x")
    with pytest.raises(DatasetError, match="not the original file.*Replace it with the toy files"):
        load_tensors("Toy", root, "test", "cpu")


# -- a network ------------------------------------------------------------------------------------


class Tiny(nn.Module):
    """A toy network: flatten -> Linear(.., 6) -> ReLU (embed) -> Linear(6, classes); counts its
    embeddings."""

    per_sample = True
    embeds = 0

    def __init__(self, channel, num_classes, im_size):
        super().__init__()
        self.fc = nn.Linear(channel * im_size[0] * im_size[1], 6)
        self.out = nn.Linear(6, num_classes)

    def embed(self, x):
        Tiny.embeds += 1
        return torch.relu(self.fc(x.flatten(1)))

    def forward(self, x):
        return self.out(self.embed(x))


def test_a_network_registered_here_runs_through_the_command(tmp_path, capsys):
    register_network("Tiny", Tiny)
    try:
        assert "ResNet18BN_AP, Tiny" in " ".join(cli.build_parser("p").format_help().split())
        Tiny.embeds = 0
        out = str(tmp_path / "run")
        assert cli.main(["--method", "dm", "--model", "Tiny", "--iterations", "2", "--batch-real", "4",
                         "--eval-models", "0", "--device", "cpu", "--no-progress", "--out", out]) == 0
        # Declared per sample: every class in one embedding of the real and one of the synthetic
        # images per iteration (the per-class loop would take 2 x 10).
        assert Tiny.embeds == 2 * 2
        assert json.loads(open(os.path.join(out, "config.json")).read())["model"] == "Tiny"
    finally:
        unregister_network("Tiny")
    with pytest.raises(ValueError, match="unknown model 'Tiny'"):
        resolve(CondenseConfig(model="Tiny", device="cpu"))


def test_a_network_must_say_whether_it_is_per_sample():
    class Undeclared(nn.Module):
        def embed(self, x):
            return x

    with pytest.raises(TypeError, match="must declare per_sample"):
        register_network("Undeclared", Undeclared)
    assert "Undeclared" not in POOL


FAMILY = ["ConvNetW8", "ConvNetD2", "ConvNetAS", "ConvNetAL", "ConvNetNN", "ConvNetLN", "ConvNetGN", "ConvNetNP",
          "ConvNetMP", "ConvNetBN"]


@pytest.mark.parametrize("name", FAMILY + sorted(POOL))
def test_per_sample_declarations_are_true(name):
    """A network that passes for per sample embeds a batch as its images one by one (float64, train
    mode: what distribution matching relies on); batch norm does not, and is caught."""
    torch.manual_seed(0)
    net = get_network(name, 1, 10, (28, 28)).double().train()
    x = torch.randn(3, 1, 28, 28, dtype=torch.float64)
    with torch.no_grad():
        together = net.embed(x)
        alone = torch.cat([net.embed(x[i:i + 1]) for i in range(3)]) if per_sample(net) else None
    assert per_sample(net) == (not has_batchnorm(net))
    if alone is not None:
        torch.testing.assert_close(together, alone, rtol=1e-10, atol=1e-12)
