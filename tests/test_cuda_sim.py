r"""Every CUDA kernel of the project run on CPU threads by a CUDA host simulator, under
ThreadSanitizer and under AddressSanitizer + UndefinedBehaviorSanitizer (no GPU needed).

csrc/tests/cuda_sim_test.cpp compiles the kernel headers (csrc/cuda/augment_kernel.cuh,
draw_kernel.cuh) unmodified against csrc/tests/cuda_sim.h (thread-local threadIdx/blockIdx,
__syncthreads a real barrier, dynamic shared memory of exactly the launched size filled with NaN, two
blocks at a time), launches each kernel with exactly the plan of common/launch_plan.h on an H100-like
and a tiny device, checks the launches the driver would refuse are refused, and compares every
result with the CPU executor (csrc/cpu/image_cpu.h) compiled into the same binary.

What it catches: each mutation below was made on a copy of csrc/ and the simulator built and run
on it exactly as here (torch 2.13.0+cpu's include directory, g++ 12.2):

    cp -r csrc /tmp/m/csrc && sed -i '<LINE>s/.*/  \/\/ (barrier deleted)/' /tmp/m/csrc/<FILE>
    g++ -std=c++20 -O1 -g -pthread -fsanitize=thread -I<torch>/include /tmp/m/csrc/tests/cuda_sim_test.cpp -o sim
    TSAN_OPTIONS=halt_on_error=1 ./sim

Each barrier deleted in turn: ThreadSanitizer reports a data race (exit 66) for every one.
  kernels/augment.h  fill_base_table_at's sync (the base table)       race in fill_base_table_at
  kernels/augment.h  augment_image, after the pointwise pass           race in Plane::load
  kernels/augment.h  augment_image, between scale and rotate           race in Plane::store
  kernels/augment.h  augment_backward_image, after transposed rotate   race in Plane::load
  kernels/augment.h  augment_backward_image, after transposed scale    race in Plane::load
  kernels/augment.h  augment_backward_image, one resampling            race in Plane::store
  cuda/augment_kernel.cuh  CudaBlockExec::sum, after the scratch write race in CudaBlockExec::sum
  cuda/augment_kernel.cuh  CudaBlockExec::sum, each tree level          race in CudaBlockExec::sum
                                                                       (and mismatches: "contrast")
  cuda/augment_kernel.cuh  CudaBlockExec::sum, before the scratch reuse race in CudaBlockExec::sum
                                                                       (sum_twice_kernel)
  cuda/augment_kernel.cuh  augment_kernel, at the end of each image     race in fill_base_table_at
                                                                       (the tiny device's grid stride)
Built with -fsanitize=address,undefined -fno-sanitize-recover=undefined instead:
  common/launch_plan.h, dynamic shared memory one element short (p.smem_bytes = scratch +
    workspace - acc_bytes): heap-buffer-overflow in fill_base_table_at (exit 1).
  kernels/bilinear.h, resample_pixel's start as 0 (NaN positions giving 0): 18 mismatches with the
    CPU executor, the first "float forward NaN scale on H100-like" (exit 1).
The unmutated build: "cuda sim: 288 checks, 286 launches, 0 failures" (exit 0).
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
