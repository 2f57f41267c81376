"""Host time of one DiffAugment call on the CPU, one thread: the one-op-call paths (rng='device':
augment_draw; rng='compat': the official draws + augment_compat) side by side with the literal
official re-implementation of tests/test_unseen.py, at 1x1x2x2 (almost only host work) and
256x3x32x32. Full strategy, 'M' and 'S', seeded with a new seed per call, forward (``fwd``) and
forward + ``sum().backward()`` (``fwdbwd``).

    DSA_FAST_VENV=... python -m pytest benchmarks/test_bench_host.py --benchmark-columns=median,iqr,rounds \
        --benchmark-sort=name --benchmark-max-time=0.5
"""
from __future__ import annotations

import importlib.util
import itertools
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import dsa_fast
from dsa_fast import DiffAugment, ParamDiffAug

ROOT = Path(__file__).resolve().parents[1]
FULL = "color_crop_cutout_flip_scale_rotate"
SHAPES = {"1x1x2x2": (1, 1, 2, 2), "256x3x32x32": (256, 3, 32, 32)}
IMPLS = ["device", "compat", "official"]


def _official_class():
    """tests/test_unseen.py's Official, loaded beside this folder's own conftest module."""
    saved = sys.modules.get("conftest")
    try:
        spec = importlib.util.spec_from_file_location("conftest", ROOT / "tests" / "conftest.py")
        tests_conftest = importlib.util.module_from_spec(spec)
        sys.modules["conftest"] = tests_conftest
        spec.loader.exec_module(tests_conftest)
        spec = importlib.util.spec_from_file_location("_official_unseen", ROOT / "tests" / "test_unseen.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module.Official
    finally:
        if saved is not None:
            sys.modules["conftest"] = saved


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.skipif(not dsa_fast.has_ops(), reason="dsa_fast._C not loaded")
@pytest.mark.parametrize("direction", ["fwd", "fwdbwd"])
@pytest.mark.parametrize("mode", ["M", "S"])
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("shape", list(SHAPES))
def test_host(benchmark, shape, impl, mode, direction):
    x = torch.randn(SHAPES[shape], requires_grad=direction == "fwdbwd")
    seeds = itertools.count(1000)
    if impl == "official":
        official = _official_class()
        settings = SimpleNamespace(**{k: getattr(ParamDiffAug(), k) for k in (
            "prob_flip", "ratio_scale", "ratio_rotate", "ratio_crop_pad", "ratio_cutout", "brightness",
            "saturation", "contrast", "align_corners")}, aug_mode=mode)

        def forward():
            return official(settings, next(seeds))(x, FULL)
    else:
        param = ParamDiffAug(aug_mode=mode, rng=impl)

        def forward():
            return DiffAugment(x, FULL, seed=next(seeds), param=param)

    if direction == "fwd":
        call = forward
    else:
        def call():
            x.grad = None
            forward().sum().backward()

    benchmark.group = f"{shape} {mode} {direction}"
    benchmark.extra_info.update(shape=shape, impl=impl, aug_mode=mode, direction=direction, threads=1)
    for _ in range(3):
        call()
    benchmark(call)
