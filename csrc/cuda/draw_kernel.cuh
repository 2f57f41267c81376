// The table kernels of augment_draw and augment_compat: one thread per row of the ω table, in a
// grid-stride loop. draw_kernel makes a row with kernels/rng.h, the key read on the device (a
// captured graph replays with whatever the key tensor holds); compat_kernel makes it from the raw
// draws with kernels/compat.h.
//
// No ATen in this header (kernels/compat.h reads c10's header-only Half/BFloat16 and
// at::opmath_type): compiled by nvcc through draw_cuda.cu and by the host simulator of
// csrc/tests/cuda_sim_test.cpp.
#pragma once

#include <cstdint>

#include "../common/launch_plan.h"
#include "../kernels/compat.h"
#include "../kernels/rng.h"
#include "device_macros.cuh"

namespace dsa_fast {
namespace cuda_impl {

constexpr int kRowThreads = 128;  // threads per block, and the kernels' __launch_bounds__

template <typename scalar_t>
__global__ void __launch_bounds__(kRowThreads)
    draw_kernel(rng::DrawPlan p, const int64_t* __restrict__ key, double* __restrict__ rows, int64_t B, int H, int W) {
  const uint32_t folded = rng::fold_key(p.key_of(key != nullptr ? *key : 0));
  for (int64_t b = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; b < B;
       b += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    rng::draw_row<scalar_t>(p, folded, b, H, W, rows + b * kOmegaWidth, /*trig=*/true);
  }
}

template <typename scalar_t>
__global__ void __launch_bounds__(kRowThreads)
    compat_kernel(compat::CompatPlan p, compat::RawDraws r, double* __restrict__ rows, int64_t B) {
  for (int64_t b = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; b < B;
       b += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    compat::compat_row<scalar_t>(p, r, b, rows + b * kOmegaWidth, /*trig=*/true);
  }
}

// The B rows of a draw table (rows: B x kOmegaWidth doubles) with `plan` (plan_row_launch with
// kRowThreads). key: one int64 on the device, or nullptr when the plan holds the seed.
template <typename scalar_t>
void launch_draw(const LaunchPlan& plan, cudaStream_t stream, const rng::DrawPlan& p, const int64_t* key,
                 double* rows, int64_t B, int H, int W) {
  const auto kernel = draw_kernel<scalar_t>;
  DSA_LAUNCH(kernel, kRowThreads, plan, stream, p, key, rows, B, H, W);
}

// The B rows of a compat table from the raw draws `r` (device pointers), with `plan` as launch_draw.
template <typename scalar_t>
void launch_compat(const LaunchPlan& plan, cudaStream_t stream, const compat::CompatPlan& p,
                   const compat::RawDraws& r, double* rows, int64_t B) {
  const auto kernel = compat_kernel<scalar_t>;
  DSA_LAUNCH(kernel, kRowThreads, plan, stream, p, r, rows, B);
}

}  // namespace cuda_impl
}  // namespace dsa_fast
