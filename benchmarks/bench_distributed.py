"""Seconds per condensation iteration on one process against two (torch.distributed, gloo), on the CPU.

    PYTHONPATH=. python benchmarks/bench_distributed.py [--rounds 3] [--iterations 4] [--model ConvNetW64]
        [--batch-real 128] [--ipc 1] [--outer-loop N --inner-loop M]

Rows, on the embedded MNIST subset (10 classes), evaluation off:
  1 process x 1 thread     the run as it is without torchrun (no torch.distributed)
  1 process x 2 threads    the same with torch's intra-op threads over both cores
  2 processes x 1 thread   two processes with the torchrun environment (WORLD_SIZE=2, ...), 5 classes each
The rows alternate within each round (so a change of machine load hits all of them); each run's first
iteration is left out (warm-up); the figure of a run is the median of its other iterations, and the
table shows the median over rounds (min-max). Speed-up and efficiency are against 1 process x 1 thread
(efficiency = speed-up / cores used). Prints the load average before and after.

Two clocks: wall seconds per iteration (what a user waits; on a machine busy with other work a process
gets only part of a core, so this is noisy), and CPU seconds per iteration of the busiest process
(``time.process_time``: all threads of that process), which measures how the work divides whatever
the load: with perfect division two processes each spend half the CPU seconds of one.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

WORKER = "DSA_BENCH_DISTRIBUTED_WORKER"  # set: this process is one run's process, writing its timings there
ROWS = (("1 process x 1 thread", 1, 1), ("1 process x 2 threads", 1, 2), ("2 processes x 1 thread", 2, 1))


def worker(argv) -> None:
    import torch

    from dsa_fast.condense import CondenseConfig, condense, distributed

    cfg = CondenseConfig(**json.loads(argv[0]))
    dist = distributed.launch(cfg.device)
    stamps = []
    condense(cfg, dist=dist, progress=False,
             on_iteration=lambda i: stamps.append((time.perf_counter(), time.process_time())))
    with open(f"{os.environ[WORKER]}.{dist.rank}", "w") as f:
        json.dump({"stamps": stamps, "threads": torch.get_num_threads()}, f)
    distributed.finish(dist)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _median_step(stamps, clock: int) -> float:
    return statistics.median(b[clock] - a[clock] for a, b in zip(stamps, stamps[1:]))


def run(processes: int, threads: int, cfg: dict, folder: str):
    """One run: (median wall seconds of its iterations after the first, on rank 0; median CPU
    seconds of those iterations, of the busiest process)."""
    timings = os.path.join(folder, "timings.json")
    cfg = dict(cfg, out=os.path.join(folder, "run"))
    base = dict(os.environ, OMP_NUM_THREADS=str(threads), **{WORKER: timings})
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        base.pop(key, None)
    if processes > 1:
        port = str(_free_port())
        envs = [dict(base, WORLD_SIZE=str(processes), RANK=str(r), LOCAL_RANK=str(r), MASTER_ADDR="127.0.0.1",
                     MASTER_PORT=port) for r in range(processes)]
    else:
        envs = [base]
    procs = [subprocess.Popen([sys.executable, os.path.abspath(__file__), json.dumps(cfg)], env=env) for env in envs]
    codes = [p.wait() for p in procs]
    if any(codes):
        raise SystemExit(f"bench_distributed: a run failed (exit codes {codes})")
    got = []
    for r in range(processes):
        with open(f"{timings}.{r}") as f:
            got.append(json.load(f))
    if any(g["threads"] != threads for g in got):
        raise SystemExit(f"bench_distributed: asked for {threads} threads, the runs had {[g['threads'] for g in got]}")
    return _median_step(got[0]["stamps"], 0), max(_median_step(g["stamps"], 1) for g in got)


def load() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--iterations", type=int, default=4, help="per run; the first is left out")
    p.add_argument("--model", default="ConvNetW64")
    p.add_argument("--batch-real", type=int, default=128)
    p.add_argument("--ipc", type=int, default=1)
    p.add_argument("--outer-loop", type=int, default=None)
    p.add_argument("--inner-loop", type=int, default=None)
    a = p.parse_args()
    if a.iterations < 2:
        p.error("--iterations must be >= 2 (the first is left out)")
    cfg = dict(dataset="MNIST", data_path=None, ipc=a.ipc, iterations=a.iterations, model=a.model,
               batch_real=a.batch_real, eval_models=0, device="cpu", seed=0, checkpoint_every=10**6, log_every=10**6)
    if a.outer_loop is not None:
        cfg.update(outer_loop=a.outer_loop, inner_loop=a.inner_loop)
    print(f"load average before: {load()}")
    print(f"config: {json.dumps(cfg)}")
    times = {name: [] for name, _, _ in ROWS}
    cpu = {name: [] for name, _, _ in ROWS}
    for r in range(a.rounds):
        for name, processes, threads in ROWS:
            with tempfile.TemporaryDirectory() as folder:
                t, c = run(processes, threads, cfg, folder)
            times[name].append(t)
            cpu[name].append(c)
            print(f"round {r + 1}: {name}: {t:.3f} s/iteration wall, {c:.3f} CPU s/iteration (busiest process)",
                  flush=True)
    print(f"load average after: {load()}")
    base, base_cpu = statistics.median(times[ROWS[0][0]]), statistics.median(cpu[ROWS[0][0]])
    print("\n| run | wall s / iteration, median (min-max) | speed-up | efficiency "
          "| CPU s / iteration, busiest process | work division: CPU s of 1x1 / (processes x CPU s of the busiest) |"
          "\n|---|---|---|---|---|---|")
    for name, processes, threads in ROWS:
        m, mc = statistics.median(times[name]), statistics.median(cpu[name])
        cores = processes * threads
        print(f"| {name} | {m:.3f} ({min(times[name]):.3f}-{max(times[name]):.3f}) | {base / m:.2f}x | "
              f"{100 * base / m / cores:.0f} % | {mc:.3f} ({min(cpu[name]):.3f}-{max(cpu[name]):.3f}) | "
              f"{100 * base_cpu / processes / mc:.0f} % |")


if __name__ == "__main__":
    if os.environ.get(WORKER):
        worker(sys.argv[1:])
    else:
        main()
