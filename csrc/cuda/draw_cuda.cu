// dsa_fast::augment_draw on CUDA: one thread per table row draws ω (kernels/rng.h, the key read
// on the device, so a captured graph replays with whatever the key tensor holds), then the
// per-image program of augment_launch.cuh applies it. One op call; two kernel launches.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <tuple>

#include "../common/draw.h"
#include "../kernels/rng.h"

namespace dsa_fast {
namespace cuda_impl {

at::Tensor augment_cuda(const at::Tensor& x, const at::Tensor& omega, int64_t flags, bool align_corners);

namespace {

constexpr int kDrawThreads = 128;

template <typename scalar_t>
__global__ void draw_kernel(rng::DrawPlan p, const int64_t* __restrict__ key, double* __restrict__ rows,
                            int64_t B, int H, int W) {
  const uint32_t folded = rng::fold_key(p.key_of(key != nullptr ? *key : 0));
  for (int64_t b = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; b < B;
       b += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    rng::draw_row<scalar_t>(p, folded, b, H, W, rows + b * kOmegaWidth, /*trig=*/true);
  }
}

std::tuple<at::Tensor, at::Tensor> augment_draw_cuda(const at::Tensor& x, const std::optional<at::Tensor>& key,
                                                      int64_t flags, at::IntArrayRef plan,
                                                      at::ArrayRef<double> settings, bool align_corners) {
  const rng::DrawPlan p = make_draw_plan("dsa_fast.augment_draw", x, key, flags, plan, settings);
  const c10::cuda::OptionalCUDAGuard guard(x.device());
  at::Tensor omega = empty_draw_table(x, p);
  const int64_t B = omega.size(0);
  if (B > 0) {
    const int64_t blocks = std::min<int64_t>((B + kDrawThreads - 1) / kDrawThreads, 1024);
    const int64_t* key_p = key.has_value() ? key->const_data_ptr<int64_t>() : nullptr;
    DSA_DISPATCH_FLOATING(x.scalar_type(), "dsa_fast.augment_draw", [&] {
      draw_kernel<scalar_t><<<static_cast<unsigned>(blocks), kDrawThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
          p, key_p, omega.mutable_data_ptr<double>(), B, static_cast<int>(x.size(2)), static_cast<int>(x.size(3)));
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }
  return {augment_cuda(x, omega, flags, align_corners), omega};
}

}  // namespace

TORCH_LIBRARY_IMPL(dsa_fast, CUDA, m) { m.impl("augment_draw", &augment_draw_cuda); }

}  // namespace cuda_impl
}  // namespace dsa_fast
