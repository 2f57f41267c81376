"""Bad input raises ValueError/TypeError with a message that says what is wrong; nothing exits.

The official code calls ``exit()`` on an unknown aug_mode; here every path is guarded against any
exit call, so an error path that tried to leave the process fails the test instead.
"""
from __future__ import annotations

import builtins
import os
import sys

import pytest
import torch

from conftest import FULL_STRATEGY, TOKENS
from dsa_fast import DiffAugment, Omega, ParamDiffAug, Step, apply, sample_params


@pytest.fixture(autouse=True)
def _no_exit(monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError(f"dsa_fast called an exit function with {args!r}")

    for name in ("exit", "quit"):
        monkeypatch.setattr(builtins, name, forbidden, raising=False)
    monkeypatch.setattr(sys, "exit", forbidden)
    monkeypatch.setattr(os, "_exit", forbidden)


def _x(*shape, dtype=torch.float32):
    return torch.zeros(shape or (2, 3, 8, 8), dtype=dtype)


VALID_LIST = r"color, crop, cutout, flip, scale, rotate"


@pytest.mark.parametrize("strategy", ["colour", "crop_jitter", "color__flip", "Crop", "none_crop"])
@pytest.mark.parametrize("mode", ["S", "M"])
def test_unknown_token(strategy, mode):
    bad = next(t for t in strategy.split("_") if t not in TOKENS)
    for seed in (-1, 3):
        with pytest.raises(ValueError, match=rf"unknown augmentation '{bad}'.*{VALID_LIST}"):
            DiffAugment(_x(), strategy, seed=seed, param=ParamDiffAug(aug_mode=mode))
    with pytest.raises(ValueError, match=rf"'{bad}'"):
        sample_params(strategy, _x(), seed=1, param=ParamDiffAug(aug_mode=mode))


def test_unknown_token_draws_nothing():
    """An invalid strategy is rejected before any random number is drawn."""
    before = torch.get_rng_state()
    with pytest.raises(ValueError):
        DiffAugment(_x(), "crop_blur", seed=-1, param=ParamDiffAug(aug_mode="S"))
    assert torch.equal(torch.get_rng_state(), before)


@pytest.mark.parametrize("strategy", [None, 3, ["crop"]])
def test_strategy_not_a_string(strategy):
    with pytest.raises(TypeError, match="strategy must be a str"):
        DiffAugment(_x(), strategy, seed=1, param=ParamDiffAug())


@pytest.mark.parametrize("aug_mode", ["X", "m", "", "SM"])
def test_unknown_aug_mode(aug_mode):
    with pytest.raises(ValueError, match=rf"unknown aug_mode '{aug_mode}'.*'S', 'M'"):
        DiffAugment(_x(), FULL_STRATEGY, seed=1, param=ParamDiffAug(aug_mode=aug_mode))
    with pytest.raises(ValueError, match="unknown aug_mode"):
        sample_params("crop", _x(), seed=-1, param=ParamDiffAug(aug_mode=aug_mode))


@pytest.mark.parametrize("shape", [(3, 8, 8), (8, 8), (1, 2, 3, 8, 8), ()])
def test_not_4d(shape):
    x = torch.zeros(shape)
    pattern = r"expected x of shape \[N, C, H, W\], got " + str(tuple(shape)).replace("(", r"\(").replace(")", r"\)")
    with pytest.raises(ValueError, match=pattern):
        DiffAugment(x, "crop", seed=1, param=ParamDiffAug())
    with pytest.raises(ValueError, match=r"expected x of shape \[N, C, H, W\]"):
        sample_params("crop", x, seed=1)
    omega = sample_params("crop", _x(), seed=1)
    with pytest.raises(ValueError, match=r"dsa_fast.apply: expected x of shape \[N, C, H, W\]"):
        apply(x, omega)


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.uint8, torch.bool], ids=str)
def test_integer_and_bool_dtype(dtype):
    x = _x(2, 3, 8, 8, dtype=dtype)
    with pytest.raises(TypeError, match=rf"expected a floating-point x, got {dtype}"):
        DiffAugment(x, "flip", seed=1, param=ParamDiffAug())
    omega = sample_params("flip", _x(), seed=1)
    with pytest.raises(TypeError, match="floating-point"):
        apply(x, omega)


@pytest.mark.parametrize("obj", [[[1.0]], 3.0, "x"])
def test_not_a_tensor(obj):
    with pytest.raises(TypeError, match="expected a torch.Tensor"):
        DiffAugment(obj, "crop", seed=1, param=ParamDiffAug())
    with pytest.raises(TypeError, match="expected an Omega"):
        apply(_x(), {"crop": obj})


def test_omega_batch_neither_one_nor_n():
    omega = sample_params(FULL_STRATEGY, _x(5, 3, 8, 8), seed=-1, param=ParamDiffAug(aug_mode="M"))
    assert omega.batch_size == 5
    with pytest.raises(ValueError, match=r"shape \(5,\); expected \(3,\) or \(1,\) for a batch of 3"):
        apply(_x(3, 3, 8, 8), omega)
    # A 2-D parameter is not a batch of per-sample values either.
    bad = Omega((Step("flip", {"flip": torch.ones(3, 1, dtype=torch.bool)}),))
    with pytest.raises(ValueError, match=r"flip.flip has shape \(3, 1\)"):
        apply(_x(3, 3, 8, 8), bad)


def test_omega_on_another_device():
    omega = sample_params(FULL_STRATEGY, _x(), seed=3, param=ParamDiffAug(aug_mode="M"))
    other = "meta" if not torch.cuda.is_available() else "cuda"
    moved = omega.to(other)
    with pytest.raises(ValueError, match=rf"is on {other}.*but x is on cpu.*omega.to\(x.device\)"):
        apply(_x(), moved)


def test_omega_with_wrong_keys_or_op():
    with pytest.raises(ValueError, match=r"crop expects parameters \('shift_h', 'shift_w'\)"):
        apply(_x(), Omega((Step("crop", {"shift_h": torch.zeros(1, dtype=torch.long)}),)))
    with pytest.raises(ValueError, match="unknown op 'blur'"):
        apply(_x(), Omega((Step("blur", {"sigma": torch.ones(1)}),)))
    with pytest.raises(ValueError, match="not an Omega state"):
        Omega.from_state_dict({"align_corners": False, "ops": ["crop"], "params": [{"dx": torch.zeros(1)}]})


@pytest.mark.parametrize("backend", ["cuda", "Fused", "", "ref"])
def test_bad_backend(backend):
    with pytest.raises(ValueError, match=rf"unknown backend '{backend}'.*'auto', 'fused', 'reference'"):
        DiffAugment(_x(), "crop", seed=1, param=ParamDiffAug(), backend=backend)
    omega = sample_params("crop", _x(), seed=1)
    with pytest.raises(ValueError, match="unknown backend"):
        apply(_x(), omega, backend=backend)


def test_bad_rng_mode():
    with pytest.raises(ValueError, match=r"unknown rng 'cuda'"):
        DiffAugment(_x(), "crop", seed=1, param=ParamDiffAug(rng="cuda"))


def test_errors_leave_param_usable():
    """A failed call does not poison the settings object for the next one."""
    p = ParamDiffAug(aug_mode="M")
    with pytest.raises(ValueError):
        DiffAugment(_x(), "crop_blur", seed=1, param=p)
    y = DiffAugment(torch.randn(2, 3, 8, 8), "crop", seed=1, param=p)
    assert y.shape == (2, 3, 8, 8)


BAD_SETTINGS = [
    ("prob_flip", 2.0, ValueError, r"prob_flip must be a probability in \[0, 1\], got 2.0"),
    ("prob_flip", -0.1, ValueError, r"prob_flip must be a probability in \[0, 1\]"),
    ("ratio_cutout", 1.5, ValueError, r"ratio_cutout must be in \[0, 1\].*got 1.5"),
    ("ratio_cutout", -0.5, ValueError, r"ratio_cutout must be in \[0, 1\]"),
    ("ratio_crop_pad", -0.1, ValueError, r"ratio_crop_pad must be >= 0.*got -0.1"),
    ("ratio_scale", 0.0, ValueError, r"ratio_scale must be > 0.*got 0.0"),
    ("ratio_scale", float("inf"), ValueError, r"ratio_scale must be > 0"),
    ("ratio_rotate", float("nan"), ValueError, r"ratio_rotate must be a finite angle"),
    ("brightness", "1", TypeError, r"brightness must be a real number, got '1'"),
    ("contrast", True, TypeError, r"contrast must be a real number, got True"),
    ("align_corners", 1, TypeError, r"align_corners must be a bool, got 1"),
    ("aug_mode", "X", ValueError, r"unknown aug_mode 'X'"),
    ("rng", "cuda", ValueError, r"unknown rng 'cuda'"),
]


@pytest.mark.parametrize("field, value, error, pattern", BAD_SETTINGS)
def test_bad_setting_at_construction(field, value, error, pattern):
    with pytest.raises(error, match=pattern):
        ParamDiffAug(**{field: value})


@pytest.mark.parametrize("field, value, error, pattern", BAD_SETTINGS)
@pytest.mark.parametrize("rng", ["compat", "device"])
def test_bad_setting_reassigned_is_caught_on_use(field, value, error, pattern, rng):
    p = ParamDiffAug(aug_mode="M", rng=rng)
    setattr(p, field, value)
    with pytest.raises(error, match=pattern):
        DiffAugment(_x(), FULL_STRATEGY, seed=1, param=p)
    with pytest.raises(error, match=pattern):
        sample_params("crop", _x(), seed=-1, param=p)


def test_edge_settings_are_accepted():
    p = ParamDiffAug(prob_flip=0.0, ratio_cutout=1.0, ratio_crop_pad=0.0, ratio_scale=0.5, ratio_rotate=0)
    assert DiffAugment(_x(), FULL_STRATEGY, seed=1, param=p).shape == (2, 3, 8, 8)
    p = ParamDiffAug(prob_flip=1, ratio_cutout=0)
    assert DiffAugment(_x(), FULL_STRATEGY, seed=1, param=p).shape == (2, 3, 8, 8)


@pytest.mark.parametrize("seed", [1.0, 2.5, True, False, "3", None])
@pytest.mark.parametrize("rng", ["compat", "device"])
def test_seed_must_be_an_int(seed, rng):
    with pytest.raises(TypeError, match=rf"seed must be an int.*got {seed!r}"):
        DiffAugment(_x(), "crop", seed=seed, param=ParamDiffAug(rng=rng))


@pytest.mark.parametrize("seed", [2**70, 2**63, -(2**63) - 1])
@pytest.mark.parametrize("rng", ["compat", "device"])
@pytest.mark.parametrize("backend", ["auto", "reference"])
def test_seed_out_of_the_64_bit_range_is_a_dsa_fast_error(seed, rng, backend):
    pattern = rf"^dsa_fast: seed must be -1 \(no seed\) or an int in \[-2\*\*63, 2\*\*63 - 1\].*got {seed}$"
    for aug_mode in ("S", "M"):
        with pytest.raises(ValueError, match=pattern):
            DiffAugment(_x(), FULL_STRATEGY, seed=seed, param=ParamDiffAug(aug_mode=aug_mode, rng=rng), backend=backend)
        with pytest.raises(ValueError, match=pattern):
            sample_params(FULL_STRATEGY, _x(), seed=seed, param=ParamDiffAug(aug_mode=aug_mode, rng=rng))


@pytest.mark.parametrize("seed", [2**63 - 1, -(2**63)])
@pytest.mark.parametrize("rng", ["compat", "device"])
def test_seeds_at_the_ends_of_the_range_run(seed, rng):
    # 'M' makes the most draws: the official draws reseed with seed, seed + 1, ..., which must stay
    # within what torch's generators take.
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    param = ParamDiffAug(aug_mode="M", rng=rng)
    y = DiffAugment(x, FULL_STRATEGY, seed=seed, param=param)
    assert torch.equal(y, DiffAugment(x, FULL_STRATEGY, seed=seed, param=param))
    assert torch.equal(y, apply(x, sample_params(FULL_STRATEGY, x, seed=seed, param=param)))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bool])
def test_tensor_seed_must_hold_an_integer(dtype):
    with pytest.raises(TypeError, match=rf"tensor seed must hold an integer, got dtype {dtype}"):
        DiffAugment(_x(), "crop", seed=torch.ones((), dtype=dtype), param=ParamDiffAug(rng="device"))
    with pytest.raises(TypeError, match=r"tensor seed needs ParamDiffAug\(rng='device'\)"):
        DiffAugment(_x(), "crop", seed=torch.ones((), dtype=torch.int64), param=ParamDiffAug(rng="compat"))


def test_integer_like_seeds_are_accepted():
    import numpy as np

    x = torch.randn(2, 3, 8, 8)
    a = DiffAugment(x, FULL_STRATEGY, seed=np.int64(7), param=ParamDiffAug(aug_mode="M"))
    b = DiffAugment(x, FULL_STRATEGY, seed=7, param=ParamDiffAug(aug_mode="M"))
    assert torch.equal(a, b)


def test_batchmode_is_a_read_write_alias_of_siamese():
    """Older copies of the official code assign ``param.batchmode = False`` before each call."""
    p = ParamDiffAug()
    p.batchmode = True
    assert p.Siamese is True and p.batchmode is True
    p.batchmode = False
    assert p.Siamese is False and p.batchmode is False
    DiffAugment(_x(), "crop", seed=3, param=p)
    assert p.batchmode is True
