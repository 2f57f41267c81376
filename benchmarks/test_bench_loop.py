"""One DSA outer step, end to end: the matching loss over 10 classes, its backward to the synthetic
images, and one SGD step on them (CIFAR10-shaped random data: 3x32x32, 256 real images per class,
ConvNet width 128, depth 3, instance norm), at ipc 1, 10 and 50.

Three rows per (device, ipc), in one group so they print side by side:
  current             dsa_fast.condense.batched.match_loss_auto (what the loop runs: grouped class
                      matching off the CPU, the per-class loop on the CPU), DiffAugment backend='auto'
  grouped             batched.match_loss_grouped, every class in one real pass
  per-class reference the official loop's structure: per class, DiffAugment(backend='reference') of
                      the real and the synthetic batch, two autograd.grad passes, the distance

Default: CUDA every ipc, CPU ipc 1 only (DSA_BENCH_FULL=1: every ipc on the CPU too). On CUDA the
conftest helper records the peak memory of one step in extra_info (peak_mem_bytes). The SGD step
changes the synthetic images from call to call; the cost of a step does not depend on their values.
Each call uses new seeds (as the loop does). images_per_s counts the real + synthetic images matched.
Under --benchmark-disable on the CPU (a smoke test) the step is shrunk to 16 real images per class
and width 32 (one full-size step takes minutes on a small CPU); extra_info says which size ran.

    PYTHONPATH=. python -m pytest benchmarks/test_bench_loop.py -q            # time
    PYTHONPATH=. python -m pytest benchmarks/test_bench_loop.py -q --benchmark-disable   # smoke
"""
from __future__ import annotations

import functools
import itertools
import os
from typing import Callable, List

import pytest
import torch
from torch import Tensor

from dsa_fast import ParamDiffAug
from dsa_fast.condense.batched import match_loss_auto, match_loss_grouped, supports_grouped
from dsa_fast.condense.matching import match_loss
from dsa_fast.condense.networks import ConvNet

from conftest import Case, bench_devices

CLASSES = 10
REAL_PER_CLASS = 256
IMAGE = (3, 32, 32)
STRATEGY = "color_crop_cutout_flip_scale_rotate"
IPCS = (1, 10, 50)
CPU_DEFAULT_IPCS = (1,)


# The official loop's structure, per class, with the reference DiffAugment backend.
per_class_reference = functools.partial(match_loss, backend="reference")


VARIANTS = {"current": match_loss_auto, "grouped": match_loss_grouped, "per-class reference": per_class_reference}


def _ipcs(device: str) -> List[int]:
    if device == "cpu" and os.environ.get("DSA_BENCH_FULL") != "1":
        return list(CPU_DEFAULT_IPCS)
    return list(IPCS)


def _grid() -> List:
    return [pytest.param((d, ipc, v), id=f"{d}-ipc{ipc}-{v.replace(' ', '_')}")
            for d in bench_devices() for ipc in _ipcs(d) for v in VARIANTS]


@pytest.mark.parametrize("setting", _grid())
def test_dsa_outer_step(bench, benchmark, setting):
    device, ipc, variant = setting
    smoke = device == "cpu" and not benchmark.enabled
    real_per_class, width = (16, 32) if smoke else (REAL_PER_CLASS, 128)
    loss_fn: Callable[..., Tensor] = VARIANTS[variant]
    g = torch.Generator().manual_seed(0)
    real = torch.rand((CLASSES * real_per_class, *IMAGE), generator=g).to(device)
    reals = [real[c * real_per_class:(c + 1) * real_per_class] for c in range(CLASSES)]
    syn = torch.randn((CLASSES * ipc, *IMAGE), generator=g).to(device).requires_grad_(True)
    torch.manual_seed(0)
    net = ConvNet(IMAGE[0], CLASSES, IMAGE[1:], width=width, depth=3, norm="instancenorm").to(device)
    net.train()
    opt = torch.optim.SGD([syn], lr=0.1, momentum=0.5)
    param = ParamDiffAug()
    labels = list(range(CLASSES))
    counter = itertools.count()

    def step() -> None:
        base = next(counter) * CLASSES
        seeds = [(base + c) % 100000 for c in labels]
        syns = list(syn.split(ipc))
        loss = loss_fn(net, reals, syns, labels, seeds, STRATEGY, param, "ours")
        opt.zero_grad(set_to_none=True)
        loss.backward(inputs=[syn])
        opt.step()

    case = Case(device, f"ipc{ipc}", (CLASSES * (real_per_class + ipc), *IMAGE))
    bench(step, case, group=f"dsa-outer-step-{device}-ipc{ipc}", variant=variant, ipc=ipc, classes=CLASSES,
          real_per_class=real_per_class, model=f"ConvNet width {width} depth 3 instancenorm", smoke=smoke, strategy=STRATEGY,
          grouped=(variant == "grouped" or (variant == "current" and device != "cpu" and supports_grouped(net))),
          backend="auto" if variant == "current" else "reference")
