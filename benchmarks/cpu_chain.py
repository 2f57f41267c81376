#!/usr/bin/env python3
"""The CPU 'M' chain side by side, at 1 and 2 torch threads, in one process:

    python benchmarks/cpu_chain.py [--shape 256,3,32,32] [--threads 1,2] [--rounds 15] [--malloc default|keep]

Per thread count, the median wall time (ms) of one call, forward and forward + ``sum().backward()``:
``DiffAugment(x, FULL, seed, ParamDiffAug(aug_mode='M'), backend)`` for the fused and the reference
backend (rng='compat', a new seed per call), the raw op ``torch.ops.dsa_fast.augment`` on a packed
table (no sampling, no Python around the kernel), one ``grid_sample`` with a ready grid and one
``x.clone()``, all on the same tensor. Then the targets (fused >= 5x the reference; fused forward
<= 2x one grid_sample forward; fused forward+backward <= one grid_sample forward+backward) and the
bytes the forward moves (x read once, y written once) as a fraction of the copy's speed.
Rows are interleaved round by round (in a new seeded random order each round), so load on a shared
machine and the state one row leaves to the next hit them alike; the CPU time of
the process (summed over its threads) is printed beside the wall time: with one thread on a loaded
machine it is the steadier number. The verdicts use wall time. ``--malloc keep`` applies
``dsa_fast.condense.cpu.keep_freed_memory()`` first: every row allocates its output, and with
glibc's own settings a call may get memory returned to the kernel and zero-filled again on first
touch (see cpu_families.py).
"""
from __future__ import annotations

import argparse
import itertools
import random
import math
import statistics
import time

import torch
import torch.nn.functional as F

from dsa_fast import DiffAugment, ParamDiffAug, sample_params
from dsa_fast.condense.cpu import keep_freed_memory
from dsa_fast.fused import pack_omega

FULL = "color_crop_cutout_flip_scale_rotate"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", default="256,3,32,32")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--malloc", choices=("default", "keep"), default="default")
    args = ap.parse_args()
    if args.malloc == "keep":
        keep_freed_memory()
    shape = tuple(int(v) for v in args.shape.split(","))
    x = torch.rand(shape, generator=torch.Generator().manual_seed(0))
    xg = x.clone().requires_grad_(True)
    a = math.radians(10.0)
    theta = torch.tensor([[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0]])
    grid = F.affine_grid(theta.expand(shape[0], 2, 3), list(shape), align_corners=False)
    omega = sample_params(FULL, x, seed=0, param=ParamDiffAug(aug_mode="M"))
    table, flags = pack_omega(omega.steps, 1, x.device)
    seeds = itertools.count(1)

    def fwdbwd(forward):
        def call():
            xg.grad = None
            forward(xg).sum().backward()

        return call

    def chain(backend):
        param = ParamDiffAug(aug_mode="M")
        return lambda t: DiffAugment(t, FULL, seed=next(seeds), param=param, backend=backend)

    raw = lambda t: torch.ops.dsa_fast.augment(t, table, flags, False)  # noqa: E731
    gs = lambda t: F.grid_sample(t, grid, mode="bilinear", padding_mode="zeros", align_corners=False)  # noqa: E731
    rows = {
        "clone fwd": lambda: x.clone(),
        "grid_sample fwd": lambda: gs(x),
        "grid_sample fwdbwd": fwdbwd(gs),
        "reference M fwd": lambda: chain("reference")(x),
        "reference M fwdbwd": fwdbwd(chain("reference")),
        "fused M fwd": lambda: chain("fused")(x),
        "fused M fwdbwd": fwdbwd(chain("fused")),
        "raw op M fwd": lambda: raw(x),
        "raw op M fwdbwd": fwdbwd(raw),
    }
    nbytes = 2 * x.numel() * x.element_size()
    print(f"shape {shape} float32, torch {torch.__version__}, rounds {args.rounds} (median), rng='compat' seeded, "
          f"malloc {args.malloc}")
    for threads in [int(t) for t in args.threads.split(",")]:
        torch.set_num_threads(threads)
        times = {k: [] for k in rows}
        cpu = {k: [] for k in rows}
        for fn in rows.values():
            fn()  # warm-up
        shuffle = random.Random(0).shuffle
        for _ in range(args.rounds):
            # Each round in a new (seeded) order: no row always follows the same neighbour (a row
            # that frees memory or evicts caches would otherwise always hand its state to the next).
            order = list(rows.items())
            shuffle(order)
            for k, fn in order:
                c, s = time.process_time(), time.perf_counter()
                fn()
                times[k].append(time.perf_counter() - s)
                cpu[k].append(time.process_time() - c)
        med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
        cpu_med = {k: statistics.median(v) * 1e3 for k, v in cpu.items()}
        print(f"\n## {threads} thread(s)\n")
        print("| row | median ms | median CPU ms (all threads) |")
        print("|:---|---:|---:|")
        for k, v in med.items():
            print(f"| {k} | {v:.3f} | {cpu_med[k]:.3f} |")
        print()
        for d in ("fwd", "fwdbwd"):
            s = med[f"reference M {d}"] / med[f"fused M {d}"]
            print(f"- fused vs reference, {d}: {s:.2f}x (target >= 5x: {'PASS' if s >= 5 else 'FAIL'})")
        r = med["fused M fwd"] / med["grid_sample fwd"]
        print(f"- fused fwd = {r:.2f}x one grid_sample fwd (target <= 2x: {'PASS' if r <= 2 else 'FAIL'})")
        r = med["fused M fwdbwd"] / med["grid_sample fwdbwd"]
        print(f"- fused fwdbwd = {r:.2f}x one grid_sample fwdbwd (target <= 1x: {'PASS' if r <= 1 else 'FAIL'})")
        for k in ("fused M fwd", "raw op M fwd"):
            gbs = nbytes / (med[k] / 1e3) / 1e9
            print(f"- {k}: moves {nbytes / 2**20:.1f} MiB (x read, y written) at {gbs:.2f} GB/s = "
                  f"{med['clone fwd'] / med[k]:.3f} of a copy of the same bytes ({med['clone fwd']:.3f} ms)")


if __name__ == "__main__":
    main()
