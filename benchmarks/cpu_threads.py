#!/usr/bin/env python3
"""The main job at one and two threads while another process holds a core: whose threads wait?

    PYTHONPATH=. python benchmarks/cpu_threads.py [--iterations 20] [--rounds 2] [--threads 1 2]
        [--backends fused reference] [--wait default passive] [--busy 1] [--step job|augment]
        [--json out.json]

Each run is the condense command's main job (``python -m dsa_fast.condense``: the embedded MNIST
subset, ipc 1, ConvNetW32, 64 real images per class), cut to ``--iterations`` iterations with no
evaluation, in its own process with ``OMP_NUM_THREADS`` = the thread count:

  fused       the command as it runs: dsa_fast's kernels (torch.ops.dsa_fast.*, their own
              at::parallel_for regions) and torch's convolutions, losses and optimiser
  reference   the same command with ``DSA_FAST_NO_EXT=1``: every augmentation is dsa_fast.reference,
              plain torch ops as the official code calls them; the only parallel regions are torch's

``--step augment`` times the job's augmentation alone instead: one seeded DiffAugment call of the
main job (its strategy, rng='compat', 64 real MNIST-sized images) with its backward, for 3 s, in
milliseconds per call. ``--wait passive`` adds rows with ``OMP_WAIT_POLICY=PASSIVE`` (OpenMP
threads that wait for work sleep instead of spinning); ``default`` leaves the variable unset.

While the runs go, ``--busy`` processes spin in a Python busy loop, each pinned to one core (cores
0, 1, ...), as another user's job would hold it. Runs alternate (the order of the configurations
rotates every round) so a change of the machine's other load falls on every configuration alike.
A row's seconds are the condensation iterations' own (``condense_seconds`` of the run's
summary.json: no start-up, no data loading); the process's wall time is beside it. The last column
is the largest difference of the final synthetic images from the 1-thread run's of the same
backend (bitwise equal: 0).

If two threads collapse for ``fused`` and for ``reference`` alike, the waiting threads are not the
extension's alone: torch's ops (its convolutions', elementwise ops') and the extension's
at::parallel_for share one OpenMP runtime and its wait policy.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Tuple

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Spins on one core until its parent is gone (also when the parent is killed before it can stop it).
BUSY = ("import os, sys\nos.sched_setaffinity(0, {int(sys.argv[1])})\n"
        "while os.getppid() == int(sys.argv[2]):\n    pass\n")


def start_busy(n: int) -> List[subprocess.Popen]:
    cores = sorted(os.sched_getaffinity(0))
    return [subprocess.Popen([sys.executable, "-c", BUSY, str(cores[k % len(cores)]), str(os.getpid())])
            for k in range(n)]


AUGMENT = """
import sys, time, torch
from dsa_fast import DiffAugment, ParamDiffAug
from dsa_fast.condense.config import PUBLISHED_STRATEGY
x = torch.randn(64, 1, 28, 28, generator=torch.Generator().manual_seed(0)).requires_grad_()
param, seed = ParamDiffAug(), 0
def call():
    global seed
    seed += 1
    DiffAugment(x, PUBLISHED_STRATEGY["MNIST"], seed=seed, param=param).sum().backward()
call()
t0, n = time.perf_counter(), 0
while time.perf_counter() - t0 < 3:
    call()
    n += 1
print((time.perf_counter() - t0) / n * 1000)
"""


def run_once(backend: str, threads: int, wait: str, iterations: int, step: str, out: str) -> Tuple[float, float]:
    """(seconds of the condensation iterations, or ms per augmentation call; process wall seconds)
    of one run (``out``: its run folder)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": REPO}
    for name, value in (("DSA_FAST_NO_EXT", "1" if backend == "reference" else None),
                        ("OMP_WAIT_POLICY", "PASSIVE" if wait == "passive" else None)):
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    argv = [sys.executable, "-m", "dsa_fast.condense", "--iterations", str(iterations), "--eval-models", "0",
            "--device", "cpu", "--no-progress", "--log-every", str(iterations), "--out", out]
    if step == "augment":
        argv = [sys.executable, "-c", AUGMENT]
    t0 = time.perf_counter()
    done = subprocess.run(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"cpu_threads: {backend} at {threads} thread(s) failed ({done.returncode}):\n{done.stdout}")
    if step == "augment":
        return float(done.stdout.strip().splitlines()[-1]), wall
    with open(os.path.join(out, "summary.json")) as f:
        return float(json.load(f)["condense_seconds"]), wall


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--iterations", type=int, default=20)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--backends", nargs="+", default=["fused", "reference"], choices=["fused", "reference"])
    p.add_argument("--wait", nargs="+", default=["default"], choices=["default", "passive"],
                   help="OpenMP wait policies (passive: OMP_WAIT_POLICY=PASSIVE)")
    p.add_argument("--step", default="job", choices=["job", "augment"],
                   help="time the main job's iterations, or its augmentation call alone")
    p.add_argument("--busy", type=int, default=1, help="busy-loop processes, one per core from core 0")
    p.add_argument("--json", default=None, help="also write the runs to this file")
    a = p.parse_args(argv)
    configs = [(b, t, w) for b in a.backends for w in a.wait for t in a.threads]
    runs: Dict[Tuple[str, int, str], List[Tuple[float, float]]] = {c: [] for c in configs}
    images: Dict[Tuple[str, int, str], torch.Tensor] = {}
    unit = "s" if a.step == "job" else "ms per call"
    busy = start_busy(a.busy)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for r in range(a.rounds):
                order = configs[r % len(configs):] + configs[:r % len(configs)]
                for c in order:
                    out = os.path.join(tmp, "-".join(map(str, c)) + f"-{r}")
                    value, wall = run_once(*c, a.iterations, a.step, out)
                    runs[c].append((value, wall))
                    if a.step == "job":
                        images.setdefault(c, torch.load(os.path.join(out, "synthetic.pt"), weights_only=True)["images"])
                    print(f"round {r + 1}/{a.rounds}: {c[0]:9s} {c[1]} thread(s), wait {c[2]}: {value:8.2f} {unit} "
                          f"(process {wall:.1f} s)", flush=True)
    finally:
        for proc in busy:
            proc.kill()
            proc.wait()
    load = os.getloadavg()
    what = f"{a.iterations} iterations of the main job" if a.step == "job" else "the main job's augmentation call"
    print(f"\ntorch {torch.__version__}, Python {sys.version.split()[0]}, {os.cpu_count()} cores, {a.busy} busy-loop "
          f"process(es), {what}, {a.rounds} alternated rounds; load average at the end "
          f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}\n")
    print(f"| backend | threads | OpenMP wait | {unit}, each run | median | process wall s, median "
          f"| max abs diff of the synthetic set vs {min(a.threads)} thread(s) |")
    print("|:---|---:|:---|:---|---:|---:|---:|")
    rows = []
    for c in configs:
        one = images.get((c[0], min(a.threads), c[2]))
        diff = float((images[c] - one).abs().max()) if one is not None else float("nan")
        med = statistics.median(v for v, _ in runs[c])
        rows.append({"backend": c[0], "threads": c[1], "wait": c[2], unit: [v for v, _ in runs[c]],
                     "process_seconds": [w for _, w in runs[c]], "max_abs_diff": diff})
        print(f"| {c[0]} | {c[1]} | {c[2]} | {', '.join(f'{v:.2f}' for v, _ in runs[c])} | {med:.2f} | "
              f"{statistics.median(w for _, w in runs[c]):.1f} | {diff:.3g} |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"torch": torch.__version__, "python": sys.version.split()[0], "busy": a.busy, "step": a.step,
                       "iterations": a.iterations, "rounds": a.rounds, "rows": rows}, f, indent=2)
    return 0

if __name__ == "__main__":
    sys.exit(main())
