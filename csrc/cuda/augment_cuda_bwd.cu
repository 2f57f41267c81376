// Backward CUDA kernels (see augment_launch.cuh).
#include "augment_launch.cuh"

namespace dsa_fast {
namespace cuda_impl {

at::Tensor augment_backward_cuda(const at::Tensor& grad, const at::Tensor& omega, int64_t flags, bool align_corners) {
  return run<true>("dsa_fast.augment_backward", grad, omega, flags, align_corners);
}

}  // namespace cuda_impl
}  // namespace dsa_fast
