"""Trajectory matching end to end: expert files, the experts command, --method mtt in the loop
(resume exact), the main job's own experts, and the one-line errors for bad input."""
from __future__ import annotations

import json
import os
import shutil

import pytest
import torch

from dsa_fast.condense import cli, evaluate_command, experts as experts_mod
from dsa_fast.condense.methods import mtt as mtt_mod
from dsa_fast.condense.config import CondenseConfig, main_job_config
from dsa_fast.condense.data import TensorDataset, load_tensors
from dsa_fast.condense import evaluate as evaluate_mod
from dsa_fast.condense.experts import (EXPERTS_FORMAT, MANIFEST, Experts, ExpertSettings, ExpertsError, expert_path,
                                       train_experts)
from dsa_fast.condense.functional import FlatNetwork
from dsa_fast.condense.loop import RunInterrupted, condense
from dsa_fast.condense.networks import get_network
from dsa_fast.condense.rng import STREAM_EXPERT, derive_seed, global_rng_scope

from condense_helpers import _one_thread  # noqa: F401  (fixture)

MODEL = "ConvNetW4"
SETTINGS = ExpertSettings(model=MODEL, epochs=3, batch=128)


def _small(dataset, data_path, split, device, **kw):
    """The embedded subset cut to 300 training images (30 per class): experts train in a second."""
    d = load_tensors(dataset, data_path, split, device, **kw)
    if split != "train":
        return d
    keep = torch.cat([torch.nonzero(d.labels == c).flatten()[:30] for c in range(10)])
    return TensorDataset(d.images[keep], d.labels[keep], d.info)


@pytest.fixture(autouse=True)
def _small_experts(monkeypatch):
    monkeypatch.setattr(experts_mod, "load_tensors", _small)


@pytest.fixture(scope="module")
def expert_folder(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setattr(experts_mod, "load_tensors", _small)
    torch.set_num_threads(1)
    folder = str(tmp_path_factory.mktemp("experts") / "w4")
    train_experts(SETTINGS, 2, folder)
    mp.undo()
    return folder


def test_expert_files_round_trip(expert_folder):
    with open(os.path.join(expert_folder, MANIFEST)) as f:
        manifest = json.load(f)
    assert manifest["format"] == EXPERTS_FORMAT and manifest["identity"] == SETTINGS.identity()
    assert manifest["identity"]["align_corners"] is True and manifest["identity"]["zca"] is False
    train, test = _small("MNIST", None, "train", "cpu"), load_tensors("MNIST", None, "test", "cpu")
    opened = Experts(expert_folder)
    assert opened.indices == [0, 1] and opened.epochs == 3
    for k in (0, 1):
        state = torch.load(expert_path(expert_folder, k), weights_only=True)
        traj = state["trajectory"]
        net = get_network(MODEL, 1, 10, (28, 28))
        fnet = FlatNetwork(net)
        assert traj.shape == (4, fnet.num_params) == (4, manifest["num_params"]) and traj.dtype == torch.float32
        with global_rng_scope("cpu", derive_seed(0, STREAM_EXPERT, k)):  # snapshot 0: the fresh network
            fresh = FlatNetwork(get_network(MODEL, 1, 10, (28, 28)))
        assert torch.equal(traj[0], fresh.flatten())
        assert not torch.equal(traj[1], traj[0]) and not torch.equal(traj[3], traj[2])
        fnet.load(traj[-1])  # the recorded accuracy is that of the last snapshot
        assert state["test_accuracy"] == float(evaluate_mod.test_accuracy(net, test.images, test.labels))
        assert torch.equal(opened.snapshots(k, (1, 3)), traj[[1, 3]])
    assert train.images.shape[0] == 300


def test_experts_resume_expert_by_expert_exactly(expert_folder, tmp_path):
    folder = str(tmp_path / "again")
    train_experts(SETTINGS, 1, folder)  # "killed" after the first expert
    first = os.path.getmtime(expert_path(folder, 0))
    train_experts(SETTINGS, 2, folder)  # the same command: completes it
    assert os.path.getmtime(expert_path(folder, 0)) == first  # not retrained
    for k in (0, 1):
        a = torch.load(expert_path(expert_folder, k), weights_only=True)
        b = torch.load(expert_path(folder, k), weights_only=True)
        assert torch.equal(a["trajectory"], b["trajectory"]) and a["test_accuracy"] == b["test_accuracy"]
    with pytest.raises(ExpertsError, match="other settings.*epochs: folder 3 vs asked 4"):
        train_experts(ExpertSettings(model=MODEL, epochs=4, batch=128), 2, folder)


def test_experts_command(tmp_path, capsys):
    out = str(tmp_path / "cmd")
    args = ["experts", "--model", MODEL, "--experts", "1", "--epochs", "1", "--batch-train", "128", "--out", out,
            "--no-progress"]
    assert cli.main(args, prog="dsa-condense") == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("MNIST ConvNetW4: 1 expert x 1 epoch in ") and "final test accuracy" in line
    assert os.path.isfile(expert_path(out, 0))
    assert cli.main(["experts", "--model", "ConvNetW8", "--experts", "1", "--epochs", "1", "--out", out],
                    prog="dsa-condense") == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "other settings" in err and "model: folder 'ConvNetW4' vs asked 'ConvNetW8'" in err


def _config(folder, out, **kw):
    base = dict(method="mtt", experts=folder, model=MODEL, iterations=4, syn_steps=3, expert_epochs=1,
                max_start_epoch=2, lr_img=100.0, lr_lr=1e-5, eval_models=0, checkpoint_every=1, log_every=1,
                out=str(out), ipc=2)
    return CondenseConfig(**{**base, **kw})


def test_mtt_run_resumes_exactly(expert_folder, tmp_path):
    whole = condense(_config(expert_folder, tmp_path / "whole"), progress=False)

    def stop(i):  # mid-way through the expert order (two experts)
        if i == 1:
            raise KeyboardInterrupt

    with pytest.raises(RunInterrupted):
        condense(_config(expert_folder, tmp_path / "cut"), progress=False, on_iteration=stop)
    # resumed with the checkpointed unroll (not part of the run's identity): the same run, bit for bit
    resumed = condense(_config(expert_folder, tmp_path / "cut", mtt_checkpoint="on"), resume=True, progress=False)
    assert torch.equal(whole.images, resumed.images)
    assert "mtt_checkpoint" in cli._RESUME_FLAGS
    a = torch.load(tmp_path / "whole" / "checkpoint.pt", weights_only=True)["method_state"]
    b = torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=True)["method_state"]
    assert torch.equal(a["syn_lr"], b["syn_lr"]) and a["syn_lr"] != 0.01  # α was learned
    assert a["order"] == b["order"] and a["position"] == b["position"]
    assert torch.equal(a["opt_lr"]["state"][0]["momentum_buffer"], b["opt_lr"]["state"][0]["momentum_buffer"])
    for name in ("config.json", "metrics.jsonl", "synthetic.pt", "synthetic.png", "summary.json"):
        assert os.path.isfile(tmp_path / "cut" / name)
    syn = torch.load(tmp_path / "cut" / "synthetic.pt", weights_only=True)
    assert syn["lr_net"] == float(b["syn_lr"])  # the evaluation's learning rate travels with the set
    assert syn["align_corners"] is True and syn["zca"] == "off"


def test_main_job_trains_its_experts_once_and_reuses_them(tmp_path, monkeypatch):
    monkeypatch.setattr(mtt_mod, "MAIN_JOB_EXPERTS", 1)
    monkeypatch.setattr(mtt_mod, "MAIN_JOB_EXPERT_EPOCHS", 2)
    cfg = main_job_config(method="mtt", model=MODEL, iterations=1, eval_models=0, max_start_epoch=1,
                          expert_epochs=1, syn_steps=2, batch_train=128, out=str(tmp_path / "a"))
    condense(cfg, progress=False)
    folder = str(tmp_path / f"mnist-subset-experts-{MODEL}")
    assert Experts(folder).indices == [0]

    def no_training(*a, **k):
        raise AssertionError("the experts were trained again")

    monkeypatch.setattr(experts_mod, "train_expert", no_training)
    condense(cfg.replace(out=str(tmp_path / "b")), progress=False)


def _one_line_error(capsys, args, out):
    assert cli.main(args + ["--out", str(out), "--no-progress"], prog="dsa-condense") == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("dsa-condense: error: "), err
    assert not os.path.exists(out)  # nothing half-written
    return err


def _run_args(folder, *extra):
    return ["--method", "mtt", "--experts", folder, "--model", MODEL, "--iterations", "1", "--eval-models", "0",
            "--syn-steps", "2", "--expert-epochs", "1", "--max-start-epoch", "2", *extra]


def test_bad_input_gets_one_clear_line(expert_folder, tmp_path, capsys):
    out = tmp_path / "run"
    err = _one_line_error(capsys, _run_args(str(tmp_path / "nowhere")), out)
    assert "nowhere does not exist" in err
    err = _one_line_error(capsys, _run_args(expert_folder, "--model", "ConvNetW8"), out)
    assert "do not fit this run" in err and "model: folder 'ConvNetW4' vs asked 'ConvNetW8'" in err
    other = str(tmp_path / "fashion")
    shutil.copytree(expert_folder, other)
    with open(os.path.join(other, MANIFEST)) as f:
        manifest = json.load(f)
    manifest["identity"]["dataset"] = "FashionMNIST"
    with open(os.path.join(other, MANIFEST), "w") as f:
        json.dump(manifest, f)
    err = _one_line_error(capsys, _run_args(other), out)
    assert "dataset: folder 'FashionMNIST' vs asked 'MNIST'" in err
    err = _one_line_error(capsys, _run_args(expert_folder, "--zca", "on"), out)
    assert "zca: folder False vs asked True" in err
    err = _one_line_error(capsys, _run_args(expert_folder, "--max-start-epoch", "3"), out)
    assert "max_start_epoch 3 + expert_epochs 1 = 4 is beyond the 3 epochs" in err
    err = _one_line_error(capsys, _run_args(expert_folder, "--ipc", "0"), out)
    assert "ipc must be >= 1, got 0" in err
    err = _one_line_error(capsys, ["--method", "dsa", "--syn-steps", "3"], out)
    assert "syn_steps applies to method 'mtt', not 'dsa'; drop --syn-steps" in err
    err = _one_line_error(capsys, ["--method", "mtt", "--data-path", str(tmp_path)], out)
    assert "--method mtt needs --experts DIR" in err


def test_evaluate_command_trains_at_the_sets_learned_step_size(tmp_path, monkeypatch, capsys):
    seen = []

    def fake_evaluate_set(images, labels, test, *, lr, param, **kw):
        seen.append(lr)
        assert param.align_corners is True  # the set's augmentation setting
        return [0.5]

    monkeypatch.setattr(evaluate_command, "evaluate_set", fake_evaluate_set)
    path = str(tmp_path / "synthetic.pt")
    syn = {"images": torch.zeros(10, 1, 28, 28), "labels": torch.arange(10), "dataset": "MNIST",
           "data_source": "embedded", "lr_net": 0.0234, "align_corners": True, "zca": "off"}
    torch.save(syn, path)
    assert evaluate_command.main([path, "--eval-models", "1", "--baseline"], prog="dsa-evaluate") == 0
    assert seen == [0.0234, 0.01]  # the set at its α, the baseline at lr_net
    assert evaluate_command.main([path, "--eval-models", "1", "--lr-net", "0.05"], prog="dsa-evaluate") == 0
    assert seen[-1] == 0.05
    torch.save({**syn, "zca": "on"}, path)
    capsys.readouterr()
    assert evaluate_command.main([path], prog="dsa-evaluate") == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "ZCA-whitened" in err


def test_zca_experts_whiten_the_run_as_they_were_trained(expert_folder, tmp_path):
    folder = str(tmp_path / "zca")
    train_experts(ExpertSettings(model=MODEL, epochs=3, batch=128, zca=True), 1, folder)
    zca = experts_mod.load_zca(folder)
    train = _small("MNIST", None, "train", "cpu")
    assert zca.mean.shape == (784,) and torch.equal(zca.mean, torch.load(os.path.join(folder, "zca.pt"),
                                                                         weights_only=True)["mean"])
    white = zca(train.images).reshape(300, -1).double()
    cov = (white - white.mean(0)).t() @ (white - white.mean(0)) / 299
    assert cov.diagonal().max() < 1.0  # whitened (eps 0.1 keeps the variances below 1)
    plain = condense(_config(expert_folder, tmp_path / "plain", iterations=0), progress=False)
    whitened = condense(_config(folder, tmp_path / "white", iterations=0, zca="on"), progress=False)
    torch.testing.assert_close(whitened.images, zca(plain.images), rtol=0, atol=0)  # the same real images, whitened
    one = condense(_config(folder, tmp_path / "one", iterations=1, zca="on"), progress=False)
    assert torch.isfinite(one.images).all() and not torch.equal(one.images, whitened.images)
    assert torch.load(tmp_path / "one" / "synthetic.pt", weights_only=True)["zca"] == "on"
