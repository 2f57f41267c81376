"""Parity with the official DiffAugment on the 264 golden vectors (tests/golden).

Each case is reproduced exactly as it was produced (tests/golden/README.md): the global CPU
generator seeded with ``global_seed``, then one DiffAugment call, then ``(y * g).sum().backward()``.
Tolerances are those of docs/semantics.md §6: bitwise for flip/crop/cutout, 1e-6 relative for color,
1e-5 absolute once scale or rotate is involved.
"""
from __future__ import annotations

import pytest
import torch

from conftest import (BACKEND_PARAMS, GOLDEN_DIR, load_golden_cases, needs_cuda, original_golden_dir,
                      require_data)
from dsa_fast import DiffAugment, ParamDiffAug
from tools.pack_golden import differences

CASES = load_golden_cases()
CASE_PARAMS = [pytest.param(c, id=f"{c['name']}-{c['strategy']}-{c['aug_mode']}") for c in CASES]


def tolerance_class(strategy: str) -> str:
    tokens = set(strategy.split("_"))
    if tokens & {"scale", "rotate"}:
        return "geometric"
    if "color" in tokens:
        return "color"
    return "exact"


def assert_matches(actual: torch.Tensor, expected: torch.Tensor, strategy: str, what: str) -> None:
    kind = tolerance_class(strategy)
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    assert actual.dtype == expected.dtype, f"{what}: dtype {actual.dtype} != {expected.dtype}"
    if kind == "exact":
        if not torch.equal(actual, expected):
            diff = (actual != expected).sum().item()
            pytest.fail(f"{what} ({strategy}): not bitwise equal, {diff} elements differ")
    elif kind == "color":
        # 1e-6 relative, elementwise and against the tensor's scale (reduction order may move the
        # last bit of values near zero).
        scale = expected.abs().max().item() if expected.numel() else 0.0
        torch.testing.assert_close(actual, expected, rtol=1e-6, atol=1e-6 * scale, msg=lambda m: f"{what}: {m}")
    else:
        torch.testing.assert_close(actual, expected, rtol=0, atol=1e-5, msg=lambda m: f"{what}: {m}")


def run_case(golden, case: dict, backend: str, device: str = "cpu"):
    name = case["name"]
    x = golden.tensor(name, "x").to(device).requires_grad_()
    g = golden.tensor(name, "g").to(device)
    torch.manual_seed(case["global_seed"])
    p = ParamDiffAug(**case["param_values"], aug_mode=case["aug_mode"])
    y = DiffAugment(x, case["strategy"], seed=case["seed"], param=p, backend=backend)
    (y * g).sum().backward()
    return y.detach(), x.grad


@pytest.mark.parametrize("backend", BACKEND_PARAMS)
@pytest.mark.parametrize("case", CASE_PARAMS)
def test_golden(golden, case, backend):
    y, dx = run_case(golden, case, backend)
    assert_matches(y, golden.tensor(case["name"], "y"), case["strategy"], f"{case['name']} forward y")
    assert_matches(dx, golden.tensor(case["name"], "dx"), case["strategy"], f"{case['name']} input gradient dx")


def test_golden_set_is_complete(golden):
    """The suite really runs what the golden README promises."""
    assert len(golden.cases) == 264
    assert golden.meta["dtype"] == "float32"
    for c in golden.cases:
        for kind in ("x", "g", "y", "dx"):
            assert f"{c['name']}_{kind}" in golden.arrays, f"{c['name']}_{kind} missing from arrays.npz"
    assert {c["seed"] for c in golden.cases} == {-1, 7, 31337}
    assert {c["aug_mode"] for c in golden.cases} == {"S", "M"}


def test_packed_golden_equals_the_original():
    """tests/golden is a lossless packing of the original vectors (tools/pack_golden.py): equal on
    metadata, every case and the bytes of x, g, y and dx. Runs where the original folder is given
    ($DSA_FAST_GOLDEN_ORIGINAL); under DSA_FAST_REQUIRE_DATA=1 its absence is a failure."""
    original = original_golden_dir()
    if original is None or not (original / "arrays.npz").is_file():
        where = f"{original}/arrays.npz not found" if original else "$DSA_FAST_GOLDEN_ORIGINAL not set"
        if require_data():
            pytest.fail(f"original golden vectors required (DSA_FAST_REQUIRE_DATA=1): {where}", pytrace=False)
        pytest.skip(f"original golden vectors absent ({where}); tests/golden is checked against them where given")
    diff = differences(str(original), str(GOLDEN_DIR))
    assert not diff, "tests/golden differs from the original:\n  " + "\n  ".join(diff[:20])


# Scale and rotate draw from the CPU generator whatever the device (docs/semantics.md §2), so their golden
# vectors hold on CUDA too.
GEOMETRIC_CASES = [
    pytest.param(c, id=f"{c['name']}-{c['strategy']}-{c['aug_mode']}")
    for c in CASES
    if set(c["strategy"].split("_")) <= {"scale", "rotate"}
]


@needs_cuda
@pytest.mark.parametrize("case", GEOMETRIC_CASES)
@pytest.mark.parametrize("backend", BACKEND_PARAMS)
def test_golden_geometric_on_cuda(golden, case, backend):
    y, dx = run_case(golden, case, backend, device="cuda")
    assert_matches(y.cpu(), golden.tensor(case["name"], "y"), case["strategy"], f"{case['name']} forward y (cuda)")
    assert_matches(dx.cpu(), golden.tensor(case["name"], "dx"), case["strategy"], f"{case['name']} dx (cuda)")


# ---------------------------------------------------------------------------------------------
# Generator consumption: after the call the global CPU generator must be exactly where the official
# code leaves it. The official draw sequence is replayed here by hand from the docs/semantics.md §2 table.
# ---------------------------------------------------------------------------------------------


def _crop_max(size: int, ratio: float) -> int:
    return int(size * ratio + 0.5)


def _replay_official_draws(case: dict) -> None:
    """Make the same global-generator calls, in the same order, as the official DiffAugment would
    for this case (CPU input), reseeding before each draw when seeded."""
    n, _, h, w = case["shape"]
    pv = case["param_values"]
    seed = case["seed"]
    counter = [seed]

    def reseed():
        if seed != -1:
            torch.random.manual_seed(counter[0])
            counter[0] += 1

    def draw_op(op):
        if op in ("brightness", "saturation", "contrast"):
            reseed()
            torch.rand(n, 1, 1, 1, dtype=torch.float32)
        elif op == "flip":
            reseed()
            torch.rand(n, 1, 1, 1)
        elif op == "crop":
            for size in (h, w):
                s = _crop_max(size, pv["ratio_crop_pad"])
                reseed()
                torch.randint(-s, s + 1, size=[n, 1, 1])
        elif op == "cutout":
            for size in (h, w):
                c = int(size * pv["ratio_cutout"] + 0.5)
                reseed()
                torch.randint(0, size + (1 - c % 2), size=[n, 1, 1])
        elif op == "scale":
            for _ in range(2):
                reseed()
                torch.rand(n)
        elif op == "rotate":
            reseed()
            torch.rand(n)
        else:
            raise AssertionError(op)

    expand = {"color": ("brightness", "saturation", "contrast")}
    tokens = case["strategy"].split("_")
    torch.manual_seed(case["global_seed"])
    if case["aug_mode"] == "S":
        reseed()
        tokens = [tokens[torch.randint(0, len(tokens), size=(1,)).item()]]
    for tok in tokens:
        for op in expand.get(tok, (tok,)):
            draw_op(op)


REPRESENTATIVE = [
    ("color_crop_cutout_flip_scale_rotate", "M", -1),
    ("color_crop_cutout_flip_scale_rotate", "S", -1),
    ("color_crop_cutout_flip_scale_rotate", "M", 31337),
    ("cutout", "S", 7),
    ("crop_flip", "M", -1),
]


def _representative_cases():
    """Unseeded 'S' and 'M' full strategies, a seeded 'M' full strategy, and a seeded single op."""
    picks = []
    for strategy, mode, seed in REPRESENTATIVE:
        matching = [c for c in CASES if (c["strategy"], c["aug_mode"], c["seed"]) == (strategy, mode, seed)]
        # Prefer the "strong" settings (non-default crop/cutout sizes change the draw ranges).
        matching.sort(key=lambda c: c["param"] != "strong")
        if matching:
            c = matching[0]
            picks.append(pytest.param(c, id=f"{c['name']}-{strategy}-{mode}-seed{seed}-{c['param']}"))
    return picks


@pytest.mark.parametrize("case", _representative_cases())
def test_generator_state_after_call(golden, case):
    _replay_official_draws(case)
    expected_state = torch.get_rng_state()
    expected_next = torch.rand(4)

    run_case(golden, case, "reference")
    assert torch.equal(torch.get_rng_state(), expected_state), (
        f"{case['name']}: DiffAugment left the global CPU generator in a different state than the "
        f"official draw sequence does"
    )
    assert torch.equal(torch.rand(4), expected_next)


def test_representative_cases_cover_seeded_and_unseeded():
    found = {(c["strategy"], c["aug_mode"], c["seed"]) for c in (p.values[0] for p in _representative_cases())}
    missing = [w for w in REPRESENTATIVE if w not in found]
    assert not missing, f"the golden set lacks cases the generator-state test needs (strategy, mode, seed): {missing}"
    seeds = {seed for _, _, seed in found}
    assert -1 in seeds and len(seeds) >= 2, f"seeded and unseeded cases both needed, found seeds {sorted(seeds)}"
