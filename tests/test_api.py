"""The public API: sampling apart from application, ω as data, the drop-in's official run-time state."""
from __future__ import annotations

import dataclasses

import pytest
import torch

import dsa_fast
from conftest import DEVICES, FULL_STRATEGY, TOKENS
from dsa_fast import DiffAugment, Omega, ParamDiffAug, apply, sample_params

STRATEGIES = list(TOKENS) + [FULL_STRATEGY, "crop_flip", "scale_rotate", "color_cutout"]
MODES = ["S", "M"]
# Draws per family when seeded (docs/semantics.md §2 table): latestseed advances by one per draw.
DRAWS = {"brightness": 3, "crop": 2, "cutout": 2, "flip": 1, "scale": 2, "rotate": 1}


def _x(n=256, c=3, h=11, w=9, seed=0, dtype=torch.float32, device="cpu"):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, c, h, w, generator=gen, dtype=dtype).to(device)


def _assert_same_omega(a: Omega, b: Omega):
    assert [s.op for s in a.steps] == [s.op for s in b.steps]
    assert a.align_corners == b.align_corners
    ca, cb = getattr(a, "choice", None), getattr(b, "choice", None)
    assert (ca is None) == (cb is None) and (ca is None or torch.equal(ca, cb))
    for sa, sb in zip(a.steps, b.steps):
        assert getattr(sa, "group", 0) == getattr(sb, "group", 0)
        assert sa.params.keys() == sb.params.keys()
        for k in sa.params:
            assert torch.equal(sa.params[k], sb.params[k]), f"{sa.op}.{k}: {sa.params[k]} != {sb.params[k]}"


def _map_params(omega: Omega, fn) -> Omega:
    """ω with ``fn`` applied to every per-sample tensor (the steps' parameters and any choice)."""
    steps = tuple(dataclasses.replace(s, params={k: fn(v) for k, v in s.params.items()}) for s in omega.steps)
    extra = {}
    if getattr(omega, "choice", None) is not None:
        extra["choice"] = fn(omega.choice)
    return dataclasses.replace(omega, steps=steps, **extra)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_one_omega_same_transform_for_256_and_10(strategy, mode):
    x256 = _x(256)
    x10 = x256[:10]
    omega = sample_params(strategy, x256, seed=1234, param=ParamDiffAug(aug_mode=mode))
    assert omega.batch_size == 1
    # Sampling on the small batch with the same seed gives the very same ω.
    _assert_same_omega(omega, sample_params(strategy, x10, seed=1234, param=ParamDiffAug(aug_mode=mode)))
    y256 = apply(x256, omega)
    y10 = apply(x10, omega)
    assert torch.equal(y256[:10], y10)
    assert not torch.equal(y10, x10) or strategy == "flip"  # the transform does something (flip may not fire)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_diffaugment_same_seed_two_batch_sizes(strategy, mode):
    x256 = _x(256, seed=1)
    x10 = x256[:10].clone()
    y256 = DiffAugment(x256, strategy, seed=99, param=ParamDiffAug(aug_mode=mode))
    y10 = DiffAugment(x10, strategy, seed=99, param=ParamDiffAug(aug_mode=mode))
    assert torch.equal(y256[:10], y10)


@pytest.mark.parametrize("seed", [-1, 3])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_diffaugment_is_sample_then_apply(strategy, mode, seed):
    """DiffAugment(x) == apply(x, sample_params(x)) from the same generator state."""
    x = _x(7, seed=2)
    torch.manual_seed(11)
    y = DiffAugment(x, strategy, seed=seed, param=ParamDiffAug(aug_mode=mode))
    after_call = torch.get_rng_state()
    torch.manual_seed(11)
    omega = sample_params(strategy, x, seed=seed, param=ParamDiffAug(aug_mode=mode))
    assert torch.equal(torch.get_rng_state(), after_call), "apply must not draw random numbers"
    assert torch.equal(apply(x, omega), y)


@pytest.mark.parametrize("mode", MODES)
def test_batch_size_of_omega(mode):
    x = _x(6)
    assert sample_params(FULL_STRATEGY, x, seed=-1, param=ParamDiffAug(aug_mode=mode)).batch_size == 6
    assert sample_params(FULL_STRATEGY, x, seed=5, param=ParamDiffAug(aug_mode=mode)).batch_size == 1
    for seed, n in ((-1, 6), (5, 1)):
        omega = sample_params(FULL_STRATEGY, x, seed=seed, param=ParamDiffAug(aug_mode=mode))
        for step in omega.steps:
            for k, v in step.params.items():
                assert v.shape == (n,), f"{step.op}.{k}: {tuple(v.shape)}"


def test_per_sample_omega_is_per_sample():
    """Row i of a batch-N ω is the transform of image i."""
    x = _x(5, h=13, w=10)
    omega = sample_params(FULL_STRATEGY, x, seed=-1, param=ParamDiffAug(aug_mode="M"))
    y = apply(x, omega)
    for i in range(5):
        omega_i = _map_params(omega, lambda v: v[i : i + 1])
        torch.testing.assert_close(apply(x[i : i + 1], omega_i), y[i : i + 1], rtol=0, atol=1e-6)
    # ...and the samples really differ from each other.
    assert len({tuple(v.tolist()) for s in omega.steps for v in s.params.values()}) > 1


def test_broadcast_omega_equals_expanded_omega():
    x = _x(4)
    omega = sample_params(FULL_STRATEGY, x, seed=8, param=ParamDiffAug(aug_mode="M", align_corners=True))
    expanded = _map_params(omega, lambda v: v.expand(4).clone())
    assert expanded.batch_size == 4 and expanded.align_corners is True
    torch.testing.assert_close(apply(x, expanded), apply(x, omega), rtol=0, atol=1e-6)


def test_omega_repr():
    omega = sample_params(FULL_STRATEGY, _x(3), seed=4, param=ParamDiffAug(aug_mode="M"))
    text = repr(omega)
    assert text.startswith("Omega(")
    for op in ("brightness", "saturation", "contrast", "crop", "cutout", "flip", "scale", "rotate"):
        assert op in text, f"{op} missing from {text}"
    assert "align_corners=False" in text
    big = sample_params("scale", _x(100), seed=-1, param=ParamDiffAug(aug_mode="M"))
    assert len(repr(big)) < 500, "a large ω should print compactly"
    for step in omega.steps:
        assert step.op in repr(step)


@pytest.mark.parametrize("device", DEVICES)
def test_omega_to_device(device):
    x = _x(5)
    omega = sample_params(FULL_STRATEGY, x, seed=21, param=ParamDiffAug(aug_mode="M"))
    moved = omega.to(device)
    assert moved.device.type == device
    assert moved.align_corners == omega.align_corners
    y = apply(x.to(device), moved)
    torch.testing.assert_close(y.cpu(), apply(x, omega), rtol=0, atol=1e-5)
    meta = omega.to("meta")
    assert meta.device.type == "meta"
    assert [s.op for s in meta.steps] == [s.op for s in omega.steps]
    assert all(v.shape == (1,) for s in meta.steps for v in s.params.values())


@pytest.mark.parametrize("seed", [-1, 77])
def test_omega_save_load_roundtrip(tmp_path, seed):
    x = _x(6, h=9, w=14)
    omega = sample_params(FULL_STRATEGY, x, seed=seed, param=ParamDiffAug(aug_mode="M", align_corners=True))
    path = tmp_path / "omega.pt"
    omega.save(path)
    state = torch.load(path, weights_only=True)  # plain data: no pickled classes needed
    assert isinstance(state, dict)
    loaded = Omega.load(path)
    _assert_same_omega(loaded, omega)
    assert loaded.align_corners is True
    assert torch.equal(apply(x, loaded), apply(x, omega))
    assert torch.equal(apply(x, Omega.from_state_dict(omega.state_dict())), apply(x, omega))


@pytest.mark.parametrize("strategy", ["none", "", "None"])
@pytest.mark.parametrize("seed", [-1, 5])
def test_no_augment_returns_same_object(strategy, seed):
    x = _x(3)
    before = torch.get_rng_state()
    assert DiffAugment(x, strategy, seed=seed, param=ParamDiffAug()) is x
    assert DiffAugment(x, strategy) is x
    assert torch.equal(torch.get_rng_state(), before), "no augmentation must draw nothing"


@pytest.mark.parametrize("seed", [-1, 5])
@pytest.mark.parametrize("strategy", [FULL_STRATEGY, "crop", "color"])
def test_param_none_uses_defaults(strategy, seed):
    x = _x(4)
    torch.manual_seed(3)
    y_none = DiffAugment(x, strategy, seed=seed, param=None)
    torch.manual_seed(3)
    y_default = DiffAugment(x, strategy, seed=seed, param=ParamDiffAug())
    assert torch.equal(y_none, y_default)
    torch.manual_seed(3)
    omega_none = sample_params(strategy, x, seed=seed)
    torch.manual_seed(3)
    _assert_same_omega(omega_none, sample_params(strategy, x, seed=seed, param=ParamDiffAug()))


def test_param_defaults_are_the_official_ones():
    p = ParamDiffAug()
    expected = dict(
        aug_mode="S", prob_flip=0.5, ratio_scale=1.2, ratio_rotate=15.0, ratio_crop_pad=0.125,
        ratio_cutout=0.5, brightness=1.0, saturation=2.0, contrast=0.5,
    )  # fmt: skip
    for k, v in expected.items():
        assert getattr(p, k) == v, k
    assert p.align_corners is False


@pytest.mark.parametrize("seed", [0, 7, 31337])
def test_official_run_time_state_m_mode(seed):
    p = ParamDiffAug(aug_mode="M")
    DiffAugment(_x(4), FULL_STRATEGY, seed=seed, param=p)
    assert p.latestseed == seed + 11
    assert p.Siamese is True and p.batchmode is True
    DiffAugment(_x(4), FULL_STRATEGY, seed=-1, param=p)
    assert p.Siamese is False and p.batchmode is False
    assert p.latestseed == -1


@pytest.mark.parametrize("seed", [3, 4, 5, 6, 7, 8, 9, 10])
def test_official_run_time_state_s_mode(seed):
    """'S': one draw for the family choice, then one per draw of the chosen family."""
    x = _x(4)
    p = ParamDiffAug(aug_mode="S")
    omega = sample_params(FULL_STRATEGY, x, seed=seed, param=p)
    first = omega.steps[0].op
    assert p.latestseed == seed + 1 + DRAWS[first]
    q = ParamDiffAug(aug_mode="S")
    DiffAugment(x, FULL_STRATEGY, seed=seed, param=q)
    assert q.latestseed == p.latestseed and q.Siamese is True


def test_noncontiguous_input():
    base = _x(4, h=12, w=18)
    x = base[:, :, :, ::2]  # a strided view
    assert not x.is_contiguous()
    for strategy in STRATEGIES:
        y = DiffAugment(x, strategy, seed=5, param=ParamDiffAug(aug_mode="M"))
        assert torch.equal(y, DiffAugment(x.contiguous(), strategy, seed=5, param=ParamDiffAug(aug_mode="M")))
        assert y.is_contiguous()


def test_public_names():
    for name in ("DiffAugment", "ParamDiffAug", "Omega", "Step", "sample_params", "apply", "has_ops"):
        assert hasattr(dsa_fast, name), name
    assert isinstance(dsa_fast.has_ops(), bool)
