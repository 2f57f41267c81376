"""The condensation and evaluation commands as a user meets them: interruption and resume, the
messages that say what to do next, console wording, checkpoint and synthetic-set files, bad
devices and folders, which data is read, program names and progress lines.

Runs are tiny (width-8 ConvNet, the embedded MNIST subset, a few iterations); the interruption tests
run the real command in a subprocess and signal it.
"""
from __future__ import annotations

import io
import json
import logging
import os
import queue
import re
import runpy
import shlex
import struct
import signal
import subprocess
import sys
import textwrap
import threading
import time
import warnings
import zipfile

import numpy as np
import pytest
import torch

from condense_helpers import REPO, _one_thread  # noqa: F401
from dsa_fast.condense import CheckpointError, CondenseConfig, condense
from dsa_fast.condense import cli, evaluate_command
from dsa_fast.condense.checkpoint import CHECKPOINT_FORMAT, LEGACY_MAGIC, load_checkpoint
from dsa_fast.condense.loop import loss_note
from dsa_fast.condense.progress import Progress, format_seconds, plural

PROG = "python -m dsa_fast.condense"
# ipc 2 with 2 outer loops and an inner epoch: the image momentum and the inner training both carry
# state across iterations, so a resume that lost any of it would not match.
TINY = ["--ipc", "2", "--outer-loop", "2", "--inner-loop", "1", "--model", "ConvNetW8", "--batch-real", "8",
        "--eval-every", "0", "--eval-models", "1", "--eval-epochs", "1", "--device", "cpu", "--seed", "3",
        "--log-every", "1", "--no-progress"]


def run_cli(args, capsys=None):
    rc = cli.main(list(args), prog=PROG)
    return (rc, capsys.readouterr()) if capsys is not None else rc


def config_of(args) -> CondenseConfig:
    """The configuration the command builds from ``args``."""
    given = vars(cli.build_parser(PROG).parse_args(list(args)))
    given.pop("progress")
    return cli.config_from_args(given)


def synthetic(out):
    return torch.load(os.path.join(out, "synthetic.pt"), weights_only=True)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted 6-iteration run that every interrupted one must reproduce."""
    out = str(tmp_path_factory.mktemp("ref") / "run")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert cli.main(TINY + ["--iterations", "6", "--checkpoint-every", "100", "--out", out], prog=PROG) == 0
    finally:
        torch.set_num_threads(threads)
    return out


# -- 1. Ctrl-C, SIGTERM, SIGHUP ---------------------------------------------------------------

# The command itself, with one change: the 4th iteration stalls (as a long iteration would) so the
# signal reliably lands mid-iteration. ``second`` also sends a second SIGINT while the checkpoint
# is being written.
_INTERRUPTED_RUN = textwrap.dedent("""
    import os, signal, sys, time
    sys.path.insert(0, {repo!r})
    import torch
    torch.set_num_threads(1)
    from dsa_fast.condense import checkpoint, cli, loop

    step = loop._Run.step
    def stalling_step(self):
        if self.iteration == 3:
            time.sleep(120)
        step(self)
    loop._Run.step = stalling_step

    if {second!r}:
        write = checkpoint.atomic_write_bytes
        def write_under_fire(path, data):
            if path.endswith("checkpoint.pt"):  # only the interruption writes one before the end
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.3)  # the handler runs here: the write must go on
            write(path, data)
        checkpoint.atomic_write_bytes = write_under_fire

    sys.exit(cli.main({argv!r}, prog={prog!r}))
""")


def _run_until_line(argv, marker, signum, second=False):
    """Start the command, wait for ``marker`` in its stderr, send ``signum``; -> (rc, stderr lines)."""
    script = _INTERRUPTED_RUN.format(repo=REPO, argv=argv, prog=PROG, second=second)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, stderr=subprocess.PIPE, text=True)
    lines: "queue.Queue[str]" = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(line) for line in proc.stderr], daemon=True)
    reader.start()
    seen = []
    try:
        deadline = time.time() + 120
        while not any(marker in line for line in seen):
            assert time.time() < deadline, f"no {marker!r} line in time: {seen}"
            try:
                seen.append(lines.get(timeout=0.5))
            except queue.Empty:
                assert proc.poll() is None, f"the run ended before it was interrupted: {seen}"
        proc.send_signal(signum)
        rc = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    reader.join(timeout=10)
    while not lines.empty():
        seen.append(lines.get())
    return rc, [line.rstrip("\n") for line in seen]


@pytest.mark.parametrize("signum,code,second", [(signal.SIGINT, 130, False), (signal.SIGTERM, 143, False),
                                                (signal.SIGHUP, 129, False), (signal.SIGINT, 130, True)],
                         ids=["sigint", "sigterm", "sighup", "sigint-twice"])
def test_interrupt_writes_last_complete_iteration_and_resume_is_exact(tmp_path, reference, signum, code, second):
    out = str(tmp_path / "run")
    # No periodic checkpoint before the end: only the interruption can write one.
    argv = TINY + ["--iterations", "6", "--checkpoint-every", "100", "--out", out]
    rc, err = _run_until_line(argv, "iteration 3/6", signum, second)

    assert rc == code, err
    assert not any("Traceback" in line for line in err), err
    if second:
        assert any("still writing the checkpoint" in line for line in err), err
    last = err[-1]
    name = signal.Signals(signum).name
    assert last == (f"{PROG}: interrupted ({name}); checkpoint of iteration 3/6 written to "
                    f"{os.path.join(out, 'checkpoint.pt')}; resume with: {PROG} --resume {shlex.quote(out)}")
    state = torch.load(os.path.join(out, "checkpoint.pt"), weights_only=True)  # a plain torch file
    assert state["iteration"] == 3 and state["format"] == CHECKPOINT_FORMAT
    assert not [f for f in os.listdir(out) if f.endswith(".tmp")]  # no temporary file left behind

    resume_argv = shlex.split(last.split("resume with: ", 1)[1])[len(shlex.split(PROG)):]
    assert run_cli(resume_argv + ["--no-progress"]) == 0  # the printed command, as printed
    # Bitwise: the checkpoint holds every state the remaining iterations read (images, momentum,
    # generators, loss accumulators), and both processes run one CPU thread.
    assert torch.equal(synthetic(out)["images"], synthetic(reference)["images"])
    done, ref = (json.load(open(os.path.join(d, "summary.json"))) for d in (out, reference))
    assert done["accuracies"] == ref["accuracies"] and done["baseline_accuracies"] == ref["baseline_accuracies"]


def _run_in_a_terminal_then_close_it(argv, marker):
    """Start the command with a pseudo-terminal as its controlling terminal and stdin/stdout/stderr,
    wait for ``marker`` on it, then close the terminal as a user closing the window does (the kernel
    sends SIGHUP, and later writes to the terminal fail). -> (rc, what the terminal showed)."""
    import fcntl
    import pty
    import termios
    script = _INTERRUPTED_RUN.format(repo=REPO, argv=argv, prog=PROG, second=False)
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-c", script], env={**os.environ, "OMP_NUM_THREADS": "1"},
                            stdin=slave, stdout=slave, stderr=slave, start_new_session=True,
                            preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0))
    os.close(slave)
    shown = ""
    try:
        deadline = time.time() + 120
        while marker not in shown:
            assert time.time() < deadline and proc.poll() is None, f"no {marker!r} in time: {shown}"
            try:
                shown += os.read(master, 4096).decode(errors="replace")
            except OSError:  # EIO: the process is gone
                break
        os.close(master)
        rc = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    return rc, shown


def test_closing_the_terminal_writes_the_checkpoint_and_resume_is_exact(tmp_path, reference):
    out = str(tmp_path / "run")
    argv = TINY + ["--iterations", "6", "--checkpoint-every", "100", "--out", out]
    rc, shown = _run_in_a_terminal_then_close_it(argv, "iteration 3/6")
    assert rc == 128 + signal.SIGHUP, shown  # the resume line had no terminal to go to: no traceback either
    assert torch.load(os.path.join(out, "checkpoint.pt"), weights_only=True)["iteration"] == 3
    assert not [f for f in os.listdir(out) if f.endswith(".tmp")]
    assert run_cli(["--resume", out, "--no-progress"]) == 0
    assert torch.equal(synthetic(out)["images"], synthetic(reference)["images"])


def test_interrupt_before_the_first_iteration_keeps_a_resumable_folder(tmp_path, reference):
    out = str(tmp_path / "run")
    argv = TINY + ["--iterations", "6", "--checkpoint-every", "100", "--out", out]
    # "data:" is logged after config.json is written and before iteration 1 ends (it stalls at 4).
    rc, err = _run_until_line(argv, "data: ", signal.SIGINT)
    assert rc == 130 and f"resume with: {PROG} --resume {out}" in err[-1], err
    # the state of iteration 0 is copied before "data:" is reported; the run may have gone on since
    assert load_checkpoint(os.path.join(out, "checkpoint.pt"))["iteration"] in (0, 1, 2, 3)
    assert run_cli(["--resume", out, "--no-progress"]) == 0
    assert torch.equal(synthetic(out)["images"], synthetic(reference)["images"])


# -- 2. Every message points somewhere that works ---------------------------------------------


class Stop(Exception):
    pass


def _stop_at(k):
    def hook(i):
        if i == k:
            raise Stop()
    return hook


def test_folder_without_checkpoint_resumes_from_iteration_0(tmp_path, reference, capsys, caplog):
    out = str(tmp_path / "run")
    cfg = config_of(TINY + ["--iterations", "6", "--checkpoint-every", "100", "--out", out])
    with pytest.raises(Stop):  # a crash (not an interrupt) after iteration 2: config.json, no checkpoint
        condense(cfg, progress=False, on_iteration=_stop_at(2))
    assert os.path.isfile(os.path.join(out, "config.json")) and not os.path.exists(os.path.join(out, "checkpoint.pt"))

    rc, io_ = run_cli(["--out", out] + TINY + ["--iterations", "6"], capsys)
    assert rc == 1 and f"continue it with --resume {out}" in io_.err
    with caplog.at_level(logging.INFO, logger="dsa_fast.condense"):
        assert run_cli(["--resume", out, "--no-progress"]) == 0
    assert any("no checkpoint yet: from iteration 0" in r.getMessage() for r in caplog.records)
    assert torch.equal(synthetic(out)["images"], synthetic(reference)["images"])


def test_resume_of_a_missing_or_empty_folder_points_to_out(tmp_path, capsys):
    for out in (str(tmp_path / "missing"), str(tmp_path / "empty")):
        if out.endswith("empty"):
            os.makedirs(out)
        rc, io_ = run_cli(["--resume", out], capsys)
        assert rc == 1 and f"start a new run with --out {out}" in io_.err, io_.err
        assert len(io_.err.strip().splitlines()) == 1
        assert run_cli(TINY + ["--iterations", "1", "--eval-models", "0", "--out", out]) == 0


def test_corrupt_checkpoint_message_leads_to_a_run_that_works(tmp_path, capsys):
    out = str(tmp_path / "run")
    args = TINY + ["--iterations", "2", "--eval-models", "0", "--out", out]
    assert run_cli(args) == 0
    first = synthetic(out)["images"]
    os.remove(os.path.join(out, "summary.json"))  # as if killed during the end of the run
    path = os.path.join(out, "checkpoint.pt")
    open(path, "wb").write(open(path, "rb").read()[:1000])
    rc, io_ = run_cli(["--resume", out], capsys)
    assert rc == 1 and "corrupt" in io_.err and f"delete it and resume with --resume {out}" in io_.err
    os.remove(path)
    assert run_cli(["--resume", out, "--no-progress"]) == 0
    assert torch.equal(synthetic(out)["images"], first)


def test_finished_run_messages(tmp_path, capsys):
    out = str(tmp_path / "run")
    args = TINY + ["--iterations", "1", "--eval-models", "0", "--out", out]
    assert run_cli(args) == 0
    capsys.readouterr()
    rc, io_ = run_cli(args, capsys)
    assert rc == 1 and "already holds a finished run" in io_.err and "choose another --out" in io_.err
    assert run_cli(["--resume", out]) == 0  # nothing to do, and says so


# -- 3. Console wording -----------------------------------------------------------------------


def test_loss_and_count_wording():
    assert loss_note(25.86, 101, 120) == "mean matching loss over iterations 101-120: 25.8600"
    assert loss_note(3.5, 7, 7) == "matching loss of iteration 7: 3.5000"
    assert plural(1, "image") == "1 image" and plural(2, "image") == "2 images" and plural(0, "model") == "0 models"
    assert plural(2, "training pass") == "2 training passes"
    assert format_seconds(59.6) == "1:00" and format_seconds(3725) == "1:02:05" and format_seconds(float("nan")) == "?"


def test_progress_log_lines(caplog):
    ticks = iter(range(0, 100, 2))
    with caplog.at_level(logging.INFO, logger="dsa_fast.condense"):
        with Progress(5, desc="step", unit="it", log_every=2, bar=False, clock=lambda: float(next(ticks))) as p:
            for _ in range(5):
                p.update(1, "note")
    lines = [r.getMessage() for r in caplog.records]
    # the clock advances two seconds per reading: once at the start, once per reported line
    assert lines == ["step 2/5  note  1.00 it/s  ETA 0:03", "step 4/5  note  1.00 it/s  ETA 0:01",
                     "step 5/5  note  0.83 it/s  ETA 0:00"]


def test_console_names_each_loss_by_its_iterations(tmp_path, caplog, capsys):
    out = str(tmp_path / "run")
    with caplog.at_level(logging.INFO, logger="dsa_fast.condense"):
        rc = run_cli(["--ipc", "1", "--model", "ConvNetW8", "--batch-real", "8", "--iterations", "3",
                      "--eval-every", "0", "--eval-models", "1", "--eval-epochs", "1", "--device", "cpu",
                      "--log-every", "1", "--no-progress", "--out", out])
    assert rc == 0
    msgs = [r.getMessage() for r in caplog.records]
    per_iteration = []
    for i in (1, 2, 3):
        (line,) = [m for m in msgs if m.startswith(f"iteration {i}/3 ")]
        assert f"matching loss of iteration {i}: " in line and "it/s" in line and "ETA" in line
        per_iteration.append(float(line.split(f"iteration {i}: ")[1].split()[0]))
    (final,) = [m for m in msgs if m.startswith("iteration 3: accuracy")]
    assert "over 1 model;" in final and "mean matching loss over iterations 1-3: " in final
    mean = float(final.split("iterations 1-3: ")[1])
    assert mean == pytest.approx(sum(per_iteration) / 3, abs=2e-4)  # the same quantity, averaged
    metrics = [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl"))]
    assert f"{metrics[-1]['loss']:.4f}" == f"{mean:.4f}"
    assert any(m.startswith("random real baseline (1 image per class)") for m in msgs)
    # the evaluations report their training passes too (one line per network without a terminal)
    for what in ("evaluation at iteration 3", "random real baseline"):
        assert len([m for m in msgs if m.startswith(f"{what}: training pass 2/2  ")]) == 1, msgs
    assert any("at 1 image per class for 3 iterations" in m for m in msgs)


# -- 4. Checkpoint and synthetic-set files ----------------------------------------------------


def test_checkpoint_is_a_torch_file_and_bit_rot_is_refused(tmp_path, capsys):
    out = str(tmp_path / "run")
    assert run_cli(TINY + ["--iterations", "2", "--eval-models", "0", "--out", out]) == 0
    path = os.path.join(out, "checkpoint.pt")
    state = torch.load(path, weights_only=True)
    assert state["iteration"] == 2 and torch.equal(state["image_syn"], synthetic(out)["images"])

    # Flip one byte inside the stored synthetic images: torch.load would read it silently.
    data = bytearray(open(path, "rb").read())
    zf = zipfile.ZipFile(io.BytesIO(bytes(data)))
    member = max((i for i in zf.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    name_len, extra_len = struct.unpack_from("<HH", data, member.header_offset + 26)  # the local header's
    offset = member.header_offset + 30 + name_len + extra_len
    data[offset + member.file_size // 2] ^= 0x01
    open(path, "wb").write(bytes(data))
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(path)


def test_earlier_checkpoint_layout_still_resumes(tmp_path):
    import hashlib

    full = str(tmp_path / "full")
    assert run_cli(TINY + ["--iterations", "4", "--eval-models", "0", "--out", full]) == 0
    out = str(tmp_path / "old")
    cfg = config_of(TINY + ["--iterations", "4", "--eval-models", "0", "--checkpoint-every", "2", "--out", out])
    with pytest.raises(Stop):
        condense(cfg, progress=False, on_iteration=_stop_at(2))
    path = os.path.join(out, "checkpoint.pt")
    payload = open(path, "rb").read()  # rewrite it in the earlier layout: magic, JSON header, payload
    header = {"version": 1, "payload_bytes": len(payload), "sha256": hashlib.sha256(payload).hexdigest()}
    open(path, "wb").write(LEGACY_MAGIC + json.dumps(header).encode() + b"\n" + payload)
    assert load_checkpoint(path)["iteration"] == 2
    condense(cfg, resume=True, progress=False)
    assert torch.equal(synthetic(out)["images"], synthetic(full)["images"])


def test_evaluate_says_what_is_not_a_synthetic_set(tmp_path, capsys):
    out = str(tmp_path / "run")
    assert run_cli(TINY + ["--iterations", "1", "--eval-models", "0", "--out", out]) == 0
    capsys.readouterr()
    text = tmp_path / "notes.txt"
    text.write_text("hello\n")
    torch.save(torch.nn.Linear(2, 2), tmp_path / "module.pt")  # needs weights_only=False
    torch.save([torch.zeros(1)], tmp_path / "list.pt")
    cases = {
        str(text): "it is not a file written by torch.save, or it is truncated",
        str(tmp_path / "module.pt"): "it holds Python objects other than tensors and plain data",
        str(tmp_path / "list.pt"): "it holds a list, not the dict of a synthetic set",
        os.path.join(out, "checkpoint.pt"): f"it is a run checkpoint; evaluate {os.path.join(out, 'synthetic.pt')}",
    }
    for path, why in cases.items():
        assert evaluate_command.main([path, "--device", "cpu"], prog="python -m dsa_fast.evaluate") == 1
        err = capsys.readouterr().err
        assert err == f"python -m dsa_fast.evaluate: error: {path} is not a synthetic set written by dsa_fast: {why}\n"


# -- 5. Devices, folders, data, program names, progress ---------------------------------------


@pytest.mark.parametrize("device", ["mps", "cuda:7", "foo", "meta"])
def test_unavailable_device_is_one_line_exit_2(tmp_path, capsys, device):
    if device == "cuda:7" and torch.cuda.device_count() > 7:
        device = "cuda:99"
    rc, io_ = run_cli(["--device", device, "--out", str(tmp_path / "r")], capsys)
    assert rc == 2 and io_.err.startswith(f"{PROG}: error: argument --device: ") and "devices here: cpu" in io_.err
    assert len(io_.err.strip().splitlines()) == 1 and not os.path.exists(tmp_path / "r")
    assert evaluate_command.main(["x.pt", "--device", device], prog="ev") == 2
    assert capsys.readouterr().err.startswith("ev: error: argument --device: ")


@pytest.mark.parametrize("seed", [str(2**70), str(2**63), "-1"])
def test_seed_out_of_range_is_one_line_exit_2(tmp_path, capsys, seed):
    out = str(tmp_path / "r")
    for call, prog, argv in ((cli.main, PROG, TINY + ["--out", out]), (evaluate_command.main, "ev", ["x.pt"])):
        with pytest.raises(SystemExit) as e:
            call(argv + ["--seed", seed], prog=prog)
        err = capsys.readouterr().err.strip().splitlines()
        assert e.value.code == 2 and err[-1] == f"{prog}: error: argument --seed: must be an integer in " \
                                                  f"[0, 2**63 - 1], got {seed}", err
    assert not os.path.exists(out)
    with pytest.raises(ValueError, match=r"^dsa_fast.condense: seed must be an integer in \[0, 2\*\*63 - 1\], "
                                         rf"got {seed}$"):
        condense(CondenseConfig(seed=int(seed), out=out))  # the library call: before anything is written
    assert not os.path.exists(out)


def test_unwritable_out_is_one_line(tmp_path, capsys, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("")
    rc, io_ = run_cli(TINY + ["--iterations", "1", "--out", str(blocker / "run")], capsys)
    assert rc == 1 and io_.err == f"{PROG}: error: cannot write the run folder {blocker / 'run'}: {blocker} is a " \
                                  f"file, not a folder\n"

    def refuse(path, *a, **k):  # a read-only folder, also for root (who passes every access check)
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(os, "makedirs", refuse)
    rc, io_ = run_cli(TINY + ["--iterations", "1", "--out", str(tmp_path / "ro")], capsys)
    assert rc == 1 and io_.err == f"{PROG}: error: cannot write the run folder {tmp_path / 'ro'}: Permission denied\n"


def test_data_comes_from_data_path_only(tmp_path, monkeypatch, capsys, caplog):
    monkeypatch.chdir(tmp_path)
    os.makedirs("data/MNIST/raw")  # a ./data folder must not change what --dataset MNIST reads
    for name in ("train-images-idx3-ubyte.gz", "t10k-images-idx3-ubyte.gz"):
        open(os.path.join("data/MNIST/raw", name), "wb").write(b"junk")
    with caplog.at_level(logging.INFO, logger="dsa_fast.condense"):
        rc = run_cli(["--dataset", "MNIST", "--iterations", "1", "--model", "ConvNetW8", "--batch-real", "8",
                      "--eval-models", "0", "--device", "cpu", "--out", "r", "--no-progress"])
    assert rc == 0
    assert json.load(open("r/config.json"))["data_path"] is None
    assert any(r.getMessage().startswith("data: the embedded MNIST subset") for r in caplog.records)
    rc, io_ = run_cli(["--dataset", "MNIST", "--data-path", "data", "--iterations", "1", "--device", "cpu",
                       "--out", "r2"], capsys)
    assert rc == 1 and "MNIST/raw/train-images-idx3-ubyte.gz is corrupt" in io_.err  # the files it was told
    rc, io_ = run_cli(["--dataset", "FashionMNIST", "--device", "cpu"], capsys)
    assert rc == 1 and "FashionMNIST needs a data path (--data-path DIR" in io_.err


def _help(call, argv0, capsys):
    old = sys.argv
    sys.argv = [argv0, "--help"]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # runpy: module already imported
            with pytest.raises(SystemExit) as e:
                call()
    finally:
        sys.argv = old
    assert e.value.code == 0
    return capsys.readouterr().out


def test_program_name_follows_the_invocation(capsys):
    # The console script calls the entry point named in pyproject.toml with sys.argv as the shell set it.
    text = open(os.path.join(REPO, "pyproject.toml")).read()
    assert 'dsa-condense = "dsa_fast.condense.cli:main"' in text
    out = _help(cli.main, "/opt/venv/bin/dsa-condense", capsys)
    assert out.startswith("usage: dsa-condense ") and "--resume RUN_DIR" in out
    out = _help(cli.main, "/somewhere/dsa_fast/condense/__main__.py", capsys)  # the module, however started
    assert out.startswith("usage: python -m dsa_fast.condense ")
    out = _help(lambda: runpy.run_module("dsa_fast.condense", run_name="__main__"), "-m", capsys)
    assert out.startswith("usage: python -m dsa_fast.condense ")
    out = _help(lambda: runpy.run_module("dsa_fast.evaluate", run_name="__main__"), "-m", capsys)
    assert out.startswith("usage: python -m dsa_fast.evaluate ")


def test_evaluate_reports_progress_without_a_terminal(tmp_path, capsys):
    out = str(tmp_path / "run")
    assert run_cli(TINY + ["--iterations", "1", "--eval-models", "0", "--out", out]) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "dsa_fast.evaluate", os.path.join(out, "synthetic.pt"),
                           "--eval-models", "2", "--eval-epochs", "1", "--device", "cpu", "--baseline"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    err = proc.stderr.splitlines()
    # The first line: the planned work, then the time all of it (and --quick) takes at the first pass's speed.
    plan = (f"evaluating {os.path.join(out, 'synthetic.pt')} (20 images): 2 ConvNetW8 networks x 2 training passes, "
            f"on the set and on as many random real images (8 passes in all), each network then tested on 2000 "
            f"images of the embedded MNIST subset; ")
    assert err[0].startswith(plan), err
    assert re.fullmatch(r"2 training passes took \d+\.\d\d s, so about \d+:\d\d in all "
                        r"\(--quick: about (\d+:)?\d+:\d\d\)", err[0][len(plan):]), err[0]
    # Then a line per network (the first network's is the plan line, whose estimate it gives)
    for what, counts in (("synthetic set", ["4/4"]), ("random real baseline", ["2/4", "4/4"])):
        lines = [line for line in err if line.startswith(f"{what}: training pass ")]
        assert [line.split()[len(what.split()) + 2] for line in lines] == counts, err
        assert all("pass/s" in line and "ETA" in line for line in lines)
    assert "synthetic set" in proc.stdout and "random real baseline" in proc.stdout

    # On a terminal (forced here) the same counts drive a tqdm bar.
    assert evaluate_command.main([os.path.join(out, "synthetic.pt"), "--eval-models", "1", "--eval-epochs", "1",
                              "--device", "cpu", "--progress"], prog="ev") == 0
    err = capsys.readouterr().err
    assert "synthetic set: training pass" in err and "2/2" in err


def test_evaluate_quick_is_the_main_jobs_evaluation(tmp_path, capsys, monkeypatch):
    out = str(tmp_path / "run")
    assert run_cli(TINY + ["--iterations", "1", "--eval-models", "0", "--out", out]) == 0
    syn = os.path.join(out, "synthetic.pt")
    asked = []

    def counts(images, labels, test, *, n_models, epochs, **kw):  # what the command would train
        asked.append((n_models, epochs))
        return []

    monkeypatch.setattr(evaluate_command, "evaluate_set", counts)
    main_job, published = cli.main_job_config(), CondenseConfig()
    for argv, want in ((["--quick"], (main_job.eval_models, main_job.eval_epochs)),
                       ([], (published.eval_models, published.eval_epochs)),
                       (["--quick", "--eval-models", "2"], (2, main_job.eval_epochs))):
        assert evaluate_command.main([syn, "--device", "cpu", "--no-progress"] + argv, prog="ev") == 0
        assert asked.pop() == want
    assert (main_job.eval_models, main_job.eval_epochs) == (5, 300)  # what the help and the docs say
    help_text = " ".join(evaluate_command.build_parser("ev").format_help().split())
    assert "--quick the main job's evaluation: 5 networks x 301 passes instead of the published 20 x 1001" in help_text


def test_png_of_a_saved_set_is_a_labelled_grid_scaled_up(tmp_path, capsys):
    from PIL import Image
    from dsa_fast.condense.data import INFO, denormalize
    from dsa_fast.condense.outputs import save_synthetic

    info = INFO["FashionMNIST"]
    images = torch.randn(20, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    labels = torch.arange(10).repeat(2)
    path, png = str(tmp_path / "synthetic.pt"), str(tmp_path / "set.png")
    save_synthetic(path, images, labels, info)
    assert evaluate_command.main([path, "--png", png], prog="ev") == 0
    assert capsys.readouterr().out == f"{png}: 20 FashionMNIST images, one row per class\n"

    picture = Image.open(png)
    names = ["0 T-shirt/top", "1 Trouser", "2 Pullover", "3 Dress", "4 Coat", "5 Sandal", "6 Shirt", "7 Sneaker",
             "8 Bag", "9 Ankle boot"]
    assert picture.mode == "L" and picture.text["rows"].splitlines() == names
    cell, gap = 3 * 28, 4  # 28-pixel images scaled 3x, 4 white pixels around each
    left = picture.width - 2 * (cell + gap)  # the names' column
    assert left > 0 and picture.height == gap + 10 * (cell + gap)
    pixels = np.asarray(picture)
    expected = denormalize(images, info.mean, info.std).clamp(0, 1).mul(255).round().to(torch.uint8)[:, 0].numpy()
    for k in range(10):
        top = gap + k * (cell + gap)
        for j, n in enumerate(torch.nonzero(labels == k).flatten().tolist()):
            tile = pixels[top:top + cell, left + j * (cell + gap):left + j * (cell + gap) + cell]
            assert np.array_equal(tile, expected[n].repeat(3, axis=0).repeat(3, axis=1)), (k, j)
        name = pixels[top:top + cell, :left]
        assert (name < 128).any()  # the row's name is written beside it
    assert len({pixels[gap + k * (cell + gap):gap + k * (cell + gap) + cell, :left].tobytes() for k in range(10)}) == 10


@pytest.mark.parametrize("threads", [1, 2])
def test_first_line_says_the_threads(tmp_path, caplog, threads):
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with caplog.at_level(logging.INFO, logger="dsa_fast.condense"):
            assert run_cli(TINY + ["--iterations", "1", "--eval-models", "0", "--out", str(tmp_path / "r")]) == 0
    finally:
        torch.set_num_threads(before)
    first = caplog.records[0].getMessage()
    assert first.startswith("condensing MNIST at 2 images per class for 1 iteration on cpu (") and \
        f" ({threads} thread{'' if threads == 1 else 's'}" in first, first
