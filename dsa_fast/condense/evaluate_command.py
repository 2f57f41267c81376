"""``python -m dsa_fast.evaluate RUN_DIR/synthetic.pt``: evaluate a condensed set as the run does
(fresh networks trained on it with per-sample DSA augmentation, tested without), one architecture or
several (``--models``), optionally against random real images (``--baseline``); docs/condense.md.

Errors print one line and exit 1 (2 for a bad command line, as argparse does).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import zipfile
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

from .. import ParamDiffAug
from .checkpoint import CHECKPOINT_FORMAT, atomic_write_bytes
from .command import invoked_as, run_seed, strip_prefix
from .config import CondenseConfig, check_device, default_device, main_job_config
from .data import DATASETS, DatasetError, load_tensors
from .ensemble import MODES as EVAL_MODES
from .evaluate import evaluate_set, mean_std, random_real_subset
from .networks import check_model_name
from .outputs import save_png
from .progress import PlanLine, Progress, plural


def build_parser(prog: Optional[str] = None) -> argparse.ArgumentParser:
    d = CondenseConfig()
    p = argparse.ArgumentParser(
        prog=prog or invoked_as("python -m dsa_fast.evaluate"),
        description="Evaluate a synthetic set (synthetic.pt of a dsa_fast.condense run) as in DSA: fresh "
                    "networks trained on it with per-sample DSA augmentation, tested without augmentation. The "
                    "published protocol (the defaults: 20 networks x 1001 training passes) takes long on a CPU; "
                    "the first line, after the second training pass, gives the planned work and the time all of "
                    "it will take, and --quick (the main job's evaluation) about 1/13 of that.",
    )
    p.add_argument("synthetic", help="path to synthetic.pt")
    p.add_argument("--data-path", default=None,
                   help="root of the test data (torchvision layout); default: the run's own data "
                        "(its --data-path, or the embedded MNIST subset if it used that)")
    q = main_job_config()
    p.add_argument("--eval-models", type=int, default=None,
                   help=f"networks to train (default {d.eval_models}; --quick: {q.eval_models})")
    p.add_argument("--eval-epochs", type=int, default=None,
                   help=f"training epochs; trains epochs+1 passes as the official code (default {d.eval_epochs}; "
                        f"--quick: {q.eval_epochs})")
    p.add_argument("--quick", action="store_true",
                   help=f"the main job's evaluation: {q.eval_models} networks x {q.eval_epochs + 1} passes instead of "
                        f"the published {d.eval_models} x {d.eval_epochs + 1}, about 1/"
                        f"{round(d.eval_models * (d.eval_epochs + 1) / (q.eval_models * (q.eval_epochs + 1)))} of the "
                        f"time; --eval-models and --eval-epochs still apply")
    p.add_argument("--png", metavar="PATH", default=None,
                   help="only write the set as a picture to PATH (one labelled row per class, scaled up, as a run's "
                        "synthetic.png) and stop: no evaluation")
    p.add_argument("--model", default=None, help="network (default: the run's model)")
    p.add_argument("--models", default=None, metavar="A,B,...",
                   help="cross-architecture evaluation: comma-separated networks (e.g. ConvNet,MLP,LeNet,AlexNet,"
                        "VGG11,ResNet18), --eval-models each; accuracy per architecture and over all networks")
    p.add_argument("--strategy", default=None, help="DSA strategy (default: the run's strategy)")
    p.add_argument("--lr-net", type=float, default=None,
                   help=f"learning rate (default: the set's own, the learned step size of --method mtt; else "
                        f"{d.lr_net})")
    p.add_argument("--batch-train", type=int, default=d.batch_train, help=f"batch size (default {d.batch_train})")
    p.add_argument("--eval-mode", choices=EVAL_MODES, default="auto",
                   help="train the networks together as one ensemble, or one after another (default auto: the "
                        "ensemble where the model allows it; batch norm trains one by one)")
    p.add_argument("--baseline", action="store_true",
                   help="also evaluate the same number of random real images per class")
    p.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    p.add_argument("--seed", type=run_seed, default=None,
                   help="seed of the evaluation streams (default: the run's --seed, which reproduces its numbers)")
    p.add_argument("--json", default=None, help="also write the result to this JSON file")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="tqdm progress bar (default: when stderr is a terminal; else a log line after each "
                        "network)")
    return p


def main(argv: Optional[Sequence[str]] = None, prog: Optional[str] = None) -> int:
    """``python -m dsa_fast.evaluate`` (``prog`` None: named as invoked)."""
    parser = build_parser(prog)
    prog = parser.prog
    args = parser.parse_args(argv)
    quick = main_job_config() if args.quick else CondenseConfig()
    args.eval_models = quick.eval_models if args.eval_models is None else args.eval_models
    args.eval_epochs = quick.eval_epochs if args.eval_epochs is None else args.eval_epochs
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.device is not None:
        try:
            check_device(args.device)
        except ValueError as e:
            print(f"{prog}: error: argument --device: {strip_prefix(e)}", file=sys.stderr)
            return 2
    try:
        if args.png is not None:
            syn = load_synthetic(args.synthetic)
            save_png(args.png, syn["images"], syn["labels"], DATASETS[syn["dataset"]].info)
            print(f"{args.png}: {syn['images'].shape[0]} {syn['dataset']} images, one row per class")
            return 0
        result, line = _evaluate_command(args)
        print(line)
        if args.json:
            atomic_write_bytes(args.json, (json.dumps(result, indent=2) + "\n").encode())
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; nothing was written", file=sys.stderr)
        return 130
    except (DatasetError, ValueError) as e:
        print(f"{prog}: error: {strip_prefix(e)}", file=sys.stderr)
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
    if syn.get("zca") == "on":
        raise ValueError(f"{args.synthetic} holds ZCA-whitened images (--method mtt --zca on): its run's own "
                         f"evaluation tests them on whitened test images; this command does not whiten")
    # The set trains at its own learning rate (mtt: the learned α), the baseline at lr_net, unless given.
    args.baseline_lr = CondenseConfig().lr_net if args.lr_net is None else args.lr_net
    if args.lr_net is None:
        args.lr_net = float(syn.get("lr_net", args.baseline_lr))
    dataset = syn["dataset"]
    data_path = args.data_path
    if data_path is None:
        data_path = None if syn.get("data_source") == "embedded" else syn.get("data_path")
    device = args.device or default_device()
    test = load_tensors(dataset, data_path, "test", device)
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
              batch_train=args.batch_train, strategy=strategy,
              param=ParamDiffAug(align_corners=bool(syn.get("align_corners", False))), mode=args.eval_mode)

    plan = _plan_line(args, syn, test, [model] if args.models is None else models, data_path)

    def evaluate(images, labels, what: str, **override) -> List[float]:
        passes = args.eval_epochs + 1
        with Progress(args.eval_models * passes, desc=f"{what}: training pass", unit="pass", log_every=passes,
                      bar=args.progress) as bar:
            def on_pass(m: int) -> None:
                plan.step(m)
                bar.update(m, quiet=not plan.said)  # the plan line comes first

            return evaluate_set(images, labels, test, on_pass=on_pass, **{**kw, **override})

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
        baccs = evaluate(bx, by, "random real baseline", lr=args.baseline_lr)
        bm, bs = mean_std(baccs)
        result.update(baseline_mean=bm, baseline_std=bs, baseline_accuracies=baccs)
        if baccs:
            line += f"; random real baseline {100 * bm:.2f} ± {100 * bs:.2f} %"
    return result, line


def _plan_line(args: argparse.Namespace, syn: Dict[str, Any], test, models: List[str],
               data_path: Optional[str]) -> PlanLine:
    """The evaluate command's first line, said after the first training pass: what it trains and
    tests, and the time all of it (and --quick) will take at that pass's speed."""
    passes, sets = args.eval_epochs + 1, 2 if args.baseline else 1
    total = len(models) * sets * args.eval_models * passes
    q = main_job_config()
    quick = None if args.quick or not total else ("--quick", total * q.eval_models * (q.eval_epochs + 1)
                                                  // (args.eval_models * passes))
    source = "the embedded MNIST subset" if data_path is None else f"{syn['dataset']} files under {data_path}"
    nets = plural(args.eval_models, f"{models[0]} network") if len(models) == 1 else \
        f"{plural(args.eval_models, 'network')} of each of {', '.join(models)}"
    plan = (f"evaluating {args.synthetic} ({syn['images'].shape[0]} images): {nets} x "
            f"{plural(passes, 'training pass')}{', on the set and on as many random real images' if args.baseline else ''}"
            f" ({total} passes in all), each network then tested on {test.images.shape[0]} images of {source}")
    return PlanLine(plan, total, "training pass", quick)


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
            baccs = evaluate(bx, by, f"{name} on the random real baseline", model=name, lr=args.baseline_lr)
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
