#!/usr/bin/env python3
"""Each DSA family on the CPU, fused vs reference, side by side, interleaved round by round:

    python benchmarks/cpu_families.py [--shapes 256x3x32x32,10x3x32x32] [--threads 1] [--rounds 15]
        [--malloc default|keep]

For every shape and family ('S' mode, rng='compat', a new seed per call, as test_bench_augment.py's
``test_diffaugment`` rows), forward and forward + ``sum().backward()``: the median wall time of one
``DiffAugment`` call with backend 'fused' and 'reference', the speed-up, each as a multiple of one
``x.clone()`` of the same tensor, and the median CPU time (steadier on a loaded machine). Every round
runs every row once, in turn (in a new seeded random order each round), so load and the
allocator's and caches' state hit fused and reference alike. Targets: fused never slower
than the reference; >= 2x for color, crop, scale and rotate (verdicts on wall time; the last
column is the speed-up in CPU time, the steadier figure on a loaded machine).

Every call allocates its output; with glibc's own settings a freed block of a few MB may go back to
the kernel, and the next call that gets it zero-fills it page by page on first touch (about 1 ms
per 3 MB here). Which rows pay that depends on what the rows before them freed, so the last column
gives the mean minor page faults per call of each backend; ``--malloc keep`` applies
``dsa_fast.condense.cpu.keep_freed_memory()`` first (freed memory stays in the process), which
leaves the kernels' own costs.
"""
from __future__ import annotations

import argparse
import itertools
import random
import resource
import statistics
import time

import torch

from dsa_fast import DiffAugment, ParamDiffAug
from dsa_fast.condense.cpu import keep_freed_memory

FAMILIES = ("color", "crop", "cutout", "flip", "scale", "rotate")
MIN_SPEEDUP = {"color": 2.0, "crop": 2.0, "cutout": 1.0, "flip": 1.0, "scale": 2.0, "rotate": 2.0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shapes", default="256x3x32x32,10x3x32x32")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--malloc", choices=("default", "keep"), default="default")
    args = ap.parse_args()
    if args.malloc == "keep":
        keep_freed_memory()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), {args.rounds} interleaved rounds, median; "
          f"'S' mode, rng='compat', seeded (a new seed per call); malloc {args.malloc}\n")
    print("| shape | family | dir | fused ms | reference ms | fused × vs ref | target | verdict | clone ms | "
          "fused in clones | reference in clones | fused CPU ms | reference CPU ms | CPU × | page faults per call, fused / ref |")
    print("|:---|:---|:---|---:|---:|---:|---:|:---|---:|---:|---:|---:|---:|---:|---:|")
    seeds = itertools.count(1)
    for shape_name in args.shapes.split(","):
        shape = tuple(int(v) for v in shape_name.split("x"))
        x = torch.rand(shape, generator=torch.Generator().manual_seed(0))
        xg = x.clone().requires_grad_(True)

        def clone_fwdbwd():
            xg.grad = None
            xg.clone().sum().backward()

        rows = {("clone", "fwd"): lambda: x.clone(), ("clone", "fwdbwd"): clone_fwdbwd}
        for fam in FAMILIES:
            for backend in ("fused", "reference"):
                param = ParamDiffAug(aug_mode="S")

                def fwd(fam=fam, backend=backend, param=param):
                    return DiffAugment(x, fam, seed=next(seeds), param=param, backend=backend)

                def fwdbwd(fam=fam, backend=backend, param=param):
                    xg.grad = None
                    DiffAugment(xg, fam, seed=next(seeds), param=param, backend=backend).sum().backward()

                rows[(fam, backend, "fwd")] = fwd
                rows[(fam, backend, "fwdbwd")] = fwdbwd
        wall = {k: [] for k in rows}
        cpu_time = {k: [] for k in rows}
        faults = {k: [] for k in rows}
        for fn in rows.values():
            fn()
        shuffle = random.Random(0).shuffle
        for _ in range(args.rounds):
            # Each round in a new (seeded) order: no row always follows the same neighbour (a row
            # that frees memory or evicts caches would otherwise always hand its state to the next).
            order = list(rows.items())
            shuffle(order)
            for k, fn in order:
                f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
                c, s = time.process_time(), time.perf_counter()
                fn()
                wall[k].append(time.perf_counter() - s)
                cpu_time[k].append(time.process_time() - c)
                faults[k].append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
        w = {k: statistics.median(v) * 1e3 for k, v in wall.items()}
        p = {k: statistics.median(v) * 1e3 for k, v in cpu_time.items()}
        pf = {k: statistics.mean(v) for k, v in faults.items()}
        for fam in FAMILIES:
            for d in ("fwd", "fwdbwd"):
                f, r, c = w[(fam, "fused", d)], w[(fam, "reference", d)], w[("clone", d)]
                s = r / f
                need = MIN_SPEEDUP[fam]
                print(f"| {shape_name} | {fam} | {d} | {f:.3f} | {r:.3f} | {s:.2f}× | ≥ {need:g}× | "
                      f"{'PASS' if s >= need else 'FAIL'} | {c:.4f} | {f / c:.1f} | {r / c:.1f} | "
                      f"{p[(fam, 'fused', d)]:.3f} | {p[(fam, 'reference', d)]:.3f} | "
                      f"{p[(fam, 'reference', d)] / p[(fam, 'fused', d)]:.2f}× | "
                      f"{pf[(fam, 'fused', d)]:.0f} / {pf[(fam, 'reference', d)]:.0f} |")


if __name__ == "__main__":
    main()
