"""Evaluation of a synthetic set: the ensemble path against the sequential one, side by side.

For each ipc: a random MNIST-shaped set (10 classes x ipc, 1x28x28), E networks (ConvNet width 128,
instance norm), the evaluation's protocol (SGD momentum 0.9, weight decay 5e-4, batch 256, DSA
'color_crop_cutout_scale_rotate' on every batch) for ``--epochs`` epochs (epochs + 1 passes), then
the test accuracy on ``--test`` random test images. Both paths train the same E networks (same
seeds); the script prints the training and test seconds of each, the speed-up, the largest
difference between the two paths' accuracies, and the dispatched aten ops per pass per network
(TorchDispatchMode, counted on a width-8 net: the count does not depend on the width).

    PYTHONPATH=. python benchmarks/bench_evaluate.py --ipc 1 10 --networks 20 --epochs 4 1

A timing script, not a test (the machine's load changes the seconds, not the op counts).
"""
from __future__ import annotations

import argparse
import time
from collections import Counter

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from dsa_fast import ParamDiffAug
from dsa_fast.condense.data import INFO, TensorDataset
from dsa_fast.condense.ensemble import group_size, test_ensemble, train_ensemble
from dsa_fast.condense.evaluate import test_accuracy, train_network
from dsa_fast.condense.rng import STREAM_EVAL, derive_seed, global_rng_scope

STRATEGY = "color_crop_cutout_scale_rotate"


class CountOps(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops[func] += 1
        return func(*args, **(kwargs or {}))


def _train_sequential(x, y, seeds, **kw):
    nets = []
    for s in seeds:
        with global_rng_scope("cpu", s):
            nets.append(train_network(x, y, **kw))
    return nets


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ipc", type=int, nargs="+", default=[1, 10])
    ap.add_argument("--epochs", type=int, nargs="+", default=[4, 1], help="per ipc")
    ap.add_argument("--networks", type=int, default=20)
    ap.add_argument("--test", type=int, default=500)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--model", default="ConvNet")
    ap.add_argument("--group", type=int, default=0, help="networks per ensemble group (default: as evaluate_set)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.networks} networks, {args.model}, "
          f"{args.test} test images")
    g = torch.Generator().manual_seed(0)
    info = INFO["MNIST"]
    test = TensorDataset(torch.randn(args.test, 1, 28, 28, generator=g), torch.randint(0, 10, (args.test,), generator=g),
                         info)
    seeds = [derive_seed(0, STREAM_EVAL, k) for k in range(args.networks)]
    # Warm-up (first-call costs: lazy imports, oneDNN kernel creation) outside the timings.
    wx, wy = torch.randn(10, 1, 28, 28), torch.arange(10)
    wkw = dict(num_classes=10, epochs=0, lr=0.01, batch_train=256, strategy=STRATEGY, param=ParamDiffAug())
    train_ensemble(wx, wy, model=args.model, seeds=seeds[:2], **wkw)
    _train_sequential(wx, wy, seeds[:1], model=args.model, **wkw)
    for ipc, epochs in zip(args.ipc, args.epochs):
        x = torch.randn(10 * ipc, 1, 28, 28, generator=g)
        y = torch.arange(10).repeat_interleave(ipc)
        kw = dict(num_classes=10, epochs=epochs, lr=0.01, batch_train=256, strategy=STRATEGY, param=ParamDiffAug())

        size = args.group or group_size(x.shape[0], 256, torch.device("cpu"))
        t0 = time.perf_counter()
        acc_e, test_e = [], 0.0
        for first in range(0, len(seeds), size):
            template, params = train_ensemble(x, y, model=args.model, seeds=seeds[first:first + size], **kw)
            t = time.perf_counter()
            acc_e.append(test_ensemble(template, params, test.images, test.labels))
            test_e += time.perf_counter() - t
        acc_e = torch.cat(acc_e)
        t2 = time.perf_counter()
        t1 = t2 - test_e  # (the split of the ensemble's time into training and testing)
        nets = _train_sequential(x, y, seeds, model=args.model, **kw)
        t3 = time.perf_counter()
        acc_s = torch.stack([test_accuracy(n, test.images, test.labels) for n in nets])
        t4 = time.perf_counter()
        diff = (acc_e - acc_s).abs().max().item()
        passes = epochs + 1

        counts = {}
        def ensemble_w8():
            for first in range(0, len(seeds), size):
                train_ensemble(x, y, model="ConvNetW8", seeds=seeds[first:first + size], **kw)

        for name, fn in (("ensemble", ensemble_w8),
                         ("sequential", lambda: _train_sequential(x, y, seeds, model="ConvNetW8", **kw))):
            with CountOps() as mode:
                fn()
            counts[name] = sum(mode.ops.values()) / (passes * args.networks)
        train_e, train_s = t1 - t0, t3 - t2
        print(f"ipc {ipc:3d}, {epochs} epochs ({passes} passes), groups of {size}: "
              f"train ensemble {train_e:7.1f} s  sequential {train_s:7.1f} s  x{train_s / train_e:.2f} | "
              f"test ensemble {t2 - t1:6.1f} s  sequential {t4 - t3:6.1f} s | "
              f"total x{(t4 - t2) / (t2 - t0):.2f} | max |acc diff| {diff:.4f} ({diff * args.test:.0f} images) | "
              f"ops per pass per network: ensemble {counts['ensemble']:.1f}  sequential {counts['sequential']:.1f}"
              , flush=True)


if __name__ == "__main__":
    main()
