"""The CPU executor's shortcuts give the bits of its general paths.

A call whose batch shares one ω (a one-row table) reads the resamplings' taps from a table filled
once per call, and (from 5 images on) runs the transposed resamplings as gathers over that table;
a table with one row per sample fills the taps row by row and scatters. The same ω written once per
sample therefore runs the other path on the same numbers, and must give the same bits, forward and
backward (both sum the same products in the same order). Likewise the colour ops run over whole planes for dense
images and row by row otherwise (channels_last).
"""
from __future__ import annotations

import math
import random

import pytest
import torch

import dsa_fast
from dsa_fast import DiffAugment, ParamDiffAug, device_rng, sample_params
from dsa_fast.fused import pack_omega
from dsa_fast.ops_table import COLUMNS, FLAGS

from conftest import FULL_STRATEGY

(SCALE_W, SCALE_H), (COS, SIN) = COLUMNS["scale"], COLUMNS["rotate"]
# csrc/cpu/image_cpu.h: kMaxPlannedPixels (larger images fill their taps row by row on both paths)
MAX_PLANNED_PIXELS = 128 * 128
# csrc/cpu/image_cpu.h: kMinGatherBatch (smaller batches scatter over the shared taps)
MIN_GATHER_BATCH = 5


def _table(x, strategy, seed, angle=None, scale=None):
    """A one-row ω table for the call (optionally a given rotation angle in degrees and scale)."""
    omega = sample_params(strategy, x, seed=seed, param=ParamDiffAug(aug_mode="M"))
    table, flags = pack_omega(omega.steps, 1, x.device)
    if angle is not None and flags & FLAGS["rotate"]:
        table[0, COS] = math.cos(math.radians(angle))
        table[0, SIN] = math.sin(math.radians(angle))
    if scale is not None and flags & FLAGS["scale"]:
        table[0, SCALE_W], table[0, SCALE_H] = scale
    return table, flags


def _layout(t, layout):
    if layout == "channels_last":
        return t.contiguous(memory_format=torch.channels_last)
    if layout == "strided":  # every other column of a wider tensor
        wide = torch.stack([t, t], dim=-1).flatten(-2)
        return wide[..., ::2]
    return t


CASES = []
_rng = random.Random(7)
for _k in range(24):
    CASES.append(
        dict(
            shape=(_rng.choice([2, 6, 8]), _rng.choice([1, 3]), _rng.choice([1, 2, 7, 16, 32]), _rng.choice([1, 3, 9, 32])),
            strategy=_rng.choice(["scale", "rotate", "scale_rotate", FULL_STRATEGY, "crop_flip_rotate"]),
            seed=_rng.randrange(1000),
            angle=_rng.choice([None, 45.0, -170.0, 90.0]),
            scale=_rng.choice([None, (0.5, 1.6), (2.5, 0.3)]),
            align=_rng.choice([False, True]),
            dtype=_rng.choice([torch.float32, torch.float64, torch.float16, torch.bfloat16]),
            layout=_rng.choice(["contiguous", "channels_last", "strided"]),
        )
    )
CASES.append(dict(shape=(2, 3, 129, 128), strategy=FULL_STRATEGY, seed=3, angle=30.0, scale=None, align=False,
                  dtype=torch.float32, layout="contiguous"))


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c['strategy']}-{'x'.join(map(str, c['shape']))}-{c['layout']}")
def test_shared_taps_equal_per_row_taps(case):
    torch.manual_seed(case["seed"])
    x = _layout(torch.randn(case["shape"], dtype=case["dtype"]), case["layout"])
    table, flags = _table(x, case["strategy"], case["seed"], case["angle"], case["scale"])
    per_sample = table.expand(x.shape[0], -1).contiguous()
    align = case["align"]
    y_shared = torch.ops.dsa_fast.augment(x, table, flags, align)
    y_rows = torch.ops.dsa_fast.augment(x, per_sample, flags, align)
    assert torch.equal(y_shared, y_rows)
    g = _layout(torch.randn(case["shape"], dtype=case["dtype"]), case["layout"])
    for grad in (g, torch.full((), -0.5, dtype=case["dtype"]).expand(case["shape"])):
        d_shared = torch.ops.dsa_fast.augment_backward(grad, table, flags, align)
        d_rows = torch.ops.dsa_fast.augment_backward(grad, per_sample, flags, align)
        assert torch.equal(d_shared, d_rows)


def test_shared_taps_cover_the_test_shapes():
    """The shared taps serve every case above but the last, the gathers some of them and the
    scatter the others (the limits of image_cpu.h: kMaxPlannedPixels, kMinGatherBatch)."""
    sizes = [c["shape"][2] * c["shape"][3] for c in CASES]
    assert all(s <= MAX_PLANNED_PIXELS for s in sizes[:-1]) and sizes[-1] > MAX_PLANNED_PIXELS
    batches = {c["shape"][0] >= MIN_GATHER_BATCH for c in CASES[:-1]}
    assert batches == {True, False}


@pytest.mark.parametrize("channels", [1, 3, 4])
@pytest.mark.parametrize("ops", ["brightness", "saturation", "contrast", "color"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_colour_planes_equal_colour_rows(channels, ops, dtype):
    """Dense images take the whole-plane colour loops, channels_last ones the row loops: same bits
    forward; the transposed contrast mean sums in another order, so the backward agrees to rounding."""
    torch.manual_seed(channels)
    x = torch.randn(4, channels, 6, 5, dtype=dtype)
    table, flags = _table(x, "color", seed=11)
    if ops != "color":
        flags = FLAGS[ops]
    dense = torch.ops.dsa_fast.augment(x, table, flags, False)
    rows = torch.ops.dsa_fast.augment(x.contiguous(memory_format=torch.channels_last), table, flags, False)
    assert torch.equal(dense, rows.contiguous())
    g = torch.randn(4, channels, 6, 5, dtype=dtype)
    d_dense = torch.ops.dsa_fast.augment_backward(g, table, flags, False)
    d_rows = torch.ops.dsa_fast.augment_backward(g.contiguous(memory_format=torch.channels_last), table, flags, False)
    tol = 1e-2 if dtype == torch.bfloat16 else 1e-5 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(d_dense, d_rows.contiguous(), atol=tol, rtol=tol)
    if not flags & FLAGS["contrast"]:
        assert torch.equal(d_dense, d_rows.contiguous())


@pytest.mark.skipif(not dsa_fast.has_ops(), reason="dsa_fast._C not loaded (fused backend absent)")
@pytest.mark.parametrize("rng", ["compat", "device"])
@pytest.mark.parametrize("aug_mode", ["S", "M"])
@pytest.mark.parametrize("seed", [7, -1], ids=["siamese", "per-sample"])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_same_bits_at_one_and_two_threads(rng, aug_mode, seed, layout):
    """The CPU kernels hand whole images to at::parallel_for's threads and compute each image on one
    thread, with nothing summed across images: the forward and the backward are the same bits at one
    and at two threads (torch's own ops need not be: a sum over a large tensor adds per-thread partial sums)."""
    gen = torch.Generator().manual_seed(0)
    x0 = torch.randn(16, 3, 20, 24, generator=gen)
    if layout == "channels_last":
        x0 = x0.contiguous(memory_format=torch.channels_last)
    g = torch.randn(x0.shape, generator=gen)
    results = []
    before = torch.get_num_threads()
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            assert torch.get_num_threads() == threads
            torch.manual_seed(3)  # per-sample compat draws: the same generator state for both calls
            device_rng.manual_seed(3)  # per-sample device draws: the same counter for both calls
            x = x0.clone().requires_grad_()
            y = DiffAugment(x, FULL_STRATEGY, seed=seed, param=ParamDiffAug(aug_mode=aug_mode, rng=rng),
                            backend="fused")
            y.backward(g)
            results.append((y.detach(), x.grad))
    finally:
        torch.set_num_threads(before)
    (y1, dx1), (y2, dx2) = results
    assert torch.equal(y1, y2) and torch.equal(dx1, dx2)
