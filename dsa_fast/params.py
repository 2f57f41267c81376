"""Settings (``ParamDiffAug``) kept apart from draws (``Omega``), and the samplers.

``ParamDiffAug`` holds the static settings of the official implementation (same fields, same
defaults) plus ``align_corners`` and ``rng``. ``Omega`` is one sampled transform: an ordered tuple
of steps, each an op name and a dict of parameter tensors of shape ``(B,)``, where ``B`` is 1 for a
Siamese (seeded) draw and broadcasts over any batch, or ``N`` for per-sample draws.

Parameters per op (all of shape ``(B,)``):

=============  ==========================  =========  ===================================================
op             key(s)                      dtype      meaning
=============  ==========================  =========  ===================================================
brightness     shift                       x.dtype    ``y = x + shift``
saturation     factor                      x.dtype    ``y = (x - mean_c(x)) * factor + mean_c(x)``
contrast       factor                      x.dtype    ``y = (x - mean_chw(x)) * factor + mean_chw(x)``
crop           shift_h, shift_w            int64      ``y[i, j] = x[i + shift_h, j + shift_w]``, 0 outside
cutout         top, left, height, width    int64      zero rows ``[top, top+height)`` x cols ``[left, left+width)``
flip           flip                        bool       mirror along W where true
scale          scale_w, scale_h            float32    affine ``[[scale_w, 0, 0], [0, scale_h, 0]]``
rotate         angle                       float32    affine ``[[cos, -sin, 0], [sin, cos, 0]]``, radians
=============  ==========================  =========  ===================================================
"""
from __future__ import annotations

import math
import operator
from dataclasses import dataclass, field
from typing import Dict, Optional, SupportsIndex, Tuple

import torch
from torch import Tensor

from .ops.spec import crop_max_shift, cutout_box, cutout_params  # noqa: F401  (re-exported)
from .ops_table import OPS, PARAM_KEYS, TOKENS  # noqa: F401  (re-exported: the public names)
from ._host_cache import host_cache

NO_AUGMENT = ("", "none", "None")
AUG_MODES = ("S", "M")
RNG_MODES = ("compat", "device")


@dataclass
class ParamDiffAug:
    """Settings of Differentiable Siamese Augmentation (the official fields and defaults).

    ``align_corners`` is False as the official code behaves on current PyTorch (True gives MTT's
    copy). ``rng='compat'`` draws exactly as the official code (global generators, reseeded per
    draw when seeded); ``rng='device'`` draws from a counter-based generator on the input's
    device keyed by (seed, draw index), with no host-device synchronisation.

    ``latestseed`` and ``Siamese`` are the official run-time state, overwritten by every call.
    """

    aug_mode: str = "S"
    prob_flip: float = 0.5
    ratio_scale: float = 1.2
    ratio_rotate: float = 15.0
    ratio_crop_pad: float = 0.125
    ratio_cutout: float = 0.5
    brightness: float = 1.0
    saturation: float = 2.0
    contrast: float = 0.5
    align_corners: bool = False
    rng: str = "compat"
    latestseed: int = field(default=-1, repr=False, compare=False)
    Siamese: bool = field(default=False, repr=False, compare=False)

    @property
    def batchmode(self) -> bool:  # the name older copies of the reference use for ``Siamese``
        return self.Siamese

    @batchmode.setter
    def batchmode(self, value: bool) -> None:
        self.Siamese = value

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Checked at construction and again on every use (fields may be reassigned); a set of
        values already found valid is not checked again."""
        # NB: keyed by type too: True == 1 would otherwise hit the entry of a valid 1.
        values = tuple((type(v), v) for v in (getattr(self, f) for f in _CHECKED_FIELDS))
        try:
            if values in _VALID:
                return
        except TypeError:  # an unhashable value: certainly not a valid one
            pass
        self._check()
        if len(_VALID) < 256:
            _VALID.add(values)

    def _check(self) -> None:
        if self.aug_mode not in AUG_MODES:
            raise ValueError(f"dsa_fast: unknown aug_mode {self.aug_mode!r}; expected one of {AUG_MODES}")
        if self.rng not in RNG_MODES:
            raise ValueError(f"dsa_fast: unknown rng {self.rng!r}; expected one of {RNG_MODES}")
        for name, low, high, what in _SETTING_RANGES:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise TypeError(f"dsa_fast: ParamDiffAug.{name} must be a real number, got {v!r}")
            if not (math.isfinite(v) and _in_range(v, low, high)):
                raise ValueError(f"dsa_fast: ParamDiffAug.{name} must be {what}, got {v!r}")
        if not isinstance(self.align_corners, bool):
            raise TypeError(f"dsa_fast: ParamDiffAug.align_corners must be a bool, got {self.align_corners!r}")


# The numeric settings the ops' formulas read (a plan is cached per their values).
SETTING_FIELDS = ("prob_flip", "ratio_scale", "ratio_rotate", "ratio_crop_pad", "ratio_cutout",
                  "brightness", "saturation", "contrast")
_CHECKED_FIELDS = ("aug_mode",) + SETTING_FIELDS + ("align_corners", "rng")
_VALID: set = set()


def _in_range(v: float, low: Tuple[float, bool], high: Tuple[float, bool]) -> bool:
    (lo, lo_closed), (hi, hi_closed) = low, high
    return (v >= lo if lo_closed else v > lo) and (v <= hi if hi_closed else v < hi)


_INF = (math.inf, False)
# (field, (low, closed), (high, closed), the range in words): what the draws need (docs/semantics.md §1-§3).
_SETTING_RANGES = (
    ("prob_flip", (0.0, True), (1.0, True), "a probability in [0, 1]"),
    ("ratio_scale", (0.0, False), _INF, "> 0 (scale factors are drawn from [1/ratio, ratio))"),
    ("ratio_rotate", (-math.inf, False), _INF, "a finite angle in degrees"),
    ("ratio_crop_pad", (0.0, True), _INF, ">= 0 (the largest shift is int(size * ratio + 0.5))"),
    ("ratio_cutout", (0.0, True), (1.0, True), "in [0, 1] (the box side is int(size * ratio + 0.5))"),
    ("brightness", (-math.inf, False), _INF, "a finite number"),
    ("saturation", (-math.inf, False), _INF, "a finite number"),
    ("contrast", (-math.inf, False), _INF, "a finite number"),
)


# An int seed is a signed 64-bit integer, as a tensor seed is: the official draws reseed torch's
# generators with seed, seed + 1, ... (torch takes [-2**63, 2**64 - 1]), and rng='device' keys are int64.
SEED_RANGE = (-(2**63), 2**63 - 1)


def check_seed(seed, rng: str):
    """An int seed (-1: per-sample draws) in ``SEED_RANGE``, or for rng='device' a one-element
    integer tensor."""
    if isinstance(seed, Tensor):
        if rng != "device":
            raise TypeError("dsa_fast: a tensor seed needs ParamDiffAug(rng='device'); rng='compat' takes an int")
        if seed.is_floating_point() or seed.is_complex() or seed.dtype == torch.bool:
            raise TypeError(f"dsa_fast: a tensor seed must hold an integer, got dtype {seed.dtype}")
        return seed
    if isinstance(seed, bool) or not isinstance(seed, (int, SupportsIndex)):
        raise TypeError(f"dsa_fast: seed must be an int (-1: no seed), got {seed!r} of type {type(seed).__name__}")
    # NB: an int goes through untouched: under torch.compile operator.index would specialise the
    # traced seed on its value and recompile for every new seed. The range check is a guard on a
    # range, not on the value.
    seed = seed if isinstance(seed, int) else operator.index(seed)
    if not SEED_RANGE[0] <= seed <= SEED_RANGE[1]:
        raise ValueError(f"dsa_fast: seed must be -1 (no seed) or an int in [-2**63, 2**63 - 1] (64-bit signed), "
                         f"got {seed}")
    return seed


def parse_strategy(strategy: str) -> Tuple[str, ...]:
    """Split a strategy string into tokens, rejecting unknown ones with the list of valid ones."""
    if not isinstance(strategy, str):
        raise TypeError(f"dsa_fast: strategy must be a str, got {type(strategy).__name__}")
    return _parse_strategy(strategy)


@host_cache(256)
def _parse_strategy(strategy: str) -> Tuple[str, ...]:
    tokens = tuple(strategy.split("_"))
    for tok in tokens:
        if tok not in TOKENS:
            raise ValueError(
                f"dsa_fast: unknown augmentation {tok!r} in strategy {strategy!r}; "
                f"valid tokens are {', '.join(TOKENS)} joined by '_' (or 'none')"
            )
    return tokens


@dataclass(frozen=True)
class Step:
    """One op of a sampled transform: its name and its parameter tensors, each of shape (B,).

    ``group`` matters only when the Omega carries a ``choice``: then a step applies to sample b
    only if ``group == choice[b]`` (the alternatives of an 'S'-mode draw made on the device).
    """

    op: str
    params: Dict[str, Tensor]
    group: int = 0

    def to(self, device) -> "Step":
        return Step(self.op, {k: v.to(device) for k, v in self.params.items()}, self.group)

    def __repr__(self) -> str:
        vals = ", ".join(f"{k}={_short(v)}" for k, v in self.params.items())
        return f"{self.op}({vals})" + (f"@{self.group}" if self.group else "")


def _short(t: Tensor) -> str:
    body = t.tolist() if t.numel() <= 6 else f"<{tuple(t.shape)} {t.dtype}>"
    return str(body)


@dataclass(frozen=True)
class Omega:
    """A sampled transform ω: the ordered steps and the resampling convention.

    Apply it with ``dsa_fast.apply(x, omega)``; the same ω applied to the real and the synthetic
    batch gives the same transform (a leading dimension of 1 broadcasts over any batch size).
    """

    steps: Tuple[Step, ...]
    align_corners: bool = False
    choice: Optional[Tensor] = None  # (B,) int64: which group of steps applies to each sample

    @property
    def batch_size(self) -> Optional[int]:
        """1 (Siamese, broadcasts) or N (per-sample); None when there are no steps."""
        for step in self.steps:
            for v in step.params.values():
                return v.shape[0]
        return None

    @property
    def device(self) -> Optional[torch.device]:
        for step in self.steps:
            for v in step.params.values():
                return v.device
        return None

    def groups(self) -> Tuple[int, ...]:
        return tuple(sorted({s.group for s in self.steps}))

    def to(self, device) -> "Omega":
        choice = None if self.choice is None else self.choice.to(device)
        return Omega(tuple(s.to(device) for s in self.steps), self.align_corners, choice)

    def state_dict(self) -> dict:
        """Plain dict of str/bool/int/tensors: loads with ``torch.load(..., weights_only=True)``."""
        return {
            "align_corners": self.align_corners,
            "ops": [s.op for s in self.steps],
            "groups": [s.group for s in self.steps],
            "params": [dict(s.params) for s in self.steps],
            "choice": self.choice,
        }

    @classmethod
    def from_state_dict(cls, state: dict) -> "Omega":
        steps = []
        groups = state.get("groups", [0] * len(state["ops"]))
        for op, group, params in zip(state["ops"], groups, state["params"]):
            if op not in PARAM_KEYS or set(params) != set(PARAM_KEYS[op]):
                raise ValueError(f"dsa_fast: not an Omega state: op {op!r} with keys {sorted(params)}")
            steps.append(Step(op, dict(params), int(group)))
        return cls(tuple(steps), bool(state["align_corners"]), state.get("choice"))

    def save(self, path) -> None:
        torch.save(self.state_dict(), path)

    @classmethod
    def load(cls, path, map_location=None) -> "Omega":
        return cls.from_state_dict(torch.load(path, map_location=map_location, weights_only=True))

    def __repr__(self) -> str:
        inner = ",\n  ".join(repr(s) for s in self.steps)
        return f"Omega(align_corners={self.align_corners}, steps=[\n  {inner}\n])"


def _check_input(x, where: str) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"dsa_fast.{where}: expected a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(f"dsa_fast.{where}: expected x of shape [N, C, H, W], got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"dsa_fast.{where}: expected a floating-point x, got {x.dtype}")


def check_omega(x: Tensor, omega: Omega, where: str = "apply") -> None:
    """Every parameter is 1-D of length 1 or N, on x's device, with the op's keys."""
    if not isinstance(omega, Omega):
        raise TypeError(f"dsa_fast.{where}: expected an Omega, got {type(omega).__name__}")
    n = x.shape[0]
    if omega.choice is not None:
        c = omega.choice
        if c.dim() != 1 or c.shape[0] not in (1, n) or c.dtype != torch.int64:
            raise ValueError(
                f"dsa_fast.{where}: omega.choice must be int64 of shape ({n},) or (1,), got {tuple(c.shape)} {c.dtype}"
            )
        if c.device != x.device:
            raise ValueError(f"dsa_fast.{where}: omega.choice is on {c.device} but x is on {x.device}")
    for step in omega.steps:
        if step.op not in PARAM_KEYS:
            raise ValueError(f"dsa_fast.{where}: unknown op {step.op!r} in omega")
        if set(step.params) != set(PARAM_KEYS[step.op]):
            raise ValueError(
                f"dsa_fast.{where}: {step.op} expects parameters {PARAM_KEYS[step.op]}, got {tuple(step.params)}"
            )
        for k, v in step.params.items():
            if v.dim() != 1 or v.shape[0] not in (1, n):
                raise ValueError(
                    f"dsa_fast.{where}: omega {step.op}.{k} has shape {tuple(v.shape)}; "
                    f"expected ({n},) or (1,) for a batch of {n}"
                )
            if v.device != x.device:
                raise ValueError(
                    f"dsa_fast.{where}: omega {step.op}.{k} is on {v.device} but x is on {x.device}; "
                    f"use omega.to(x.device)"
                )
