"""The one table of DSA ops: name, flag bit, parameter keys, columns of the packed ω table and the
number of uniform draws each takes. Everything else (settings, samplers, packing, plans) reads it;
``csrc/kernels/omega.h`` holds the same numbers for the kernels (a test checks they agree).

The order of ``OPS`` is the canonical order a fused call applies them in.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Tuple


@dataclass(frozen=True)
class OpSpec:
    name: str
    bit: int                      # OpFlag in omega.h
    keys: Tuple[str, ...]         # parameter names of a Step (params.py)
    columns: Tuple[int, ...]      # OmegaSlot of each key in the packed table (rotate: cos, sin)
    draws: int                    # uniform numbers drawn per element (device_rng.py, rng.h)


OP_SPECS: Tuple[OpSpec, ...] = (
    OpSpec("brightness", 1, ("shift",), (0,), 1),
    OpSpec("saturation", 2, ("factor",), (1,), 1),
    OpSpec("contrast", 4, ("factor",), (2,), 1),
    OpSpec("crop", 8, ("shift_h", "shift_w"), (3, 4), 2),
    OpSpec("cutout", 16, ("top", "left", "height", "width"), (5, 6, 7, 8), 2),
    OpSpec("flip", 32, ("flip",), (9,), 1),
    OpSpec("scale", 64, ("scale_w", "scale_h"), (10, 11), 2),
    OpSpec("rotate", 128, ("angle",), (12, 13), 1),
)
SPEC: Dict[str, OpSpec] = {s.name: s for s in OP_SPECS}
OPS: Tuple[str, ...] = tuple(s.name for s in OP_SPECS)
FLAGS: Dict[str, int] = {s.name: s.bit for s in OP_SPECS}
PARAM_KEYS: Dict[str, Tuple[str, ...]] = {s.name: s.keys for s in OP_SPECS}
ACTIVE_COLUMN = 14  # OmegaSlot kSlotActive: the ops that apply to each sample
OMEGA_WIDTH = 15    # OmegaSlot kOmegaWidth

# Strategy tokens and the ops each expands to, in order (docs/semantics.md §2).
TOKENS: Dict[str, Tuple[str, ...]] = {
    "color": ("brightness", "saturation", "contrast"),
    "crop": ("crop",),
    "cutout": ("cutout",),
    "flip": ("flip",),
    "scale": ("scale",),
    "rotate": ("rotate",),
}
