"""dsa_fast: fast Differentiable Siamese Augmentation (DSA) for dataset condensation.

Drop-in for the official code::

    from dsa_fast import DiffAugment, ParamDiffAug
    y = DiffAugment(x, 'color_crop_cutout_flip_scale_rotate', seed=7, param=ParamDiffAug())

Sampling apart from application::

    omega = dsa_fast.sample_params('crop_flip', x, seed=7)
    y_real, y_syn = dsa_fast.apply(x_real, omega), dsa_fast.apply(x_syn, omega)

Several (real, synthetic) pairs, each with its own seed, in one op call::

    [(ra, sa), (rb, sb)] = dsa_fast.augment_pairs([(real_a, syn_a), (real_b, syn_b)], 'crop_flip', [3, 4])

The GAN ``DiffAugment`` (Zhao et al., 2020) on the same kernels::

    y = dsa_fast.gan.DiffAugment(x, 'color,translation,cutout')
"""
from ._ops import has_ops
from .augment import DiffAugment, apply, augment_pairs
from .device_rng import unseeded_counter
from .ops_table import KEY_MASK
from .params import OPS, TOKENS, Omega, ParamDiffAug, Step
from .sampling import sample_params
from . import gan  # noqa: E402  (dsa_fast.gan.DiffAugment: the GAN DiffAugment on these ops)

__version__ = "0.1.0"

__all__ = [
    "DiffAugment",
    "ParamDiffAug",
    "Omega",
    "Step",
    "sample_params",
    "apply",
    "augment_pairs",
    "unseeded_counter",
    "KEY_MASK",
    "gan",
    "has_ops",
    "OPS",
    "TOKENS",
    "__version__",
]
