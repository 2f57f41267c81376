"""The method registry: a method is added from here, with no edit elsewhere, and run through the
command line (docs/extending.md counts the places)."""
from __future__ import annotations

import json
import os

import pytest
import torch

from condense_helpers import _one_thread  # noqa: F401
from dsa_fast.condense import CondenseConfig, condense, resolve
from dsa_fast.condense import cli
from dsa_fast.condense.config import SETTINGS
from dsa_fast.condense.methods import Method, method_names, register_method, unregister_method
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

