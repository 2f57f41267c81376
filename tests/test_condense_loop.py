"""The condensation loop end to end: outputs, checkpoints, resume, reproducibility, the CLIs.

Runs are tiny (width-8 ConvNet, a few real images per class, 1-2 evaluation epochs) so the file
takes seconds on a 2-core CPU; they use real MNIST/FashionMNIST ($DSA_FAST_DATA) or the MNIST
subset shipped in the package.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch
from PIL import Image

from condense_helpers import REPO, _one_thread, shared_data  # noqa: F401
from dsa_fast.condense import CheckpointError, CondenseConfig, RunDirError, condense, main_job_config, resolve
from dsa_fast.condense.checkpoint import load_checkpoint
from dsa_fast.condense.cli import config_from_args
from dsa_fast.condense.cli import main as condense_main
from dsa_fast.evaluate import main as evaluate_main

TINY = dict(model="ConvNetW8", batch_real=8, eval_models=1, eval_epochs=2, checkpoint_every=2, log_every=1)


def tiny(out, **kw) -> CondenseConfig:
    """ipc 2 with 2 outer loops and 1 inner epoch: exercises the inner network training too."""
    base = dict(dataset="MNIST", data_path=None, ipc=2, outer_loop=2, inner_loop=1, iterations=6, eval_every=3,
                device="cpu", seed=3, out=str(out), **TINY)
    base.update(kw)
    return CondenseConfig(**base)


def read_metrics(out):
    with open(os.path.join(out, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def test_three_iteration_cli_run_writes_every_output(tmp_path, capsys):
    data = shared_data()
    out = tmp_path / "run"
    rc = condense_main(["--dataset", "MNIST", "--data-path", data, "--ipc", "1", "--iterations", "3",
                        "--model", "ConvNetW8", "--batch-real", "8", "--eval-every", "3", "--eval-models", "1",
                        "--eval-epochs", "1", "--device", "cpu", "--out", str(out), "--no-progress"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "condensed" in printed and "random real" in printed

    cfg = json.loads((out / "config.json").read_text())
    assert cfg["outer_loop"] == 1 and cfg["inner_loop"] == 1  # published loops for ipc 1
    assert cfg["strategy"] == "color_crop_cutout_scale_rotate"  # published MNIST strategy
    assert cfg["lr_img"] == 0.1 and cfg["lr_net"] == 0.01 and cfg["init"] == "real" and cfg["dis_metric"] == "ours"
    assert cfg["device"] == "cpu" and cfg["iterations"] == 3 and "torch" in cfg["meta"]

    metrics = read_metrics(out)
    assert [m["iteration"] for m in metrics] == [0, 3]
    for m in metrics:
        assert {"iteration", "accuracy_mean", "accuracy_std", "loss", "wall_seconds", "iterations_per_second"} <= set(m)
        assert 0 <= m["accuracy_mean"] <= 1 and len(m["accuracies"]) == 1
    assert metrics[0]["loss"] is None and metrics[1]["loss"] > 0 and metrics[1]["iterations_per_second"] > 0

    syn = torch.load(out / "synthetic.pt", weights_only=True)
    assert syn["images"].shape == (10, 1, 28, 28) and syn["images"].dtype == torch.float32
    assert syn["labels"].tolist() == list(range(10))
    assert syn["mean"] == [0.1307] and syn["std"] == [0.3081] and syn["dataset"] == "MNIST"

    png = Image.open(out / "synthetic.png")  # one row per class, named; 28-pixel images scaled 3x, 4-pixel gaps
    assert png.mode == "L" and png.height == 4 + 10 * (3 * 28 + 4) and png.width > 3 * 28 + 4
    assert png.text["rows"].splitlines() == [str(k) for k in range(10)]

    summary = json.loads((out / "summary.json").read_text())
    for key in ("accuracy_mean", "accuracy_std", "baseline_mean", "baseline_std", "iterations", "wall_seconds"):
        assert summary[key] is not None, key
    assert summary["iterations"] == 3 and summary["accuracy_mean"] == metrics[-1]["accuracy_mean"]
    assert load_checkpoint(str(out / "checkpoint.pt"))["iteration"] == 3


def test_fashion_mnist_with_batchnorm_model(tmp_path):
    """Another dataset and the batch-norm path of the loop (statistics from 16 real images per class)."""
    data = shared_data()
    cfg = CondenseConfig(dataset="FashionMNIST", data_path=data, ipc=1, iterations=1, model="ConvNetBN",
                         batch_real=4, eval_models=0, device="cpu", out=str(tmp_path / "fm"))
    result = condense(cfg, progress=False)
    assert result.images.shape == (10, 1, 28, 28)
    assert json.loads((tmp_path / "fm" / "config.json").read_text())["strategy"] == \
        "color_crop_cutout_flip_scale_rotate"
    assert (tmp_path / "fm" / "synthetic.png").exists() and result.summary["accuracy_mean"] is None


class Interrupt(Exception):
    pass


def _interrupt_at(k):
    def hook(i):
        if i == k:
            raise Interrupt()
    return hook


@pytest.mark.parametrize("rng", ["compat", "device"])
def test_resume_matches_an_uninterrupted_run(tmp_path, rng):
    full = condense(tiny(tmp_path / "full", rng=rng), progress=False)

    cfg = tiny(tmp_path / "cut", rng=rng)
    with pytest.raises(Interrupt):  # killed after iteration 5; the last checkpoint is at 4
        condense(cfg, progress=False, on_iteration=_interrupt_at(5))
    assert load_checkpoint(str(tmp_path / "cut" / "checkpoint.pt"))["iteration"] == 4
    resumed = condense(cfg, resume=True, progress=False)

    assert torch.equal(resumed.images, full.images)
    a, b = read_metrics(tmp_path / "full"), read_metrics(tmp_path / "cut")
    assert [m["iteration"] for m in b] == [0, 3, 6]
    for x, y in zip(a, b):
        assert x["accuracies"] == y["accuracies"] and x["loss"] == y["loss"]
    assert resumed.summary["baseline_accuracies"] == full.summary["baseline_accuracies"]
    syn_full = torch.load(tmp_path / "full" / "synthetic.pt", weights_only=True)
    syn_cut = torch.load(tmp_path / "cut" / "synthetic.pt", weights_only=True)
    assert torch.equal(syn_full["images"], syn_cut["images"])


def test_seed_decides_the_run_and_global_rng_is_left_alone(tmp_path):
    before = torch.get_rng_state()
    a = condense(tiny(tmp_path / "a", iterations=2, eval_models=0), progress=False)
    assert torch.equal(torch.get_rng_state(), before)
    b = condense(tiny(tmp_path / "b", iterations=2, eval_models=0), progress=False)
    c = condense(tiny(tmp_path / "c", iterations=2, eval_models=0, seed=4), progress=False)
    assert torch.equal(a.images, b.images) and not torch.equal(a.images, c.images)


_KILL_SCRIPT = textwrap.dedent("""
    import os, sys, time
    sys.path.insert(0, {repo!r})
    from dsa_fast.condense import CondenseConfig, condense
    cfg = CondenseConfig(**{cfg!r})
    def hook(i):
        if i == 3:  # the checkpoint at 2 is on disk; wait here to be killed
            open({ready!r}, "w").close()
            time.sleep(600)
    condense(cfg, progress=False, on_iteration=hook)
""")


def test_resume_after_sigkill(tmp_path):
    cfg = tiny(tmp_path / "killed", iterations=5, eval_every=0)
    ready = str(tmp_path / "ready")
    script = _KILL_SCRIPT.format(repo=REPO, cfg=cfg.to_dict(), ready=ready)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # one thread, as the fixture gives this process
    proc = subprocess.Popen([sys.executable, "-c", script], env=env)
    try:
        deadline = time.time() + 120
        while not os.path.exists(ready):
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.time() < deadline, "the run did not reach iteration 3 in time"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert load_checkpoint(str(tmp_path / "killed" / "checkpoint.pt"))["iteration"] == 2
    rc = condense_main(["--resume", str(tmp_path / "killed"), "--no-progress"])
    assert rc == 0
    reference = condense(tiny(tmp_path / "ref", iterations=5, eval_every=0), progress=False)
    resumed = torch.load(tmp_path / "killed" / "synthetic.pt", weights_only=True)
    assert torch.equal(resumed["images"], reference.images)
    assert json.loads((tmp_path / "killed" / "summary.json").read_text())["accuracies"] == \
        reference.summary["accuracies"]


def _checkpointed_run(tmp_path):
    cfg = tiny(tmp_path / "run", iterations=2, eval_models=0)
    with pytest.raises(Interrupt):
        condense(cfg, progress=False, on_iteration=_interrupt_at(2))
    return cfg, str(tmp_path / "run" / "checkpoint.pt")


def test_corrupt_checkpoint_is_refused(tmp_path):
    cfg, path = _checkpointed_run(tmp_path)
    data = bytearray(open(path, "rb").read())
    data[-100] ^= 0xFF
    open(path, "wb").write(bytes(data))
    with pytest.raises(CheckpointError, match="corrupt"):
        condense(cfg, resume=True, progress=False)
    open(path, "wb").write(bytes(data[: len(data) // 2]))
    with pytest.raises(CheckpointError, match="corrupt"):
        condense(cfg, resume=True, progress=False)


def test_foreign_checkpoint_is_refused(tmp_path):
    cfg, path = _checkpointed_run(tmp_path)
    torch.save({"iteration": 1}, path)
    with pytest.raises(CheckpointError, match="not a dsa_fast condense checkpoint"):
        condense(cfg, resume=True, progress=False)


def test_checkpoint_of_another_configuration_is_refused(tmp_path):
    cfg, path = _checkpointed_run(tmp_path)
    assert torch.load(path, weights_only=True)["iteration"] == 2  # a plain torch file
    with pytest.raises(CheckpointError, match="different run configuration.*seed"):
        condense(cfg.replace(seed=99), resume=True, progress=False)


def test_existing_run_folder_is_not_overwritten(tmp_path):
    cfg, _ = _checkpointed_run(tmp_path)
    with pytest.raises(RunDirError, match="--resume"):
        condense(cfg, progress=False)
    with pytest.raises(RunDirError, match="does not exist"):
        condense(cfg.replace(out=str(tmp_path / "nothing")), resume=True, progress=False)


def test_cli_presets_and_resume_flags(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    job = config_from_args({})
    assert job.replace(out=None) == main_job_config()
    assert job.out == "runs/mnist-subset-ipc1-seed0"
    seeded = config_from_args({"seed": 5, "iterations": 7})
    assert seeded.data_path is None and seeded.iterations == 7 and seeded.seed == 5
    published = config_from_args({"dataset": "CIFAR10", "data_path": "data"})
    assert published.replace(out=None) == CondenseConfig(dataset="CIFAR10", data_path="data")
    os.makedirs("runs/CIFAR10-ipc1-seed0")
    assert config_from_args({"dataset": "CIFAR10", "data_path": "data"}).out == "runs/CIFAR10-ipc1-seed0-2"
    with pytest.raises(SystemExit):
        condense_main(["--resume", "somewhere", "--iterations", "5"])
    assert "drop --iterations" in capsys.readouterr().err
    assert condense_main(["--resume", "nowhere"]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_config_resolution_and_errors():
    r = resolve(CondenseConfig(ipc=10, dataset="CIFAR100", data_path="data", device="cpu"))
    assert (r.outer_loop, r.inner_loop) == (10, 50) and r.strategy == "color_crop_cutout_flip_scale_rotate"
    assert resolve(CondenseConfig(ipc=50, device="cpu")).inner_loop == 10
    with pytest.raises(ValueError, match="--outer-loop"):
        resolve(CondenseConfig(ipc=5))
    assert resolve(CondenseConfig(ipc=5, outer_loop=3, inner_loop=2, device="cpu")).outer_loop == 3
    with pytest.raises(ValueError, match="unknown augmentation"):
        resolve(CondenseConfig(strategy="crop_blur"))
    with pytest.raises(ValueError, match="SVHN needs a data path"):
        resolve(CondenseConfig(dataset="SVHN"))


def test_evaluate_command_reproduces_the_runs_numbers(tmp_path, capsys):
    result = condense(tiny(tmp_path / "run", iterations=1, eval_every=0, eval_models=2, eval_epochs=1), progress=False)
    result_path = tmp_path / "eval.json"
    rc = evaluate_main([str(tmp_path / "run" / "synthetic.pt"), "--eval-models", "2", "--eval-epochs", "1",
                        "--device", "cpu", "--baseline", "--json", str(result_path)])
    assert rc == 0
    assert "synthetic set" in capsys.readouterr().out
    res = json.loads(result_path.read_text())
    assert res["model"] == "ConvNetW8" and res["seed"] == 3  # taken from synthetic.pt
    assert res["accuracies"] == result.summary["accuracies"]  # same seeds, same networks
    assert res["baseline_accuracies"] == result.summary["baseline_accuracies"]
    assert np.isfinite(res["accuracy_std"])
    torch.save({"something": 1}, tmp_path / "other.pt")
    assert evaluate_main([str(tmp_path / "other.pt"), "--device", "cpu"]) == 1
    assert "other.pt is not a synthetic set written by dsa_fast: no 'images', 'labels', 'dataset'" in \
        capsys.readouterr().err


def test_runs_on_device(tmp_path, device):
    """A tiny run with evaluation on every available device (CUDA where there is one)."""
    result = condense(tiny(tmp_path / "dev", iterations=2, eval_every=0, device=str(device)), progress=False)
    assert result.images.shape == (20, 1, 28, 28) and torch.isfinite(result.images).all()
    assert 0 <= result.summary["accuracy_mean"] <= 1 and 0 <= result.summary["baseline_mean"] <= 1


def test_progress_bar_and_log_lines(tmp_path, capsys, caplog):
    import logging

    condense(tiny(tmp_path / "bar", iterations=2, eval_models=0), progress=True)
    err = capsys.readouterr().err
    assert "iteration" in err and "2/2" in err and "matching loss of iteration 2" in err  # tqdm bar with the loss
    with caplog.at_level(logging.INFO, logger="dsa_fast.condense"):
        condense(tiny(tmp_path / "log", iterations=2, eval_models=0), progress=False)
    assert any("iteration 2/2" in r.getMessage() and "ETA" in r.getMessage() for r in caplog.records)
