"""Large images through the fused kernels: every family and the full 'M' chain at 224x224 and
512x512 (and a non-square channels_last batch), forward and backward, against the reference.

The CPU executor's extra memory per call is the output plus one workspace per worker thread
(csrc/cpu/image_cpu.h, cpu_workspace_size: two zero-bordered [C, H + 3, W + 2] planes, a base table,
a row buffer and a row of taps, about 6.4 MB at 3x512x512 float), plus, when the batch shares one ω
and the image has at most 128x128 pixels, one table of taps per call (TapPlan, GatherPlan: at 128x128
about 2.7 MB in float32 and 4.2 MB in float64); the CUDA executor's global workspace is capped at 64 MiB per launch
(csrc/common/launch_plan.h, tested in test_block_emulator.py).
"""
from __future__ import annotations

import pytest
import torch

from dsa_fast import ParamDiffAug, apply, sample_params

from conftest import DEVICES

FULL = "color_crop_cutout_flip_scale_rotate"
CASES = [
    pytest.param((2, 3, 224, 224), FULL, "M", "contiguous", id="2x3x224x224-M"),
    pytest.param((1, 3, 512, 512), FULL, "M", "contiguous", id="1x3x512x512-M"),
    pytest.param((2, 3, 200, 300), FULL, "M", "channels_last", id="2x3x200x300-M-channels_last"),
] + [pytest.param((2, 3, 224, 224), fam, "S", "contiguous", id=f"2x3x224x224-{fam}")
     for fam in ("color", "crop", "cutout", "flip", "scale", "rotate")]


# float64: the kernels' arithmetic against the reference's to the last bits. float32: the same
# within float32 rounding; across a 512-pixel image a sample position can round to the other side
# of a pixel boundary in one implementation and not the other, and contrast means sum 10^5..10^6
# values, hence the looser bound.
DTYPES = [pytest.param(torch.float64, 1e-9, id="float64"), pytest.param(torch.float32, 1e-3, id="float32")]


@pytest.mark.parametrize("shape,strategy,mode,layout", CASES)
@pytest.mark.parametrize("dtype,tol", DTYPES)
@pytest.mark.parametrize("device", DEVICES)
def test_large_image_matches_reference(shape, strategy, mode, layout, dtype, tol, device):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(shape, generator=g, dtype=dtype).to(device)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    grad = torch.randn(shape, generator=g, dtype=dtype).to(device)
    for seed in (3, -1):  # Siamese and per-sample
        omega = sample_params(strategy, x, seed=seed, param=ParamDiffAug(aug_mode=mode))
        out = {}
        for backend in ("reference", "fused"):
            xb = x.detach().clone(memory_format=torch.preserve_format).requires_grad_()
            y = apply(xb, omega, backend=backend)
            (y * grad).sum().backward()
            out[backend] = (y.detach(), xb.grad)
        (yr, dr), (yf, df) = out["reference"], out["fused"]
        torch.testing.assert_close(yf, yr, atol=tol, rtol=tol)
        torch.testing.assert_close(df, dr, atol=tol, rtol=tol)
