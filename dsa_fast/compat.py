"""rng='compat': draws exactly as the official code (docs/semantics.md §2), and the official formulas that turn
the raw numbers into op parameters.

``raw_draws`` makes the official generator calls for one op (same generators, order, shapes and
dtypes); ``compat_params`` is the readable reference of the formulas (csrc/kernels/compat.h is the
kernels' copy, checked equal by the tests). ``sample_step`` is both: one Step of an Omega.
``draw_and_apply`` is the fused path: the raw draws go straight to ``dsa_fast::augment_compat``,
which applies the formulas and the transform in one op call.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from .ops_table import COMPAT_SETTINGS, FLAGS, SPEC, TOKENS, ops_of, plan_ints
from .params import SETTING_FIELDS, ParamDiffAug, Step
from ._host_cache import host_cache


_CPU = torch.device("cpu")

# NB: the official draws are host work on the global generators (a reseed before each seeded draw,
# the 'S' family read back to the host). Traced by torch.compile they would not be what eager runs:
# inductor replaces torch.rand/randint with its own generator, so a seeded call would lose its
# shared transform. Every compat draw therefore runs eagerly, outside the graph (a graph break;
# with fullgraph=True an error that names the compilable sampler).
COMPILE_REASON = ("dsa_fast: ParamDiffAug(rng='compat') makes the official generator draws on the host, "
                  "outside a compiled graph; use ParamDiffAug(rng='device') to compile with fullgraph=True")
eager_draws = torch.compiler.disable(reason=COMPILE_REASON)


class CompatDraws:
    """Draws exactly as the official code (docs/semantics.md §2): the global generators, and when seeded,
    ``torch.random.manual_seed(latestseed); latestseed += 1`` before each draw.

    NB: ``torch.random.manual_seed`` reseeds every generator (CPU, each CUDA device, ...) and costs
    about 0.3 ms while CUDA is not initialised. Only the generator a draw uses matters for that
    draw, so we reseed that one, and ``finish()`` seeds the others with the last seed: every
    generator ends in the state the official sequence leaves it in, for a fraction of the cost.
    """

    def __init__(self, seed: int):
        self.siamese = seed != -1
        self.next_seed = seed
        self.last_device: Optional[torch.device] = None

    @staticmethod
    def _generator(device: torch.device) -> Optional[torch.Generator]:
        if device.type == "cpu":
            return torch.default_generator
        if device.type == "cuda":
            index = device.index if device.index is not None else torch.cuda.current_device()
            return torch.cuda.default_generators[index]
        return None  # other device types: reseed everything, as the official code does

    def _reseed(self, device) -> None:
        if not self.siamese:
            return
        if device is None or device == _CPU:  # the common case, without building a torch.device
            device, generator = _CPU, torch.default_generator
        else:
            device = torch.device(device)
            generator = self._generator(device)
        if generator is None:
            torch.random.manual_seed(self.next_seed)
        else:
            generator.manual_seed(self.next_seed)
        self.last_device = device
        self.next_seed += 1

    def rand(self, *size, **kw) -> Tensor:
        self._reseed(kw.get("device"))
        return torch.rand(*size, **kw)

    def randint(self, low: int, high: int, size, **kw) -> Tensor:
        self._reseed(kw.get("device"))
        return torch.randint(low, high, size=size, **kw)

    def finish(self) -> None:
        """Seed every generator the last draw did not use with the last seed."""
        if not self.siamese or self.last_device is None or self._generator(self.last_device) is None:
            return
        last, used = self.next_seed - 1, self.last_device
        if used.type != "cpu":
            torch.default_generator.manual_seed(last)
        if torch.cuda.is_available():
            if not torch.cuda.is_initialized():
                torch.cuda.manual_seed_all(last)  # queued until CUDA starts, as the official call
            else:
                used_gen = self._generator(used) if used.type == "cuda" else None
                for gen in torch.cuda.default_generators:
                    if gen is not used_gen:
                        gen.manual_seed(last)
        if hasattr(torch, "mps") and torch.backends.mps.is_available():
            torch.mps.manual_seed(last)
        if hasattr(torch, "xpu") and torch.xpu.is_available():
            torch.xpu.manual_seed_all(last)


def _n_draw(x: Tensor, draws: CompatDraws) -> int:
    # NB: a Siamese draw keeps element 0 only; element 0 of a fresh stream does not depend on the
    # number drawn, so real and synthetic batches get the same ω. The official code crashes for a
    # Siamese batch of 0; we draw one element there.
    n = x.shape[0]
    return max(n, 1) if draws.siamese else n


def raw_draws(op: str, x: Tensor, draws: CompatDraws, p: ParamDiffAug) -> List[Tensor]:
    """The official generator calls of one op, in order (its record's ``raw``)."""
    return SPEC[op].raw_draws(x, _n_draw(x, draws), draws, p)


def compat_params(op: str, raw: List[Tensor], x: Tensor, p: ParamDiffAug) -> Dict[str, Tensor]:
    """The official formulas (docs/semantics.md §2-§3), op by op as the official tensor ops round."""
    return SPEC[op].compat(raw, x, p)


def sample_step(op: str, x: Tensor, draws: CompatDraws, p: ParamDiffAug) -> Step:
    params = compat_params(op, raw_draws(op, x, draws, p), x, p)
    if draws.siamese:
        params = {k: v[:1] for k, v in params.items()}
    # NB: scale and rotate are drawn on the CPU (as the official code); a blocking copy to x's
    # device (a pageable non_blocking copy would be neither faster nor clearer).
    return Step(op, {k: v.to(x.device) for k, v in params.items()})


def choose_family(tokens: Tuple[str, ...], draws: CompatDraws) -> Tuple[str, ...]:
    """'S' mode: one family for the batch, drawn on the CPU generator (no device sync)."""
    pick = draws.randint(0, len(tokens), size=(1,)).item()
    return (tokens[pick],)


# ---------------------------------------------------------------------------------------------
# The fused path: raw draws -> dsa_fast::augment_compat (one op call)
# ---------------------------------------------------------------------------------------------

@host_cache(1024)
def _plan(ops: Tuple[str, ...], settings: Tuple[float, ...], h: int, w: int, per_sample: bool):
    """(flags, plan ints, settings floats) for ops in canonical order, or None (layout.h:
    CompatPlanSlot, CompatSettingSlot)."""
    bits = [FLAGS[op] for op in ops]
    if any(b <= a for a, b in zip(bits, bits[1:])):
        return None
    param = ParamDiffAug(**dict(zip(SETTING_FIELDS, settings)))
    plan = [int(per_sample)] + plan_ints(h, w, param)
    return sum(bits), plan, [float(st.value(param)) for st in COMPAT_SETTINGS]


def _draw(x: Tensor, tokens: Tuple[str, ...], seed: int, param: ParamDiffAug):
    """The official draws for ``x`` and the cached plan: (raw, (flags, plan, settings)), or None
    (nothing drawn) when the ops are not in canonical order ('M' mode with reordered or repeated
    tokens). Updates ``param.latestseed`` as the official call does."""
    settings = tuple(getattr(param, f) for f in SETTING_FIELDS)
    per_sample = seed == -1
    h, w = x.shape[2], x.shape[3]
    if param.aug_mode == "M":
        planned = _plan(ops_of(tokens), settings, h, w, per_sample)
        if planned is None:
            return None
    draws = CompatDraws(seed)
    if param.aug_mode == "S":
        tokens = choose_family(tokens, draws)
        planned = _plan(TOKENS[tokens[0]], settings, h, w, per_sample)
    raw = [t for op in ops_of(tokens) for t in raw_draws(op, x, draws, param)]
    draws.finish()
    param.latestseed = draws.next_seed
    return raw, planned


@eager_draws
def draw_and_apply(x: Tensor, tokens: Tuple[str, ...], seed: int, param: ParamDiffAug) -> Optional[Tensor]:
    """The official draws, then one augment_compat call; None (nothing drawn) when the ops are not
    in canonical order ('M' mode with reordered or repeated tokens)."""
    drawn = _draw(x, tokens, seed, param)
    if drawn is None:
        return None
    raw, (flags, plan, constants) = drawn
    return torch.ops.dsa_fast.augment_compat(x, raw, flags, plan, constants, bool(param.align_corners))[0]


@eager_draws
def draw_tables(xs: Sequence[Tensor], tokens: Tuple[str, ...], seeds: Sequence[int],
                param: ParamDiffAug) -> Optional[Tuple[List[Tensor], int]]:
    """One seeded draw per batch of ``xs`` with its seed, in order, as a one-row ω table each (an
    augment_compat call on none of the batch's samples: the formulas, no pixel), and the union of
    their flags: what ``DiffAugment(xs[k], tokens, seeds[k])`` draws, and the same generator states
    afterwards. None (nothing drawn) when the ops are not in canonical order."""
    tables, flags = [], 0
    for x, seed in zip(xs, seeds):
        drawn = _draw(x, tokens, seed, param)
        if drawn is None:
            return None
        raw, (call_flags, plan, constants) = drawn
        tables.append(torch.ops.dsa_fast.augment_compat(x[:0], raw, call_flags, plan, constants,
                                                        bool(param.align_corners))[1])
        flags |= call_flags
    return tables, flags
