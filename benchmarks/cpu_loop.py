#!/usr/bin/env python3
"""One DSA condensation iteration on the CPU: the per-class loop against the grouped class matching,
side by side, interleaved round by round.

    PYTHONPATH=. python benchmarks/cpu_loop.py [--ipc 1 10] [--rounds 5] [--threads 1]
        [--width 32] [--real 64] [--image 1,28,28] [--outer 2] [--inner 10] [--malloc keep|default]

One iteration is what ``methods.GradientMatching.iteration`` does: a fresh ConvNet (instance norm,
depth 3), then per outer step the matching loss over 10 classes (real images drawn per class, the
synthetic set split per class, one seed per class), its backward to the synthetic images, the SGD
step on them, and (but after the last outer step) ``inner`` epochs of training the network on the
synthetic set. ipc 1 runs the published loops (outer 1, inner 1: matching only); ipc 10 runs
``--outer`` outer steps with ``--inner`` epochs each (published 10 and 50, cut to fit).

Rows (the matching loss, everything else the same code):
  per-class              matching.match_loss: the official loop's structure (per class two
                         DiffAugment calls, two autograd.grad passes, the distance)
  grouped                batched.match_loss_grouped, every class in one real pass
  grouped-chunk1         batched.match_loss_grouped, one real pass per class (real_chunk=1)

Every row starts from the same synthetic set and seeds; the script prints the largest difference
of each row's final synthetic set from the per-class row's (equal results up to float rounding).
Wall and process CPU time, median over the rounds (the CPU time is the steadier number on a loaded
machine with one thread). ``--malloc keep`` applies ``cpu.keep_freed_memory()`` first (the
condense command's ``--keep-freed-memory``; ``default``: glibc's own settings). Settings of the process (threads,
malloc) are compared by running the script once per setting, alternately.
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable, Dict, List

import torch

from dsa_fast import ParamDiffAug
from dsa_fast.condense import cpu
from dsa_fast.condense.batched import match_loss_grouped
from dsa_fast.condense.evaluate import train_epoch
from dsa_fast.condense.matching import match_loss
from dsa_fast.condense.networks import ConvNet

CLASSES = 10
ROWS: Dict[str, Callable] = {
    "per-class": match_loss,
    "grouped": match_loss_grouped,
    "grouped-chunk1": lambda *a: match_loss_grouped(*a, real_chunk=1),
}


def iteration(loss_fn, args, images: List[torch.Tensor], syn0: torch.Tensor, ipc: int, outer: int, inner: int,
              seed: int) -> torch.Tensor:
    c, h, w = syn0.shape[1:]
    torch.manual_seed(seed)
    net = ConvNet(c, CLASSES, (h, w), width=args.width)
    net.train()
    syn = syn0.clone().requires_grad_(True)
    opt_img = torch.optim.SGD([syn], lr=0.1, momentum=0.5)
    opt_net = torch.optim.SGD(net.parameters(), lr=0.01)
    label_syn = torch.arange(CLASSES).repeat_interleave(ipc)
    param = ParamDiffAug()
    sampler = torch.Generator().manual_seed(seed)
    for ol in range(outer):
        reals = [x[torch.randperm(x.shape[0], generator=sampler)[:args.real]] for x in images]
        seeds = torch.randint(0, 100000, (CLASSES,), generator=sampler).tolist()
        loss = loss_fn(net, reals, list(syn.split(ipc)), list(range(CLASSES)), seeds, args.strategy, param, "ours")
        opt_img.zero_grad(set_to_none=True)
        loss.backward(inputs=[syn])
        opt_img.step()
        if ol == outer - 1:
            break
        syn_train = syn.detach().clone()
        for _ in range(inner):
            train_epoch(net, syn_train, label_syn, opt_net, 256, args.strategy, param)
    return syn.detach()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ipc", type=int, nargs="+", default=[1, 10])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--real", type=int, default=64)
    ap.add_argument("--image", default="1,28,28")
    ap.add_argument("--outer", type=int, default=2)
    ap.add_argument("--inner", type=int, default=10)
    ap.add_argument("--strategy", default="color_crop_cutout_scale_rotate")
    ap.add_argument("--malloc", choices=("keep", "default"), default="default")
    ap.add_argument("--rows", default=",".join(ROWS), help="comma-separated rows to run")
    args = ap.parse_args()
    if args.malloc == "keep":
        cpu.keep_freed_memory()
    torch.set_num_threads(args.threads)
    shape = tuple(int(v) for v in args.image.split(","))
    g = torch.Generator().manual_seed(0)
    images = [torch.randn(max(args.real, 100), *shape, generator=g) for _ in range(CLASSES)]
    rows = args.rows.split(",")
    print(f"torch {torch.__version__}; {args.threads} thread(s); malloc {args.malloc}; ConvNet width {args.width}, "
          f"image {shape}, {args.real} real per class, {CLASSES} classes, {args.rounds} interleaved rounds, median")
    print("| ipc | loops (outer, inner) | row | wall s | CPU s | × per-class (wall) | × per-class (CPU) | "
          "max |Δ syn| vs per-class |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for ipc in args.ipc:
        outer, inner = (1, 1) if ipc == 1 else (args.outer, args.inner)
        syn0 = torch.cat([x[:ipc] for x in images])
        walls: Dict[str, List[float]] = {r: [] for r in rows}
        cpus: Dict[str, List[float]] = {r: [] for r in rows}
        final: Dict[str, torch.Tensor] = {}
        iteration(ROWS[rows[0]], args, images, syn0, ipc, outer, inner, 0)  # warm-up
        for rnd in range(args.rounds):
            for r in rows:
                t0, c0 = time.perf_counter(), time.process_time()
                out = iteration(ROWS[r], args, images, syn0, ipc, outer, inner, rnd)
                walls[r].append(time.perf_counter() - t0)
                cpus[r].append(time.process_time() - c0)
                if rnd == 0:
                    final[r] = out
        base_w, base_c = statistics.median(walls[rows[0]]), statistics.median(cpus[rows[0]])
        for r in rows:
            w, c = statistics.median(walls[r]), statistics.median(cpus[r])
            diff = (final[r] - final[rows[0]]).abs().max().item()
            print(f"| {ipc} | {outer}, {inner} | {r} | {w:.3f} | {c:.3f} | {base_w / w:.2f}× | {base_c / c:.2f}× | "
                  f"{diff:.1e} |", flush=True)


if __name__ == "__main__":
    main()
