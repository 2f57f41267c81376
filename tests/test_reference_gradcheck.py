"""gradcheck and gradgradcheck (float64) of every op of dsa_fast.reference.

Parameters are fixed tensors of shape (1,) (broadcast) or (N,) (per sample); odd H != W shapes;
values chosen to reach the edge cases: shifts beyond the image, boxes half outside, flips mixed
within a batch, geometric factors on both sides of 1 with both align_corners conventions.
"""
from __future__ import annotations

import math

import pytest
import torch
from torch.autograd import gradcheck, gradgradcheck

from dsa_fast.ops_table import OPS, SPEC

SHAPES = [(3, 2, 5, 4), (3, 1, 3, 7)]


def _params(op: str, b: int, h: int, w: int):
    """Deterministic parameters for ``op`` with leading dimension b (1 or N = 3)."""
    f64, i64 = torch.float64, torch.long
    table = {
        "brightness": {"shift": torch.tensor([0.3, -0.45, 0.1], dtype=f64)},
        "saturation": {"factor": torch.tensor([1.7, 0.2, 0.0], dtype=f64)},
        "contrast": {"factor": torch.tensor([0.6, 1.4, 1.0], dtype=f64)},
        "crop": {"shift_h": torch.tensor([1, -2, h + 1], dtype=i64), "shift_w": torch.tensor([-1, 3, 0], dtype=i64)},
        "cutout": {
            "top": torch.tensor([-1, 2, h - 1], dtype=i64),
            "left": torch.tensor([1, -2, 0], dtype=i64),
            "height": torch.tensor([2, 3, 2], dtype=i64),
            "width": torch.tensor([3, 2, w + 2], dtype=i64),
        },
        "flip": {"flip": torch.tensor([True, False, True])},
        "scale": {"scale_w": torch.tensor([1.13, 0.85, 1.0], dtype=torch.float32),
                  "scale_h": torch.tensor([0.91, 1.19, 1.07], dtype=torch.float32)},
        "rotate": {"angle": torch.tensor([0.21, -0.26, math.pi / 2], dtype=torch.float32)},
    }  # fmt: skip
    return {k: v[:b].clone() for k, v in table[op].items()}


CASES = [
    pytest.param(op, ac, id=f"{op}" + (f"-ac{int(ac)}" if SPEC[op].geometric else ""))
    for op in OPS
    for ac in ((False, True) if SPEC[op].geometric else (False,))
]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("batch", [1, 3], ids=["omega1", "omegaN"])
@pytest.mark.parametrize("op, align_corners", CASES)
def test_gradcheck(op, align_corners, batch, shape):
    n, c, h, w = shape
    params = _params(op, batch, h, w)
    kwargs = {"align_corners": align_corners} if SPEC[op].geometric else {}
    fn = SPEC[op].reference

    def f(x):
        return fn(x, **params, **kwargs)

    gen = torch.Generator().manual_seed(1000 * batch + sum(shape))
    x = torch.randn(shape, dtype=torch.float64, generator=gen, requires_grad=True)
    y = f(x)
    assert y.shape == x.shape and y.dtype == torch.float64
    assert gradcheck(f, (x,), eps=1e-6, atol=1e-6, rtol=1e-5)
    # Every op and its backward are linear maps here: the random-projection fast mode suffices.
    assert gradgradcheck(f, (x,), eps=1e-6, atol=1e-6, rtol=1e-5, fast_mode=True)


@pytest.mark.parametrize("op, align_corners", CASES)
def test_reference_op_is_not_identity(op, align_corners):
    """The parameters above really transform the input (else gradcheck would check nothing)."""
    shape = (3, 2, 5, 4)
    params = _params(op, 3, 5, 4)
    kwargs = {"align_corners": align_corners} if SPEC[op].geometric else {}
    x = torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    y = SPEC[op].reference(x, **params, **kwargs)
    assert not torch.allclose(y, x)
