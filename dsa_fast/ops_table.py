"""The one table of DSA ops: the records of ``dsa_fast/ops/`` in the canonical order a fused call
applies them in, and the layout everything derives from it: flag bits, ω columns, strategy tokens,
raw-draw counts, the plan and settings slots of both drawing kernels.

``tools/gen_layout.py`` writes the same layout for the kernels (``csrc/kernels/layout.h``; a test
regenerates it and compares), so adding an op is adding its record here: no hand-written slot
number moves.
"""
from __future__ import annotations

from typing import Dict, List, Tuple

from .ops.affine import ROTATE, SCALE
from .ops.color import BRIGHTNESS, CONTRAST, SATURATION
from .ops.crop import CROP
from .ops.cutout import CUTOUT
from .ops.flip import FLIP
from .ops.spec import OpSpec, Setting

OP_SPECS: Tuple[OpSpec, ...] = (BRIGHTNESS, SATURATION, CONTRAST, CROP, CUTOUT, FLIP, SCALE, ROTATE)

SPEC: Dict[str, OpSpec] = {s.name: s for s in OP_SPECS}
OPS: Tuple[str, ...] = tuple(s.name for s in OP_SPECS)
BIT_INDEX: Dict[str, int] = {s.name: k for k, s in enumerate(OP_SPECS)}
FLAGS: Dict[str, int] = {s.name: 1 << k for k, s in enumerate(OP_SPECS)}  # OpFlag
ALL_OPS = (1 << len(OP_SPECS)) - 1
PARAM_KEYS: Dict[str, Tuple[str, ...]] = {s.name: s.keys for s in OP_SPECS}
RAW_COUNT: Dict[str, int] = {s.name: len(s.raw) for s in OP_SPECS}  # official generator calls per op
MAX_RAW = sum(RAW_COUNT.values())


def _columns() -> Dict[str, Tuple[int, ...]]:
    out, at = {}, 0
    for s in OP_SPECS:
        out[s.name] = tuple(range(at, at + len(s.slots)))
        at += len(s.slots)
    return out


COLUMNS: Dict[str, Tuple[int, ...]] = _columns()  # OmegaSlot of each op's columns, in its slots order
SLOT: Dict[str, int] = {name: c for s in OP_SPECS for name, c in zip(s.slots, COLUMNS[s.name])}
ACTIVE_COLUMN = sum(len(s.slots) for s in OP_SPECS)  # kSlotActive: the ops that apply to each sample
OMEGA_WIDTH = ACTIVE_COLUMN + 1                       # kOmegaWidth

# Strategy tokens and the ops each expands to, in order (docs/semantics.md §2).
TOKENS: Dict[str, Tuple[str, ...]] = {}
for _s in OP_SPECS:
    TOKENS[_s.token] = TOKENS.get(_s.token, ()) + (_s.name,)
del _s


def _unique(settings) -> Tuple[Setting, ...]:
    seen: Dict[str, Setting] = {}
    for st in settings:
        seen.setdefault(st.name, st)
    return tuple(seen.values())


# The plans of the two drawing kernels (layout.h: PlanSlot, CompatPlanSlot, SettingSlot, CompatSettingSlot).
PLAN_INTS: Tuple[Setting, ...] = tuple(st for s in OP_SPECS for st in s.plan_ints)
PLAN_FIXED = ("Families", "PerSample", "KeySource", "Seed", "ChoiceDraw")
PLAN: Dict[str, int] = {name: k for k, name in enumerate(PLAN_FIXED + tuple(st.name for st in PLAN_INTS))}
PLAN["Draw"] = len(PLAN)                     # one entry per op: its first draw index, -1: absent
PLAN["Group"] = PLAN["Draw"] + len(OP_SPECS)  # one entry per op: its family ('S')
PLAN["Size"] = PLAN["Group"] + len(OP_SPECS)
COMPAT_PLAN: Dict[str, int] = {name: k for k, name in enumerate(("PerSample",) + tuple(st.name for st in PLAN_INTS))}
COMPAT_PLAN["Size"] = len(COMPAT_PLAN)
KEY_SOURCES = ("Int", "Tensor", "Counter")  # where augment_draw's key comes from (KeySource)
DEVICE_SETTINGS: Tuple[Setting, ...] = _unique(st for s in OP_SPECS for st in s.device_settings)
COMPAT_SETTINGS: Tuple[Setting, ...] = _unique(st for s in OP_SPECS for st in s.compat_settings)

# rng='device' keys: a user seed keeps its low USER_KEY_BITS bits; unseeded calls' keys live above.
USER_KEY_BITS = 40
KEY_MASK = (1 << USER_KEY_BITS) - 1
UNSEEDED_BASE = 1 << USER_KEY_BITS


def plan_ints(h: int, w: int, param) -> List[int]:
    """The per-op sizes both plans carry, in PLAN_INTS order."""
    return [st.value(h, w, param) for st in PLAN_INTS]


def ops_of(tokens) -> Tuple[str, ...]:
    """The ops a sequence of strategy tokens expands to, in order."""
    return tuple(op for tok in tokens for op in TOKENS[tok])
