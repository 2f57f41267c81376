"""Per-call timings of DiffAugment: fused kernels vs the pure-PyTorch reference, side by side.

Rows (each at every shape of the grid, see conftest.py), forward (``fwd``) and forward +
``sum().backward()`` (``fwdbwd``):

- ``test_diffaugment``: the drop-in call ``DiffAugment(x, strategy, seed, ParamDiffAug(aug_mode, rng),
  backend)`` for each family, the full strategy in 'S' mode and in 'M' mode; seeded with a new seed
  per call, as the official timings (benchmarks/official_h200.json) were taken;
  rng 'compat' and 'device'; backend 'fused' and 'reference'.
- ``test_floor``: one elementwise kernel (``x.mul(1.0001)``; ``x.mul(c).sum().backward()``), one copy
  (``x.clone()``, the unit of the CPU family table) and one ``grid_sample`` with a ready grid, on the
  same tensor: what a single kernel costs here.
- ``test_apply``: ``dsa_fast.apply(x, omega)`` with ω sampled once (the kernels without sampling).
- ``test_raw_op``: ``torch.ops.dsa_fast.augment`` on a packed table (no Python around the kernel).

Every row's extra_info names it (kind, strategy, aug_mode, rng, backend, direction, ref_key: the
official row it compares to); benchmarks/report.py turns a --benchmark-json into the tables.
"""
from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

import dsa_fast
from dsa_fast import DiffAugment, ParamDiffAug
from dsa_fast._ops import supports
from dsa_fast.fused import pack_omega

FULL = "color_crop_cutout_flip_scale_rotate"
FAMILIES = ("color", "crop", "cutout", "flip", "scale", "rotate")

# (strategy, aug_mode, label, official key). The official family rows use the default 'S' mode
# (a one-family strategy applies that family either way).
STRATEGIES = [pytest.param(f, "S", f, f, id=f) for f in FAMILIES] + [
    pytest.param(FULL, "S", "full-S", FULL, id="full-S"),
    pytest.param(FULL, "M", "full-M", FULL + "@M", id="full-M"),
]
RNGS = ["compat", "device"]
BACKENDS = ["fused", "reference"]
DIRECTIONS = ["fwd", "fwdbwd"]


def _group(case, direction: str) -> str:
    return f"{case.device} {case.shape_name} {direction}"


def _need_fused(backend: str, x: torch.Tensor) -> None:
    if backend == "fused" and not supports(x):
        pytest.skip(f"fused backend unavailable on {x.device.type}: {dsa_fast._ops.why_unavailable(x)}")


def _forward_or_backward(x: torch.Tensor, direction: str, forward):
    """The call to time: ``forward()`` alone, or ``forward().sum().backward()`` with x.grad reset
    first (so every call allocates its gradient the same way; none accumulates into the last)."""
    if direction == "fwd":
        return forward

    def call():
        x.grad = None
        forward().sum().backward()

    return call


@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("rng", RNGS)
@pytest.mark.parametrize("strategy,aug_mode,label,ref_key", STRATEGIES)
def test_diffaugment(bench, case, strategy, aug_mode, label, ref_key, rng, backend, direction):
    x = case.input(requires_grad=direction == "fwdbwd")
    _need_fused(backend, x)
    param = ParamDiffAug(aug_mode=aug_mode, rng=rng)
    seeds = itertools.count(1)  # a new seed per call, like the official timings

    def forward():
        return DiffAugment(x, strategy, seed=next(seeds), param=param, backend=backend)

    bench(
        _forward_or_backward(x, direction, forward),
        case,
        group=_group(case, direction),
        kind="diffaugment",
        label=label,
        strategy=strategy,
        aug_mode=aug_mode,
        rng=rng,
        backend=backend,
        direction=direction,
        ref_key=ref_key,
    )


@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("floor", ["mul", "clone", "grid_sample"])
def test_floor(bench, case, floor, direction):
    x = case.input(requires_grad=direction == "fwdbwd")
    if floor == "mul":
        c = 1.0001

        def forward():
            return x.mul(c)

    elif floor == "clone":

        def forward():
            return x.clone()

    else:
        # A ready grid (a 10-degree rotation), as the official floor row: grid_sample alone.
        a = math.radians(10.0)
        theta = torch.tensor([[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0]])
        grid = F.affine_grid(theta.expand(case.batch, 2, 3), list(case.shape), align_corners=False).to(case.device)

        def forward():
            return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    bench(
        _forward_or_backward(x, direction, forward),
        case,
        group=_group(case, direction),
        kind="floor",
        label=f"floor:{floor}",
        strategy=None,
        aug_mode=None,
        rng=None,
        backend="torch",
        direction=direction,
        ref_key=f"floor:{floor}",
    )


@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("aug_mode", ["S", "M"])
def test_apply(bench, case, aug_mode, backend, direction):
    """The kernels without the sampling: ω of the full strategy drawn once (rng='device', seeded;
    in 'S' mode it carries every family and a ``choice``)."""
    x = case.input(requires_grad=direction == "fwdbwd")
    _need_fused(backend, x)
    omega = dsa_fast.sample_params(FULL, x.detach(), seed=0, param=ParamDiffAug(aug_mode=aug_mode, rng="device"))

    def forward():
        return dsa_fast.apply(x, omega, backend=backend)

    bench(
        _forward_or_backward(x, direction, forward),
        case,
        group=_group(case, direction),
        kind="apply",
        label=f"apply full-{aug_mode}",
        strategy=FULL,
        aug_mode=aug_mode,
        rng="device",
        backend=backend,
        direction=direction,
        ref_key=None,
    )


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_raw_op(bench, case, direction):
    """``torch.ops.dsa_fast.augment`` on the packed table of the full 'M' chain (one launch)."""
    x = case.input(requires_grad=direction == "fwdbwd")
    _need_fused("fused", x)
    omega = dsa_fast.sample_params(FULL, x.detach(), seed=0, param=ParamDiffAug(aug_mode="M", rng="device"))
    table, flags = pack_omega(omega.steps, 1, x.device)
    op = torch.ops.dsa_fast.augment

    def forward():
        return op(x, table, flags, omega.align_corners)

    bench(
        _forward_or_backward(x, direction, forward),
        case,
        group=_group(case, direction),
        kind="op",
        label="op full-M",
        strategy=FULL,
        aug_mode="M",
        rng="device",
        backend="fused",
        direction=direction,
        ref_key=None,
    )
