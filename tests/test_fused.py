"""The fused kernels (dsa_fast._C) against the reference: forward and input gradient on hundreds of
random small cases (odd sizes, H != W, N = 0 and 1, H or W = 1, every layout), gradcheck in
float64, the half/bfloat16 error rule, opcheck, torch.compile, determinism, the op's own error
messages, rng='device' draws, and the CUDA-only checks (no host sync, CUDA graphs, deterministic
mode, memory). The reference is the oracle."""
from __future__ import annotations

import math
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import dsa_fast
from dsa_fast import DiffAugment, ParamDiffAug, apply, reference, sample_params
from dsa_fast.fused import FLAGS, pack_omega
from dsa_fast.ops_table import ALL_OPS, OMEGA_WIDTH

from conftest import DEVICES, FULL_STRATEGY, TOKENS, needs_cuda

ROOT = Path(__file__).resolve().parents[1]

NO_EXT = os.environ.get("DSA_FAST_NO_EXT") == "1"
pytestmark = pytest.mark.skipif(NO_EXT, reason="DSA_FAST_NO_EXT=1: the fused backend is disabled on purpose")


def test_extension_loaded():
    """Where the extension was built (CI, the dev script), it must load: no silent fallback."""
    assert dsa_fast.has_ops(), dsa_fast._ops.why_unavailable(torch.empty(0))


# ---------------------------------------------------------------------------------------------
# Random cases
# ---------------------------------------------------------------------------------------------


def _random_param(rng: random.Random) -> ParamDiffAug:
    return ParamDiffAug(
        aug_mode=rng.choice("SM"),
        prob_flip=rng.uniform(0, 1),
        ratio_scale=rng.uniform(1.0, 1.6),
        ratio_rotate=rng.uniform(0, 60),
        ratio_crop_pad=rng.uniform(0, 0.4),
        ratio_cutout=rng.uniform(0, 0.9),
        brightness=rng.uniform(0, 2),
        saturation=rng.uniform(0, 3),
        contrast=rng.uniform(0, 1),
        align_corners=rng.random() < 0.3,
        rng=rng.choice(["compat", "device"]),
    )


def _layout(x: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "channels_last":
        return x.contiguous(memory_format=torch.channels_last)
    if kind == "strided":  # a non-contiguous view: every other column of a wider tensor
        wide = torch.zeros(*x.shape[:3], 2 * x.shape[3], dtype=x.dtype, device=x.device)
        wide[..., ::2] = x
        return wide[..., ::2]
    return x.contiguous()


def _cases(count: int, seed: int):
    rng = random.Random(seed)
    for k in range(count):
        shape = (rng.choice([0, 1, 1, 2, 3, 5]), rng.choice([1, 2, 3, 4]), rng.randint(1, 13), rng.randint(1, 13))
        tokens = [rng.choice(TOKENS) for _ in range(rng.randint(1, 4))]
        if rng.random() < 0.3:
            tokens = FULL_STRATEGY.split("_")
        seed_ = rng.choice([-1, rng.randint(0, 10**6)])
        yield pytest.param(shape, "_".join(tokens), seed_, _random_param(rng), rng.choice(
            ["contiguous", "channels_last", "strided"]), id=f"case{k}")


def _compare(shape, strategy, seed, param, layout, dtype, device, atol):
    x = _layout(torch.randn(shape, dtype=dtype, device=device), layout)
    omega = sample_params(strategy, x, seed=seed, param=param)
    g = torch.randn(shape, dtype=dtype, device=device)
    out = {}
    for backend in ("reference", "fused"):
        xb = x.detach().clone(memory_format=torch.preserve_format).requires_grad_()
        y = apply(xb, omega, backend=backend)
        (y * g).sum().backward()
        out[backend] = (y.detach(), xb.grad)
    (yr, dr), (yf, df) = out["reference"], out["fused"]
    torch.testing.assert_close(yf, yr, atol=atol, rtol=atol)
    torch.testing.assert_close(df, dr, atol=atol, rtol=atol)
    if x.numel():  # an empty tensor has no meaningful layout
        want_cl = layout == "channels_last" and not x.is_contiguous()
        for y in (yf, yr):
            assert y.is_contiguous(memory_format=torch.channels_last if want_cl else torch.contiguous_format)


@pytest.mark.parametrize("shape,strategy,seed,param,layout", list(_cases(240, 1)))
@pytest.mark.parametrize("device", DEVICES)
def test_matches_reference_float64(shape, strategy, seed, param, layout, device):
    _compare(shape, strategy, seed, param, layout, torch.float64, device, atol=1e-9)


@pytest.mark.parametrize("shape,strategy,seed,param,layout", list(_cases(80, 2)))
@pytest.mark.parametrize("device", DEVICES)
def test_matches_reference_float32(shape, strategy, seed, param, layout, device):
    # NB: float32 positions are computed in a different order than affine_grid's bmm; a sample
    # position differs by ~1 ulp of the pixel coordinate.
    _compare(shape, strategy, seed, param, layout, torch.float32, device, atol=1e-4)


# ---------------------------------------------------------------------------------------------
# gradcheck / gradgradcheck in float64
# ---------------------------------------------------------------------------------------------

GRAD_STRATEGIES = list(TOKENS) + [FULL_STRATEGY, "crop_flip", "scale_rotate", "rotate_scale", "crop_crop"]
# Each strategy once per seed kind, cycling through align_corners and the two generators.
GRAD_CASES = [
    pytest.param(strategy, seed, k % 2 == 1, ("compat", "device")[(k // 2) % 2], id=f"{strategy}-{seed}-{k % 4}")
    for k, (strategy, seed) in enumerate((s, seed) for s in GRAD_STRATEGIES for seed in (-1, 11))
]


@pytest.mark.parametrize("strategy,seed,align_corners,rng", GRAD_CASES)
@pytest.mark.parametrize("device", DEVICES)
def test_gradcheck(strategy, seed, align_corners, rng, device):
    x = torch.randn(2, 2, 5, 4, dtype=torch.float64, device=device, requires_grad=True)
    param = ParamDiffAug(aug_mode="M", ratio_crop_pad=0.3, align_corners=align_corners, rng=rng)
    omega = sample_params(strategy, x, seed=seed, param=param)

    def f(t):
        return apply(t, omega, backend="fused")

    assert torch.autograd.gradcheck(f, (x,))
    assert torch.autograd.gradgradcheck(f, (x,), fast_mode=True)


@pytest.mark.parametrize("device", DEVICES)
def test_gradcheck_device_family_choice(device):
    """'S' mode with rng='device': ω holds every family and the kernel picks one per sample."""
    x = torch.randn(2, 3, 6, 5, dtype=torch.float64, device=device, requires_grad=True)
    for seed in range(6):
        omega = sample_params(FULL_STRATEGY, x, seed=seed, param=ParamDiffAug(rng="device"))
        assert omega.choice is not None
        assert torch.autograd.gradcheck(lambda t: apply(t, omega, backend="fused"), (x,))


# ---------------------------------------------------------------------------------------------
# half / bfloat16: err(fused vs fp32 reference) <= 2 x err(reference in that dtype vs fp32 reference)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("strategy", list(TOKENS) + [FULL_STRATEGY])
@pytest.mark.parametrize("device", DEVICES)
def test_low_precision_error_rule(dtype, strategy, device):
    torch.manual_seed(0)
    x = torch.randn(8, 3, 16, 12, device=device).to(dtype)
    g = torch.randn(8, 3, 16, 12, device=device).to(dtype)
    omega = sample_params(strategy, x, seed=5, param=ParamDiffAug(aug_mode="M"))

    def run(t, backend):
        t = t.detach().requires_grad_()
        y = apply(t, omega, backend=backend)
        (y * g.to(t.dtype)).sum().backward()
        return y.detach().float(), t.grad.float()

    y32, d32 = run(x.float(), "reference")
    y_ref, d_ref = run(x, "reference")
    y_fused, d_fused = run(x, "fused")
    slack = 1e-6  # ops that are exact copies have zero error on both sides
    assert (y_fused - y32).abs().max() <= 2 * (y_ref - y32).abs().max() + slack
    assert (d_fused - d32).abs().max() <= 2 * (d_ref - d32).abs().max() + slack


@pytest.mark.parametrize("strategy", list(TOKENS) + [FULL_STRATEGY])
@pytest.mark.parametrize("seed", [-1, 4])
@pytest.mark.parametrize("device", DEVICES)
def test_backward_of_expanded_gradient_equals_dense(strategy, seed, device):
    """y.sum().backward() hands the backward a gradient with every stride 0; it must give the bits
    the same gradient gives as a dense tensor (the CPU executor has broadcast-row paths for it)."""
    x = torch.randn(3, 3, 7, 6, device=device)
    table, flags = _table(x, strategy, seed)
    for value in (1.0, -0.75):
        expanded = torch.full((), value, device=device).expand(3, 3, 7, 6)
        dense = expanded.contiguous()
        got = torch.ops.dsa_fast.augment_backward(expanded, table, flags, False)
        want = torch.ops.dsa_fast.augment_backward(dense, table, flags, False)
        assert torch.equal(got, want), (strategy, seed, value)


# ---------------------------------------------------------------------------------------------
# Registration: opcheck, torch.compile
# ---------------------------------------------------------------------------------------------


def _table(x, strategy, seed=3, **kw):
    omega = sample_params(strategy, x, seed=seed, param=ParamDiffAug(aug_mode="M", **kw))
    batch = 1 if seed != -1 else x.shape[0]
    return pack_omega(omega.steps, batch, x.device)


@pytest.mark.parametrize("strategy", list(TOKENS) + [FULL_STRATEGY])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("seed", [-1, 4])
@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(strategy, dtype, layout, seed, device):
    x = _layout(torch.randn(3, 3, 7, 6, dtype=dtype, device=device), layout)
    table, flags = _table(x, strategy, seed)
    x.requires_grad_(dtype != torch.float16)
    torch.library.opcheck(torch.ops.dsa_fast.augment.default, (x, table, flags, False))
    grad = _layout(torch.randn(3, 3, 7, 6, dtype=dtype, device=device), layout).requires_grad_(dtype != torch.float16)
    torch.library.opcheck(torch.ops.dsa_fast.augment_backward.default, (grad, table, flags, True))


@pytest.mark.parametrize("device", DEVICES)
def test_compile_fullgraph_device_rng(device):
    """rng='device' DiffAugment compiles with no graph break and matches eager, gradient too."""
    param = ParamDiffAug(rng="device")

    def f(t, seed):
        return DiffAugment(t, FULL_STRATEGY, seed=seed, param=param, backend="fused")

    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    x = torch.randn(4, 3, 9, 8, device=device)
    for seed in (1, torch.tensor(2, device=device), torch.tensor(3, device=device)):
        xe, xc = x.clone().requires_grad_(), x.clone().requires_grad_()
        ye, yc = f(xe, seed), compiled(xc, seed)
        torch.testing.assert_close(yc, ye, atol=0, rtol=0)
        ye.square().sum().backward()
        yc.square().sum().backward()
        torch.testing.assert_close(xc.grad, xe.grad, atol=0, rtol=0)


# ---------------------------------------------------------------------------------------------
# Determinism, NaN propagation, errors
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
def test_deterministic_bitwise(device):
    x = torch.randn(16, 3, 32, 32, device=device)
    g = torch.randn_like(x)
    omega = sample_params(FULL_STRATEGY, x, seed=-1, param=ParamDiffAug(aug_mode="M"))
    results = []
    with DeterministicAlgorithms():
        for _ in range(2):
            t = x.clone().requires_grad_()
            y = apply(t, omega, backend="fused")
            (y * g).sum().backward()
            results.append((y.detach(), t.grad))
    assert torch.equal(results[0][0], results[1][0])
    assert torch.equal(results[0][1], results[1][1])


class DeterministicAlgorithms:
    def __enter__(self):
        self.prev = torch.are_deterministic_algorithms_enabled()
        torch.use_deterministic_algorithms(True)

    def __exit__(self, *exc):
        torch.use_deterministic_algorithms(self.prev)


@pytest.mark.parametrize("strategy", list(TOKENS) + [FULL_STRATEGY])
@pytest.mark.parametrize("device", DEVICES)
def test_nan_inf_propagate_as_reference(strategy, device):
    x = torch.randn(4, 3, 10, 9, device=device)
    x[0, 1, 3, 4] = float("nan")
    x[1, :, 5, 5] = float("inf")
    x[2, 0, 0, 0] = -float("inf")
    for seed in (-1, 1, 2, 3):
        omega = sample_params(strategy, x, seed=seed, param=ParamDiffAug(aug_mode="M"))
        yr = apply(x, omega, backend="reference")
        yf = apply(x, omega, backend="fused")
        assert torch.equal(yr.isnan(), yf.isnan()), (strategy, seed)
        assert torch.equal(yr.isinf(), yf.isinf()), (strategy, seed)


def test_op_errors_name_the_op_and_argument():
    x = torch.randn(2, 3, 4, 4)
    table, flags = _table(x, FULL_STRATEGY, seed=1)
    op = torch.ops.dsa_fast.augment
    with pytest.raises(RuntimeError, match=r"dsa_fast.augment: expected x of shape \[N, C, H, W\], got \[2, 3, 4\]"):
        op(x[..., 0], table, flags, False)
    with pytest.raises(RuntimeError, match="dsa_fast.augment: expected a floating-point x, got Int"):
        op(x.int(), table, flags, False)
    with pytest.raises(RuntimeError, match=rf"dsa_fast.augment: expected omega of shape \[B, {OMEGA_WIDTH}\]"):
        op(x, table[:, :3], flags, False)
    with pytest.raises(RuntimeError, match="dsa_fast.augment: expected omega of dtype float64, got Float"):
        op(x, table.float(), flags, False)
    with pytest.raises(RuntimeError, match="dsa_fast.augment: omega has batch 3 but x has batch 2"):
        op(x, table.expand(3, -1).contiguous(), flags, False)
    with pytest.raises(RuntimeError, match=rf"dsa_fast.augment: flags must be in \[0, {ALL_OPS}\], got {ALL_OPS + 1}"):
        op(x, table, ALL_OPS + 1, False)
    with pytest.raises(RuntimeError, match="dsa_fast.augment_backward: expected x of shape"):
        torch.ops.dsa_fast.augment_backward(x[0], table, flags, False)


# ---------------------------------------------------------------------------------------------
# rng='device': Siamese, fresh, distributed as docs/semantics.md §7 says
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
def test_device_rng_siamese_and_fresh(device):
    param = ParamDiffAug(rng="device", aug_mode="M")
    x = torch.randn(12, 3, 16, 16, device=device)
    a = DiffAugment(x, FULL_STRATEGY, seed=42, param=param)
    b = DiffAugment(x[:5], FULL_STRATEGY, seed=42, param=param)
    c = DiffAugment(x[:5], FULL_STRATEGY, seed=torch.tensor(42, device=device), param=param)
    torch.testing.assert_close(a[:5], b, atol=0, rtol=0)
    torch.testing.assert_close(b, c, atol=0, rtol=0)
    assert not torch.equal(a, DiffAugment(x, FULL_STRATEGY, seed=43, param=param))
    # Unseeded calls advance a counter: two calls differ, and per-sample ω differ within a batch.
    o1 = sample_params("rotate", x, seed=-1, param=param)
    o2 = sample_params("rotate", x, seed=-1, param=param)
    assert o1.batch_size == 12 and not torch.equal(o1.steps[0].params["angle"], o2.steps[0].params["angle"])
    assert o1.steps[0].params["angle"].unique().numel() == 12


def test_device_rng_manual_seed_before_the_first_unseeded_call():
    """``device_rng.manual_seed`` also sets where a counter starts that no call has created yet: in a
    fresh interpreter, seeding before the first unseeded call and seeding again later replay the
    same draws."""
    script = (
        "import torch; from dsa_fast import ParamDiffAug, sample_params, device_rng\n"
        "x = torch.zeros(6, 3, 8, 8); p = ParamDiffAug(rng='device', aug_mode='M')\n"
        "draw = lambda: sample_params('rotate', x, seed=-1, param=p).steps[0].params['angle']\n"
        "device_rng.manual_seed(5); a = draw(); draw()\n"
        "device_rng.manual_seed(5); b = draw()\n"
        "print(torch.equal(a, b))\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[-1] == "True"


def _ks_uniform(values: torch.Tensor, lo: float, hi: float) -> float:
    """Kolmogorov–Smirnov distance between the sample and U[lo, hi)."""
    v = ((values.double().cpu() - lo) / (hi - lo)).sort().values
    n = v.numel()
    i = torch.arange(1, n + 1, dtype=torch.float64)
    return max((i / n - v).max().item(), (v - (i - 1) / n).max().item())


def test_device_rng_distributions():
    n = 20000
    x = torch.empty(1, 3, 28, 28).expand(n, 3, 28, 28)  # only its shape is read
    p = ParamDiffAug(rng="device", aug_mode="M")
    crit = 1.95 / math.sqrt(n)  # KS critical value at alpha = 1e-3
    steps = {s.op: s.params for s in sample_params(FULL_STRATEGY, x, seed=-1, param=p).steps}
    r = p.ratio_scale
    for key in ("scale_w", "scale_h"):
        v = steps["scale"][key]
        assert v.min() >= 1 / r and v.max() < r
        assert _ks_uniform(v, 1 / r, r) < crit
    rad = p.ratio_rotate / 180 * math.pi
    assert _ks_uniform(steps["rotate"]["angle"], -rad, rad) < crit
    assert _ks_uniform(steps["brightness"]["shift"], -0.5 * p.brightness, 0.5 * p.brightness) < crit
    assert _ks_uniform(steps["saturation"]["factor"], 0, p.saturation) < crit
    assert _ks_uniform(steps["contrast"]["factor"], p.contrast, p.contrast + 1) < crit
    flips = steps["flip"]["flip"].double().mean().item()
    assert abs(flips - p.prob_flip) < 3.3 * math.sqrt(0.25 / n)
    for key in ("shift_h", "shift_w"):  # integers in [-4, 4], each with probability 1/9
        counts = torch.bincount(steps["crop"][key] + 4, minlength=9).double()
        assert counts.numel() == 9 and (counts / n - 1 / 9).abs().max() < 3.3 * math.sqrt((1 / 9) * (8 / 9) / n)
    top = steps["cutout"]["top"] + 14 // 2  # the box centre o_H, uniform over [0, 28]
    counts = torch.bincount(top, minlength=29).double()
    assert counts.numel() == 29 and (counts / n - 1 / 29).abs().max() < 3.3 * math.sqrt((1 / 29) * (28 / 29) / n)
    # 'S' mode: the family choice is uniform over the tokens.
    m = 1200
    choices = torch.cat([
        sample_params(FULL_STRATEGY, x[:1], seed=s, param=ParamDiffAug(rng="device")).choice for s in range(m)
    ])
    freq = torch.bincount(choices, minlength=6).double() / m
    assert freq.numel() == 6 and (freq - 1 / 6).abs().max() < 3.3 * math.sqrt((1 / 6) * (5 / 6) / m)


# ---------------------------------------------------------------------------------------------
# CUDA only (benchmarks/gpu_check.sh runs them on a GPU)
# ---------------------------------------------------------------------------------------------


@needs_cuda
@pytest.mark.parametrize("shape,strategy,seed,param,layout", list(_cases(60, 3)))
def test_cuda_matches_cpu_fused(shape, strategy, seed, param, layout):
    param.rng = "device"  # the same ω on both devices (compat draws differ between devices)
    x = torch.randn(shape, dtype=torch.float64)
    om = sample_params(strategy, x, seed=seed if seed != -1 else 5, param=param)
    y_cpu = apply(x, om, backend="fused")
    y_cuda = apply(x.cuda(), om.to("cuda"), backend="fused")
    torch.testing.assert_close(y_cuda.cpu(), y_cpu, atol=1e-9, rtol=1e-9)


@needs_cuda
@pytest.mark.parametrize("rng", ["compat", "device"])
@pytest.mark.parametrize("mode", ["S", "M"])
def test_cuda_seeded_call_makes_no_host_sync(rng, mode):
    param = ParamDiffAug(rng=rng, aug_mode=mode)
    x = torch.randn(64, 3, 32, 32, device="cuda", requires_grad=True)
    DiffAugment(x, FULL_STRATEGY, seed=1, param=param).sum().backward()  # warm-up: lazy inits
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for seed in range(2, 6):
            DiffAugment(x, FULL_STRATEGY, seed=seed, param=param).sum().backward()
    finally:
        torch.cuda.set_sync_debug_mode(0)


@needs_cuda
def test_cuda_graph_replays_draw_fresh_omega():
    param = ParamDiffAug(rng="device")
    x = torch.randn(32, 3, 32, 32, device="cuda")
    seed = torch.zeros((), dtype=torch.int64, device="cuda")

    def step():
        seed.add_(1)
        return DiffAugment(x, FULL_STRATEGY, seed=seed, param=param)

    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3):
            step()
    torch.cuda.current_stream().wait_stream(s)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        y = step()
    outs = []
    for _ in range(4):
        graph.replay()
        outs.append((seed.item(), y.clone()))
    assert len({o[1].sum().item() for o in outs}) == 4, "each replay must draw a fresh ω"
    for value, out in outs:  # each replay equals the eager call with that seed
        torch.testing.assert_close(out, DiffAugment(x, FULL_STRATEGY, seed=value, param=param), atol=0, rtol=0)


@needs_cuda
def test_cuda_deterministic_mode_and_memory():
    x = torch.randn(256, 3, 32, 32, device="cuda", requires_grad=True)
    omega = sample_params(FULL_STRATEGY, x, seed=3, param=ParamDiffAug(aug_mode="M"))
    with DeterministicAlgorithms():
        y1 = apply(x, omega, backend="fused")
        (g1,) = torch.autograd.grad(y1.sum(), x)
        y2 = apply(x, omega, backend="fused")
        (g2,) = torch.autograd.grad(y2.sum(), x)
    assert torch.equal(y1, y2) and torch.equal(g1, g2)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    y = apply(x.detach(), omega, backend="fused")
    torch.cuda.synchronize()
    extra = torch.cuda.max_memory_allocated() - base - y.numel() * y.element_size()
    assert extra <= 64 * 1024, f"a call allocated {extra} bytes beyond its output"
