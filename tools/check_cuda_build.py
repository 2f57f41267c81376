"""CI stage 2: the extension built with CUDA sources imports under the CUDA torch and registers
CUDA kernels for every op (no GPU needed to check that)."""
import sys

import torch

import dsa_fast
from dsa_fast import _ops

assert torch.version.cuda is not None, f"expected a CUDA build of torch, got {torch.__version__}"
assert dsa_fast.has_ops(), _ops.why_unavailable(torch.empty(0))
for op in ("dsa_fast::augment", "dsa_fast::augment_backward"):
    for key in ("CPU", "CUDA"):
        assert torch._C._dispatch_has_kernel_for_dispatch_key(op, key), f"{op} has no {key} kernel"
print(f"check_cuda_build: torch {torch.__version__} (CUDA {torch.version.cuda}); dsa_fast._C loaded "
      f"with CPU and CUDA kernels for augment and augment_backward")
sys.exit(0)
