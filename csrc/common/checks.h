// Host-side argument checks, dtype dispatch and output allocation shared by the CPU and CUDA
// launchers. Every message names the op, the argument and the value.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>

#include "../kernels/omega.h"

namespace dsa_fast {

// float, double, half, bfloat16; accumulate in at::opmath_type<scalar_t> (float for half types).
#define DSA_DISPATCH_FLOATING(TYPE, NAME, ...) \
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, TYPE, NAME, __VA_ARGS__)

inline void check_augment_args(const char* op, const at::Tensor& x, const at::Tensor& omega, int64_t flags) {
  TORCH_CHECK(x.dim() == 4, op, ": expected x of shape [N, C, H, W], got ", x.sizes());
  TORCH_CHECK(at::isFloatingType(x.scalar_type()), op, ": expected a floating-point x, got ", x.scalar_type());
  TORCH_CHECK(omega.dim() == 2 && omega.size(1) == kOmegaWidth, op, ": expected omega of shape [B, ", kOmegaWidth,
              "], got ", omega.sizes());
  TORCH_CHECK(omega.scalar_type() == at::kDouble, op, ": expected omega of dtype float64, got ",
              omega.scalar_type());
  TORCH_CHECK(omega.size(0) == 1 || omega.size(0) == x.size(0), op, ": omega has batch ", omega.size(0),
              " but x has batch ", x.size(0), "; expected 1 (broadcast) or ", x.size(0));
  TORCH_CHECK(omega.device() == x.device(), op, ": omega is on ", omega.device(), " but x is on ", x.device());
  TORCH_CHECK(flags >= 0 && flags <= kAllOps, op, ": flags must be in [0, ", static_cast<int64_t>(kAllOps),
              "], got ", flags);
  TORCH_CHECK(x.size(1) * x.size(2) * x.size(3) < (int64_t(1) << 30), op,
              ": an image of C*H*W = ", x.size(1) * x.size(2) * x.size(3), " elements is too large");
}

// The output keeps x's layout: channels_last when x is channels_last and not also NCHW-contiguous
// (dsa_fast/augment.py, _memory_format, is the same rule).
inline at::Tensor empty_output(const at::Tensor& x) {
  const bool cl = !x.is_contiguous() && x.is_contiguous(at::MemoryFormat::ChannelsLast);
  return at::empty(x.sizes(), x.options().memory_format(cl ? at::MemoryFormat::ChannelsLast
                                                           : at::MemoryFormat::Contiguous));
}

}  // namespace dsa_fast
