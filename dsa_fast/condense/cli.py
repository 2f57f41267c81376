"""``python -m dsa_fast.condense`` / ``dsa-condense`` and ``python -m dsa_fast.evaluate``: the only
place that parses argv.

With neither --dataset nor --data-path the command runs the embedded main job
(``config.main_job_config``: the MNIST subset shipped in the package, ipc 1, reduced counts); any
other flag given then overrides that preset. With either of them it starts from the published
defaults (``CondenseConfig``). Data comes from --data-path only; without it, the embedded subset.

SIGINT and SIGTERM become a KeyboardInterrupt, which the loop turns into a checkpoint of the last
complete iteration; the command then prints how to resume and exits with 128 + the signal number
(130, 143). Errors print one line and exit 1 (2 for a bad command line, as argparse does).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shlex
import signal
import sys
import threading
import zipfile
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

from .. import ParamDiffAug
from .checkpoint import CheckpointError, atomic_write_bytes
from .checkpoint import CHECKPOINT_FORMAT, CHECKPOINT_NAME
from .config import (DEFAULT_METHOD, CondenseConfig, all_settings, check_device, default_device, default_out,
                     load_config, main_job_config, resolve)
from .data import DATASETS, DatasetError, load_tensors
from . import distributed
from .distributed import ProcessGroupError
from .evaluate import evaluate_set, mean_std, random_real_subset
from .cpu import keep_freed_memory
from .ensemble import MODES as EVAL_MODES
from .loop import RunDirError, RunInterrupted, condense
from .outputs import CONFIG, SUMMARY
from .progress import Progress, plural
from .methods import methods
from .networks import check_model_name
from .settings import text

def invoked_as(module_form: str) -> str:
    """The command's name as the user typed it: the console script's name (``dsa-condense``), or
    ``module_form`` when Python ran a ``__main__.py`` (``python -m ...``)."""
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return module_form if name in ("", "-c", "-m", "__main__.py") else name


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
               "subset. Ctrl-C or SIGTERM writes a checkpoint of the last complete iteration and prints the "
               "--resume command. Outputs and resume: docs/condense.md.",
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
                        "yet (settings come from RUN_DIR/config.json; only --device, --compile and --progress may be "
                        "given with it)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="tqdm progress bar (default: when stderr is a terminal; else plain log lines)")
    p.add_argument("--keep-freed-memory", action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
                   help="keep freed memory in the process instead of returning it to the system (glibc mallopt; "
                        "the process keeps its peak memory; default on, --no-keep-freed-memory leaves glibc's "
                        "settings: docs/condense.md, CPU settings)")
    return p


def _strip_prefix(e: Exception) -> str:
    msg = str(e)
    return msg[len("dsa_fast.condense: "):] if msg.startswith("dsa_fast.condense: ") else msg


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
    """SIGINT and SIGTERM raise KeyboardInterrupt inside the block; ``caught`` records which came."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        caught.append(signum)
        raise KeyboardInterrupt

    previous = {s: signal.signal(s, interrupt) for s in (signal.SIGINT, signal.SIGTERM)}
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


# Settings --resume may change: they do not change what the run computes (config.RUN_IDENTITY).
_RESUME_FLAGS = ("device", "compile")


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
            print(f"{prog}: error: argument --device: {_strip_prefix(e)}", file=sys.stderr)
            return 2
    try:
        dist = distributed.launch(given.get("device"))  # [distributed] SINGLE unless started by torchrun
    except (ProcessGroupError, ValueError) as e:
        print(f"{prog}: error: {_strip_prefix(e)}", file=sys.stderr)
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
            print(interrupted_line(prog, signum, e, dist.size), file=sys.stderr)
        return 128 + signum
    except KeyboardInterrupt:  # before the run folder was touched (while the data loaded)
        signum = caught[0] if caught else signal.SIGINT
        if dist.writer:
            print(f"{prog}: interrupted ({signal.Signals(signum).name}) before the run started; nothing was written",
                  file=sys.stderr)
        return 128 + signum
    except ProcessGroupError as e:
        print(process_lost_line(prog, e, cfg), file=sys.stderr)
        return 1
    except (DatasetError, CheckpointError, RunDirError, ValueError) as e:
        if getattr(e, "shared_error", False):  # every process has it: rank 0 says it
            if dist.writer:
                print(f"{prog}: error: {_strip_prefix(e)}", file=sys.stderr)
        else:
            print(f"{prog}: error: {where(dist)}{_strip_prefix(e)}", file=sys.stderr)
        return 1
    except OSError as e:  # e.g. the disk filled up while writing an output
        print(f"{prog}: error: {where(dist)}{e}", file=sys.stderr)
        return 1
    if not dist.writer:
        return 0
    s = result.summary
    if s.get("accuracy_mean") is not None:
        print(
            f"{s['dataset']} ipc {s['ipc']}, {plural(s['iterations'], 'iteration')}, "
            f"{plural(s['eval_models'], 'model')} x {plural(s['eval_epochs'], 'epoch')}: "
            f"condensed {100 * s['accuracy_mean']:.2f} ± {100 * s['accuracy_std']:.2f} %"
            f"  vs  random real {100 * s['baseline_mean']:.2f} ± {100 * s['baseline_std']:.2f} %"
            f"  ({s['wall_seconds']:.0f} s; outputs in {result.out})"
        )
    else:
        print(f"condensed set written to {result.out} (no evaluation)")
    return 0


def where(dist: distributed.Processes) -> str:
    """``process r of K: `` in a multi-process job (which process says it), else nothing."""
    return "" if dist.size == 1 else f"process {dist.rank} of {dist.size}: "


def process_lost_line(prog: str, e: ProcessGroupError, cfg: Optional[CondenseConfig]) -> str:
    """The line every surviving process prints when the job lost one of its processes."""
    line = (f"{prog}: error: process {e.rank} of {e.size}: {_strip_prefix(e)}: another process of the job "
            f"stopped or cannot be reached; the job stops")
    if cfg is None or cfg.out is None:
        return line
    out = cfg.out
    if e.iteration is not None:
        line += f"; checkpoint of iteration {e.iteration} written to {os.path.join(out, CHECKPOINT_NAME)}"
    elif e.rank != 0:
        line += f"; rank 0 keeps the last checkpoint in {out}"
    return line + f"; resume (with any number of processes) with: {prog} --resume {shlex.quote(out)}"


# -- python -m dsa_fast.evaluate ----------------------------------------------------------------


def build_evaluate_parser(prog: Optional[str] = None) -> argparse.ArgumentParser:
    d = CondenseConfig()
    p = argparse.ArgumentParser(
        prog=prog or invoked_as("python -m dsa_fast.evaluate"),
        description="Evaluate a synthetic set (synthetic.pt of a dsa_fast.condense run) as in DSA: fresh "
                    "networks trained on it with per-sample DSA augmentation, tested without augmentation.",
    )
    p.add_argument("synthetic", help="path to synthetic.pt")
    p.add_argument("--data-path", default=None,
                   help="root of the test data (torchvision layout); default: the run's own data "
                        "(its --data-path, or the embedded MNIST subset if it used that)")
    p.add_argument("--eval-models", type=int, default=d.eval_models, help=f"networks to train (default {d.eval_models})")
    p.add_argument("--eval-epochs", type=int, default=d.eval_epochs,
                   help=f"training epochs; trains epochs+1 passes as the official code (default {d.eval_epochs})")
    p.add_argument("--model", default=None, help="network (default: the run's model)")
    p.add_argument("--models", default=None, metavar="A,B,...",
                   help="cross-architecture evaluation: comma-separated networks (e.g. ConvNet,MLP,LeNet,AlexNet,"
                        "VGG11,ResNet18), --eval-models each; accuracy per architecture and over all networks")
    p.add_argument("--strategy", default=None, help="DSA strategy (default: the run's strategy)")
    p.add_argument("--lr-net", type=float, default=d.lr_net, help=f"learning rate (default {d.lr_net})")
    p.add_argument("--batch-train", type=int, default=d.batch_train, help=f"batch size (default {d.batch_train})")
    p.add_argument("--eval-mode", choices=EVAL_MODES, default="auto",
                   help="train the networks together as one ensemble, or one after another (default auto: the "
                        "ensemble where the model allows it; batch norm trains one by one)")
    p.add_argument("--baseline", action="store_true",
                   help="also evaluate the same number of random real images per class")
    p.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    p.add_argument("--seed", type=int, default=None,
                   help="seed of the evaluation streams (default: the run's --seed, which reproduces its numbers)")
    p.add_argument("--json", default=None, help="also write the result to this JSON file")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="tqdm progress bar (default: when stderr is a terminal; else a log line after each "
                        "network)")
    return p


def evaluate_main(argv: Optional[Sequence[str]] = None, prog: Optional[str] = None) -> int:
    """``python -m dsa_fast.evaluate`` (``prog`` None: named as invoked)."""
    parser = build_evaluate_parser(prog)
    prog = parser.prog
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.device is not None:
        try:
            check_device(args.device)
        except ValueError as e:
            print(f"{prog}: error: argument --device: {_strip_prefix(e)}", file=sys.stderr)
            return 2
    try:
        result, line = _evaluate_command(args)
        print(line)
        if args.json:
            atomic_write_bytes(args.json, (json.dumps(result, indent=2) + "\n").encode())
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; nothing was written", file=sys.stderr)
        return 130
    except (DatasetError, ValueError) as e:
        print(f"{prog}: error: {_strip_prefix(e)}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 1
    return 0


def load_synthetic(path: str) -> Dict[str, Any]:
    """A synthetic.pt written by dsa_fast (``outputs.save_synthetic``), or a ValueError that says so."""
    if not os.path.exists(path):
        raise ValueError(f"{path} does not exist")
    if os.path.isdir(path):
        raise ValueError(f"{path} is a folder; give the synthetic set in it, e.g. {os.path.join(path, 'synthetic.pt')}")

    def not_ours(why: str) -> ValueError:
        return ValueError(f"{path} is not a synthetic set written by dsa_fast: {why}")

    try:
        syn = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        if zipfile.is_zipfile(path):  # a torch.save file, but not of plain tensors and data
            raise not_ours("it holds Python objects other than tensors and plain data") from None
        raise not_ours("it is not a file written by torch.save, or it is truncated") from None
    if isinstance(syn, dict) and syn.get("format") == CHECKPOINT_FORMAT:
        raise not_ours(f"it is a run checkpoint; evaluate {os.path.join(os.path.dirname(path) or '.', 'synthetic.pt')}")
    if not isinstance(syn, dict):
        raise not_ours(f"it holds a {type(syn).__name__}, not the dict of a synthetic set")
    missing = [k for k in ("images", "labels", "dataset") if k not in syn]
    if missing:
        raise not_ours(f"no {', '.join(repr(k) for k in missing)} entries")
    if syn["dataset"] not in DATASETS:
        raise not_ours(f"unknown dataset {syn['dataset']!r}")
    images, labels = syn["images"], syn["labels"]
    if not (isinstance(images, torch.Tensor) and isinstance(labels, torch.Tensor) and images.dim() == 4
            and labels.dim() == 1 and images.shape[0] == labels.shape[0]):
        raise not_ours("'images' must be a [N, C, H, W] tensor and 'labels' a [N] tensor")
    return syn


def _evaluate_command(args: argparse.Namespace) -> Tuple[dict, str]:
    syn = load_synthetic(args.synthetic)
    dataset = syn["dataset"]
    data_path = args.data_path
    if data_path is None:
        data_path = None if syn.get("data_source") == "embedded" else syn.get("data_path")
    device = args.device or default_device()
    test = load_tensors(dataset, data_path, "test", device)
    logging.getLogger("dsa_fast.condense").info(
        "evaluating %s on %s", args.synthetic,
        "the embedded MNIST subset" if data_path is None else f"{dataset} files under {data_path}")
    model = args.model or syn.get("model", "ConvNet")
    if args.models is not None:
        if args.model is not None:
            raise ValueError("give --model or --models, not both")
        models = [m.strip() for m in args.models.split(",") if m.strip()]
        if not models:
            raise ValueError("--models needs at least one network")
        for m in models:
            check_model_name(m)
    strategy = args.strategy if args.strategy is not None else syn.get("strategy", DATASETS[dataset].strategy)
    seed = args.seed if args.seed is not None else int(syn.get("seed", 0))
    kw = dict(n_models=args.eval_models, seed=seed, model=model, epochs=args.eval_epochs, lr=args.lr_net,
              batch_train=args.batch_train, strategy=strategy, param=ParamDiffAug(), mode=args.eval_mode)

    def evaluate(images, labels, what: str, **override) -> List[float]:
        passes = args.eval_epochs + 1
        with Progress(args.eval_models * passes, desc=f"{what}: training pass", unit="pass", log_every=passes,
                      bar=args.progress) as bar:
            return evaluate_set(images, labels, test, on_pass=bar.update, **{**kw, **override})

    if args.models is not None:
        return _cross_architecture(syn, test, models, kw, device, args, dataset, data_path, seed, evaluate)
    accs = evaluate(syn["images"].to(device), syn["labels"].to(device), "synthetic set")
    m, s = mean_std(accs)
    result = {"synthetic": args.synthetic, "dataset": dataset, "model": model, "eval_models": args.eval_models,
              "eval_epochs": args.eval_epochs, "seed": seed, "accuracy_mean": m, "accuracy_std": s,
              "accuracies": accs}
    line = f"{dataset} {model}: synthetic set {100 * m:.2f} ± {100 * s:.2f} % over {plural(len(accs), 'model')}" \
        if accs else "no models evaluated"
    if args.baseline:
        train = load_tensors(dataset, data_path, "train", device)
        ipc = int(syn["images"].shape[0]) // DATASETS[dataset].info.num_classes
        bx, by = random_real_subset(train, ipc, seed)
        baccs = evaluate(bx, by, "random real baseline")
        bm, bs = mean_std(baccs)
        result.update(baseline_mean=bm, baseline_std=bs, baseline_accuracies=baccs)
        if baccs:
            line += f"; random real baseline {100 * bm:.2f} ± {100 * bs:.2f} %"
    return result, line


def _cross_architecture(syn, test, models, kw, device, args, dataset, data_path, seed, evaluate) -> Tuple[dict, str]:
    """Every network of ``models`` trained ``--eval-models`` times on the set (model k of every
    architecture from the same seed stream as a single-model evaluation); per architecture and
    over all networks, mean ± std."""
    images, labels = syn["images"].to(device), syn["labels"].to(device)
    per_model: Dict[str, Dict[str, Any]] = {}
    lines: List[str] = []
    if args.baseline:
        train = load_tensors(dataset, data_path, "train", device)
        baseline = random_real_subset(train, int(syn["images"].shape[0]) // DATASETS[dataset].info.num_classes, seed)
    for name in models:
        accs = evaluate(images, labels, f"{name} on the synthetic set", model=name)
        m, s = mean_std(accs)
        per_model[name] = {"accuracy_mean": m, "accuracy_std": s, "accuracies": accs}
        if accs:
            lines.append(f"{dataset} {name}: synthetic set {100 * m:.2f} ± {100 * s:.2f} % over {len(accs)} models")
        if args.baseline:
            bx, by = baseline
            baccs = evaluate(bx, by, f"{name} on the random real baseline", model=name)
            bm, bs = mean_std(baccs)
            per_model[name].update(baseline_mean=bm, baseline_std=bs, baseline_accuracies=baccs)
            if baccs:
                lines[-1] += f"; random real baseline {100 * bm:.2f} ± {100 * bs:.2f} %"
    every = [a for r in per_model.values() for a in r["accuracies"]]
    m, s = mean_std(every)
    result = {"synthetic": args.synthetic, "dataset": dataset, "models": models, "eval_models": args.eval_models,
              "eval_epochs": args.eval_epochs, "seed": seed, "per_model": per_model, "accuracy_mean": m,
              "accuracy_std": s}
    if every:
        lines.append(f"{dataset} all {len(models)} architectures: {100 * m:.2f} ± {100 * s:.2f} % over "
                     f"{len(every)} networks")
    return result, "\n".join(lines) if lines else "no models evaluated"
