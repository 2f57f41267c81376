"""The fused path's planning and packing: ``apply`` (an Omega -> canonical runs -> packed tables ->
``dsa_fast::augment`` calls), and rng='device' in one op call: ``dsa_fast::augment_draw`` draws ω for every
sample inside the kernel (csrc/kernels/rng.h, the same bits as the readable ``device_rng.py``),
applies it and returns the [B, OMEGA_WIDTH] table it drew, which the backward reuses.

A plan (the op's ``flags``, ``plan`` ints and ``settings`` floats) depends only on the strategy,
the settings and the image size, so it is built once and cached; a call adds only its key.
Strategies that one fused call cannot apply ('M' ops out of canonical order or repeated, 'S'
families sharing an op) return None here and take the sampled path (``sample_params`` + apply).
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from . import device_rng
from .ops_table import (ACTIVE_COLUMN, BIT_INDEX, COLUMNS, DEVICE_SETTINGS, FLAGS, KEY_MASK, KEY_SOURCES,
                        OMEGA_WIDTH, OP_SPECS, PLAN, PLAN_INTS, SPEC, TOKENS, plan_ints)
from .params import SETTING_FIELDS, ParamDiffAug
from ._host_cache import host_cache

# layout.h (generated from the op table): PlanSlot, KeySource, SettingSlot.
PLAN_FAMILIES, PLAN_PER_SAMPLE, PLAN_KEY_SOURCE = PLAN["Families"], PLAN["PerSample"], PLAN["KeySource"]
PLAN_SEED, PLAN_CHOICE_DRAW, PLAN_DRAW, PLAN_GROUP, PLAN_SIZE = (
    PLAN["Seed"], PLAN["ChoiceDraw"], PLAN["Draw"], PLAN["Group"], PLAN["Size"])
KEY_INT, KEY_TENSOR, KEY_COUNTER = (KEY_SOURCES.index(k) for k in ("Int", "Tensor", "Counter"))


@host_cache(1024)
def _plan(tokens: Tuple[str, ...], aug_mode: str, settings: Tuple[float, ...], h: int, w: int, per_sample: bool):
    """(flags, plan ints with the key slots blank, settings floats), or None when one call cannot
    apply the strategy. Draw indices follow device_rng.sample_device: 'S' draws the family first."""
    param = ParamDiffAug(**dict(zip(SETTING_FIELDS, settings)), aug_mode=aug_mode)
    ops = [(g, op) for g, tok in enumerate(tokens) for op in TOKENS[tok]]
    bits = [FLAGS[op] for _, op in ops]
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
        k = BIT_INDEX[op]
        plan[PLAN_DRAW + k] = draw + 1
        plan[PLAN_GROUP + k] = g
        draw += SPEC[op].device_draws
        flags |= FLAGS[op]
    plan[PLAN_PER_SAMPLE] = int(per_sample)
    for st, value in zip(PLAN_INTS, plan_ints(h, w, param)):
        plan[PLAN[st.name]] = value
    constants = device_rng.draw_constants(param)
    return flags, tuple(plan), [float(constants[st.name]) for st in DEVICE_SETTINGS]


def plan_for(tokens, param: ParamDiffAug, x: Tensor, per_sample: bool):
    settings = tuple(getattr(param, f) for f in SETTING_FIELDS)
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
        plan[PLAN_KEY_SOURCE], plan[PLAN_SEED] = KEY_INT, seed & KEY_MASK
    y, table = torch.ops.dsa_fast.augment_draw(x, key, flags, plan, settings, bool(param.align_corners))
    if per_sample:
        key.add_(1)
    return y, table


# ---------------------------------------------------------------------------------------------
# Sampled Omegas: packing and planning
# ---------------------------------------------------------------------------------------------


def canonical_runs(ops: Sequence[str]) -> List[List[int]]:
    """Split a sequence of ops into maximal runs in strictly canonical order: each run is one
    fused call. E.g. the full 'M' chain is one run; 'rotate_scale' is two."""
    runs: List[List[int]] = []
    last = 1 << 30
    for k, op in enumerate(ops):
        if FLAGS[op] <= last:
            runs.append([])
        runs[-1].append(k)
        last = FLAGS[op]
    return runs


def pack_omega(steps, batch: int, device: torch.device, active: Optional[Tensor] = None) -> Tuple[Tensor, int]:
    """The packed [B, OMEGA_WIDTH] float64 table and the flags of one fused call (steps with distinct ops).

    ``active`` ((B,) float64 of OpFlag bits) says which of the call's ops apply to each sample;
    None: all of them.
    """
    zero = torch.zeros(batch, dtype=torch.float64, device=device)
    cols = [zero] * OMEGA_WIDTH
    flags = 0
    for step in steps:
        flags |= FLAGS[step.op]
        for column, value in zip(COLUMNS[step.op], SPEC[step.op].columns_of(step.params)):
            cols[column] = value
    cols[ACTIVE_COLUMN] = torch.full_like(zero, float(flags)) if active is None else active
    table = torch.stack([c.to(torch.float64).expand(batch) for c in cols], dim=1)
    return table, flags


def group_calls(omega) -> List[List[Tuple[int, list]]]:
    """Group the steps of an Omega into fused calls: each call is a list of (group, steps) whose
    op sets are disjoint, each group's steps in canonical order."""
    calls: List[List[Tuple[int, list]]] = []
    for g in omega.groups():
        steps = [s for s in omega.steps if s.group == g]
        runs = canonical_runs([s.op for s in steps])
        ops = {s.op for s in steps}
        if len(runs) == 1 and calls and not ops & {s.op for _, ss in calls[-1] for s in ss}:
            calls[-1].append((g, steps))
        else:
            calls.extend([[(g, [steps[k] for k in run])] for run in runs])
    return calls


def apply(x: Tensor, omega) -> Tensor:
    """Apply ω with the fused kernels: one launch per canonical run of its steps; with a
    ``choice``, alternatives with distinct ops share one launch (the default 'S' strategy: one)."""
    batch = 1  # every parameter has length 1 or N (checked by dsa_fast.apply); N may be 0
    for step in omega.steps:
        for v in step.params.values():
            batch = batch if v.shape[0] == 1 else v.shape[0]
    if omega.choice is None:
        for run in canonical_runs([s.op for s in omega.steps]):
            table, flags = pack_omega([omega.steps[k] for k in run], batch, x.device)
            x = torch.ops.dsa_fast.augment(x, table, flags, omega.align_corners)
        return x
    batch = batch if omega.choice.shape[0] == 1 else omega.choice.shape[0]
    for call in group_calls(omega):
        active = sum(
            (omega.choice == g).to(torch.float64) * sum(FLAGS[s.op] for s in steps) for g, steps in call
        )
        table, flags = pack_omega([s for _, steps in call for s in steps], batch, x.device, active)
        x = torch.ops.dsa_fast.augment(x, table, flags, omega.align_corners)
    return x


def apply_rows(xs: Sequence[Tensor], rows: Sequence[Tensor], flags: int, align_corners: bool) -> List[Tensor]:
    """``xs[k]`` transformed by the one-row ω table ``rows[k]``: the batches that need a gradient
    in ONE augment call and the others in another (each call takes its batches side by side, each
    sample reading its batch's row; a one-row table and the same row written per sample give the
    same bits, tests/test_cpu_paths.py). Kept apart so that the backward, one call too, runs over
    the batches that need it only, and the others' outputs need no gradient, as their own calls
    give. ``flags``: the union of the rows' ops (each row's active column keeps its own)."""
    out: List[Optional[Tensor]] = [None] * len(xs)
    grad = torch.is_grad_enabled()
    for wants in (True, False):
        picked = [k for k, x in enumerate(xs) if (grad and x.requires_grad) == wants]
        if not picked:
            continue
        sizes = [xs[k].shape[0] for k in picked]
        table = torch.cat([rows[k].expand(n, -1) for k, n in zip(picked, sizes)])
        y = torch.ops.dsa_fast.augment(torch.cat([xs[k] for k in picked]), table, flags, align_corners)
        for k, part in zip(picked, y.split(sizes)):
            out[k] = part
    return out
