"""setup.py's choice of GPU architectures when no GPU is visible and TORCH_CUDA_ARCH_LIST is unset:
every architecture the installed torch was built for, with PTX for the newest (a login-node build
must run on the A100 or RTX card it is meant for, not on one architecture alone)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def setup_module():
    # Imported under another name than __main__: setup.py then defines its functions and builds nothing.
    spec = importlib.util.spec_from_file_location("dsa_fast_setup_script", ROOT / "setup.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    "torch_archs, expected",
    [
        # torch 2.x cu12x wheels list these (unsorted here on purpose); the newest gets PTX.
        (["sm_90", "sm_50", "sm_80", "sm_86", "sm_60", "sm_70", "sm_75"], "5.0;6.0;7.0;7.5;8.0;8.6;9.0+PTX"),
        (["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120"], "7.5;8.0;8.6;9.0;10.0;12.0+PTX"),
        # PTX-only entries are skipped; a suffixed target counts once, as its base architecture.
        (["sm_80", "sm_90a", "sm_90", "compute_90"], "8.0;9.0+PTX"),
        (["sm_90"], "9.0+PTX"),
        ([], "9.0"),
    ],
)
def test_default_cuda_arch_list(setup_module, torch_archs, expected):
    assert setup_module.default_cuda_arch_list(torch_archs) == expected


def test_default_cuda_arch_list_of_the_installed_torch(setup_module):
    """With a CUDA build of torch (CI's CUDA stage, no GPU there): more than one architecture, the
    newest with PTX, and torch's own flag parser accepts the list."""
    if torch.version.cuda is None:
        pytest.skip(f"torch {torch.__version__} is not a CUDA build")
    archs = setup_module.default_cuda_arch_list(torch.cuda.get_arch_list())
    names = archs.split(";")
    assert len(names) > 1 and names[-1].endswith("+PTX"), (archs, torch.cuda.get_arch_list())
    from torch.utils import cpp_extension

    mp = pytest.MonkeyPatch()
    mp.setenv("TORCH_CUDA_ARCH_LIST", archs)
    try:
        flags = cpp_extension._get_cuda_arch_flags()
    finally:
        mp.undo()
    assert len([f for f in flags if "code=sm_" in f]) == len(names), flags
