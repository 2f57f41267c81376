"""``python -m dsa_fast.condense`` / ``dsa-condense``: its command line (``python -m dsa_fast.evaluate``
is ``evaluate_command.py``).

With neither --dataset nor --data-path the command runs the embedded main job
(``config.main_job_config``: the MNIST subset shipped in the package, ipc 1, reduced counts); any
other flag given then overrides that preset. With either of them it starts from the published
defaults (``CondenseConfig``). Data comes from --data-path only; without it, the embedded subset.

SIGINT, SIGTERM and SIGHUP (``loop.STOP_SIGNALS``) become a KeyboardInterrupt, which the loop turns
into a checkpoint of the last complete iteration; the command then prints how to resume (where the
terminal is still there) and exits with 128 + the signal number (130, 143, 129). Errors print one
line and exit 1 (2 for a bad command line, as argparse does).
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shlex
import signal
import sys
import threading
from typing import Any, Dict, List, Optional, Sequence

from . import distributed
from .checkpoint import CHECKPOINT_NAME, CheckpointError
from .command import invoked_as, run_seed, strip_prefix
from .config import (DEFAULT_METHOD, CondenseConfig, all_settings, check_device, default_device, default_out,
                     load_config, main_job_config, resolve)
from .evaluate import mean_std
from .experts import ZCA_DATASETS, ExpertSettings, train_experts
from .cpu import keep_freed_memory
from .data import DATASETS, DatasetError
from .distributed import ProcessGroupError
from .loop import STOP_SIGNALS, RunDirError, RunInterrupted, condense
from .methods import methods
from .outputs import CONFIG, SUMMARY
from .progress import plural
from .settings import text
from .summary import summary_line


def build_parser(prog: Optional[str] = None) -> argparse.ArgumentParser:
    """``prog``: how the command was invoked (None: ``invoked_as``). One flag per setting
    (``config.all_settings``: the shared ones and every method's own), with its help and defaults."""
    published, job = CondenseConfig(), main_job_config()
    jobs = {m.name: main_job_config(method=m.name) for m in methods() if m.name != DEFAULT_METHOD}
    ipcs = "".join(f"; --method {m.name}: ipc {m.main_job['ipc']}" for m in methods() if "ipc" in m.main_job)
    p = argparse.ArgumentParser(
        prog=prog or invoked_as("python -m dsa_fast.condense"),
        description="Dataset condensation with Differentiable Siamese Augmentation (Zhao & Bilen, ICML 2021): "
                    + ", ".join(f"{m.help} (--method {m.name})" for m in methods()) + ". "
                    "With neither --dataset nor --data-path: the embedded main job (a small MNIST subset shipped in "
                    f"the package, ipc 1, reduced counts{ipcs}).",
        epilog="Defaults: the published settings (any run with --dataset or --data-path); 'main job': the preset used "
               "with neither, where it differs. Data: the files under --data-path; without it, the embedded MNIST "
               "subset. Ctrl-C, SIGTERM or SIGHUP (the terminal closed) writes a checkpoint of the last complete "
               "iteration and prints the --resume command. Outputs and resume: docs/condense.md. Sub-command: "
               "experts (expert trajectories for --method mtt; see experts --help).",
    )
    owners = {s.name: m.name for m in methods() for s in m.settings}
    for s in all_settings().values():
        a, b = getattr(published, s.name), getattr(job, s.name)
        default = f"default: {s.show(a)}" + ("" if a == b else f"; main job: {s.show(b)}")
        for name, other in jobs.items():
            d = getattr(other, s.name)
            default += "" if d == b or s.name == "method" else f"; {name} main job: {s.show(d)}"
        if s.name in owners:
            default = f"--method {owners[s.name]} only; {default}"
        kw: Dict[str, Any] = {"default": argparse.SUPPRESS, "help": f"{text(s.help)} ({default})"}
        choices = s.choice_list()
        if choices is not None:
            kw["choices"] = choices
        if s.type is not None:
            kw["type"] = s.type
        p.add_argument(s.flag, metavar=None if choices is not None else s.name.upper(), **kw)
    p.add_argument("--resume", metavar="RUN_DIR", default=argparse.SUPPRESS,
                   help="continue the run in RUN_DIR from its last checkpoint, or from iteration 0 if it has none "
                        "yet (settings come from RUN_DIR/config.json; only --device, --compile, --progress and "
                        "--keep-freed-memory may be given with it)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="tqdm progress bar (default: when stderr is a terminal; else plain log lines)")
    p.add_argument("--keep-freed-memory", action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
                   help="keep freed memory in the process instead of returning it to the system (glibc mallopt; "
                        "the process keeps its peak memory; default on, --no-keep-freed-memory leaves glibc's "
                        "settings: docs/condense.md, CPU settings)")
    return p


def _unique_out(path: str) -> str:
    if not os.path.exists(path):
        return path
    k = 2
    while os.path.exists(f"{path}-{k}"):
        k += 1
    return f"{path}-{k}"


def config_from_args(given: Dict[str, Any]) -> CondenseConfig:
    """The run configuration for the flags actually given (others keep the preset's values)."""
    main_job = "dataset" not in given and "data_path" not in given
    base = main_job_config(method=given.get("method", DEFAULT_METHOD)) if main_job else CondenseConfig()
    cfg = base.replace(**given)
    if "out" not in given:
        cfg = cfg.replace(out=_unique_out(default_out(resolve(cfg))))
    return cfg


@contextlib.contextmanager
def _signals_interrupt(caught: List[int]):
    """``STOP_SIGNALS`` raise KeyboardInterrupt inside the block; ``caught`` records which came."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        caught.append(signum)
        raise KeyboardInterrupt

    previous = {s: signal.signal(s, interrupt) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            if handler is not None:
                signal.signal(s, handler)


def interrupted_line(prog: str, signum: int, e: RunInterrupted, processes: int = 1) -> str:
    """The one line printed after an interrupted run: what was kept and the command that continues.
    ``processes`` > 1: a job's rank 0, where SIGTERM is how torchrun stops the job."""
    what = signal.Signals(signum).name
    if processes > 1 and signum == signal.SIGTERM:
        what += ": the launcher stopped the job (another process failed, or the launcher was stopped)"
    resume = f"{prog} --resume {shlex.quote(e.out)}"
    if e.iteration is None:
        return f"{prog}: interrupted ({what}) before the first iteration; resume (from iteration 0) with: {resume}"
    return (f"{prog}: interrupted ({what}); checkpoint of iteration {e.iteration}/{e.total} written to "
            f"{os.path.join(e.out, CHECKPOINT_NAME)}; resume with: {resume}")


# Settings --resume may change: they do not change what the run computes (config.RUN_IDENTITY);
# and the methods' own settings that do not (``Setting.identity`` False, e.g. --mtt-checkpoint).
_RESUME_FLAGS = ("device", "compile") + tuple(s.name for m in methods() for s in m.settings if not s.identity)


def _resume_config(resume_dir: str, given: Dict[str, Any]) -> CondenseConfig:
    config_path = os.path.join(resume_dir, CONFIG)
    if not os.path.isdir(resume_dir):
        raise RunDirError(f"cannot resume: {resume_dir} does not exist; start a new run with --out {resume_dir}")
    if not os.path.isfile(config_path):
        others = [n for n in (CHECKPOINT_NAME, SUMMARY) if os.path.exists(os.path.join(resume_dir, n))]
        if others:
            raise RunDirError(f"cannot resume: {resume_dir} has {others[0]} but no {CONFIG}, so its settings are "
                              f"unknown; start a new run with another --out")
        raise RunDirError(f"cannot resume: {config_path} does not exist (not a dsa_fast.condense run folder); "
                          f"start a new run with --out {resume_dir}")
    cfg = load_config(config_path).replace(out=resume_dir)
    for name in _RESUME_FLAGS:
        if name in given:
            cfg = cfg.replace(**{name: given[name]})
    return cfg


def main(argv: Optional[Sequence[str]] = None, prog: Optional[str] = None) -> int:
    """``dsa-condense`` (``prog`` None: named as invoked) and ``python -m dsa_fast.condense``.

    Started by torchrun (``WORLD_SIZE`` set), the process joins the job and runs its part of one
    condensation (docs/distributed.md); rank 0 prints and writes, the others print errors only.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["experts"]:
        return experts_main(argv[1:], prog=f"{prog or invoked_as('python -m dsa_fast.condense')} experts")
    parser = build_parser(prog)
    prog = parser.prog
    args = parser.parse_args(argv)
    given = vars(args)
    progress = given.pop("progress")
    if given.pop("keep_freed_memory", True):
        keep_freed_memory()
    resume_dir = given.pop("resume", None)
    if resume_dir is not None:
        extra = sorted(set(given) - set(_RESUME_FLAGS))
        if extra:
            parser.error(f"--resume takes the settings from {os.path.join(resume_dir, CONFIG)}; drop "
                         + ", ".join("--" + k.replace("_", "-") for k in extra))
    if "device" in given:
        try:
            check_device(given["device"])
        except ValueError as e:
            print(f"{prog}: error: argument --device: {strip_prefix(e)}", file=sys.stderr)
            return 2
    try:
        dist = distributed.launch(given.get("device"))  # [distributed] SINGLE unless started by torchrun
    except (ProcessGroupError, ValueError) as e:
        print(f"{prog}: error: {strip_prefix(e)}", file=sys.stderr)
        return 1
    logging.basicConfig(level=logging.INFO if dist.writer else logging.ERROR, format="%(message)s")
    code = 1
    try:
        code = _run(dist, prog, given, resume_dir, progress)
        return code
    finally:
        distributed.finish(dist, completed=code == 0)


def _run(dist: distributed.Processes, prog: str, given: Dict[str, Any], resume_dir: Optional[str],
         progress: Optional[bool]) -> int:
    """The run of ``main`` once the job is joined: its exit status; what it prints."""
    caught: List[int] = []
    cfg: Optional[CondenseConfig] = None
    try:
        with _signals_interrupt(caught):
            if resume_dir is not None:
                cfg = dist.on_writer(_resume_config, resume_dir, given)
                result = condense(cfg, resume=True, progress=progress, dist=dist)
            else:
                cfg = dist.on_writer(config_from_args, given)
                result = condense(cfg, progress=progress, dist=dist)
    except RunInterrupted as e:
        signum = caught[0] if caught else signal.SIGINT
        if dist.writer:
            _say_if_heard(interrupted_line(prog, signum, e, dist.size))
        return 128 + signum
    except KeyboardInterrupt:  # before the run folder was touched (while the data loaded)
        signum = caught[0] if caught else signal.SIGINT
        if dist.writer:
            _say_if_heard(f"{prog}: interrupted ({signal.Signals(signum).name}) before the run started; nothing was "
                          f"written")
        return 128 + signum
    except ProcessGroupError as e:
        print(process_lost_line(prog, e, cfg), file=sys.stderr)
        return 1
    except (DatasetError, CheckpointError, RunDirError, ValueError) as e:
        if getattr(e, "shared_error", False):  # every process has it: rank 0 says it
            if dist.writer:
                print(f"{prog}: error: {strip_prefix(e)}", file=sys.stderr)
        else:
            print(f"{prog}: error: {where(dist)}{strip_prefix(e)}", file=sys.stderr)
        return 1
    except OSError as e:  # e.g. the disk filled up while writing an output
        print(f"{prog}: error: {where(dist)}{e}", file=sys.stderr)
        return 1
    if not dist.writer:
        return 0
    print(summary_line(result.summary, result.out))
    return 0


def _say_if_heard(line: str) -> None:
    """``line`` on stderr; after SIGHUP the terminal may be gone (EIO), and the exit status still tells."""
    try:
        print(line, file=sys.stderr, flush=True)
    except OSError:
        pass


def where(dist: distributed.Processes) -> str:
    """``process r of K: `` in a multi-process job (which process says it), else nothing."""
    return "" if dist.size == 1 else f"process {dist.rank} of {dist.size}: "


def process_lost_line(prog: str, e: ProcessGroupError, cfg: Optional[CondenseConfig]) -> str:
    """The line every surviving process prints when the job lost one of its processes."""
    line = (f"{prog}: error: process {e.rank} of {e.size}: {strip_prefix(e)}: another process of the job "
            f"stopped or cannot be reached; the job stops")
    if cfg is None or cfg.out is None:
        return line
    out = cfg.out
    if e.iteration is not None:
        line += f"; checkpoint of iteration {e.iteration} written to {os.path.join(out, CHECKPOINT_NAME)}"
    elif e.rank != 0:
        line += f"; rank 0 keeps the last checkpoint in {out}"
    return line + f"; resume (with any number of processes) with: {prog} --resume {shlex.quote(out)}"


# -- python -m dsa_fast.condense experts ---------------------------------------------------------


def build_experts_parser(prog: str) -> argparse.ArgumentParser:
    d = ExpertSettings()
    p = argparse.ArgumentParser(
        prog=prog,
        description="Train expert trajectories for trajectory matching (--method mtt): networks trained on the whole "
                    "real training set with per-sample DSA, their parameters saved before the first epoch and after "
                    "every epoch. Resumable: the same command again trains only the experts that are missing.",
        epilog="Folder format: docs/condense.md, Expert trajectories.")
    p.add_argument("--dataset", choices=tuple(DATASETS), default=d.dataset, help=f"dataset (default {d.dataset})")
    p.add_argument("--data-path", default=None, help="root of the dataset files (torchvision layout); default: the "
                                                      "embedded MNIST subset (MNIST only)")
    p.add_argument("--model", default=d.model, help=f"network (default {d.model})")
    p.add_argument("--experts", type=int, default=100, help="number of experts (default 100, as published)")
    p.add_argument("--epochs", type=int, default=d.epochs, help=f"epochs per expert (default {d.epochs})")
    p.add_argument("--lr-teacher", type=float, default=d.lr, help=f"SGD learning rate, no momentum (default {d.lr})")
    p.add_argument("--batch-train", type=int, default=d.batch, help=f"batch size (default {d.batch})")
    p.add_argument("--strategy", default=d.strategy, help=f"DSA strategy (default {d.strategy})")
    p.add_argument("--zca", choices=("off", "on"), default=None,
                   help="ZCA-whiten the images (default: on for CIFAR10/CIFAR100, as published; off otherwise)")
    p.add_argument("--seed", type=run_seed, default=d.seed, help=f"expert k uses the stream (seed, k) (default {d.seed})")
    p.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    p.add_argument("--out", required=True, help="experts folder (created; an existing one of the same settings is "
                                                "completed)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="tqdm progress bar (default: when stderr is a terminal; else a log line per expert)")
    return p


def experts_main(argv: Sequence[str], prog: str) -> int:
    """``python -m dsa_fast.condense experts``: train (or complete) a folder of expert trajectories."""
    parser = build_experts_parser(prog)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    device = args.device or default_device()
    zca = args.zca if args.zca is not None else ("on" if args.dataset in ZCA_DATASETS else "off")
    settings = ExpertSettings(dataset=args.dataset, data_path=args.data_path, model=args.model, epochs=args.epochs,
                              lr=args.lr_teacher, batch=args.batch_train, strategy=args.strategy, zca=zca == "on",
                              seed=args.seed)
    caught: List[int] = []
    try:
        check_device(device)
        with _signals_interrupt(caught):
            accs = train_experts(settings, args.experts, args.out, device=device, progress=args.progress)
    except KeyboardInterrupt:
        signum = caught[0] if caught else signal.SIGINT
        _say_if_heard(f"{prog}: interrupted ({signal.Signals(signum).name}); the finished experts are kept in "
                      f"{args.out}; the same command trains the rest")
        return 128 + signum
    except (DatasetError, ValueError, OSError) as e:
        print(f"{prog}: error: {strip_prefix(e)}", file=sys.stderr)
        return 1
    m, s = mean_std(accs)
    print(f"{args.dataset} {args.model}: {plural(len(accs), 'expert')} x {plural(args.epochs, 'epoch')} in "
          f"{args.out}: final test accuracy {100 * m:.2f} ± {100 * s:.2f} %")
    return 0
