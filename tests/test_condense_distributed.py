"""One condensation on several processes (torch.distributed, gloo on the CPU): the same synthetic set
and metrics as one process, resume with the same or another number of processes, a process that
dies. docs/distributed.md.

The jobs are tiny (width-8 ConvNet, the embedded MNIST subset, 4 iterations of ipc 2 with an inner
epoch) and run as real commands: ``torchrun --standalone --nproc-per-node 2 -m dsa_fast.condense``,
or two ``python`` processes given the torchrun environment by hand (``WORLD_SIZE``, ``RANK``, ...)
when a test kills one of them. One thread per process, as the in-process reference run.

Tolerance: every class's gradient rows are non-zero on one process only, so the all-reduce of the
image gradient adds exact zeros; what can differ from one process is how a process computes its own
classes (for DM one forward of its classes instead of all: another batch size for the same
per-sample arithmetic) and the order in which the matching loss, a sum over classes, is summed. The
set is allowed 1e-5 (absolute, on normalised images), the loss a relative 1e-5, an accuracy one test
image (none when the sets are bit-equal, as they have been for gradient matching).
"""
from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from condense_helpers import REPO, _one_thread  # noqa: F401
from dsa_fast.condense import cli
from dsa_fast.condense.checkpoint import load_checkpoint
from dsa_fast.condense.config import load_config
from dsa_fast.condense.distributed import SINGLE, Processes

PROG = "python -m dsa_fast.condense"
FLAGS = ["--ipc", "2", "--outer-loop", "2", "--inner-loop", "1", "--iterations", "4", "--eval-every", "0",
         "--model", "ConvNetW8", "--batch-real", "8", "--eval-models", "2", "--eval-epochs", "1",
         "--eval-mode", "sequential", "--seed", "3", "--checkpoint-every", "2", "--log-every", "1", "--device", "cpu",
         "--no-progress"]
DM_FLAGS = ["--method", "dm", "--ipc", "2", "--iterations", "3", "--eval-every", "0", "--model", "ConvNetW8",
            "--batch-real", "8", "--eval-models", "2", "--eval-epochs", "1", "--eval-mode", "sequential", "--seed", "5",
            "--device", "cpu", "--no-progress"]
TEST_IMAGES = 2000  # the embedded subset's test set: one image is 5e-4 of accuracy
LAUNCH_TIMEOUT = 150  # seconds: far above a job's time on a loaded 2-core machine, and bounded


def _env(**extra) -> dict:
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1",
               DSA_FAST_DIST_TIMEOUT="60")
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    env.update(extra)
    return env


def torchrun(n: int, args, cwd, logs, script=None, **env) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc-per-node n -m dsa_fast.condense args`` (or ``script args``);
    each process's output goes to ``logs/<run>/attempt_0/<local rank>/std{out,err}.log``."""
    what = ["-m", "dsa_fast.condense"] if script is None else [str(script)]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(n),
           "--log-dir", str(logs), "--redirects", "3", *what, *args]
    return subprocess.run(cmd, cwd=cwd, env=_env(**env), capture_output=True, text=True, timeout=LAUNCH_TIMEOUT)


def rank_log(logs, rank: int, stream: str) -> str:
    found = glob.glob(os.path.join(str(logs), "**", str(rank), f"{stream}.log"), recursive=True)
    assert len(found) == 1, found
    with open(found[0]) as f:
        return f.read()


def one_process(out, flags):
    """The reference: the same command in this process (one thread, no torch.distributed)."""
    assert cli.main([*flags, "--out", str(out)], prog=PROG) == 0


def synthetic(out) -> torch.Tensor:
    return torch.load(os.path.join(str(out), "synthetic.pt"), weights_only=True)["images"]


def metrics(out):
    with open(os.path.join(str(out), "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def summary(out):
    with open(os.path.join(str(out), "summary.json")) as f:
        return json.load(f)


def assert_same_run(a, b) -> None:
    """Run folders ``a`` (one process) and ``b`` end with the same set and metrics (module tolerance)."""
    xa, xb = synthetic(a), synthetic(b)
    diff = float((xa - xb).abs().max())
    assert diff <= 1e-5, f"synthetic sets differ by {diff}"
    image = 0.0 if diff == 0 else 1.0 / TEST_IMAGES
    ma, mb = metrics(a), metrics(b)
    assert [m["iteration"] for m in ma] == [m["iteration"] for m in mb]
    for x, y in zip(ma, mb):
        assert x["accuracies"] == pytest.approx(y["accuracies"], abs=image + 1e-12), (x, y)
        assert (x["loss"] is None) == (y["loss"] is None)
        if x["loss"] is not None:
            assert x["loss"] == pytest.approx(y["loss"], rel=1e-5)
    sa, sb = summary(a), summary(b)
    assert sa["accuracies"] == pytest.approx(sb["accuracies"], abs=image + 1e-12)
    assert sa["baseline_accuracies"] == sb["baseline_accuracies"]  # real images: no set involved


# -- launching by hand ---------------------------------------------------------------------------

# The command itself, with a hook that sends the process of rank $DIE_RANK the signal $DIE_SIGNAL
# once its iteration $DIE_AT is complete: SIGKILL (dies, no handler, no goodbye) or SIGSTOP (hangs).
# It first writes the time into the file $DIE_STAMP.
_COMMAND = textwrap.dedent("""
    import os, signal, sys, time
    from dsa_fast.condense import cli
    run = cli.condense
    def condense(*args, **kwargs):
        if os.environ["RANK"] == os.environ["DIE_RANK"]:
            def hook(i):
                if i == int(os.environ["DIE_AT"]):
                    with open(os.environ["DIE_STAMP"], "w") as f:
                        f.write(repr(time.time()))
                    os.kill(os.getpid(), getattr(signal, os.environ["DIE_SIGNAL"]))
            kwargs["on_iteration"] = hook
        return run(*args, **kwargs)
    cli.condense = condense
    sys.exit(cli.main(sys.argv[1:], prog={prog!r}))
""")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_by_hand(script, args, cwd, die_rank: int, die_at: int, how: str = "SIGKILL", **env):
    """Two processes with the environment torchrun would give them; (returncodes, stderrs, seconds
    from the signal to the end of the last other process). The process of ``die_rank`` gets the
    signal ``how`` after its iteration ``die_at``; one still there at the end (stopped) is killed."""
    port = str(_free_port())
    stamp = os.path.join(str(cwd), "signalled-at")
    procs = [subprocess.Popen([sys.executable, str(script), *args], cwd=cwd, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True,
                              env=_env(WORLD_SIZE="2", RANK=str(r), LOCAL_RANK=str(r), MASTER_ADDR="127.0.0.1",
                                       MASTER_PORT=port, DIE_RANK=str(die_rank), DIE_AT=str(die_at),
                                       DIE_SIGNAL=how, DIE_STAMP=stamp, **env))
             for r in range(2)]
    errs = {}
    try:
        for r, p in enumerate(procs):
            if r != die_rank:
                errs[r] = p.communicate(timeout=LAUNCH_TIMEOUT)[1]
        ended = time.time()
        seconds = None
        if os.path.exists(stamp):
            with open(stamp) as f:
                seconds = ended - float(f.read())
        if 0 <= die_rank < len(procs):
            if how == "SIGSTOP":
                procs[die_rank].kill()
            errs[die_rank] = procs[die_rank].communicate(timeout=LAUNCH_TIMEOUT)[1]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return [p.returncode for p in procs], [errs.get(r, "") for r in range(len(procs))], seconds


# -- the division of work ---------------------------------------------------------------------


@pytest.mark.parametrize("n,size", [(10, 1), (10, 2), (10, 3), (100, 8), (3, 3), (2, 5)])
def test_share_is_a_balanced_contiguous_partition(n, size):
    parts = [Processes(r, size).share(n) for r in range(size)]
    assert [i for p in parts for i in p] == list(range(n))  # every item once, in order
    assert max(map(len, parts)) - min(map(len, parts)) <= 1


def test_one_process_is_the_identity():
    x = torch.ones(3, requires_grad=True)
    x.grad = torch.full((3,), 2.0)
    SINGLE.sum_grad(x)
    y = x.detach()
    assert torch.equal(x.grad, torch.full((3,), 2.0)) and SINGLE.sum(y) is y
    assert SINGLE.gather([0, 1], [0.5, 0.25], 2) == [0.5, 0.25] and SINGLE.on_writer(lambda v: v + 1, 1) == 2
    assert SINGLE.device("cuda:3") == "cuda:3" and SINGLE.saved_device("cuda:3") == "cuda:3"
    with pytest.raises(ValueError, match="3 processes for 2 classes"):
        Processes(0, 3).check_classes(2)


# -- equality with one process ------------------------------------------------------------------


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted one-process run that every distributed run must end as."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = tmp_path_factory.mktemp("reference") / "run"
        one_process(out, FLAGS)
    finally:
        torch.set_num_threads(threads)
    return out


def test_two_processes_end_as_one(tmp_path, reference):
    out, logs = tmp_path / "two", tmp_path / "logs"
    done = torchrun(2, [*FLAGS, "--out", str(out)], tmp_path, logs)
    assert done.returncode == 0, done.stderr[-3000:]
    assert_same_run(reference, out)
    meta = json.loads((out / "config.json").read_text())["meta"]
    assert meta["processes"] == 2 and meta["backend"] == "gloo"
    assert summary(out)["processes"] == 2 and summary(reference)["processes"] == 1
    # The run identity does not hold the number of processes: a resume may use any.
    assert load_config(str(out / "config.json")).identity() == load_config(str(reference / "config.json")).identity()
    # Rank 0 reports; rank 1 says nothing (no errors here).
    assert "on 2 processes" in rank_log(logs, 0, "stderr") and "condensed" in rank_log(logs, 0, "stdout")
    assert rank_log(logs, 1, "stderr") == "" and rank_log(logs, 1, "stdout") == ""

    # An error found by rank 0 (here: the folder holds a finished run) stops every process; rank 0
    # says it, once.
    again = torchrun(2, [*FLAGS, "--out", str(out)], tmp_path, tmp_path / "logs-again")
    assert again.returncode != 0
    said = rank_log(tmp_path / "logs-again", 0, "stderr").strip().splitlines()
    assert said == [f"{PROG}: error: {out} already holds a finished run (summary.json); choose another --out "
                    f"(or delete {out})"], said
    assert rank_log(tmp_path / "logs-again", 1, "stderr") == ""


def test_dm_two_processes_end_as_one(tmp_path):
    torch.set_num_threads(1)
    one_process(tmp_path / "one", DM_FLAGS)
    script = tmp_path / "condense.py"
    script.write_text(_COMMAND.format(prog=PROG))
    codes, errs, _ = launch_by_hand(script, [*DM_FLAGS, "--out", str(tmp_path / "two")], tmp_path, -1, 0)
    assert codes == [0, 0], errs
    assert_same_run(tmp_path / "one", tmp_path / "two")


# -- a process dies or hangs ------------------------------------------------------------------


@pytest.mark.parametrize("die_rank", [1, 0])
def test_a_dead_process_stops_the_job_and_its_checkpoint_resumes(tmp_path, reference, die_rank):
    script = tmp_path / "die.py"
    script.write_text(_COMMAND.format(prog=PROG))
    out = tmp_path / "run"
    codes, errs, seconds = launch_by_hand(script, [*FLAGS, "--out", str(out)], tmp_path, die_rank, die_at=3,
                                          DSA_FAST_DIST_TIMEOUT="120")
    alive = 1 - die_rank
    assert codes[die_rank] == -signal.SIGKILL and codes[alive] == 1, (codes, errs)
    lines = [line for line in errs[alive].splitlines() if "error" in line]
    assert len(lines) == 1, errs[alive]
    assert lines[0].startswith(f"{PROG}: error: process {alive} of 2: ")
    assert "another process of the job stopped or cannot be reached; the job stops" in lines[0]
    assert f"resume (with any number of processes) with: {PROG} --resume {out}" in lines[0]
    # The survivor notices at once (the dead process's connections close), not after the timeout.
    assert seconds < 60, seconds

    state = load_checkpoint(str(out / "checkpoint.pt"))  # intact: its CRCs check
    if die_rank == 1:  # rank 0 lives: it writes the last complete iteration and says so
        assert f"checkpoint of iteration {state['iteration']} written to {out / 'checkpoint.pt'}" in lines[0]
        assert state["iteration"] == 3
        resumed = tmp_path / "resumed-1"  # with another number of processes: one
        shutil.copytree(out, resumed)
        torch.set_num_threads(1)
        assert cli.main(["--resume", str(resumed), "--no-progress"], prog=PROG) == 0
        assert summary(resumed)["processes"] == 1
    else:  # rank 0 is gone: its last periodic checkpoint stays
        assert f"rank 0 keeps the last checkpoint in {out}" in lines[0]
        assert state["iteration"] == 2
        resumed = out  # with the same number: two
        codes, errs, _ = launch_by_hand(script, ["--resume", str(resumed), "--no-progress"], tmp_path, -1, 0)
        assert codes == [0, 0], errs
        assert summary(resumed)["processes"] == 2
    assert_same_run(reference, resumed)


def test_a_hanging_process_stops_the_job_after_the_timeout(tmp_path):
    """A process that stops answering (SIGSTOP: alive, connections open) is given up after
    $DSA_FAST_DIST_TIMEOUT seconds, here 20."""
    script = tmp_path / "die.py"
    script.write_text(_COMMAND.format(prog=PROG))
    out = tmp_path / "run"
    codes, errs, seconds = launch_by_hand(script, [*FLAGS, "--out", str(out)], tmp_path, 1, 3, "SIGSTOP",
                                          DSA_FAST_DIST_TIMEOUT="20")
    assert codes[0] == 1, (codes, errs)
    lines = [line for line in errs[0].splitlines() if "error" in line]
    assert len(lines) == 1 and lines[0].startswith(f"{PROG}: error: process 0 of 2: "), errs[0]
    assert "another process of the job stopped or cannot be reached" in lines[0]
    assert "checkpoint of iteration 3 written" in lines[0]
    assert 20 <= seconds < LAUNCH_TIMEOUT, seconds  # it waited for the timeout, and then stopped
    assert load_checkpoint(str(out / "checkpoint.pt"))["iteration"] == 3


def test_under_torchrun_a_dead_process_ends_the_job(tmp_path):
    """torchrun's agent sees the dead process and stops the other (SIGTERM), or the other's next
    collective fails first: either way rank 0 writes the last complete iteration and says so, and
    torchrun ends with an error naming rank 1."""
    script = tmp_path / "die.py"
    script.write_text(_COMMAND.format(prog=PROG))
    out, logs = tmp_path / "run", tmp_path / "logs"
    done = torchrun(2, [*FLAGS, "--out", str(out)], tmp_path, logs, script=script, DIE_RANK="1", DIE_AT="3",
                    DIE_SIGNAL="SIGKILL", DIE_STAMP=str(tmp_path / "signalled-at"))
    assert done.returncode != 0
    assert "rank      : 1 (local_rank: 1)" in done.stderr and "SIGKILL" in done.stderr, done.stderr[-3000:]
    said = [line for line in rank_log(logs, 0, "stderr").splitlines() if line.startswith(PROG)]
    assert len(said) == 1, said
    assert ("checkpoint of iteration 3/4 written" in said[0] and "the launcher stopped the job" in said[0]) or \
        ("checkpoint of iteration 3 written" in said[0] and "another process of the job stopped" in said[0]), said
    assert load_checkpoint(str(out / "checkpoint.pt"))["iteration"] == 3
