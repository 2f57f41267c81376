"""Seconds and peak memory per condensation iteration of the loop, at several ipc, rng and compile
settings, side by side in one process.

One iteration = what ``python -m dsa_fast.condense`` does per iteration (``_Run.step``): a fresh
network, ``outer_loop`` image steps (every class's real batch and synthetic images augmented, network
gradients, distance, image update) and the inner epochs between them. The runs read the MNIST
subset shipped in the package (300 training images per class, so ``--batch-real`` up to 300), with
no evaluation. Per setting: ``--warmup`` iterations (lazy state, compilation, CUDA graph recording)
then ``--iterations`` timed ones, each synchronised; the median is reported. Peak memory (CUDA
only): ``torch.cuda.max_memory_allocated`` over the timed iterations, above what was allocated
before them. The CPU's peak memory of a step is ``bench_loop_memory.py``'s (profiler allocations).

    PYTHONPATH=. python benchmarks/bench_loop_iteration.py --device cuda --ipc 1 10 50 --budget 45

``--budget`` (seconds) skips the settings that would start after it ran out (they are printed as
not run), so a caller with a time limit gets every finished row. A measurement script, not a test.
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


def measure(cfg: CondenseConfig, warmup: int, iterations: int):
    run = _Run(resolve(cfg))
    device = run.device
    for _ in range(warmup):
        run.step()
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    times = []
    for _ in range(iterations):
        t0 = time.perf_counter()
        run.step()
        sync(device)
        times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated(device) - base if device.type == "cuda" else None
    loss = float(run.eval_loss / max(run.eval_count, 1))
    return times, peak, loss


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
    where = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    print(f"torch {torch.__version__}; {where}; model {args.model}, {args.batch_real} real images per class, "
          f"MNIST subset; warm-up {args.warmup}, timed {args.iterations} iterations (median)")
    print("| ipc | outer/inner | rng | compile | s/iteration (median) | min–max | peak memory per iteration | "
          "loss |")
    print("|---|---|---|---|---|---|---|---|")
    for compile in args.compile:
        for ipc in args.ipc:
            for rng in args.rng:
                if compile == "on" and rng != "device":
                    continue
                if args.budget and time.perf_counter() - start > args.budget:
                    print(f"| {ipc} | | {rng} | {compile} | not run: the {args.budget:.0f} s budget is spent | | | |")
                    continue
                cfg = CondenseConfig(dataset="MNIST", data_path=None, ipc=ipc, model=args.model,
                                     batch_real=args.batch_real, eval_models=0, iterations=1, device=args.device,
                                     rng=rng, compile=compile, out=tempfile.mkdtemp(prefix="bench-loop-"))
                resolved = resolve(cfg)
                times, peak, loss = measure(cfg, args.warmup, args.iterations)
                print(f"| {ipc} | {resolved.outer_loop}/{resolved.inner_loop} | {rng} | {compile} | "
                      f"{statistics.median(times):.4f} | {min(times):.4f}–{max(times):.4f} | "
                      f"{'—' if peak is None else f'{peak / 2**20:.1f} MiB'} | {loss:.4f} |", flush=True)
    print(f"total {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
