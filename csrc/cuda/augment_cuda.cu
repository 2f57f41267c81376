// Registration of the CUDA kernels (augment_cuda_fwd.cu, augment_cuda_bwd.cu).
#include <ATen/ATen.h>
#include <torch/library.h>

namespace dsa_fast {
namespace cuda_impl {
at::Tensor augment_cuda(const at::Tensor& x, const at::Tensor& omega, int64_t flags, bool align_corners);
at::Tensor augment_backward_cuda(const at::Tensor& grad, const at::Tensor& omega, int64_t flags, bool align_corners);
}  // namespace cuda_impl

TORCH_LIBRARY_IMPL(dsa_fast, CUDA, m) {
  m.impl("augment", &cuda_impl::augment_cuda);
  m.impl("augment_backward", &cuda_impl::augment_backward_cuda);
}

}  // namespace dsa_fast
