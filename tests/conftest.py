"""Shared test configuration: device and dtype lists, backends, RNG hygiene, the golden vectors.

Nothing here touches CUDA at import time beyond ``torch.cuda.is_available()`` (which does not
initialise a context); CUDA rows exist only on machines that have a GPU.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import dsa_fast
from dsa_fast import ops_table
from tools.pack_golden import read_packed

# ---------------------------------------------------------------------------------------------
# Devices, dtypes, backends
# ---------------------------------------------------------------------------------------------

HAS_CUDA = torch.cuda.is_available()
DEVICES: List[str] = ["cpu"] + (["cuda"] if HAS_CUDA else [])

FLOAT_DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
LOW_PRECISION_DTYPES = [torch.float16, torch.bfloat16]

needs_cuda = pytest.mark.needs_cuda

# Every strategy token and every op it expands to (docs/semantics.md §2); tests spell them out rather than
# reading them from the package so that a renamed token is caught.
# The op table's tokens and ops: a new op is exercised by every test that iterates over them.
TOKENS = tuple(ops_table.TOKENS)
FULL_STRATEGY = "_".join(TOKENS)  # every op, canonical order: color_crop_cutout_flip_scale_rotate today
OPS = ops_table.OPS


def backends() -> List[str]:
    """The backends to compare: the reference always, the fused kernels when compiled."""
    return ["reference"] + (["fused"] if dsa_fast.has_ops() else [])


# For parametrisation: the 'fused' rows stay visible, skipped with a reason, when the extension is
# absent (e.g. DSA_FAST_NO_EXT=1).
BACKEND_PARAMS = [
    pytest.param("reference", id="reference"),
    pytest.param(
        "fused",
        id="fused",
        marks=pytest.mark.skipif(not dsa_fast.has_ops(), reason="dsa_fast._C not loaded (fused backend absent)"),
    ),
]


def pytest_configure(config):
    config.addinivalue_line("markers", "needs_cuda: the test needs a CUDA device; skipped when none is available")


@pytest.hookimpl(tryfirst=True)  # before `-m` selects: the CUDA rows of `device` get the marker too
def pytest_collection_modifyitems(config, items):
    # Every test that runs on CUDA carries needs_cuda, also the "cuda" rows of tests parametrised over
    # DEVICES, so `pytest -m needs_cuda` runs each CUDA test once (benchmarks/gpu_check.sh).
    for item in items:
        callspec = getattr(item, "callspec", None)
        if callspec is not None and str(callspec.params.get("device", "")).startswith("cuda"):
            item.add_marker(needs_cuda)
    if HAS_CUDA:
        return
    skip = pytest.mark.skip(reason="CUDA not available")
    for item in items:
        if "needs_cuda" in item.keywords:
            item.add_marker(skip)


class DispatchLog(TorchDispatchMode):
    """The ops dispatched inside ``with DispatchLog() as log:`` (``log.ops``, names in order): how
    the tests count op calls (launches on the CPU) instead of timing them."""

    def __init__(self):
        super().__init__()
        self.ops: List[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(str(func))
        return func(*args, **(kwargs or {}))


@pytest.fixture(params=DEVICES)
def device(request) -> str:
    return request.param


# ---------------------------------------------------------------------------------------------
# RNG hygiene: every test leaves the global generators as it found them.
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
# Golden vectors (tests/golden): produced by the official DiffAugment, see tests/golden/README.md.
# ---------------------------------------------------------------------------------------------

GOLDEN_DIR = Path(__file__).resolve().parent / "golden"


def require_data() -> bool:
    """DSA_FAST_REQUIRE_DATA=1 (CI): material outside the repository must be present, a skip for
    its absence is a failure."""
    return os.environ.get("DSA_FAST_REQUIRE_DATA", "") == "1"


def original_golden_dir() -> Optional[Path]:
    """The original golden folder (cases.json + arrays.npz) that tests/golden was packed from:
    $DSA_FAST_GOLDEN_ORIGINAL, else None."""
    env = os.environ.get("DSA_FAST_GOLDEN_ORIGINAL")
    return Path(env) if env else None


def load_golden_cases() -> List[dict]:
    """The case list (collection-time use)."""
    with open(GOLDEN_DIR / "cases.json") as f:
        return json.load(f)["cases"]


@dataclass
class Golden:
    meta: dict
    cases: List[dict]
    arrays: Dict[str, np.ndarray]

    def case(self, name: str) -> dict:
        for c in self.cases:
            if c["name"] == name:
                return c
        raise KeyError(name)

    def tensor(self, name: str, kind: str) -> torch.Tensor:
        """A fresh float tensor for ``<name>_<kind>``, kind in x, g, y, dx."""
        return torch.from_numpy(np.array(self.arrays[f"{name}_{kind}"], copy=True))


@pytest.fixture(scope="module")
def golden() -> Golden:
    meta, cases, arrays = read_packed(str(GOLDEN_DIR))
    return Golden(meta, cases, arrays)
