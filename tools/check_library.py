"""Checks a built dsa_fast._C library outside the package (the CMake build; ctest runs it):
it loads into this Python's torch, registers the ops, computes an identity call exactly, and, when
torch's own parallel backend is OpenMP (as setup.py and CMakeLists.txt then build with OpenMP),
runs the CPU executor's batch on more than one thread.

    python tools/check_library.py build/cmake/_C.<soabi>.so

The thread check: a fresh process whose torch has started no parallel region yet holds one thread
per started pool; OpenMP starts its team at the first parallel region, so a library compiled with
OpenMP (at::parallel_for over the batch) adds threads on its first call with 2 threads, and one
compiled without it (ATen's header then runs the batch on the calling thread) adds none.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys


def _threads() -> int:
    return len(os.listdir("/proc/self/task"))


def _undefined_symbols(path: str) -> set[str]:
    out = subprocess.run(["nm", "-D", "--undefined-only", path], capture_output=True, text=True, check=True).stdout
    return {line.split()[-1].split("@")[0] for line in out.splitlines() if line.strip()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("library")
    args = ap.parse_args(argv)
    if not os.path.isfile(args.library):
        print(f"check_library: {args.library} is not a file", file=sys.stderr)
        return 2

    import torch

    torch.set_num_threads(2)
    torch.ops.load_library(args.library)
    for op in ("augment", "augment_backward", "augment_draw", "augment_compat"):
        if not torch._C._dispatch_has_kernel_for_dispatch_key(f"dsa_fast::{op}", "CPU"):
            print(f"check_library: {args.library} registers no CPU kernel for dsa_fast::{op}", file=sys.stderr)
            return 1
    # No op flag: the identity map, exactly. Small tensors: torch's own ops here stay serial.
    x = torch.arange(64 * 3 * 8 * 8, dtype=torch.float32).reshape(64, 3, 8, 8)
    omega = torch.zeros(1, 15, dtype=torch.float64)
    before = _threads()
    y = torch.ops.dsa_fast.augment(x, omega, 0, False)
    after = _threads()
    if not torch.equal(y, x):
        print("check_library: dsa_fast::augment with no op is not the identity", file=sys.stderr)
        return 1
    openmp = "ATen parallel backend: OpenMP" in torch.__config__.parallel_info()  # NB: after the count
    if openmp:
        gomp = sorted(s for s in _undefined_symbols(args.library) if s.startswith("GOMP_"))
        if "GOMP_parallel" not in gomp:
            print(f"check_library: {args.library} calls no GOMP_parallel (OpenMP symbols: {gomp}): its "
                  "parallel_for runs on one thread; build it with OpenMP", file=sys.stderr)
            return 1
        if after <= before:
            print(f"check_library: dsa_fast::augment on 64 images with torch.set_num_threads(2) started no "
                  f"thread ({before} before, {after} after): the CPU executor ran on one thread", file=sys.stderr)
            return 1
    print(f"check_library: {args.library} loads, registers the 4 ops, identity exact; threads {before} -> {after} "
          f"around the first call (torch's backend {'OpenMP' if openmp else 'not OpenMP: no thread check'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
