"""Seconds and peak memory per condensation iteration of the loop, at several ipc, rng and compile
settings, side by side in one process.

One iteration = what ``python -m dsa_fast.condense`` does per iteration (``_Run.step``): a fresh
network, ``outer_loop`` image steps (every class's real batch and synthetic images augmented, network
gradients, distance, image update) and the inner epochs between them. The runs read the MNIST
subset shipped in the package (300 training images per class, so ``--batch-real`` up to 300), with
no evaluation. Per setting: ``--warmup`` iterations (lazy state, compilation, CUDA graph recording;
their time is printed), then ``--iterations`` rounds in which every setting times one synchronised
iteration in turn (interleaved, so load changes hit all settings alike); the median is reported. Peak memory (CUDA
only): ``torch.cuda.max_memory_allocated`` over the timed iterations, above what was allocated
before them. The CPU's peak memory of a step is ``bench_loop_memory.py``'s (profiler allocations).

    PYTHONPATH=. python benchmarks/bench_loop_iteration.py --device cuda --ipc 1 10 50 --budget 45

``--budget`` (seconds) skips the settings whose warm-up would start after it ran out (printed as not
run) and stops the timed rounds at 1.3 times it, so a caller with a time limit gets a table.
A measurement script, not a test.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

from dsa_fast.condense import CondenseConfig, resolve
from dsa_fast.condense.loop import _Run


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_step(run: _Run):
    """(seconds, peak bytes above the allocation before it or None on the CPU) of one iteration."""
    device = run.device
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    t0 = time.perf_counter()
    run.step()
    sync(device)
    seconds = time.perf_counter() - t0
    return seconds, (torch.cuda.max_memory_allocated(device) - base if device.type == "cuda" else None)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--ipc", type=int, nargs="+", default=[1, 10, 50])
    ap.add_argument("--rng", nargs="+", default=["device"], choices=["compat", "device"])
    ap.add_argument("--compile", nargs="+", default=["off", "on"], choices=["off", "on"])
    ap.add_argument("--model", default="ConvNet")
    ap.add_argument("--batch-real", type=int, default=256)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--iterations", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--budget", type=float, default=0, help="seconds; 0: no limit")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    spent = lambda: time.perf_counter() - start  # noqa: E731
    where = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    print(f"torch {torch.__version__}; {where}; model {args.model}, {args.batch_real} real images per class, "
          f"MNIST subset; warm-up {args.warmup}, then {args.iterations} rounds of one iteration per setting, "
          f"interleaved (median)", flush=True)
    runs = []
    for compile in args.compile:
        for ipc in args.ipc:
            for rng in args.rng:
                if compile == "on" and rng != "device":
                    continue
                name = f"ipc {ipc}, rng {rng}, compile {compile}"
                if args.budget and spent() > args.budget:
                    print(f"{name}: not run (the {args.budget:.0f} s budget is spent)", flush=True)
                    continue
                cfg = resolve(CondenseConfig(dataset="MNIST", data_path=None, ipc=ipc, model=args.model,
                                             batch_real=args.batch_real, eval_models=0, iterations=1,
                                             device=args.device, rng=rng, compile=compile,
                                             out=tempfile.mkdtemp(prefix="bench-loop-")))
                run = _Run(cfg)
                t0 = time.perf_counter()
                for _ in range(args.warmup):
                    run.step()
                sync(run.device)
                print(f"{name}: warm-up {time.perf_counter() - t0:.1f} s (compilation included)", flush=True)
                runs.append((ipc, rng, compile, f"{cfg.outer_loop}/{cfg.inner_loop}", run, []))
    for _ in range(args.iterations):
        if args.budget and spent() > 1.3 * args.budget:
            print("timed rounds stopped: out of budget", flush=True)
            break
        for row in runs:
            row[5].append(timed_step(row[4]))
    print("| ipc | outer/inner | rng | compile | s/iteration (median) | min–max | rounds | peak memory per iteration |")
    print("|---|---|---|---|---|---|---|---|")
    for ipc, rng, compile, loops, run, rows in runs:
        if not rows:
            continue
        secs = [r[0] for r in rows]
        peaks = [r[1] for r in rows if r[1] is not None]
        mem = f"{max(peaks) / 2**20:.1f} MiB" if peaks else "—"
        print(f"| {ipc} | {loops} | {rng} | {compile} | {statistics.median(secs):.4f} | {min(secs):.4f}–{max(secs):.4f} "
              f"| {len(secs)} | {mem} |")
    print(f"total {spent():.1f} s", flush=True)


if __name__ == "__main__":
    main()
