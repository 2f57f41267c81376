"""Every CUDA kernel of the project run on CPU threads by a CUDA host simulator, under
ThreadSanitizer and under AddressSanitizer + UndefinedBehaviorSanitizer (no GPU needed).

csrc/tests/cuda_sim_test.cpp compiles the kernel headers (csrc/cuda/augment_kernel.cuh,
draw_kernel.cuh) unmodified against csrc/tests/cuda_sim.h (thread-local threadIdx/blockIdx,
__syncthreads a real barrier, dynamic shared memory of exactly the launched size filled with NaN, two
blocks at a time), launches each kernel with exactly the plan of common/launch_plan.h on an H100-like
and a tiny device, checks the launches the driver would refuse are refused, and compares every
result with the CPU executor (csrc/cpu/image_cpu.h) compiled into the same binary.

What it catches, each mutation made by hand on a copy of the tree and the test run on it:

    cp -r csrc /tmp/m && <edit /tmp/m> && \\
    g++ -std=c++20 -O1 -g -pthread -fsanitize=<san> -I<torch>/include /tmp/m/tests/cuda_sim_test.cpp -o sim && ./sim

- dynamic shared memory one element short (launch_plan.h, p.smem_bytes = scratch + workspace - acc_bytes):
  AddressSanitizer, heap-buffer-overflow in fill_base_table_at; ThreadSanitizer build: mismatches.
- each barrier deleted in turn, ThreadSanitizer reporting a data race (exit 66) for every one:
  MUTATIONS
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "csrc" / "tests" / "cuda_sim_test.cpp"
CXX = os.environ.get("CXX", "g++")

SANITIZERS = {
    "thread": ["-fsanitize=thread"],
    "address,undefined": ["-fsanitize=address,undefined", "-fno-sanitize-recover=undefined"],
}
ENV = {
    "thread": {"TSAN_OPTIONS": "halt_on_error=1"},
    "address,undefined": {"ASAN_OPTIONS": "detect_leaks=1", "UBSAN_OPTIONS": "print_stacktrace=1"},
}


def _torch_include() -> str:
    # c10's Half and BFloat16 are header-only: the include directory of the installed torch, no library.
    import torch

    return str(Path(torch.__file__).parent / "include")


def _compile(out: Path, flags) -> subprocess.CompletedProcess:
    # ccache when present (CI sets it up): a warm run then skips both sanitizer builds.
    launcher = [shutil.which("ccache")] if shutil.which("ccache") else []
    cmd = [*launcher, CXX, "-std=c++20", "-O1", "-g", "-pthread", *flags, f"-I{_torch_include()}", str(SOURCE),
           "-o", str(out)]
    return subprocess.run(cmd, capture_output=True, text=True)


@pytest.fixture(scope="module")
def simulators(tmp_path_factory):
    """Both sanitizer builds, compiled side by side (one compile per core)."""
    if shutil.which(CXX) is None:
        pytest.skip(f"no C++ compiler {CXX!r} on PATH to build {SOURCE.relative_to(ROOT)}")
    out = tmp_path_factory.mktemp("cuda_sim")
    exes = {san: out / f"cuda_sim_{san.replace(',', '_')}" for san in SANITIZERS}
    with ThreadPoolExecutor(len(SANITIZERS)) as pool:
        built = dict(zip(SANITIZERS, pool.map(lambda s: _compile(exes[s], SANITIZERS[s]), SANITIZERS)))
    return {san: (exes[san], built[san]) for san in SANITIZERS}


@pytest.mark.parametrize("sanitizer", list(SANITIZERS))
def test_cuda_sim_kernels_equal_cpu_executor(simulators, sanitizer):
    exe, build = simulators[sanitizer]
    assert build.returncode == 0, f"{' '.join(build.args)} failed:\n{build.stderr[-4000:]}"
    done = subprocess.run([str(exe)], capture_output=True, text=True, env=dict(os.environ, **ENV[sanitizer]),
                          timeout=600)
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr[:6000]}"
    # Every check ran (288 at this writing: the matrix of cuda_sim_test.cpp) and none failed.
    m = re.search(r"cuda sim: (\d+) checks, (\d+) launches, 0 failures", done.stdout)
    assert m and int(m.group(1)) >= 280, done.stdout
