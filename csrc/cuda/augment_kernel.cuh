// The augment and augment_backward kernels: one thread block per image, running the shared
// per-image program of kernels/augment.h; the workspace (two [C, H, W] planes and the base table)
// lives in shared memory, or in global memory for images too large for it (common/launch_plan.h
// decides). No atomics: results are bitwise reproducible.
//
// No ATen, no c10: compiled by nvcc through augment_launch.cuh (the ATen glue) and by the host
// simulator of csrc/tests/cuda_sim_test.cpp, which runs these very kernels on CPU threads.
#pragma once

#include <cstdint>

#include "../common/launch_plan.h"
#include "../kernels/augment.h"
#include "device_macros.cuh"

namespace dsa_fast {
namespace cuda_impl {

constexpr int kThreads = 256;  // threads per block, and the kernels' __launch_bounds__
static_assert(kThreads > 0 && (kThreads & (kThreads - 1)) == 0,
              "CudaBlockExec::sum halves the block at each step of its tree: kThreads must be a power of two");

// One block per image: threads split the pixels, __syncthreads is the barrier, and sums reduce
// through shared memory in a fixed tree order (blockDim.x a power of two). The host versions exist
// only to satisfy the __host__ __device__ templates under nvcc; they are never called.
struct CudaBlockExec {
  DSA_HOST_DEVICE int begin() const {
#if DSA_DEVICE_CODE
    return static_cast<int>(threadIdx.x);
#else
    return 0;
#endif
  }
  DSA_HOST_DEVICE int stride() const {
#if DSA_DEVICE_CODE
    return static_cast<int>(blockDim.x);
#else
    return 1;
#endif
  }
  DSA_HOST_DEVICE void sync() const {
#if DSA_DEVICE_CODE
    __syncthreads();
#endif
  }
  template <typename T>
  DSA_HOST_DEVICE T sum(T v, T* scratch) const {
#if DSA_DEVICE_CODE
    const int t = threadIdx.x;
    scratch[t] = v;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
      if (t < s) scratch[t] += scratch[t + s];
      __syncthreads();
    }
    const T total = scratch[0];
    __syncthreads();  // scratch is reused by the next sum
    return total;
#else
    return v;
#endif
  }
};

// Element strides of an [N, C, H, W] tensor.
struct Strides4 {
  int64_t n, c, h, w;
};

template <typename scalar_t, typename acc_t, bool kBackward>
__global__ void __launch_bounds__(kThreads)
    augment_kernel(const scalar_t* __restrict__ in, Strides4 is, scalar_t* __restrict__ out, Strides4 os,
                   const double* __restrict__ omega, int64_t N, int64_t B, ImageGeometry<acc_t> g,
                   acc_t* global_ws) {
  DSA_DYNAMIC_SMEM(smem);
  acc_t* scratch = reinterpret_cast<acc_t*>(smem);
  const int64_t ws_size = workspace_size(g.C, g.H, g.W);
  acc_t* ws = global_ws != nullptr ? global_ws + blockIdx.x * ws_size : scratch + blockDim.x;
  CudaBlockExec ex;
  for (int64_t n = blockIdx.x; n < N; n += gridDim.x) {
    const Omega<acc_t> o = Omega<acc_t>::load(omega + (B == 1 ? 0 : n) * kOmegaWidth);
    const View<const scalar_t, acc_t> src{in + n * is.n, is.c, is.h, is.w};
    const View<scalar_t, acc_t> dst{out + n * os.n, os.c, os.h, os.w};
    if (kBackward) {
      augment_backward_image(ex, src, dst, g, o, ws, scratch);
    } else {
      augment_image(ex, src, dst, g, o, ws, scratch);
    }
    ex.sync();  // the workspace is reused by this block's next image
  }
}

// One launch of augment_kernel with `plan` (plan_launch with kThreads): out = the fused map of in
// (forward) or its transpose (kBackward). global_ws: plan.global_bytes bytes, or nullptr when
// plan.shared_workspace. The caller has raised the kernel's dynamic shared memory limit when
// plan.needs_optin, and checks the launch.
template <typename scalar_t, typename acc_t, bool kBackward>
void launch_augment(const LaunchPlan& plan, cudaStream_t stream, const scalar_t* in, Strides4 is, scalar_t* out,
                    Strides4 os, const double* omega, int64_t N, int64_t B, const ImageGeometry<acc_t>& g,
                    void* global_ws) {
  const auto kernel = augment_kernel<scalar_t, acc_t, kBackward>;
  DSA_LAUNCH(kernel, kThreads, plan, stream, in, is, out, os, omega, N, B, g,
             plan.shared_workspace ? nullptr : static_cast<acc_t*>(global_ws));
}

}  // namespace cuda_impl
}  // namespace dsa_fast
