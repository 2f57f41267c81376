"""``rng='device'``: ω drawn on the input's device from a counter-based generator.

Each uniform number is a hash of (seed, draw index, element index): the same seed gives the same ω
on any batch size (element 0 does not depend on N) and any device, nothing is read back to the
host, and every op is a plain tensor op, so a call can be captured in a CUDA graph and compiled
with ``torch.compile(fullgraph=True)``.

- ``seed`` may be a Python int or an integer tensor (0-dim, on the input's device); its low 40
  bits (``ops_table.KEY_MASK``) are the key. A tensor
  seed is read on the device only: update it in place (``seed.add_(1)``) and a captured graph's
  replays draw fresh ω.
- ``seed == -1`` (per-sample transforms) takes its key from a per-device counter tensor that each
  call advances in place, so successive calls, and the replays of a captured graph, differ.
- In 'S' mode the family is drawn on the device too: ω then carries every family's parameters
  and a ``choice``, and the kernels apply the chosen one.

The distributions are the official ones (docs/semantics.md §1–§3; this generator: §7); only the bits differ from ``rng='compat'``.

This module is the readable reference of the draws: with the kernels built, ``DiffAugment`` makes
the same draws inside one op call (``dsa_fast::augment_draw``, csrc/kernels/rng.h), bit for bit
(tests/test_one_launch.py); ``sample_params`` makes them here.
"""
from __future__ import annotations

from typing import Dict, Tuple, Union

import torch
from torch import Tensor

from .ops_table import DEVICE_SETTINGS, KEY_MASK, SPEC, UNSEEDED_BASE
from .params import TOKENS, Omega, ParamDiffAug, Step

_M32 = 0xFFFFFFFF


def _hash32(h: Tensor) -> Tensor:
    """A 32-bit integer finaliser (xorshift-multiply rounds) on int64 tensors holding values
    < 2**32. NB: products wrap modulo 2**64 and are masked back to 32 bits."""
    h = h ^ (h >> 16)
    h = (h * 0x7FEB352D) & _M32
    h = h ^ (h >> 15)
    h = (h * 0x846CA68B) & _M32
    return h ^ (h >> 16)


class _Stream:
    """Uniform [0, 1) float32 numbers keyed by (key, draw index, element)."""

    def __init__(self, key: Tensor):
        # Fold the 64-bit key into 32 bits through two rounds.
        self.key = _hash32(_hash32(key & _M32) ^ ((key >> 32) & _M32))
        self.draw = 0

    def uniform(self, n: int) -> Tensor:
        self.draw += 1
        e = torch.arange(n, device=self.key.device, dtype=torch.int64)
        h = _hash32(self.key ^ _hash32(torch.full_like(self.key, self.draw)))
        h = _hash32(_hash32(h ^ e) ^ 0x9E3779B9)
        return (h >> 8).to(torch.float32) * (1.0 / (1 << 24))

    def integers(self, low: int, high: int, n: int) -> Tensor:
        """Uniform integers in [low, high)."""
        u = self.uniform(n)
        return (u * (high - low)).floor().to(torch.int64).clamp_(max=high - low - 1) + low


_COUNTERS: Dict[torch.device, Tensor] = {}
_START = 0  # where a device's counter starts when it is created (manual_seed sets it)


def counter(device: torch.device) -> Tensor:
    """The per-device counter of unseeded calls (0-dim int64 on ``device``). Created on a device's
    first unseeded call; that first call must not be inside a CUDA graph capture (warm up first)."""
    c = _COUNTERS.get(device)
    if c is None:
        if device.type == "cuda" and torch.cuda.is_current_stream_capturing():
            raise RuntimeError(
                f"dsa_fast: the first unseeded rng='device' call on {device} is inside a CUDA graph "
                "capture; make one call (or dsa_fast.device_rng.counter(device)) before capturing"
            )
        c = _COUNTERS[device] = torch.full((), _START, dtype=torch.int64, device=device)
    return c


def unseeded_counter(device) -> Tensor:
    """The public name of ``counter``: the per-device counter of unseeded ``rng='device'`` calls,
    for code that saves, restores or pins it (``device``: a torch.device or a string)."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return counter(device)


def _unseeded_key(device: torch.device) -> Tensor:
    """The key of an unseeded call; advances the per-device counter in place."""
    c = counter(device)
    key = c + UNSEEDED_BASE  # above every user seed's key (KEY_MASK)
    c.add_(1)
    return key


def manual_seed(seed: int) -> None:
    """Reset the counters of unseeded ``rng='device'`` calls on every device (reproducible runs),
    those of devices with no unseeded call yet included."""
    global _START
    _START = int(seed)
    for counter in _COUNTERS.values():
        counter.fill_(_START)


def draw_constants(p: ParamDiffAug) -> Dict[str, float]:
    """The constants of each draw's formula (also the kernels' settings, dsa_fast/fused.py).
    NB: a tensor op rounds each Python constant to float32 once; so do the kernels."""
    return {st.name: st.value(p) for st in DEVICE_SETTINGS}


def _step(op: str, s: _Stream, x: Tensor, n: int, p: ParamDiffAug, group: int) -> Step:
    return Step(op, SPEC[op].device(s, x, n, p, draw_constants(p)), group)


def sample_device(
    tokens: Tuple[str, ...], x: Tensor, seed: Union[int, Tensor], param: ParamDiffAug
) -> Omega:
    device = x.device
    if isinstance(seed, Tensor):
        if seed.numel() != 1 or seed.is_floating_point() or seed.device != device:
            raise ValueError(
                f"dsa_fast: a tensor seed must be one integer on x's device ({device}), "
                f"got shape {tuple(seed.shape)} {seed.dtype} on {seed.device}"
            )
        key, siamese = seed.reshape(()).to(torch.int64) & KEY_MASK, True
    elif seed == -1:
        key, siamese = _unseeded_key(device), False
    else:
        key, siamese = torch.full((), int(seed) & KEY_MASK, dtype=torch.int64, device=device), True
    n = 1 if siamese else x.shape[0]
    s = _Stream(key)
    if param.aug_mode == "M":
        steps = tuple(_step(op, s, x, n, param, 0) for tok in tokens for op in TOKENS[tok])
        return Omega(steps, bool(param.align_corners))
    # 'S': one family per batch (as the official code), drawn on the device.
    choice = s.integers(0, len(tokens), 1)
    steps = tuple(_step(op, s, x, n, param, g) for g, tok in enumerate(tokens) for op in TOKENS[tok])
    return Omega(steps, bool(param.align_corners), choice)
