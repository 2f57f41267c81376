"""rng='device' on the fused kernels in one op call: ``dsa_fast::augment_draw`` draws ω for every
sample inside the kernel (csrc/kernels/rng.h, the same bits as the readable ``device_rng.py``),
applies it and returns the [B, 15] table it drew, which the backward reuses.

A plan (the op's ``flags``, ``plan`` ints and ``settings`` floats) depends only on the strategy,
the settings and the image size, so it is built once and cached; a call adds only its key.
Strategies that one fused call cannot apply ('M' ops out of canonical order or repeated, 'S'
families sharing an op) return None here and take the sampled path (``sample_params`` + apply).
"""
from __future__ import annotations

import functools
from typing import Optional, Tuple, Union

import torch
from torch import Tensor

from . import device_rng
from .ops_table import OP_SPECS, SPEC, TOKENS
from .params import ParamDiffAug, crop_max_shift, cutout_box

# csrc/kernels/rng.h, PlanSlot / KeySource / SettingSlot (a test checks they agree).
PLAN_FAMILIES, PLAN_PER_SAMPLE, PLAN_KEY_SOURCE, PLAN_SEED, PLAN_CHOICE_DRAW = 0, 1, 2, 3, 4
PLAN_CROP_H, PLAN_CROP_W, PLAN_CUT_H, PLAN_CUT_W, PLAN_DRAW = 5, 6, 7, 8, 9
PLAN_GROUP = PLAN_DRAW + len(OP_SPECS)
PLAN_SIZE = PLAN_GROUP + len(OP_SPECS)
KEY_INT, KEY_TENSOR, KEY_COUNTER = 0, 1, 2
SETTINGS = ("scale_mul", "scale_add", "rotate_mul", "prob_flip", "brightness", "saturation", "contrast")
_USER_KEY_MASK = (1 << 40) - 1

_SETTING_FIELDS = ("prob_flip", "ratio_scale", "ratio_rotate", "ratio_crop_pad", "ratio_cutout",
                   "brightness", "saturation", "contrast")


@functools.lru_cache(maxsize=1024)
def _plan(tokens: Tuple[str, ...], aug_mode: str, settings: Tuple[float, ...], h: int, w: int, per_sample: bool):
    """(flags, plan ints with the key slots blank, settings floats), or None when one call cannot
    apply the strategy. Draw indices follow device_rng.sample_device: 'S' draws the family first."""
    param = ParamDiffAug(**dict(zip(_SETTING_FIELDS, settings)), aug_mode=aug_mode)
    ops = [(g, op) for g, tok in enumerate(tokens) for op in TOKENS[tok]]
    bits = [SPEC[op].bit for _, op in ops]
    if aug_mode == "M" and any(b <= a for a, b in zip(bits, bits[1:])):
        return None
    if aug_mode == "S" and len(set(bits)) != len(bits):
        return None
    plan = [0] * PLAN_SIZE
    for k in range(len(OP_SPECS)):
        plan[PLAN_DRAW + k] = -1
    draw = 0
    if aug_mode == "S":
        plan[PLAN_FAMILIES] = len(tokens)
        draw += 1
        plan[PLAN_CHOICE_DRAW] = draw
    flags = 0
    for g, op in ops:
        k = SPEC[op].bit.bit_length() - 1
        plan[PLAN_DRAW + k] = draw + 1
        plan[PLAN_GROUP + k] = g
        draw += SPEC[op].draws
        flags |= SPEC[op].bit
    plan[PLAN_PER_SAMPLE] = int(per_sample)
    plan[PLAN_CROP_H], plan[PLAN_CROP_W] = crop_max_shift(h, param.ratio_crop_pad), crop_max_shift(w, param.ratio_crop_pad)
    plan[PLAN_CUT_H], plan[PLAN_CUT_W] = cutout_box(h, param.ratio_cutout), cutout_box(w, param.ratio_cutout)
    constants = device_rng.draw_constants(param)
    return flags, tuple(plan), [float(constants[name]) for name in SETTINGS]


def plan_for(tokens, param: ParamDiffAug, x: Tensor, per_sample: bool):
    settings = tuple(getattr(param, f) for f in _SETTING_FIELDS)
    return _plan(tokens, param.aug_mode, settings, x.shape[2], x.shape[3], per_sample)


def draw_and_apply(x: Tensor, tokens, seed: Union[int, Tensor], param: ParamDiffAug) -> Optional[Tuple[Tensor, Tensor]]:
    """(y, omega table) from one augment_draw call, or None when the strategy needs several calls.
    ``seed``: a checked int (-1: unseeded) or an integer tensor on x's device."""
    tensor_seed = isinstance(seed, Tensor)
    per_sample = not tensor_seed and seed == -1
    planned = plan_for(tokens, param, x, per_sample)
    if planned is None:
        return None
    flags, base, settings = planned
    plan = list(base)
    if tensor_seed:
        if seed.numel() != 1 or seed.device != x.device:
            raise ValueError(
                f"dsa_fast: a tensor seed must be one integer on x's device ({x.device}), "
                f"got shape {tuple(seed.shape)} {seed.dtype} on {seed.device}"
            )
        key = seed if seed.dtype == torch.int64 else seed.to(torch.int64)
        plan[PLAN_KEY_SOURCE] = KEY_TENSOR
    elif per_sample:
        key = device_rng.counter(x.device)
        plan[PLAN_KEY_SOURCE] = KEY_COUNTER
    else:
        key = None
        plan[PLAN_KEY_SOURCE], plan[PLAN_SEED] = KEY_INT, seed & _USER_KEY_MASK
    y, table = torch.ops.dsa_fast.augment_draw(x, key, flags, plan, settings, bool(param.align_corners))
    if per_sample:
        key.add_(1)
    return y, table
