"""The shared per-image program run as a CUDA block runs it, on CPU threads, and the CUDA launch
sizing as a host function (no GPU needed).

csrc/tests/block_emulator_test.cpp runs kernels/augment.h with T workers per image (begin = tid,
stride = T, a real barrier for sync, the CUDA executor's tree sum) and checks every result against
the serial executor, forward and backward, over random shapes, flags and ω, T = 2, 4, 32, 256.
Built here with the system C++ compiler, once under ThreadSanitizer (a missing or misplaced barrier
is a data race it reports: the run fails) and once under AddressSanitizer + UndefinedBehaviorSanitizer.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "csrc" / "tests" / "block_emulator_test.cpp"
CXX = os.environ.get("CXX", "g++")

SANITIZERS = {
    "thread": ["-fsanitize=thread"],
    "address,undefined": ["-fsanitize=address,undefined", "-fno-sanitize-recover=undefined"],
}


def _build(tmp_path: Path, flags) -> Path:
    exe = tmp_path / "block_emulator_test"
    cmd = [CXX, "-std=c++20", "-O1", "-g", "-pthread", *flags, str(SOURCE), "-o", str(exe)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0, f"{' '.join(cmd)} failed:\n{done.stderr[-4000:]}"
    return exe


@pytest.mark.parametrize("sanitizer", list(SANITIZERS))
def test_block_program_equals_serial_under_sanitizer(tmp_path, sanitizer):
    if shutil.which(CXX) is None:
        pytest.skip(f"no C++ compiler {CXX!r} on PATH to build csrc/tests/block_emulator_test.cpp")
    exe = _build(tmp_path, SANITIZERS[sanitizer])
    env = dict(os.environ, TSAN_OPTIONS="halt_on_error=1", ASAN_OPTIONS="detect_leaks=1",
               UBSAN_OPTIONS="print_stacktrace=1")
    done = subprocess.run([str(exe)], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr[-6000:]}"
    assert "0 mismatches" in done.stdout and "320 image runs" in done.stdout, done.stdout


def test_launch_plan_for_h200_and_a100(tmp_path):
    """common/launch_plan.h (the CUDA launch sizing: shared vs global workspace, grid, dynamic
    shared memory and its opt-in) with an H200's and an A100's limits, every accumulator size,
    shapes up to 3x512x512: csrc/tests/launch_plan_test.cpp."""
    if shutil.which(CXX) is None:
        pytest.skip(f"no C++ compiler {CXX!r} on PATH to build csrc/tests/launch_plan_test.cpp")
    exe = tmp_path / "launch_plan_test"
    cmd = [CXX, "-std=c++20", "-O1", "-Wall", "-Werror", "-fsanitize=undefined", "-fno-sanitize-recover=undefined",
           str(ROOT / "csrc" / "tests" / "launch_plan_test.cpp"), "-o", str(exe)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0, f"{' '.join(cmd)} failed:\n{done.stderr[-4000:]}"
    done = subprocess.run([str(exe)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr[-4000:]}"
    assert "0 failures" in done.stdout, done.stdout
