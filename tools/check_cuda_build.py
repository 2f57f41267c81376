"""CI stage 2 and benchmarks/gpu_check.sh: the extension built with CUDA sources imports under the
CUDA torch and registers CPU and CUDA kernels for every op (no GPU needed to check that)."""
import sys

import torch

import dsa_fast
from dsa_fast import _ops

OPS = ("augment", "augment_backward", "augment_draw", "augment_compat")

assert torch.version.cuda is not None, f"expected a CUDA build of torch, got {torch.__version__}"
assert dsa_fast.has_ops(), _ops.why_unavailable(torch.empty(0))
missing = [f"dsa_fast::{op} ({key})" for op in OPS for key in ("CPU", "CUDA")
           if not torch._C._dispatch_has_kernel_for_dispatch_key(f"dsa_fast::{op}", key)]
assert not missing, f"no kernel registered for {', '.join(missing)}"
print(f"check_cuda_build: torch {torch.__version__} (CUDA {torch.version.cuda}); dsa_fast._C loaded "
      f"with CPU and CUDA kernels for {', '.join(OPS)}")
sys.exit(0)
