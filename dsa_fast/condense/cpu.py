"""Process settings for condensation on the CPU.

``keep_freed_memory()``: glibc returns freed blocks of more than 128 KiB to the kernel (mmap
threshold and trim threshold), so every large tensor of a training step (an activation of a
ConvNet layer is megabytes) is fresh memory that the kernel zero-fills page by page on first touch.
Raising both thresholds keeps freed memory in the process, and the next step reuses pages that are
already mapped. The process keeps its peak heap instead of shrinking after it (about the peak of
one step). ``python -m dsa_fast.condense`` applies it (``--no-keep-freed-memory`` does not; the
main job runs about 1.2x faster with it). Numbers: docs/condense.md, benchmarks/RESULTS.md.

``threads_note(device)``: what a run on the CPU runs with (torch's thread count, and the OpenMP
wait policy when one is set), for the run's first line: on a machine where other jobs hold cores,
more than one thread can be many times slower (docs/condense.md, CPU settings).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

import torch

# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# Blocks up to 1 GiB come from the heap (glibc's own dynamic threshold stops at 32 MiB, below one
# activation of a width-128 ConvNet over a few hundred 32x32 images); the heap is never trimmed.
_MMAP_THRESHOLD = 1 << 30
_TRIM_THRESHOLD = 2**31 - 1


def keep_freed_memory() -> bool:
    """Make glibc keep freed memory in the process (mallopt); True when applied, False where there is
    no glibc (other platforms and C libraries: nothing changes)."""
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD))


def threads_note(device: str) -> str:
    """`` (2 threads)`` (``, OMP_WAIT_POLICY=...`` when set) for a CPU device, else nothing."""
    if torch.device(device).type != "cpu":
        return ""
    n = torch.get_num_threads()
    wait = os.environ.get("OMP_WAIT_POLICY")
    return f" ({n} thread{'' if n == 1 else 's'}{f', OMP_WAIT_POLICY={wait}' if wait else ''})"
