"""``torch.compile`` with its default compiler (inductor) keeps the shared transform.

A seeded ``DiffAugment`` call must apply the same ω to every batch that uses the seed, compiled or
not. Inductor replaces ``torch.rand``/``torch.randint`` with its own generator, so traced official
draws would give other numbers than eager, and two calls with one seed would no longer agree. The
rules these tests hold the library to (README, "torch.compile"):

- ``rng='compat'``: the official draws always run eagerly, outside the graph (a graph break), so a
  compiled call draws the eager ω, leaves the generators as eager does, and shares ω across batch
  sizes. ``fullgraph=True`` refuses, naming ``rng='device'``.
- ``rng='device'``: traced whole (``fullgraph=True``), the eager ω, Siamese across batch sizes, a
  tensor seed never recompiles.

With the fused kernels the outputs are the eager bits; the reference backend's arithmetic is
compiled by inductor and equal to eager within float32 rounding.

An int seed is a Python value: dynamo specialises on its first value and makes it dynamic on the
second, so there are at most two compilations however many seeds follow (more than the recompile
limit of 8 are used here).
"""
from __future__ import annotations

import pytest
import torch
import torch._dynamo
from torch._dynamo.utils import counters

from dsa_fast import DiffAugment, ParamDiffAug

from conftest import BACKEND_PARAMS, FULL_STRATEGY

SEEDS = range(11)  # more than dynamo's recompile limit (8)
# The reference backend has inductor compile the transform itself, forward and backward (minutes
# on a loaded 2-core CPU for the full chain): there 'M' mode, a colour op and a resampling, fewer
# seeds. ('S' on the reference path compiles once per drawn family: the family decides which
# ops are traced.)
_FUSED = next(p for p in BACKEND_PARAMS if p.id == "fused")  # skipped when the kernels are not built
CASES = [pytest.param(m, "fused", FULL_STRATEGY, SEEDS, marks=_FUSED.marks, id=f"{m}-fused") for m in ("S", "M")]
CASES.append(pytest.param("M", "reference", "color_rotate", range(4), id="M-reference"))


def _pair_fn(param, backend, strategy=FULL_STRATEGY):
    def f(real, syn, seed):
        return (DiffAugment(real, strategy, seed=seed, param=param, backend=backend),
                DiffAugment(syn, strategy, seed=seed, param=param, backend=backend))
    return f


def _same(got, want, backend, what):
    """The fused kernel is opaque to the compiler: the same bits. The reference backend's arithmetic
    is compiled by inductor, which may round differently (ω itself is the same): float32 tolerance,
    far below the ~1 a different transform makes."""
    if backend == "fused":
        assert torch.equal(got, want), what
    else:
        torch.testing.assert_close(got, want, msg=lambda m: f"{what}: {m}")


def _batches():
    real = torch.randn(16, 3, 10, 9)
    syn = real[:4].clone()  # the same images in a smaller batch: a shared ω gives the same outputs
    return real, syn


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    counters.clear()
    yield
    torch._dynamo.reset()


@pytest.mark.parametrize("mode, backend, strategy, seeds", CASES)
def test_compat_seeded_compiled_is_eager_and_siamese(mode, backend, strategy, seeds):
    param = ParamDiffAug(aug_mode=mode)
    f = _pair_fn(param, backend, strategy)
    compiled = torch.compile(f)  # the default compiler: inductor
    real, syn = _batches()
    frames_after = []
    for seed in seeds:
        torch.manual_seed(100 + seed)
        rc, sc = real.clone().requires_grad_(), syn.clone().requires_grad_()
        yc_real, yc_syn = compiled(rc, sc, seed)
        state_compiled = torch.get_rng_state()
        torch.manual_seed(100 + seed)
        re, se = real.clone().requires_grad_(), syn.clone().requires_grad_()
        ye_real, ye_syn = f(re, se, seed)
        state_eager = torch.get_rng_state()

        _same(yc_real, ye_real, backend, f"compiled vs eager, real batch ({mode}, seed {seed})")
        _same(yc_syn, ye_syn, backend, f"compiled vs eager, synthetic batch ({mode}, seed {seed})")
        _same(yc_syn, yc_real[:4], backend, f"compiled seeded calls lost the shared transform ({mode}, seed {seed})")
        assert torch.equal(state_compiled, state_eager), "the compiled call left the CPU generator elsewhere"
        g_real, g_syn = torch.randn_like(real), torch.randn_like(syn)
        ((yc_real * g_real).sum() + (yc_syn * g_syn).sum()).backward()
        ((ye_real * g_real).sum() + (ye_syn * g_syn).sum()).backward()
        _same(rc.grad, re.grad, backend, f"gradient, real batch ({mode}, seed {seed})")
        _same(sc.grad, se.grad, backend, f"gradient, synthetic batch ({mode}, seed {seed})")
        frames_after.append(counters["frames"]["total"])
    # Frames dynamo compiled: for the first seed, again when the seed turns dynamic, never after.
    assert frames_after[1] == frames_after[-1], f"a new seed value recompiled: frames after each seed {frames_after}"


@pytest.mark.parametrize("backend", BACKEND_PARAMS)
def test_compat_fullgraph_refuses_naming_the_device_sampler(backend):
    f = _pair_fn(ParamDiffAug(aug_mode="M"), backend)
    real, syn = _batches()
    with pytest.raises(Exception, match=r"rng='device'") as info:
        torch.compile(f, fullgraph=True)(real, syn, 3)
    assert "rng='compat'" in str(info.value)


@pytest.mark.parametrize("mode, backend, strategy, seeds", CASES)
def test_device_tensor_seed_compiled_fullgraph_is_eager_and_siamese(mode, backend, strategy, seeds):
    param = ParamDiffAug(rng="device", aug_mode=mode)
    f = _pair_fn(param, backend, strategy)
    compiled = torch.compile(f, fullgraph=True)
    real, syn = _batches()
    frames_after = []
    for value in seeds:
        seed = torch.tensor(value)
        rc, sc = real.clone().requires_grad_(), syn.clone().requires_grad_()
        re, se = real.clone().requires_grad_(), syn.clone().requires_grad_()
        yc_real, yc_syn = compiled(rc, sc, seed)
        ye_real, ye_syn = f(re, se, seed)
        _same(yc_real, ye_real, backend, f"compiled vs eager, real batch ({mode}, seed {value})")
        _same(yc_syn, ye_syn, backend, f"compiled vs eager, synthetic batch ({mode}, seed {value})")
        _same(yc_syn, yc_real[:4], backend, f"compiled seeded calls lost the shared transform ({mode}, seed {value})")
        g = torch.randn_like(real)
        (yc_real * g).sum().backward()
        (ye_real * g).sum().backward()
        _same(rc.grad, re.grad, backend, f"gradient ({mode}, seed {value})")
        frames_after.append(counters["frames"]["total"])
    assert frames_after[0] == frames_after[-1], f"a tensor seed recompiled: frames after each seed {frames_after}"
