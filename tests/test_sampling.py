"""The seed = -1 draws have the distributions of docs/semantics.md §1–§2.

Each check reads ω from ``sample_params`` for one large batch (20 000 per-sample draws). Continuous
draws get bounds plus a Kolmogorov–Smirnov statistic against the uniform CDF; integer draws get a
chi-square statistic against the uniform law on their range; frequencies get a binomial bound. All
thresholds are critical values at alpha = 1e-3 (computed here, not looked up), and the generator is
seeded anyway, so the tests are deterministic and would flag a real deviation, not chance.
"""
from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import pytest
import torch

from conftest import TOKENS
from dsa_fast import ParamDiffAug, sample_params

N_DRAWS = 20_000
ALPHA = 1e-3
Z = NormalDist().inv_cdf(1 - ALPHA / 2)  # two-sided normal quantile

STRONG = dict(
    prob_flip=0.8, ratio_scale=1.5, ratio_rotate=40.0, ratio_crop_pad=0.25, ratio_cutout=0.3,
    brightness=0.6, saturation=1.5, contrast=0.8,
)  # fmt: skip
SETTINGS = [pytest.param({}, id="default"), pytest.param(STRONG, id="strong")]


def _batch(h=32, w=32, n=N_DRAWS):
    """A batch of n images without n images of memory: sample_params only reads shape/dtype/device."""
    return torch.empty(1, 1, h, w).expand(n, 1, h, w)


def _draw(op_token: str, settings: dict, h=32, w=32, seed=0):
    torch.manual_seed(seed)
    omega = sample_params(op_token, _batch(h, w), seed=-1, param=ParamDiffAug(aug_mode="M", **settings))
    assert omega.batch_size == N_DRAWS
    return {f"{s.op}.{k}": v for s in omega.steps for k, v in s.params.items()}


def ks_critical(n: int, alpha: float = ALPHA) -> float:
    """Asymptotic one-sample KS critical value: sqrt(ln(2/alpha) / (2n))."""
    return math.sqrt(math.log(2 / alpha) / (2 * n))


def chi2_critical(df: int, alpha: float = ALPHA) -> float:
    """Wilson–Hilferty approximation of the chi-square upper quantile."""
    z = NormalDist().inv_cdf(1 - alpha)
    return df * (1 - 2 / (9 * df) + z * math.sqrt(2 / (9 * df))) ** 3


def assert_uniform_continuous(values: torch.Tensor, lo: float, hi: float, what: str):
    v = np.sort(values.double().cpu().numpy())
    n = v.size
    span = hi - lo
    tol = 1e-6 * max(1.0, abs(lo), abs(hi))  # float32 rounding of the affine map
    assert v[0] >= lo - tol and v[-1] < hi + tol, f"{what}: range [{v[0]}, {v[-1]}] outside [{lo}, {hi})"
    # Both ends are reached: P(min > lo + span/1000) = (1 - 1e-3)^20000 ~ 2e-9.
    assert v[0] < lo + span * 1e-3 and v[-1] > hi - span * 1e-3, f"{what}: [{v[0]}, {v[-1]}] does not span [{lo}, {hi})"
    cdf = (v - lo) / span
    d_plus = np.max(np.arange(1, n + 1) / n - cdf)
    d_minus = np.max(cdf - np.arange(0, n) / n)
    d = max(d_plus, d_minus)
    crit = ks_critical(n)
    assert d < crit, f"{what}: KS statistic {d:.4f} >= critical {crit:.4f} (alpha {ALPHA})"


def assert_uniform_integers(values: torch.Tensor, lo: int, hi: int, what: str):
    """Uniform over the integers lo..hi inclusive: every value present, chi-square below critical."""
    v = values.long().cpu().numpy()
    assert v.min() >= lo and v.max() <= hi, f"{what}: values in [{v.min()}, {v.max()}], expected [{lo}, {hi}]"
    k = hi - lo + 1
    counts = np.bincount(v - lo, minlength=k)
    assert (counts > 0).all(), f"{what}: value(s) {np.nonzero(counts == 0)[0] + lo} never drawn"
    if k == 1:
        return
    expected = v.size / k
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    crit = chi2_critical(k - 1)
    assert chi2 < crit, f"{what}: chi-square {chi2:.1f} >= critical {crit:.1f} for {k - 1} df; counts {counts}"


def assert_frequency(hits: int, n: int, p: float, what: str):
    sd = math.sqrt(n * p * (1 - p))
    assert abs(hits - n * p) <= Z * sd + 1, f"{what}: {hits}/{n} = {hits / n:.4f}, expected {p} ± {Z * sd / n:.4f}"


def _p(settings: dict) -> ParamDiffAug:
    return ParamDiffAug(**settings)


# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("settings", SETTINGS)
def test_scale_uniform(settings):
    r = _p(settings).ratio_scale
    d = _draw("scale", settings, seed=1)
    assert_uniform_continuous(d["scale.scale_w"], 1 / r, r, "scale_w")
    assert_uniform_continuous(d["scale.scale_h"], 1 / r, r, "scale_h")
    # Two independent draws: the two factors are not the same numbers.
    corr = np.corrcoef(d["scale.scale_w"].numpy(), d["scale.scale_h"].numpy())[0, 1]
    assert abs(corr) < Z / math.sqrt(N_DRAWS) + 1e-3, f"scale_w and scale_h correlate: {corr:.4f}"


@pytest.mark.parametrize("settings", SETTINGS)
def test_rotate_uniform_in_radians(settings):
    deg = _p(settings).ratio_rotate
    d = _draw("rotate", settings, seed=2)
    assert_uniform_continuous(d["rotate.angle"], -deg * math.pi / 180, deg * math.pi / 180, "rotate angle")


@pytest.mark.parametrize("settings", SETTINGS + [pytest.param({"prob_flip": 0.1}, id="p0.1")])
def test_flip_frequency(settings):
    p = _p(settings).prob_flip
    f = _draw("flip", settings, seed=3)["flip.flip"]
    assert f.dtype == torch.bool
    assert_frequency(int(f.sum()), N_DRAWS, p, "flip")


@pytest.mark.parametrize("settings", SETTINGS)
def test_color_uniform(settings):
    p = _p(settings)
    d = _draw("color", settings, seed=4)
    assert_uniform_continuous(d["brightness.shift"], -0.5 * p.brightness, 0.5 * p.brightness, "brightness shift")
    assert_uniform_continuous(d["saturation.factor"], 0.0, p.saturation, "saturation factor")
    assert_uniform_continuous(d["contrast.factor"], p.contrast, p.contrast + 1.0, "contrast factor")


@pytest.mark.parametrize("hw", [(32, 32), (28, 20), (7, 3)], ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("settings", SETTINGS)
def test_crop_shifts_uniform(settings, hw):
    h, w = hw
    ratio = _p(settings).ratio_crop_pad
    d = _draw("crop", settings, h=h, w=w, seed=5)
    s_h, s_w = int(h * ratio + 0.5), int(w * ratio + 0.5)
    assert_uniform_integers(d["crop.shift_h"], -s_h, s_h, f"crop shift_h (S={s_h})")
    assert_uniform_integers(d["crop.shift_w"], -s_w, s_w, f"crop shift_w (S={s_w})")


@pytest.mark.parametrize("hw", [(32, 32), (28, 21), (9, 6)], ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("settings", SETTINGS)
def test_cutout_offsets_uniform(settings, hw):
    h, w = hw
    ratio = _p(settings).ratio_cutout
    d = _draw("cutout", settings, h=h, w=w, seed=6)
    c_h, c_w = int(h * ratio + 0.5), int(w * ratio + 0.5)
    assert (d["cutout.height"] == c_h).all() and (d["cutout.width"] == c_w).all()
    # Box centre o = top + floor(box / 2) is uniform over 0..size - (box mod 2) (docs/semantics.md §2).
    assert_uniform_integers(d["cutout.top"] + c_h // 2, 0, h - c_h % 2, f"cutout row offset (box {c_h})")
    assert_uniform_integers(d["cutout.left"] + c_w // 2, 0, w - c_w % 2, f"cutout column offset (box {c_w})")


def _family(omega) -> str:
    first = omega.steps[0].op
    return "color" if first == "brightness" else first


@pytest.mark.parametrize(
    "strategy", ["_".join(TOKENS), "crop_crop_flip", "scale_rotate_rotate_rotate_color"], ids=lambda s: s
)
def test_s_mode_family_choice_uniform_over_tokens(strategy):
    """One draw picks one token per batch; duplicated tokens weigh more (docs/semantics.md §2)."""
    tokens = strategy.split("_")
    families = sorted(set(tokens))
    calls = 3000
    torch.manual_seed(7)
    x = torch.empty(2, 1, 8, 8)
    counts = {f: 0 for f in families}
    for _ in range(calls):
        omega = sample_params(strategy, x, seed=-1, param=ParamDiffAug(aug_mode="S"))
        fam = _family(omega)
        expected_ops = {"color": ["brightness", "saturation", "contrast"]}.get(fam, [fam])
        assert [s.op for s in omega.steps] == expected_ops, "'S' mode applies exactly one family"
        counts[fam] += 1
    for fam in families:
        p = tokens.count(fam) / len(tokens)
        assert_frequency(counts[fam], calls, p, f"family {fam} in {strategy}")
    observed = np.array([counts[f] for f in families])
    expected = np.array([tokens.count(f) / len(tokens) * calls for f in families])
    chi2 = float(((observed - expected) ** 2 / expected).sum())
    assert chi2 < chi2_critical(len(families) - 1), f"family choice chi-square {chi2:.1f}: {counts}"


def test_per_sample_draws_are_independent_across_the_batch():
    """seed = -1: every sample gets its own values (not one value copied over the batch)."""
    d = _draw("crop", {}, seed=8)
    assert len(torch.unique(d["crop.shift_h"])) == 9
    d = _draw("scale", {}, seed=9)
    assert len(torch.unique(d["scale.scale_w"])) > N_DRAWS * 0.9


def test_statistics_helpers_reject_wrong_laws():
    """The checks above have power: they reject near-misses of the laws they test."""
    gen = torch.Generator().manual_seed(0)
    u = torch.rand(N_DRAWS, generator=gen, dtype=torch.float64)
    assert_uniform_continuous(u, 0.0, 1.0, "sanity")
    with pytest.raises(AssertionError, match="KS statistic"):
        assert_uniform_continuous(u**1.05, 0.0, 1.0, "skewed")
    with pytest.raises(AssertionError, match="outside"):
        assert_uniform_continuous(u * 1.01, 0.0, 1.0, "stretched")
    ints = torch.randint(-4, 5, (N_DRAWS,), generator=gen)
    assert_uniform_integers(ints, -4, 4, "sanity")
    with pytest.raises(AssertionError, match="outside|expected"):
        assert_uniform_integers(ints, -3, 4, "wrong range")
    biased = torch.where(torch.rand(N_DRAWS, generator=gen) < 0.05, torch.zeros_like(ints), ints)
    with pytest.raises(AssertionError, match="chi-square"):
        assert_uniform_integers(biased, -4, 4, "biased")
    with pytest.raises(AssertionError, match="flip"):
        assert_frequency(int(N_DRAWS * 0.52), N_DRAWS, 0.5, "flip")
