"""One op call per DiffAugment: rng='device' draws ω inside the kernel (dsa_fast::augment_draw).

- The kernel's ω table equals the readable Python draws (dsa_fast/device_rng.py) bit for bit, for
  every op, both modes, every dtype and every seed form (int, tensor, unseeded).
- Dispatch counts (a TorchDispatchMode on the CPU), the same at N = 1 and N = 64.
- opcheck and gradcheck of the new op (its layout: tests/test_layout.py).
"""
from __future__ import annotations

import os

import pytest
import torch

import dsa_fast
from dsa_fast import DiffAugment, ParamDiffAug, device_rng, fused, sample_params
from dsa_fast import ops_table
from dsa_fast.fused import FLAGS, group_calls, pack_omega
from dsa_fast.params import SETTING_FIELDS, parse_strategy

from conftest import DEVICES, DispatchLog, FLOAT_DTYPES, FULL_STRATEGY, TOKENS, needs_cuda

NO_EXT = os.environ.get("DSA_FAST_NO_EXT") == "1" or not dsa_fast.has_ops()
needs_ext = pytest.mark.skipif(NO_EXT, reason="dsa_fast._C not loaded (fused backend absent)")


def _python_table(x, strategy, seed, param, rows):
    """The table the readable sampler draws, packed as the kernels read it."""
    omega = sample_params(strategy, x, seed=seed, param=param)
    if omega.choice is None:
        return pack_omega(omega.steps, rows, x.device)[0]
    (call,) = group_calls(omega)
    active = sum((omega.choice == g).to(torch.float64) * sum(FLAGS[s.op] for s in steps) for g, steps in call)
    return pack_omega([s for _, steps in call for s in steps], rows, x.device, active)[0]


def _assert_same_table(table, expected):
    """Bit for bit. NB: on the CPU the kernels take cos/sin with torch's own float32 cos/sin (which
    may round one ulp away from libm's cosf); on CUDA with the device cosf torch.cos uses there."""
    torch.testing.assert_close(table, expected, rtol=0, atol=0)


STRATEGIES = list(TOKENS) + [FULL_STRATEGY, "crop_flip", "color_rotate", "cutout_scale_rotate"]


@needs_ext
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("mode", ["M", "S"])
@pytest.mark.parametrize("seed_form", ["int", "tensor", "unseeded"])
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_kernel_table_equals_python_draws(strategy, seed_form, mode, dtype, device):
    param = ParamDiffAug(rng="device", aug_mode=mode, ratio_rotate=40.0, prob_flip=0.3, ratio_crop_pad=0.3)
    x = torch.randn(6, 3, 11, 7, dtype=dtype, device=device)
    seed = {"int": 12345, "tensor": torch.tensor(2**41 + 99, device=device), "unseeded": -1}[seed_form]
    counter = device_rng.counter(x.device)
    before = counter.clone()
    y, table = fused.draw_and_apply(x, parse_strategy(strategy), seed, param)
    if seed_form == "unseeded":
        assert int(counter) == int(before) + 1, "the unseeded call must advance the counter once"
        counter.copy_(before)
    expected = _python_table(x, strategy, seed, param, table.shape[0])
    assert table.shape == (6 if seed_form == "unseeded" else 1, ops_table.OMEGA_WIDTH) and table.dtype == torch.float64
    _assert_same_table(table, expected)
    # ... and y is that table applied.
    torch.testing.assert_close(y, torch.ops.dsa_fast.augment(x, table, fused.plan_for(
        parse_strategy(strategy), param, x, seed_form == "unseeded")[0], False), rtol=0, atol=0)


@needs_ext
@pytest.mark.parametrize("mode", ["M", "S"])
def test_diffaugment_device_equals_sample_then_apply(mode):
    param = ParamDiffAug(rng="device", aug_mode=mode)
    x = torch.randn(4, 3, 9, 10)
    for seed in (3, torch.tensor(4)):
        y = DiffAugment(x, FULL_STRATEGY, seed=seed, param=param)
        torch.testing.assert_close(y, dsa_fast.apply(x, sample_params(FULL_STRATEGY, x, seed=seed, param=param)),
                                   rtol=0, atol=0)


@needs_ext
def test_strategies_one_call_cannot_apply_take_the_sampled_path():
    param = ParamDiffAug(rng="device", aug_mode="M")
    x = torch.randn(2, 1, 6, 6)
    assert fused.plan_for(("rotate", "scale"), param, x, False) is None
    assert fused.plan_for(("crop", "crop"), param, x, False) is None
    y = DiffAugment(x, "rotate_scale", seed=5, param=param)
    torch.testing.assert_close(y, dsa_fast.apply(x, sample_params("rotate_scale", x, seed=5, param=param)))


# ---------------------------------------------------------------------------------------------
# Dispatch counts
# ---------------------------------------------------------------------------------------------


def _counts(rng, mode, seed, n):
    param = ParamDiffAug(rng=rng, aug_mode=mode)
    x = torch.randn(n, 3, 8, 8, requires_grad=True)
    DiffAugment(x, FULL_STRATEGY, seed=seed, param=param)  # warm: plans cached, counter created
    with DispatchLog() as fwd:
        DiffAugment(x, FULL_STRATEGY, seed=seed, param=param)
    y = DiffAugment(x, FULL_STRATEGY, seed=seed, param=param)
    g = torch.randn_like(y)
    with DispatchLog() as both:
        DiffAugment(x, FULL_STRATEGY, seed=seed, param=param).backward(g)
    return fwd.ops, both.ops


@needs_ext
@pytest.mark.parametrize("mode", ["M", "S"])
def test_device_rng_dispatch_counts(mode):
    for n in (1, 64):
        fwd, both = _counts("device", mode, 7, n)
        assert fwd == ["dsa_fast.augment_draw.default"], fwd
        # the backward op, and autograd's detach of the leaf's first gradient
        assert both == ["dsa_fast.augment_draw.default", "dsa_fast.augment_backward.default", "aten.detach.default"]
        fwd, both = _counts("device", mode, -1, n)
        assert fwd == ["dsa_fast.augment_draw.default", "aten.add_.Tensor"], fwd  # the counter advance
        assert len(both) == 4, both
        fwd, _ = _counts("device", mode, torch.tensor(5), n)
        assert fwd == ["dsa_fast.augment_draw.default"], fwd


# ---------------------------------------------------------------------------------------------
# Registration
# ---------------------------------------------------------------------------------------------


@needs_ext
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("seed_form", ["int", "tensor", "unseeded"])
@pytest.mark.parametrize("mode", ["M", "S"])
def test_opcheck_augment_draw(mode, seed_form, dtype, device):
    param = ParamDiffAug(rng="device", aug_mode=mode)
    x = torch.randn(3, 2, 7, 6, dtype=dtype, device=device, requires_grad=True)
    flags, plan, settings = fused.plan_for(parse_strategy(FULL_STRATEGY), param, x, seed_form == "unseeded")
    plan = list(plan)
    key = None
    if seed_form == "int":
        plan[fused.PLAN_SEED] = 77
    else:
        key = torch.tensor(9, device=device)
        plan[fused.PLAN_KEY_SOURCE] = fused.KEY_TENSOR if seed_form == "tensor" else fused.KEY_COUNTER
    torch.library.opcheck(torch.ops.dsa_fast.augment_draw.default, (x, key, flags, plan, settings, False))


@needs_ext
@pytest.mark.parametrize("seed", [3, -1])
@pytest.mark.parametrize("mode", ["M", "S"])
def test_gradcheck_augment_draw(mode, seed):
    param = ParamDiffAug(rng="device", aug_mode=mode, ratio_rotate=30.0)
    x = torch.randn(3, 2, 6, 5, dtype=torch.float64, requires_grad=True)

    def f(t):
        # NB: the counter is rewound so every evaluation draws the same ω.
        c = device_rng.counter(t.device)
        start = c.clone()
        out = DiffAugment(t, FULL_STRATEGY, seed=seed, param=param)
        c.copy_(start)
        return out

    assert torch.autograd.gradcheck(f, (x,))
    assert torch.autograd.gradgradcheck(f, (x,))


# ---------------------------------------------------------------------------------------------
# rng='compat': the official draws, then one augment_compat call
# ---------------------------------------------------------------------------------------------


@needs_ext
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("mode", ["M", "S"])
@pytest.mark.parametrize("seed", [2024, -1])
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_compat_kernel_table_equals_python_formulas(strategy, seed, mode, dtype, device):
    """Same generator state in, same table out: the kernel's formulas (csrc/kernels/compat.h) are
    the sampler's (dsa_fast/compat.py), rounding included."""
    from dsa_fast import compat

    param = ParamDiffAug(aug_mode=mode, ratio_rotate=40.0, prob_flip=0.3, ratio_crop_pad=0.3, brightness=0.7)
    x = torch.randn(5, 3, 11, 7, dtype=dtype, device=device)
    state = torch.random.get_rng_state()
    omega = sample_params(strategy, x, seed=seed, param=param)
    after_python = torch.random.get_rng_state()
    torch.random.set_rng_state(state)
    seen = {}
    original = torch.ops.dsa_fast.augment_compat

    class _Spy:
        def __call__(self, *args):
            seen["out"] = original(*args)
            return seen["out"]

    compat_ops = torch.ops.dsa_fast
    try:
        compat_ops.augment_compat = _Spy()
        y = compat.draw_and_apply(x, parse_strategy(strategy), seed, ParamDiffAug(**{
            k: getattr(param, k) for k in ("aug_mode", "ratio_rotate", "prob_flip", "ratio_crop_pad", "brightness")}))
    finally:
        del compat_ops.augment_compat
    assert torch.equal(torch.random.get_rng_state(), after_python), "the fused path drew differently"
    table = seen["out"][1]
    expected = pack_omega(omega.steps, table.shape[0], x.device)[0]
    _assert_same_table(table, expected)
    flags = sum(FLAGS[s.op] for s in omega.steps)
    torch.testing.assert_close(y, torch.ops.dsa_fast.augment(x, table, flags, False), rtol=0, atol=0)
    torch.testing.assert_close(y, dsa_fast.apply(x, omega), rtol=0, atol=0)


@needs_ext
@pytest.mark.parametrize("mode, limit", [("M", 13), ("S", 6)])
def test_compat_dispatch_counts(mode, limit):
    """The official draws (one op each: 12 for the full 'M' chain; the 'S' family choice and its
    read-back, then the family's draws), then one op. Targets: 20 for 'M', 8 for 'S'."""
    for seed in (9, -1):
        for n in (1, 64):
            fwd, both = _counts("compat", mode, seed, n)
            draws = [op for op in fwd if op.startswith(("aten.rand", "aten.randint", "aten._local_scalar_dense"))]
            assert fwd[-1] == "dsa_fast.augment_compat.default" and len(draws) == len(fwd) - 1, fwd
            assert len(fwd) <= limit, fwd
            # ('S': the family, hence the number of draws, may differ from the call above)
            assert both[-3:] == ["dsa_fast.augment_compat.default", "dsa_fast.augment_backward.default",
                                 "aten.detach.default"], both
            assert len(both) <= limit + 2


# ---------------------------------------------------------------------------------------------
# CUDA: graphs and host synchronisation (benchmarks/gpu_check.sh runs every needs_cuda test)
# ---------------------------------------------------------------------------------------------


def _capture(fn):
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(s)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fn()
    return graph, out


@needs_cuda
@needs_ext
@pytest.mark.parametrize("mode", ["M", "S"])
def test_cuda_graph_tensor_seed_updated_in_place_between_replays(mode):
    param = ParamDiffAug(rng="device", aug_mode=mode)
    x = torch.randn(16, 3, 12, 10, device="cuda")
    seed = torch.tensor(100, device="cuda")
    graph, y = _capture(lambda: DiffAugment(x, FULL_STRATEGY, seed=seed, param=param))
    outs = []
    for _ in range(4):
        seed.add_(1)  # outside the graph: the captured kernel reads the key on the device
        graph.replay()
        outs.append((int(seed), y.clone()))
    assert len({o[1].sum().item() for o in outs}) == 4, "each replay must draw a fresh ω"
    for value, out in outs:
        torch.testing.assert_close(out, DiffAugment(x, FULL_STRATEGY, seed=torch.tensor(value, device="cuda"),
                                                    param=param), atol=0, rtol=0)
        torch.testing.assert_close(out, DiffAugment(x, FULL_STRATEGY, seed=value, param=param), atol=0, rtol=0)


@needs_cuda
@needs_ext
def test_cuda_graph_unseeded_replays_fresh_and_match_eager():
    param = ParamDiffAug(rng="device", aug_mode="M")
    x = torch.randn(8, 3, 12, 10, device="cuda")
    counter = device_rng.counter(x.device)  # created before the capture
    graph, y = _capture(lambda: DiffAugment(x, FULL_STRATEGY, seed=-1, param=param))
    outs = []
    for _ in range(3):
        start = int(counter)
        graph.replay()
        assert int(counter) == start + 1
        outs.append((start, y.clone()))
    assert len({o[1].sum().item() for o in outs}) == 3
    for start, out in outs:
        counter.fill_(start)
        torch.testing.assert_close(out, DiffAugment(x, FULL_STRATEGY, seed=-1, param=param), atol=0, rtol=0)


@needs_cuda
@needs_ext
@pytest.mark.parametrize("rng", ["compat", "device"])
@pytest.mark.parametrize("mode", ["S", "M"])
@pytest.mark.parametrize("seed", [5, -1])
def test_cuda_one_call_paths_make_no_host_sync(rng, mode, seed):
    param = ParamDiffAug(rng=rng, aug_mode=mode)
    x = torch.randn(32, 3, 16, 16, device="cuda", requires_grad=True)
    DiffAugment(x, FULL_STRATEGY, seed=seed, param=param).sum().backward()  # lazy inits first
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(4):
            DiffAugment(x, FULL_STRATEGY, seed=seed, param=param).sum().backward()
    finally:
        torch.cuda.set_sync_debug_mode(0)


@needs_ext
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("per_sample", [False, True])
def test_opcheck_augment_compat(per_sample, dtype, device):
    from dsa_fast import compat

    x = torch.randn(3, 2, 7, 6, dtype=dtype, device=device, requires_grad=True)
    param = ParamDiffAug(aug_mode="M")
    ops = tuple(op for tok in parse_strategy(FULL_STRATEGY) for op in ops_table.TOKENS[tok])
    settings = tuple(getattr(param, f) for f in SETTING_FIELDS)
    flags, plan, constants = compat._plan(ops, settings, 7, 6, per_sample)
    draws = compat.CompatDraws(-1 if per_sample else 4)
    raw = [t for op in ops for t in compat.raw_draws(op, x, draws, param)]
    torch.library.opcheck(torch.ops.dsa_fast.augment_compat.default, (x, raw, flags, plan, constants, False))
