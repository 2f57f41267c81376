"""Benchmark configuration: the shape grid, the devices, and the timed-call helper.

Method (benchmarks/README.md): every timed call ends with a device synchronisation, so a row is the
latency of one call as a training loop sees it; warm-up calls run before timing; pytest-benchmark
repeats the call and we report its median. Each row's ``extra_info`` says what it is (shape,
strategy, backend, rng, direction, ...), its images/s and, on CUDA, the memory one call allocates.

Environment:
  DSA_BENCH_FULL=1       every shape on every device (default: CUDA all shapes, CPU the two small
                         grids 256x3x32x32 and 10x3x32x32 only).
  DSA_BENCH_SHAPES=a,b   only these shapes (names as in SHAPES, e.g. 256x3x32x32).
  DSA_BENCH_DEVICES=x,y  only these devices (cpu, cuda); cuda only where available.
  DSA_BENCH_WARMUP=n     warm-up calls per row (default 10 on CUDA, 1 on CPU).
  DSA_BENCH_THREADS=n    torch.set_num_threads(n) for the CPU rows (default: torch's choice). On a
                         loaded machine use 1: a parallel region that waits for a descheduled
                         thread costs a whole time slice (x.mul took 12 ms with 2 threads, 0.14 ms
                         with 1, on the shared 2-core development machine).
  DSA_BENCH_KEEP_DATA=1  keep every round's time in --benchmark-json (default: stats only).

Nothing here touches CUDA at import time beyond ``torch.cuda.is_available()``.
"""
from __future__ import annotations

import datetime
import gc
import os
import platform
import signal
import sys
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

import pytest
import torch

# ---------------------------------------------------------------------------------------------
# The grid
# ---------------------------------------------------------------------------------------------

# The shapes of the official H200 timings (benchmarks/official_h200.json), in its order.
SHAPES: Dict[str, Tuple[int, int, int, int]] = {
    "256x3x32x32": (256, 3, 32, 32),
    "10x3x32x32": (10, 3, 32, 32),
    "100x3x32x32": (100, 3, 32, 32),
    "500x3x32x32": (500, 3, 32, 32),
    "256x1x28x28": (256, 1, 28, 28),
}
# The CPU is slow (a reference 'M' forward+backward at 256 images takes ~0.5 s on 2 cores): by
# default only these run there.
CPU_DEFAULT_SHAPES = ("256x3x32x32", "10x3x32x32")

HAS_CUDA = torch.cuda.is_available()


def _env_list(name: str) -> Optional[List[str]]:
    value = os.environ.get(name, "").strip()
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def bench_devices() -> List[str]:
    devices = ["cpu"] + (["cuda"] if HAS_CUDA else [])
    wanted = _env_list("DSA_BENCH_DEVICES")
    if wanted is None:
        return devices
    unknown = [d for d in wanted if d not in ("cpu", "cuda")]
    if unknown:
        raise pytest.UsageError(f"DSA_BENCH_DEVICES: unknown device(s) {unknown}; expected cpu and/or cuda")
    return [d for d in devices if d in wanted]


def bench_shapes(device: str) -> List[str]:
    wanted = _env_list("DSA_BENCH_SHAPES")
    if wanted is not None:
        unknown = [s for s in wanted if s not in SHAPES]
        if unknown:
            raise pytest.UsageError(f"DSA_BENCH_SHAPES: unknown shape(s) {unknown}; expected some of {list(SHAPES)}")
        return [s for s in SHAPES if s in wanted]
    if device == "cpu" and os.environ.get("DSA_BENCH_FULL") != "1":
        return list(CPU_DEFAULT_SHAPES)
    return list(SHAPES)


def grid() -> List:
    """(device, shape name) pairs as pytest params, ids like ``cuda-256x3x32x32``."""
    return [pytest.param((d, s), id=f"{d}-{s}") for d in bench_devices() for s in bench_shapes(d)]


@dataclass
class Case:
    device: str
    shape_name: str
    shape: Tuple[int, int, int, int]
    dtype: torch.dtype = torch.float32

    @property
    def batch(self) -> int:
        return self.shape[0]

    @property
    def input_bytes(self) -> int:
        n, c, h, w = self.shape
        return n * c * h * w * torch.empty((), dtype=self.dtype).element_size()

    def input(self, requires_grad: bool = False) -> torch.Tensor:
        """A fixed random batch (never zeros: they can run faster than real data)."""
        g = torch.Generator().manual_seed(0)
        x = torch.rand(self.shape, generator=g, dtype=self.dtype).to(self.device)
        return x.requires_grad_(requires_grad)


@pytest.fixture(params=grid())
def case(request) -> Case:
    device, shape_name = request.param
    return Case(device, shape_name, SHAPES[shape_name])


def pytest_configure(config):
    threads = os.environ.get("DSA_BENCH_THREADS")
    if threads:
        torch.set_num_threads(int(threads))
    # NB: a process started with SIGINT ignored (a background job of a non-interactive shell)
    # keeps it ignored, and then `timeout -s INT` cannot end the run cleanly; with Python's
    # handler back, pytest stops on SIGINT and pytest-benchmark still writes the rows timed so far.
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


# ---------------------------------------------------------------------------------------------
# RNG hygiene: 'compat' rows reseed the global generators on every call.
# ---------------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _restore_rng_state():
    cpu_state = torch.get_rng_state()
    cuda_states = torch.cuda.get_rng_state_all() if HAS_CUDA and torch.cuda.is_initialized() else None
    try:
        yield
    finally:
        torch.set_rng_state(cpu_state)
        if cuda_states is not None:
            torch.cuda.set_rng_state_all(cuda_states)


# ---------------------------------------------------------------------------------------------
# The timed call
# ---------------------------------------------------------------------------------------------


def synchronize(device: str) -> None:
    """Wait for the device's queued work (a no-op on the CPU, whose ops return when done)."""
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def default_warmup(device: str) -> int:
    env = os.environ.get("DSA_BENCH_WARMUP")
    if env:
        return int(env)
    return 10 if device.startswith("cuda") else 1


def peak_call_bytes(fn: Callable[[], None], device: str) -> Optional[int]:
    """Bytes one call of ``fn`` allocates at its peak beyond what was live before it (the inputs):
    ``max_memory_allocated`` after ``reset_peak_memory_stats``, minus ``memory_allocated`` just
    before the call. None on the CPU (no allocator statistics there)."""
    if not device.startswith("cuda"):
        return None
    gc.collect()
    synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    fn()
    synchronize(device)
    return int(torch.cuda.max_memory_allocated(device) - before)


class Bench:
    """``bench(fn, case, group=..., **info)``: warm up, time ``fn(); synchronize()`` with
    pytest-benchmark, then record images/s and peak memory in ``extra_info``.

    ``fn`` must leave nothing behind that the next call depends on (e.g. reset ``x.grad``).
    Under ``--benchmark-disable`` it runs ``fn`` once (a smoke test) and reports no speed.
    """

    def __init__(self, benchmark):
        self.benchmark = benchmark

    def __call__(self, fn: Callable[[], None], case: Case, group: str, **info) -> None:
        device = case.device

        def timed() -> None:
            fn()
            synchronize(device)

        warmup = default_warmup(device) if self.benchmark.enabled else 0
        for _ in range(warmup):
            fn()
        synchronize(device)

        self.benchmark.group = group
        self.benchmark(timed)

        median = None
        if self.benchmark.enabled and self.benchmark.stats is not None:
            median = float(self.benchmark.stats.stats.median)
        peak = peak_call_bytes(fn, device)
        self.benchmark.extra_info.update(
            dict(
                info,
                device=device,
                shape=list(case.shape),
                shape_name=case.shape_name,
                batch=case.batch,
                warmup_calls=warmup,
                synchronized=True,
                median_ms=None if median is None else median * 1e3,
                images_per_s=None if not median else case.batch / median,
                peak_mem_bytes=peak,
                dtype=str(case.dtype).replace("torch.", ""),
                input_bytes=case.input_bytes,
            )
        )


@pytest.fixture
def bench(benchmark) -> Bench:
    return Bench(benchmark)


# ---------------------------------------------------------------------------------------------
# What the JSON records about the run (names the machine, the versions and the command).
# ---------------------------------------------------------------------------------------------


def _run_info() -> dict:
    info = {
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "command": " ".join([os.path.basename(sys.executable), "-m", "pytest"] + sys.argv[1:]),
        "env": {k: v for k, v in sorted(os.environ.items()) if k.startswith("DSA_BENCH_")},
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S"),
    }
    try:
        import dsa_fast

        info["dsa_fast"] = dsa_fast.__version__
        info["dsa_fast_has_ops"] = dsa_fast.has_ops()
    except Exception as e:  # pragma: no cover - the tests would fail first
        info["dsa_fast"] = f"import failed: {e}"
    if HAS_CUDA:
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpu_count"] = torch.cuda.device_count()
    return info


def pytest_benchmark_update_machine_info(config, machine_info):
    machine_info["dsa_fast_bench"] = _run_info()


def pytest_benchmark_update_json(config, benchmarks, output_json):
    if os.environ.get("DSA_BENCH_KEEP_DATA") == "1":
        return
    # Every round's time makes the JSON ~10 MB on a GPU run; the stats are what the report reads.
    for row in output_json.get("benchmarks", []):
        row.get("stats", {}).pop("data", None)
