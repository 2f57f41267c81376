// Forward CUDA kernels (see augment_launch.cuh).
#include "augment_launch.cuh"

namespace dsa_fast {
namespace cuda_impl {

at::Tensor augment_cuda(const at::Tensor& x, const at::Tensor& omega, int64_t flags, bool align_corners) {
  return run<false>("dsa_fast.augment", x, omega, flags, align_corners);
}

}  // namespace cuda_impl
}  // namespace dsa_fast
