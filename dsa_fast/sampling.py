"""``sample_params``: draw ω for a strategy with the sampler ``param.rng`` names (compat.py or
device_rng.py)."""
from __future__ import annotations

from typing import Optional

from torch import Tensor

from .compat import CompatDraws, choose_family, eager_draws, sample_step
from .device_rng import sample_device
from .ops_table import TOKENS
from .params import Omega, ParamDiffAug, _check_input, check_seed, parse_strategy


def sample_params(strategy: str, x: Tensor, seed: int = -1, param: Optional[ParamDiffAug] = None) -> Omega:
    """Draw ω for ``strategy`` on a batch like ``x`` (only its shape, dtype and device are read).

    ``seed != -1`` makes the draw Siamese (one transform, leading dimension 1); ``seed == -1`` gives
    per-sample transforms. With ``rng='device'`` the seed may also be an integer tensor on x's
    device (see ``dsa_fast.device_rng``). With ``param.rng == 'compat'`` the random numbers come from the same
    generators, in the same order, shapes and dtypes as the official ``DiffAugment``; the
    official run-time state (``param.latestseed``, ``param.Siamese``) is updated likewise.
    """
    param = ParamDiffAug() if param is None else param
    param.validate()
    _check_input(x, "sample_params")
    tokens = parse_strategy(strategy)
    seed = check_seed(seed, param.rng)
    if param.rng == "device":
        param.Siamese = isinstance(seed, Tensor) or seed != -1
        return sample_device(tokens, x, seed, param)
    return _sample_compat(tokens, x, seed, param)


@eager_draws
def _sample_compat(tokens, x: Tensor, seed: int, param: ParamDiffAug) -> Omega:
    param.Siamese = seed != -1
    draws = CompatDraws(seed)
    if param.aug_mode == "S":
        tokens = choose_family(tokens, draws)
    steps = tuple(sample_step(op, x, draws, param) for tok in tokens for op in TOKENS[tok])
    draws.finish()
    param.latestseed = draws.next_seed
    return Omega(steps, bool(param.align_corners))


