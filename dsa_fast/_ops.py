"""The compiled ops (``torch.ops.dsa_fast.*`` from ``dsa_fast._C``): loading and fake kernels. Their
autograd is registered in C++ (csrc/autograd.cpp: a Python autograd wrapper costs more host time per
call than a small batch's kernel). Packing ω for them and planning the calls is dsa_fast/fused.py.

``augment(x, omega, flags, align_corners)`` applies, in the canonical order
brightness, saturation, contrast, crop, cutout, flip, scale, rotate, the ops whose bits are set in
``flags``; ``omega`` is the packed per-sample parameter table of ``csrc/kernels/omega.h`` (columns:
``ops_table.COLUMNS``).
``augment_backward(grad, omega, flags, align_corners)`` is its transposed linear map.

Two ops draw ω and apply it in ONE call, returning ``(y, omega)`` (the [B, OMEGA_WIDTH] table they drew;
B = 1 Siamese, N per sample); their backward is ``augment_backward`` with that table:

- ``augment_draw(x, key, flags, plan, settings, align_corners)``: rng='device'. The draws of
  ``device_rng.py`` made inside the kernel (csrc/kernels/rng.h), keyed by the int seed in ``plan``
  or by ``key``, a one-element int64 tensor on x's device read on the device (a user seed tensor,
  or the per-device counter of unseeded calls, which the caller advances with one ``add_``).
- ``augment_compat(x, raw, flags, plan, settings, align_corners)``: rng='compat'. ``raw`` are the
  official generator draws (compat.py, made in the official order); the kernel applies the
  official formulas (csrc/kernels/compat.h). CPU draws reach a CUDA kernel through one pinned
  buffer.

Plans (flags, draw indices, constants) come from dsa_fast/fused.py and dsa_fast/compat.py, cached
per strategy, settings and image size.
"""
from __future__ import annotations

import importlib.util
import os
import sys
import warnings
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import torch
from torch import Tensor

def _other_builds(package_dir: Path) -> List[Path]:
    """Compiled ``dsa_fast/_C*`` files elsewhere on sys.path (an installed copy this import shadows)."""
    found = []
    for entry in sys.path:
        candidate = Path(entry or ".").resolve() / "dsa_fast"
        if candidate != package_dir and candidate.is_dir():
            found.extend(sorted(candidate.glob("_C.*")))
    return found


def _load() -> Optional[str]:
    """Import dsa_fast._C; None when it loaded, else why not (and a warning when a build was expected)."""
    if os.environ.get("DSA_FAST_NO_EXT") == "1":
        return "disabled by DSA_FAST_NO_EXT=1"
    package_dir = Path(__file__).resolve().parent
    if importlib.util.find_spec(f"{__package__}._C") is None:
        reason = f"dsa_fast._C is not built in {package_dir}"
        source_tree = (package_dir.parent / "setup.py").is_file()
        elsewhere = _other_builds(package_dir)
        if source_tree or elsewhere:
            where = f"; a built copy exists at {elsewhere[0].parent}" if elsewhere else ""
            warnings.warn(
                f"dsa_fast: imported from the source folder {package_dir}, which has no compiled "
                f"extension (dsa_fast._C){where}, so every call runs the slower pure-PyTorch reference. "
                f"Build it in place (`python setup.py build_ext --inplace` in {package_dir.parent}) or "
                f"run Python from outside the source folder to use the installed copy. "
                f"DSA_FAST_NO_EXT=1 silences this.",
                RuntimeWarning,
                stacklevel=3,
            )
        return reason
    try:
        from . import _C  # noqa: F401  (loading the library registers torch.ops.dsa_fast.*)
    except ImportError as e:  # built against another torch or Python
        return f"dsa_fast._C did not load: {e}"
    return None


_LOAD_ERROR = _load()


def has_ops() -> bool:
    """True when the compiled extension ``dsa_fast._C`` is loaded."""
    return _LOAD_ERROR is None


from .ops_table import COMPAT_PLAN, OMEGA_WIDTH, PLAN

_PLAN_PER_SAMPLE = PLAN["PerSample"]  # layout.h, kPlanPerSample (dsa_fast/fused.py)
_COMPAT_PER_SAMPLE = COMPAT_PLAN["PerSample"]  # layout.h, kCPerSample (dsa_fast/compat.py)


def _memory_format(x: Tensor) -> torch.memory_format:
    """The layout outputs keep: channels_last only when x is channels_last and not NCHW
    (csrc/common/checks.h, empty_output, is the same rule)."""
    if not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def _kernel_devices() -> Dict[str, bool]:
    """Device types with a registered kernel. NB: queried once at import, never lazily: the
    dispatcher query is not traceable, so a first call under torch.compile would break the graph."""
    if _LOAD_ERROR is not None:
        return {}
    has = torch._C._dispatch_has_kernel_for_dispatch_key
    return {kind: has("dsa_fast::augment", key) for kind, key in (("cpu", "CPU"), ("cuda", "CUDA"))}


_KERNEL_DEVICES: Dict[str, bool] = _kernel_devices()


def why_unavailable(x: Tensor) -> str:
    if _LOAD_ERROR is not None:
        return _LOAD_ERROR
    return f"dsa_fast._C has no kernel for device type {x.device.type!r}"


def supports(x: Tensor) -> bool:
    """Whether the fused kernels can run on x's device."""
    return _KERNEL_DEVICES.get(x.device.type, False)


if _LOAD_ERROR is None:

    def _fake(x: Tensor, omega: Tensor, flags: int, align_corners: bool) -> Tensor:
        torch._check(x.dim() == 4, lambda: f"dsa_fast.augment: expected x of shape [N, C, H, W], got {x.shape}")
        return torch.empty_like(x, memory_format=_memory_format(x))

    torch.library.register_fake("dsa_fast::augment")(_fake)
    torch.library.register_fake("dsa_fast::augment_backward")(_fake)

    def _fake_draw(x: Tensor, key: Optional[Tensor], flags: int, plan: List[int], settings: List[float],
                   align_corners: bool) -> Tuple[Tensor, Tensor]:
        torch._check(x.dim() == 4, lambda: f"dsa_fast.augment_draw: expected x of shape [N, C, H, W], got {x.shape}")
        rows = x.shape[0] if plan[_PLAN_PER_SAMPLE] else 1
        return _fake(x, None, flags, align_corners), x.new_empty((rows, OMEGA_WIDTH), dtype=torch.float64)

    def _fake_compat(x: Tensor, raw: List[Tensor], flags: int, plan: List[int], settings: List[float],
                     align_corners: bool) -> Tuple[Tensor, Tensor]:
        torch._check(x.dim() == 4, lambda: f"dsa_fast.augment_compat: expected x of shape [N, C, H, W], got {x.shape}")
        rows = x.shape[0] if plan[_COMPAT_PER_SAMPLE] else 1
        return _fake(x, None, flags, align_corners), x.new_empty((rows, OMEGA_WIDTH), dtype=torch.float64)

    torch.library.register_fake("dsa_fast::augment_draw")(_fake_draw)
    torch.library.register_fake("dsa_fast::augment_compat")(_fake_compat)
